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

const char* check_pointwise(const PointwiseArgs& a) {
  if (a.batch < 0 || a.in_channels < 1 || a.out_channels < 1 || a.in_h < 1 || a.in_w < 1)
    return "batch must be >= 0 and channels and input size >= 1";
  if (a.stride_h < 1 || a.stride_w < 1) return "stride must be >= 1";
  // |acc| <= C * 127 * 255 must fit an int32.
  if (a.in_channels > 65536) return "at most 65536 input channels (int32 accumulators)";
  if (a.zero_point < -128 || a.zero_point > 127) return "zero_point must be in [-128, 127]";
  if (!(a.input_scale_inv > 0.0f) || std::isinf(a.input_scale_inv)) return "input_scale_inv must be finite and > 0";
  return nullptr;
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
  const int8_t* w = a.weight;
  if (kp != C) {
    if (sc.w.size() < size_t(O * kp)) sc.w.resize(size_t(O * kp));
    for (int64_t o = 0; o < O; ++o) {
      std::memcpy(sc.w.data() + o * kp, a.weight + o * C, size_t(C));
      std::memset(sc.w.data() + o * kp + C, 0, size_t(kp - C));
    }
    w = sc.w.data();
  }
  int8_t* xq = sc.xq.data();
  const int64_t blocks = (rows + kPointwiseBlock - 1) / kPointwiseBlock;
  run_parallel(parallel, a.batch * blocks, [&](int64_t i0, int64_t i1) {
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t n = item / blocks, r0 = (item % blocks) * kPointwiseBlock;
      const int64_t r1 = std::min(rows, r0 + kPointwiseBlock);
      int8_t* dst = xq + n * rows * kp;
      for (int64_t r = r0; r < r1; ++r) std::memset(dst + r * kp, 0, size_t(kp));
      for (int64_t c = 0; c < C; ++c) {
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
  job.out = a.out;
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
