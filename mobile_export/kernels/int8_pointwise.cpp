// Driver of bidrn::int8_pointwise (int8_pointwise.h): argument checks, then the tile kernel on the `amx` path,
// the VNNI kernel on the `avx512` path where the CPU has AVX-512 VNNI, else the input quantized into NHWC
// int8 and the active path's block GEMM (int8_gemm.h).
#include "int8_pointwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "bconv_internal.h"

namespace bidrn {

const char* check_quantization(int64_t zero_point, double input_scale_inv) {
  if (zero_point < -128 || zero_point > 127) return "zero_point must be in [-128, 127]";
  const float inv = static_cast<float>(input_scale_inv);
  if (!(inv > 0.0f) || std::isinf(inv)) return "input_scale_inv must be finite and > 0 as a float32";
  return nullptr;
}

const char* check_pointwise(const PointwiseArgs& a) {
  if (a.batch < 0 || a.in_channels < 1 || a.out_channels < 1 || a.in_h < 1 || a.in_w < 1)
    return "batch must be >= 0 and channels and input size >= 1";
  if (a.stride_h < 1 || a.stride_w < 1) return "stride must be >= 1";
  // |acc| <= C * 127 * 255 must fit an int32.
  if (a.in_channels > 65536) return "at most 65536 input channels (int32 accumulators)";
  return check_quantization(a.zero_point, a.input_scale_inv);
}

namespace {

struct PointwiseScratch {
  std::vector<int8_t> xq, w;
};

PointwiseScratch& pointwise_scratch() {
  static thread_local PointwiseScratch s;
  return s;
}

void generic_pointwise(const PointwiseArgs& a, ParallelFor parallel) {
  const int64_t oh = pointwise_out_size(a.in_h, a.stride_h), ow = pointwise_out_size(a.in_w, a.stride_w);
  const int64_t pixels = oh * ow, rows = (pixels + 3) / 4 * 4, C = a.in_channels, O = a.out_channels;
  const int64_t kp = (C + 31) / 32 * 32;  // whole vectors in the block kernels (int8_gemm.h)
  PointwiseScratch& sc = pointwise_scratch();
  if (sc.xq.size() < size_t(a.batch * rows * kp)) sc.xq.resize(size_t(a.batch * rows * kp));
  const int8_t* w = padded_weight_rows(a.weight, O, C, kp, O, sc.w);
  int8_t* xq = sc.xq.data();
  const int64_t blocks = (rows + kPointwiseBlock - 1) / kPointwiseBlock;
  run_parallel(parallel, a.batch * blocks, [&](int64_t i0, int64_t i1) {
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t n = item / blocks, r0 = (item % blocks) * kPointwiseBlock;
      const int64_t r1 = std::min(rows, r0 + kPointwiseBlock);
      int8_t* dst = xq + n * rows * kp;
      for (int64_t r = r0; r < r1; ++r) std::memset(dst + r * kp, 0, size_t(kp));
      for (int64_t c = 0; c < C; ++c) {
        if (a.xq_channels) {  // already quantized (stride 1)
          const int8_t* rows = a.xq_channels[c] + n * a.xq_image_stride;
          for (int64_t r = r0; r < std::min(r1, pixels); ++r) dst[r * kp + c] = rows[(r / ow) * a.xq_row_stride + r % ow];
          continue;
        }
        const float* plane = a.x + (n * C + c) * a.in_h * a.in_w;
        for (int64_t r = r0; r < std::min(r1, pixels); ++r) {
          const int64_t i = r / ow, jx = r - i * ow;
          dst[r * kp + c] = quantize_int8(plane[i * a.stride_h * a.in_w + jx * a.stride_w], a.input_scale_inv,
                                          a.zero_point);
        }
      }
    }
  });
  PointwiseJob job;
  job.xq = xq, job.w = w, job.kp = kp, job.pixels = pixels, job.rows = rows, job.out_channels = O;
  job.weight_sum = a.weight_sum, job.scale = a.scale, job.bias = a.bias, job.zero_point = a.zero_point;
  job.relu = a.relu;
  job.out = a.out, job.dest = a.dest, job.out_plane = a.out_plane ? a.out_plane : pixels;
  const auto rows_fn = kernels_for(active_path()).int8_rows;
  const int64_t items = a.batch * ((pixels + kPointwiseBlock - 1) / kPointwiseBlock);
  run_parallel(parallel, items, [&](int64_t i0, int64_t i1) { rows_fn(job, i0, i1); });
}

}  // namespace

void int8_pointwise(const PointwiseArgs& a, ParallelFor parallel) {
  if (a.batch == 0) return;
#if defined(__x86_64__) && defined(BIDRN_AMX)
  if (active_path() == Path::kAmx) {
    amx_int8_pointwise(a, parallel);
    return;
  }
#endif
#if defined(__x86_64__)
  if (active_path() == Path::kAvx512 && vnni_available()) {
    vnni_int8_pointwise(a, parallel);
    return;
  }
#endif
  generic_pointwise(a, parallel);
}

// ---------------------------------------------------------------- int8_conv_transpose2d

int64_t deconv_taps(int64_t kernel, int64_t stride, int64_t pad, int64_t phase, int64_t* d, int64_t* k) {
  int64_t n = 0;
  for (int64_t kk = kernel - 1; kk >= 0; --kk) {  // descending kernel index: ascending input offset
    const int64_t num = phase + pad - kk;
    if (((num % stride) + stride) % stride == 0) d[n] = num / stride, k[n] = kk, ++n;
  }
  return n;
}

namespace {
constexpr int64_t kMaxDeconvTaps = 16;  // per dimension and phase

// Taps per phase along one dimension, the same for every phase, or 0.
int64_t uniform_taps(int64_t kernel, int64_t stride, int64_t pad) {
  int64_t d[64], k[64], n = -1;
  for (int64_t r = 0; r < stride; ++r) {
    const int64_t m = deconv_taps(kernel, stride, pad, r, d, k);
    if (n >= 0 && m != n) return 0;
    n = m;
  }
  return n;
}
}  // namespace

const char* check_deconv(const Int8DeconvArgs& a) {
  if (a.batch < 0 || a.in_channels < 1 || a.out_channels < 1 || a.in_h < 1 || a.in_w < 1)
    return "batch must be >= 0 and channels and input size >= 1";
  if (a.stride_h < 1 || a.stride_w < 1 || a.pad_h < 0 || a.pad_w < 0 || a.kernel_h > 64 || a.kernel_w > 64 ||
      a.kernel_h != a.stride_h + 2 * a.pad_h || a.kernel_w != a.stride_w + 2 * a.pad_w)
    return "kernel must be stride + 2 padding (at most 64) in both dimensions: the output is exactly stride x the input";
  const int64_t th = uniform_taps(a.kernel_h, a.stride_h, a.pad_h), tw = uniform_taps(a.kernel_w, a.stride_w, a.pad_w);
  if (th < 1 || tw < 1 || th > kMaxDeconvTaps || tw > kMaxDeconvTaps)
    return "every output phase must have the same number of taps (1 to 16 per dimension)";
  if (a.in_channels * th * tw > 65536) return "at most 65536 input channels x taps (int32 accumulators)";
  return check_quantization(a.zero_point, a.input_scale_inv);
}

namespace {
struct DeconvScratch {
  std::vector<int8_t> xpad;
  std::vector<const int8_t*> channels;
  std::vector<int32_t> dest;
};

DeconvScratch& deconv_scratch() {
  static thread_local DeconvScratch s;
  return s;
}
}  // namespace

void int8_conv_transpose2d(const Int8DeconvArgs& a, ParallelFor parallel) {
  if (a.batch == 0) return;
  const int64_t N = a.batch, C = a.in_channels, H = a.in_h, W = a.in_w, O = a.out_channels;
  const int64_t sh = a.stride_h, sw = a.stride_w, OW = W * sw, P = H * W;
  int64_t dy[kMaxDeconvTaps][kMaxDeconvTaps], dx[kMaxDeconvTaps][kMaxDeconvTaps], kk[kMaxDeconvTaps];
  int64_t th = 0, tw = 0, pt = 0, pb = 0, pl = 0, pr = 0;
  for (int64_t r = 0; r < sh; ++r) {
    th = deconv_taps(a.kernel_h, sh, a.pad_h, r, dy[r], kk);
    pt = std::max(pt, -dy[r][0]), pb = std::max(pb, dy[r][th - 1]);
  }
  for (int64_t r = 0; r < sw; ++r) {
    tw = deconv_taps(a.kernel_w, sw, a.pad_w, r, dx[r], kk);
    pl = std::max(pl, -dx[r][0]), pr = std::max(pr, dx[r][tw - 1]);
  }
  const int64_t Hp = H + pt + pb, Wp = W + pl + pr, K = th * tw * C;
  DeconvScratch& sc = deconv_scratch();
  if (sc.xpad.size() < size_t(N * C * Hp * Wp)) sc.xpad.resize(size_t(N * C * Hp * Wp));
  if (sc.channels.size() < size_t(K)) sc.channels.resize(size_t(K));
  if (sc.dest.size() < size_t(P)) sc.dest.resize(size_t(P));
  int8_t* xpad = sc.xpad.data();
#if defined(__x86_64__)
  const bool vector_quantize = active_path() == Path::kAvx512 || active_path() == Path::kAmx;
#endif
  // The input quantized once, the zero point in the padding (it contributes zero after the correction).
  run_parallel(parallel, N * C, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int8_t* plane = xpad + i * Hp * Wp;
      std::memset(plane, static_cast<int8_t>(a.zero_point), size_t(Hp * Wp));
      const float* src = a.x + i * H * W;
      for (int64_t y = 0; y < H; ++y) {
        int8_t* row = plane + (y + pt) * Wp + pl;
#if defined(__x86_64__)
        if (vector_quantize) {  // GCC leaves the scalar loop unvectorised ("control flow in loop")
          avx512_quantize_row(src + y * W, W, a.input_scale_inv, a.zero_point, row);
          continue;
        }
#endif
        for (int64_t x = 0; x < W; ++x) row[x] = quantize_int8(src[y * W + x], a.input_scale_inv, a.zero_point);
      }
    }
  });
  for (int64_t ry = 0; ry < sh; ++ry) {
    for (int64_t rx = 0; rx < sw; ++rx) {
      const int64_t phase = ry * sw + rx;
      // The GEMM's input channel t C + c is channel c of the padded copy shifted by tap t = (ty, tx): its
      // rows read in place (no im2col copy).
      for (int64_t t = 0; t < th * tw; ++t)
        for (int64_t c = 0; c < C; ++c)
          sc.channels[size_t(t * C + c)] = xpad + c * Hp * Wp + (dy[ry][t / tw] + pt) * Wp + dx[rx][t % tw] + pl;
      for (int64_t j = 0; j < H; ++j)
        for (int64_t i = 0; i < W; ++i) sc.dest[size_t(j * W + i)] = int32_t((sh * j + ry) * OW + sw * i + rx);
      PointwiseArgs pa;
      pa.batch = N, pa.in_channels = K, pa.in_h = H, pa.in_w = W;
      pa.weight = a.weight + phase * O * K, pa.weight_sum = a.weight_sum + phase * O;
      pa.scale = a.scale, pa.bias = a.bias, pa.out_channels = O;
      pa.input_scale_inv = a.input_scale_inv, pa.zero_point = a.zero_point, pa.relu = a.relu;
      pa.out = a.out, pa.dest = sc.dest.data(), pa.out_plane = H * sh * OW;
      pa.xq_channels = sc.channels.data(), pa.xq_row_stride = Wp, pa.xq_image_stride = C * Hp * Wp;
      int8_pointwise(pa, parallel);
    }
  }
}

}  // namespace bidrn

namespace {
void serial_for(int64_t n, void* context, void (*body)(void*, int64_t, int64_t)) { body(context, 0, n); }
}  // namespace

const char* bidrn_int8_pointwise_kernel() {
  const bidrn::Path p = bidrn::active_path();
#if defined(__x86_64__)
  if (p == bidrn::Path::kAvx512 && bidrn::vnni_available()) return "avx512_vnni";
#endif
  return bidrn::path_name(p);
}

const char* bidrn_int8_pointwise(const int64_t* v, const float* x, const int8_t* weight, const int32_t* weight_sum,
                                 const float* scale, const float* bias, float input_scale_inv, int32_t zero_point,
                                 int relu, float* out) {
  bidrn::PointwiseArgs a;
  a.batch = v[0], a.in_channels = v[1], a.in_h = v[2], a.in_w = v[3], a.out_channels = v[4];
  a.stride_h = v[5], a.stride_w = v[6];
  a.x = x, a.weight = weight, a.weight_sum = weight_sum, a.scale = scale, a.bias = bias;
  a.input_scale_inv = input_scale_inv, a.zero_point = zero_point, a.relu = relu != 0, a.out = out;
  if (const char* err = bidrn::check_pointwise(a)) return err;
  bidrn::int8_pointwise(a, serial_for);
  return nullptr;
}

const char* bidrn_int8_conv_transpose2d(const int64_t* v, const float* x, const int8_t* weight,
                                        const int32_t* weight_sum, const float* scale, const float* bias,
                                        float input_scale_inv, int32_t zero_point, int relu, float* out) {
  bidrn::Int8DeconvArgs a;
  a.batch = v[0], a.in_channels = v[1], a.in_h = v[2], a.in_w = v[3], a.out_channels = v[4];
  a.kernel_h = a.kernel_w = v[5], a.stride_h = a.stride_w = v[6], a.pad_h = a.pad_w = v[7];
  a.x = x, a.weight = weight, a.weight_sum = weight_sum, a.scale = scale, a.bias = bias;
  a.input_scale_inv = input_scale_inv, a.zero_point = zero_point, a.relu = relu != 0, a.out = out;
  if (const char* err = bidrn::check_deconv(a)) return err;
  bidrn::int8_conv_transpose2d(a, serial_for);
  return nullptr;
}
