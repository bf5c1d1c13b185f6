// bidrn::int8_pointwise on AVX-512 VNNI (the `avx512` path where the CPU has it: Ice Lake and later Xeons,
// AMD Zen 4 and later). Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni and entered
// only after vnni_available().
//
// The input is quantized into blocks of 16 pixels x 4 channels per 64-byte row (int8_pack_avx512.h), so one
// load is vpdpbusd's first operand for 16 pixels, and the weights' 4 bytes of an output channel are its
// broadcast second operand: the accumulator lanes are 16 pixels of one output plane, stored as they are. vpdpbusd
// multiplies unsigned by signed bytes, so the input is flipped to q + 128 (xor 0x80) and the weight sums
// take (zero_point + 128) instead of zero_point: sum_c w (q - z) = sum_c w (q + 128) - (z + 128) sum_c w,
// the same integers.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "bconv_internal.h"
#include "int8_pack_avx512.h"

namespace bidrn {

bool vnni_available() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vnni");
  return ok;
}

namespace {

constexpr int kVnniChannels = 8;  // output channels per register block (x 32 pixels: 16 accumulators)

struct VnniScratch {
  std::vector<int8_t> planes, weights;
};

VnniScratch& vnni_scratch() {
  static thread_local VnniScratch s;
  return s;
}

// Output channels [o0, o0 + 8) x pixel blocks [b0, b1) of one image (16 pixels a block).
void vnni_item(const PointwiseArgs& a, const int8_t* w, int64_t ldw, const int8_t* image, int64_t groups,
               int64_t pixels, int64_t o0, int64_t b0, int64_t b1, float* out) {
  const int64_t O = a.out_channels, block_bytes = groups * 64, out_plane = a.out_plane ? a.out_plane : pixels;
  const int no = int(O - o0 < kVnniChannels ? O - o0 : kVnniChannels);
  const int8_t* wr[kVnniChannels];
  for (int j = 0; j < kVnniChannels; ++j) wr[j] = w + (o0 + (j < no ? j : 0)) * ldw;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = b0; b < b1; b += 2) {
    const bool pair = b + 1 < b1;
    const int8_t* x0 = image + b * block_bytes;
    const int8_t* x1 = pair ? x0 + block_bytes : x0;
    __m512i acc[2][kVnniChannels];
    for (int j = 0; j < kVnniChannels; ++j) acc[0][j] = acc[1][j] = _mm512_setzero_si512();
    for (int64_t g = 0; g < groups; ++g) {
      const __m512i u0 = _mm512_xor_si512(_mm512_load_si512(x0 + g * 64), flip);
      const __m512i u1 = _mm512_xor_si512(_mm512_load_si512(x1 + g * 64), flip);
      for (int j = 0; j < kVnniChannels; ++j) {
        int32_t four;
        std::memcpy(&four, wr[j] + 4 * g, 4);
        const __m512i wv = _mm512_set1_epi32(four);
        acc[0][j] = _mm512_dpbusd_epi32(acc[0][j], u0, wv);
        acc[1][j] = _mm512_dpbusd_epi32(acc[1][j], u1, wv);
      }
    }
    for (int h = 0; h < (pair ? 2 : 1); ++h) {
      const int64_t p = (b + h) * 16;
      if (p >= pixels) break;
      const int cnt = int(pixels - p < 16 ? pixels - p : 16);
      for (int j = 0; j < no; ++j) {
        const int64_t o = o0 + j;
        const __m512i v = _mm512_sub_epi32(acc[h][j], _mm512_set1_epi32((a.zero_point + 128) * a.weight_sum[o]));
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(a.scale[o])),
                                       _mm512_set1_ps(a.bias[o]));
        store_pixels(out + o * out_plane, a.dest, p, cnt, relu_if(y, a.relu));
      }
    }
  }
}

}  // namespace

void vnni_int8_pointwise(const PointwiseArgs& a, ParallelFor parallel) {
  const int64_t oh = pointwise_out_size(a.in_h, a.stride_h), ow = pointwise_out_size(a.in_w, a.stride_w);
  const int64_t pixels = oh * ow, blocks = (pixels + 15) / 16, C = a.in_channels, O = a.out_channels;
  const int64_t kp = (C + 3) / 4 * 4, groups = kp / 4, image_bytes = blocks * groups * 64;
  VnniScratch& sc = vnni_scratch();
  // Weight rows padded with zeros to whole groups of 4 (the flipped input's 128 in channels past C must meet 0).
  const int8_t* w = padded_weight_rows(a.weight, O, C, kp, O, sc.weights);
  const int64_t ldw = kp;
  if (sc.planes.size() < size_t(a.batch * image_bytes + 64)) sc.planes.resize(size_t(a.batch * image_bytes + 64));
  int8_t* planes = sc.planes.data() + (64 - reinterpret_cast<uintptr_t>(sc.planes.data()) % 64) % 64;
  run_parallel(parallel, a.batch * groups, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      quantize_group(a, i / groups, i % groups, ow, oh, kp, planes + (i / groups) * image_bytes);
  });
  // Work items: 8 output channels x a chunk of up to 16 pixel blocks (256 pixels) of one image.
  const int64_t oblocks = (O + kVnniChannels - 1) / kVnniChannels, chunks = (blocks + 15) / 16;
  run_parallel(parallel, a.batch * chunks * oblocks, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / (chunks * oblocks), ch = (i / oblocks) % chunks, ob = i % oblocks;
      vnni_item(a, w, ldw, planes + n * image_bytes, groups, pixels, ob * kVnniChannels, ch * 16,
                std::min(blocks, ch * 16 + 16), a.out + n * O * (a.out_plane ? a.out_plane : pixels));
    }
  });
}

}  // namespace bidrn
