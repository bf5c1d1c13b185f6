// The GEMM of bidrn::int8_pointwise (int8_pointwise.h) on the paths without AMX, included by each ISA's unit
// (bconv_<isa>.cpp), which picks its block kernel by the unit's target flags: AVX2 (and the AVX-512 unit, for
// a CPU without VNNI) widens to int16 and multiplies pairs (vpmaddwd), NEON with dotprod uses SDOT, baseline
// NEON widening multiplies and pairwise adds; the scalar unit (BIDRN_INT8_SCALAR) plain loops. The `amx` path
// has its own tile kernel (bconv_amx.cpp), the `avx512` path on a CPU with VNNI its own (int8_vnni.cpp). Operands: the quantized input NHWC ([N][rows][kp]) and the weights [O][kp], kp a multiple
// of 32 (zero-padded), so the vector loops need no tail.
#pragma once

#include "bconv_internal.h"

#if !defined(BIDRN_INT8_SCALAR) && defined(__aarch64__)
#include <arm_neon.h>
#elif !defined(BIDRN_INT8_SCALAR) && defined(__AVX2__)
#include <immintrin.h>
#endif

namespace bidrn {
namespace {

// acc[i][j] = sum_k x_i[k] w_j[k] for 4 pixel rows x 4 weight rows.
__attribute__((always_inline)) inline void int8_block4x4(const int8_t* const x[4], const int8_t* const w[4], int64_t kp, int32_t acc[4][4]) {
#if !defined(BIDRN_INT8_SCALAR) && defined(__AVX2__)
  // 16 ymm registers: two pixel rows at a time (8 accumulators + 6 operands).
  for (int h = 0; h < 4; h += 2) {
    __m256i s[2][4];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 4; ++j) s[i][j] = _mm256_setzero_si256();
    for (int64_t k = 0; k < kp; k += 16) {
      __m256i xv[2], wv[4];
      for (int i = 0; i < 2; ++i) xv[i] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[h + i] + k)));
      for (int j = 0; j < 4; ++j) wv[j] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[j] + k)));
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j) s[i][j] = _mm256_add_epi32(s[i][j], _mm256_madd_epi16(xv[i], wv[j]));
    }
    for (int i = 0; i < 2; ++i) {  // four sums at once, as in the AVX-512 kernel
      const __m256i a = _mm256_add_epi32(_mm256_unpacklo_epi32(s[i][0], s[i][1]), _mm256_unpackhi_epi32(s[i][0], s[i][1]));
      const __m256i b = _mm256_add_epi32(_mm256_unpacklo_epi32(s[i][2], s[i][3]), _mm256_unpackhi_epi32(s[i][2], s[i][3]));
      const __m256i c = _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(acc[h + i]),
                       _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1)));
    }
  }
#elif !defined(BIDRN_INT8_SCALAR) && defined(__aarch64__)
  int32x4_t s[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) s[i][j] = vdupq_n_s32(0);
  for (int64_t k = 0; k < kp; k += 16) {
    int8x16_t xv[4], wv[4];
    for (int i = 0; i < 4; ++i) xv[i] = vld1q_s8(x[i] + k);
    for (int j = 0; j < 4; ++j) wv[j] = vld1q_s8(w[j] + k);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
#if defined(__ARM_FEATURE_DOTPROD)
        s[i][j] = vdotq_s32(s[i][j], xv[i], wv[j]);
#else
        // Products of two int8 fit an int16 (-128 x -128 = 16384) but a pair's sum may not: widen each
        // half's products before adding.
        s[i][j] = vpadalq_s16(s[i][j], vmull_s8(vget_low_s8(xv[i]), vget_low_s8(wv[j])));
        s[i][j] = vpadalq_s16(s[i][j], vmull_high_s8(xv[i], wv[j]));
#endif
      }
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = vaddvq_s32(s[i][j]);
#else
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      int32_t s = 0;
      for (int64_t k = 0; k < kp; ++k) s += int32_t(x[i][k]) * int32_t(w[j][k]);
      acc[i][j] = s;
    }
#endif
}

// Items [i0, i1) of j: item = image * blocks + block of kPointwiseBlock pixels. Per 4 output channels the
// block kernel fills acc for every pixel of the block, then each channel's run is finished and written
// contiguously (writing 4 pixels into 4 planes a plane apart at a time ran at 0.4 GB/s: every line in one L1
// set).
void generic_int8_rows(const PointwiseJob& j, int64_t i0, int64_t i1) {
  const int64_t blocks = (j.pixels + kPointwiseBlock - 1) / kPointwiseBlock, kp = j.kp;
  int32_t acc[4][kPointwiseBlock];
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t n = item / blocks, pb0 = (item % blocks) * kPointwiseBlock;
    const int64_t pb1 = pb0 + kPointwiseBlock < j.pixels ? pb0 + kPointwiseBlock : j.pixels;
    const int8_t* xq = j.xq + n * j.rows * kp;
    float* out = j.out + n * j.out_channels * j.out_plane;
    for (int64_t o = 0; o < j.out_channels; o += 4) {
      const int no = int(j.out_channels - o < 4 ? j.out_channels - o : 4);
      const int8_t* const w[4] = {j.w + o * kp, j.w + (o + (no > 1 ? 1 : 0)) * kp, j.w + (o + (no > 2 ? 2 : 0)) * kp,
                                  j.w + (o + (no > 3 ? 3 : 0)) * kp};
      for (int64_t p = pb0; p < pb1; p += 4) {  // rows past the pixels are zeros (j.rows is a multiple of 4)
        const int8_t* const x[4] = {xq + p * kp, xq + (p + 1) * kp, xq + (p + 2) * kp, xq + (p + 3) * kp};
        int32_t a4[4][4];
        int8_block4x4(x, w, kp, a4);
        for (int a = 0; a < 4; ++a)
          for (int b = 0; b < 4; ++b) acc[b][p - pb0 + a] = a4[a][b];
      }
      for (int b = 0; b < no; ++b) {
        const int32_t offset = j.zero_point * j.weight_sum[o + b];
        const float scale = j.scale[o + b], bias = j.bias[o + b];
        float y[kPointwiseBlock];
        for (int64_t a = 0; a < pb1 - pb0; ++a) y[a] = static_cast<float>(acc[b][a] - offset) * scale + bias;
        if (j.relu)
          for (int64_t a = 0; a < pb1 - pb0; ++a) y[a] = y[a] > 0.0f ? y[a] : 0.0f;
        float* plane = out + (o + b) * j.out_plane;
        if (j.dest) {
          for (int64_t a = 0; a < pb1 - pb0; ++a) plane[j.dest[pb0 + a]] = y[a];
        } else {
          for (int64_t a = 0; a < pb1 - pb0; ++a) plane[pb0 + a] = y[a];
        }
      }
    }
  }
}

}  // namespace
}  // namespace bidrn
