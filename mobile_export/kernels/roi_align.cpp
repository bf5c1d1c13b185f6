// bidrn::roi_align.out: RoIAlign (He et al., Mask R-CNN) with torchvision's semantics, one box per image, as
// bidrn.models.ops.roi_align computes it (its pure-PyTorch reference). Hand4Whole crops the hands and the face
// from the full image with it; in ExecuTorch the reference's grid_sample, grid building and bin sums ran on
// portable kernels at about 10 ns a sample (6 ms of the network), this loop at well under 1 ns.
//
// Per box: x1, y1, x2, y2 scaled by spatial_scale (minus half a pixel when aligned); without `aligned` the roi
// sides are at least 1 px. Bin (i, j) averages G x G bilinear samples at y1 + bin_h (i + (iy + 0.5) / G),
// likewise x. A sample outside [-1, H] x [-1, W] counts 0; inside, it is clamped to [0, H - 1] x [0, W - 1]
// and read bilinearly. `mirror` writes bin j to column out_w - 1 - j (the left hand's mirrored crop).
#define ET_EVENT_TRACER_ENABLED 1  // profiling scope for ETDump, as in et_ops.cpp
#include <executorch/runtime/core/event_tracer_hooks.h>
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "bconv.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace bidrn {
namespace {

using executorch::aten::ArrayRef;
using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::KernelRuntimeContext;

// One axis of one box: for each output bin, the G sample positions' two taps and weights (0 outside).
struct AxisTaps {
  std::vector<int32_t> lo, hi;
  std::vector<float> w_lo, w_hi;
};

AxisTaps axis_taps(float start, float bin, int64_t out, int64_t grid, int64_t extent) {
  AxisTaps t;
  const size_t n = size_t(out * grid);
  t.lo.resize(n), t.hi.resize(n), t.w_lo.resize(n), t.w_hi.resize(n);
  for (int64_t p = 0; p < out; ++p) {
    for (int64_t g = 0; g < grid; ++g) {
      const size_t i = size_t(p * grid + g);
      // As the reference: start + bin * (p + (g + 0.5) / G).
      const float pos = start + bin * (static_cast<float>(p) + (static_cast<float>(g) + 0.5f) / static_cast<float>(grid));
      if (!(pos >= -1.0f && pos <= static_cast<float>(extent))) {
        t.lo[i] = t.hi[i] = 0, t.w_lo[i] = t.w_hi[i] = 0.0f;
        continue;
      }
      const float c = std::min(std::max(pos, 0.0f), static_cast<float>(extent - 1));
      const int32_t lo = static_cast<int32_t>(c);  // c >= 0: truncation is floor
      const int32_t hi = std::min<int32_t>(lo + 1, int32_t(extent - 1));
      const float frac = c - static_cast<float>(lo);
      t.lo[i] = lo, t.hi[i] = hi, t.w_lo[i] = 1.0f - frac, t.w_hi[i] = frac;
    }
  }
  return t;
}

// One output row at one sample per bin: row = a r0 + b r1 over the columns the taps read, then
// out[j] = w_lo[j] row[lo[j]] + w_hi[j] row[hi[j]] (mul, mul, add: the reference's rounding).
using RowSampler = void (*)(const float* r0, const float* r1, float a, float b, int64_t col0, int64_t col1,
                            const AxisTaps& tx, int64_t ow, float* row, float* out);

void sample_row(const float* r0, const float* r1, float a, float b, int64_t col0, int64_t col1, const AxisTaps& tx,
                int64_t ow, float* row, float* out) {
  for (int64_t x = col0; x < col1; ++x) row[x] = a * r0[x] + b * r1[x];
  for (int64_t j = 0; j < ow; ++j) out[j] = tx.w_lo[size_t(j)] * row[tx.lo[size_t(j)]] + tx.w_hi[size_t(j)] * row[tx.hi[size_t(j)]];
}

#if defined(__x86_64__)
// The same with AVX2 gathers, 8 output pixels at a time (2.5x the scalar loop on a 256 x 256 hand crop).
__attribute__((target("avx2"))) void sample_row_avx2(const float* r0, const float* r1, float a, float b,
                                                     int64_t col0, int64_t col1, const AxisTaps& tx, int64_t ow,
                                                     float* row, float* out) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  int64_t x = col0;
  for (; x + 8 <= col1; x += 8)
    _mm256_storeu_ps(row + x, _mm256_add_ps(_mm256_mul_ps(va, _mm256_loadu_ps(r0 + x)),
                                            _mm256_mul_ps(vb, _mm256_loadu_ps(r1 + x))));
  for (; x < col1; ++x) row[x] = a * r0[x] + b * r1[x];
  int64_t j = 0;
  for (; j + 8 <= ow; j += 8) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tx.lo.data() + j));
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tx.hi.data() + j));
    const __m256 left = _mm256_mul_ps(_mm256_loadu_ps(tx.w_lo.data() + j), _mm256_i32gather_ps(row, lo, 4));
    const __m256 right = _mm256_mul_ps(_mm256_loadu_ps(tx.w_hi.data() + j), _mm256_i32gather_ps(row, hi, 4));
    _mm256_storeu_ps(out + j, _mm256_add_ps(left, right));
  }
  for (; j < ow; ++j) out[j] = tx.w_lo[size_t(j)] * row[tx.lo[size_t(j)]] + tx.w_hi[size_t(j)] * row[tx.hi[size_t(j)]];
}
#endif

// The AVX2 form where the binary kernels' active path is AVX2, AVX-512 or AMX (so BIDRN_KERNEL_PATH=scalar, or
// kernel_library.using_path("scalar"), runs and tests the plain loop too).
RowSampler row_sampler() {
#if defined(__x86_64__)
  const Path p = active_path();
  if (p == Path::kAmx || p == Path::kAvx512 || p == Path::kAvx2) return sample_row_avx2;
#endif
  return sample_row;
}

Tensor& roi_align_out(KernelRuntimeContext& ctx, const Tensor& features, const Tensor& boxes,
                      ArrayRef<int64_t> output_size, double spatial_scale, int64_t sampling_ratio, bool aligned,
                      bool mirror, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, features.scalar_type() == ScalarType::Float && features.dim() == 4, InvalidArgument, out,
                      "features must be float32 N x C x H x W");
  const int64_t n = features.size(0), c = features.size(1), h = features.size(2), w = features.size(3);
  ET_KERNEL_CHECK_MSG(ctx, boxes.scalar_type() == ScalarType::Float && boxes.dim() == 2 && boxes.size(0) == n &&
                               boxes.size(1) == 4, InvalidArgument, out,
                      "boxes must be float32 N x 4 [x1, y1, x2, y2], one per image");
  ET_KERNEL_CHECK_MSG(ctx, output_size.size() == 2 && output_size[0] >= 1 && output_size[1] >= 1 &&
                               sampling_ratio >= 1, InvalidArgument, out,
                      "output_size must be two sizes >= 1 and sampling_ratio >= 1 (the adaptive grid is eager-only)");
  const int64_t oh = output_size[0], ow = output_size[1];
  std::array<executorch::aten::SizesType, 4> sizes{executorch::aten::SizesType(n), executorch::aten::SizesType(c),
                                                   executorch::aten::SizesType(oh), executorch::aten::SizesType(ow)};
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::resize_tensor(out, {sizes.data(), 4}) == executorch::runtime::Error::Ok &&
                               out.scalar_type() == ScalarType::Float, InvalidArgument, out,
                      "out must be float32 N x C x out_h x out_w");
  executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(), "bidrn::roi_align");
  const float* box = boxes.const_data_ptr<float>();
  const float* src = features.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  const int64_t g = sampling_ratio;
  const float inv_count = 1.0f / static_cast<float>(g * g);
  std::vector<float> row(static_cast<size_t>(w));
  for (int64_t k = 0; k < n; ++k) {
    const float scale = static_cast<float>(spatial_scale), shift = aligned ? 0.5f : 0.0f;
    const float x1 = box[4 * k] * scale - shift, y1 = box[4 * k + 1] * scale - shift;
    const float x2 = box[4 * k + 2] * scale - shift, y2 = box[4 * k + 3] * scale - shift;
    float roi_w = x2 - x1, roi_h = y2 - y1;
    if (!aligned) roi_w = std::max(roi_w, 1.0f), roi_h = std::max(roi_h, 1.0f);
    const AxisTaps ty = axis_taps(y1, roi_h / static_cast<float>(oh), oh, g, h);
    AxisTaps tx = axis_taps(x1, roi_w / static_cast<float>(ow), ow, g, w);
    // Source columns the x taps read: only those are interpolated between the two rows.
    const int64_t col0 = *std::min_element(tx.lo.begin(), tx.lo.end());
    const int64_t col1 = *std::max_element(tx.hi.begin(), tx.hi.end()) + 1;
    if (g == 1) {
      // The export's grid (one sample per bin): each output pixel is one bilinear read, written in place.
      // Mirrored, the x taps are reversed once so the rows are still written left to right.
      if (mirror) {
        std::reverse(tx.lo.begin(), tx.lo.end()), std::reverse(tx.hi.begin(), tx.hi.end());
        std::reverse(tx.w_lo.begin(), tx.w_lo.end()), std::reverse(tx.w_hi.begin(), tx.w_hi.end());
      }
      const RowSampler sample = row_sampler();
      for (int64_t ch = 0; ch < c; ++ch) {
        const float* plane = src + (k * c + ch) * h * w;
        float* out_plane = dst + (k * c + ch) * oh * ow;
        for (int64_t i = 0; i < oh; ++i)
          sample(plane + ty.lo[size_t(i)] * w, plane + ty.hi[size_t(i)] * w, ty.w_lo[size_t(i)], ty.w_hi[size_t(i)],
                 col0, col1, tx, ow, row.data(), out_plane + i * ow);
      }
      continue;
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      const float* plane = src + (k * c + ch) * h * w;
      float* out_plane = dst + (k * c + ch) * oh * ow;
      for (int64_t i = 0; i < oh; ++i) {
        float* out_row = out_plane + i * ow;
        std::fill(out_row, out_row + ow, 0.0f);
        for (int64_t gy = 0; gy < g; ++gy) {
          const size_t yi = size_t(i * g + gy);
          // Interpolate the two source rows once, then read the row at the x taps.
          const float* r0 = plane + ty.lo[yi] * w;
          const float* r1 = plane + ty.hi[yi] * w;
          const float a = ty.w_lo[yi], b = ty.w_hi[yi];
          for (int64_t x = col0; x < col1; ++x) row[size_t(x)] = a * r0[x] + b * r1[x];
          for (int64_t j = 0; j < ow; ++j) {
            float acc = 0.0f;
            for (int64_t gx = 0; gx < g; ++gx) {
              const size_t xi = size_t(j * g + gx);
              acc += tx.w_lo[xi] * row[size_t(tx.lo[xi])] + tx.w_hi[xi] * row[size_t(tx.hi[xi])];
            }
            out_row[mirror ? ow - 1 - j : j] += acc;
          }
        }
        for (int64_t j = 0; j < ow; ++j) out_row[j] *= inv_count;
      }
    }
  }
  return out;
}

}  // namespace
// bidrn::sample_points.out: bilinear feature lookup at points, as bidrn.models.ops.sample_joint_features
// computes it (its reference): F.grid_sample with align_corners=True and zero padding at the points' grid
// coordinates, its output transposed to N x J x C. The point (x, y) in feature pixels goes to the grid as
// x / (W - 1) * 2 - 1 and back to the source index ((g + 1) / 2) (W - 1), the float steps of the reference's
// graph and of grid_sample; then the four neighbours' weights as grid_sample forms them and the in-bounds
// ones summed in its order (north-west, north-east, south-west, south-east). In the program the portable
// grid_sampler_2d took about 0.14 ms a call (5 calls: the joint features of the rotation heads, BoxNet's
// centres) for a few thousand outputs.
Tensor& sample_points_out(KernelRuntimeContext& ctx, const Tensor& features, const Tensor& coords, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, features.scalar_type() == ScalarType::Float && features.dim() == 4, InvalidArgument, out,
                      "features must be float32 N x C x H x W");
  const int64_t n = features.size(0), c = features.size(1), h = features.size(2), w = features.size(3);
  ET_KERNEL_CHECK_MSG(ctx, coords.scalar_type() == ScalarType::Float && coords.dim() == 3 && coords.size(0) == n &&
                               coords.size(2) == 2, InvalidArgument, out,
                      "coords must be float32 N x J x 2 (x, y in feature pixels)");
  const int64_t joints = coords.size(1);
  std::array<executorch::aten::SizesType, 3> sizes{executorch::aten::SizesType(n), executorch::aten::SizesType(joints),
                                                   executorch::aten::SizesType(c)};
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::resize_tensor(out, {sizes.data(), 3}) == executorch::runtime::Error::Ok &&
                               out.scalar_type() == ScalarType::Float, InvalidArgument, out,
                      "out must be float32 N x J x C");
  executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(), "bidrn::sample_points");
  const float* src = features.const_data_ptr<float>();
  const float* xy = coords.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  const float span_w = static_cast<float>(std::max<int64_t>(w - 1, 1)), span_h = static_cast<float>(std::max<int64_t>(h - 1, 1));
  const float last_w = static_cast<float>(w - 1), last_h = static_cast<float>(h - 1);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t j = 0; j < joints; ++j) {
      const float gx = xy[(b * joints + j) * 2] / span_w * 2.0f - 1.0f;
      const float gy = xy[(b * joints + j) * 2 + 1] / span_h * 2.0f - 1.0f;
      const float ix = (gx + 1.0f) / 2.0f * last_w, iy = (gy + 1.0f) / 2.0f * last_h;
      const float x0 = std::floor(ix), y0 = std::floor(iy), x1 = x0 + 1.0f, y1 = y0 + 1.0f;
      // nw, ne, sw, se: (x, y) and weight
      const float cx[4] = {x0, x1, x0, x1}, cy[4] = {y0, y0, y1, y1};
      const float wt[4] = {(x1 - ix) * (y1 - iy), (ix - x0) * (y1 - iy), (x1 - ix) * (iy - y0), (ix - x0) * (iy - y0)};
      int64_t at[4];
      bool in[4];
      for (int k = 0; k < 4; ++k) {
        in[k] = cx[k] >= 0.0f && cx[k] < static_cast<float>(w) && cy[k] >= 0.0f && cy[k] < static_cast<float>(h);
        at[k] = in[k] ? static_cast<int64_t>(cy[k]) * w + static_cast<int64_t>(cx[k]) : 0;
      }
      float* o = dst + (b * joints + j) * c;
      for (int64_t ch = 0; ch < c; ++ch) {
        const float* plane = src + (b * c + ch) * h * w;
        float v = 0.0f;
        for (int k = 0; k < 4; ++k)
          if (in[k]) v += plane[at[k]] * wt[k];
        o[ch] = v;
      }
    }
  return out;
}

}  // namespace bidrn

EXECUTORCH_LIBRARY(bidrn, "roi_align.out", bidrn::roi_align_out);
EXECUTORCH_LIBRARY(bidrn, "sample_points.out", bidrn::sample_points_out);
