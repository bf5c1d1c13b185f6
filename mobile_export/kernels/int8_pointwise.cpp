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
          for (int64_t r = r0; r < std::min(r1, pixels); ++r)
            dst[r * kp + c] = rows[(r / ow) * a.xq_row_stride + (r % ow) * a.xq_pixel_stride];
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
  if (a.stride_h < 1 || a.stride_w < 1 || a.stride_h > kMaxDeconvTaps || a.stride_w > kMaxDeconvTaps ||
      a.pad_h < 0 || a.pad_w < 0 || a.kernel_h > 64 || a.kernel_w > 64 ||
      a.kernel_h != a.stride_h + 2 * a.pad_h || a.kernel_w != a.stride_w + 2 * a.pad_w)
    return "stride must be 1 to 16 and kernel stride + 2 padding (at most 64) in both dimensions: the output is "
           "exactly stride x the input";
  const int64_t th = uniform_taps(a.kernel_h, a.stride_h, a.pad_h), tw = uniform_taps(a.kernel_w, a.stride_w, a.pad_w);
  if (th < 1 || tw < 1 || th > kMaxDeconvTaps || tw > kMaxDeconvTaps)
    return "every output phase must have the same number of taps (1 to 16 per dimension)";
  if (a.in_channels * th * tw > 65536) return "at most 65536 input channels x taps (int32 accumulators)";
  return check_quantization(a.zero_point, a.input_scale_inv);
}

namespace {
// quantize_int8 of a row of n floats into dst: 16 lanes at a time on the `avx512` and `amx` paths (GCC leaves
// the scalar loop unvectorised, "control flow in loop"), else the scalar loop. The int8 deconv's and conv's
// input copies.
void quantize_row(const float* src, int64_t n, float input_scale_inv, int32_t zero_point, int8_t* dst) {
#if defined(__x86_64__)
  if (active_path() == Path::kAvx512 || active_path() == Path::kAmx) {
    avx512_quantize_row(src, n, input_scale_inv, zero_point, dst);
    return;
  }
#endif
  for (int64_t x = 0; x < n; ++x) dst[x] = quantize_int8(src[x], input_scale_inv, zero_point);
}

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
#if defined(__x86_64__) && defined(BIDRN_AMX)
  if (active_path() == Path::kAmx && amx_int8_deconv_takes(a)) {
    amx_int8_conv_transpose2d(a, dy, dx, th, tw, parallel);
    return;
  }
#endif
  const int64_t Hp = H + pt + pb, Wp = W + pl + pr, K = th * tw * C;
  DeconvScratch& sc = deconv_scratch();
  if (sc.xpad.size() < size_t(N * C * Hp * Wp)) sc.xpad.resize(size_t(N * C * Hp * Wp));
  if (sc.channels.size() < size_t(K)) sc.channels.resize(size_t(K));
  if (sc.dest.size() < size_t(P)) sc.dest.resize(size_t(P));
  int8_t* xpad = sc.xpad.data();
  // The input quantized once, the zero point in the padding (it contributes zero after the correction).
  run_parallel(parallel, N * C, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int8_t* plane = xpad + i * Hp * Wp;
      std::memset(plane, static_cast<int8_t>(a.zero_point), size_t(Hp * Wp));
      const float* src = a.x + i * H * W;
      for (int64_t y = 0; y < H; ++y)
        quantize_row(src + y * W, W, a.input_scale_inv, a.zero_point, plane + (y + pt) * Wp + pl);
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

// ---------------------------------------------------------------- int8_conv2d

const char* check_conv(const Int8ConvArgs& a) {
  if (a.batch < 0 || a.in_channels < 1 || a.out_channels < 1 || a.in_h < 1 || a.in_w < 1)
    return "batch must be >= 0 and channels and input size >= 1";
  if (a.kernel_h < 1 || a.kernel_w < 1 || a.kernel_h > 64 || a.kernel_w > 64 || a.stride_h < 1 || a.stride_w < 1 ||
      a.stride_h > 16 || a.stride_w > 16 || a.pad_h < 0 || a.pad_w < 0)
    return "kernel must be 1 to 64, stride 1 to 16 and padding >= 0 in both dimensions";
  const int64_t oh = conv_out_size(a.in_h, a.kernel_h, a.stride_h, a.pad_h);
  const int64_t ow = conv_out_size(a.in_w, a.kernel_w, a.stride_w, a.pad_w);
  if (a.in_h + 2 * a.pad_h < a.kernel_h || a.in_w + 2 * a.pad_w < a.kernel_w)
    return "the zero-padded input must be at least the kernel's size";
  if (a.pool_h < 1 || a.pool_w < 1 || a.pool_stride_h < 1 || a.pool_stride_w < 1 || a.pool_pad_h < 0 ||
      a.pool_pad_w < 0 || 2 * a.pool_pad_h > a.pool_h || 2 * a.pool_pad_w > a.pool_w)
    return "pool kernel and stride must be >= 1 and pool padding at most half the pool kernel (as PyTorch's)";
  if (oh + 2 * a.pool_pad_h < a.pool_h || ow + 2 * a.pool_pad_w < a.pool_w)
    return "the conv output (with the pool's padding) must be at least the pool kernel's size";
  const int64_t th = (a.kernel_h + a.stride_h - 1) / a.stride_h, tw = (a.kernel_w + a.stride_w - 1) / a.stride_w;
  if (th * tw * a.stride_h * a.stride_w * a.in_channels > 65536)
    return "at most 65536 input channels x kernel taps (int32 accumulators)";
  return check_quantization(a.zero_point, a.input_scale_inv);
}

namespace {
struct ConvScratch {
  std::vector<int8_t> xq, w;
  std::vector<const int8_t*> channels;
};

ConvScratch& conv_scratch() {
  static thread_local ConvScratch s;
  return s;
}

// Conv output of one band of pooled rows (L2-resident). 512 KB against 1 MB: the stems 1.05-1.15x faster
// (hand, body, face; 256 KB slower again on the hand).
constexpr int64_t kPoolBandBytes = int64_t(1) << 19;

// Max pool of one channel's band of conv rows [r_lo, r_lo + rows) (z, ow wide) into pooled rows [i0, i1) of
// `out` (pw wide): the window's rows first, then its columns. (Of a +0 and a -0 that tie for the maximum,
// either may come out; PyTorch keeps the first in row-major order.)
void pool_band(const Int8ConvArgs& a, const float* z, int64_t r_lo, int64_t rows, int64_t ow, int64_t i0, int64_t i1,
               int64_t pw, float* out, float* m) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t y0 = std::max<int64_t>(0, i * a.pool_stride_h - a.pool_pad_h) - r_lo;
    const int64_t y1 = std::min<int64_t>(r_lo + rows, i * a.pool_stride_h - a.pool_pad_h + a.pool_h) - r_lo;
    const float* first = z + y0 * ow;
    if (y1 - y0 == 1) {
      std::memcpy(m, first, size_t(ow) * sizeof(float));
    } else {
      const float* second = first + ow;
      for (int64_t x = 0; x < ow; ++x) m[x] = second[x] > first[x] ? second[x] : first[x];
    }
    for (int64_t y = y0 + 2; y < y1; ++y) {
      const float* r = z + y * ow;
      for (int64_t x = 0; x < ow; ++x) m[x] = r[x] > m[x] ? r[x] : m[x];
    }
    float* o = out + i * pw;
#if defined(__x86_64__)
    if (a.pool_w == 3 && a.pool_stride_w == 2 && a.pool_pad_w == 1 &&
        (active_path() == Path::kAvx512 || active_path() == Path::kAmx)) {
      avx512_max_pool_row_3s2(m, ow, pw, o);
      continue;
    }
#endif
    for (int64_t j = 0; j < pw; ++j) {
      const int64_t x0 = std::max<int64_t>(0, j * a.pool_stride_w - a.pool_pad_w);
      const int64_t x1 = std::min<int64_t>(ow, j * a.pool_stride_w - a.pool_pad_w + a.pool_w);
      float v = m[x0];
      for (int64_t x = x0 + 1; x < x1; ++x) v = m[x] > v ? m[x] : v;
      o[j] = v;
    }
  }
}
}  // namespace

void int8_conv2d(const Int8ConvArgs& a, ParallelFor parallel) {
  if (a.batch == 0) return;
  const int64_t N = a.batch, C = a.in_channels, H = a.in_h, W = a.in_w, O = a.out_channels;
  const int64_t kh = a.kernel_h, kw = a.kernel_w, sh = a.stride_h, sw = a.stride_w;
  const int64_t oh = conv_out_size(H, kh, sh, a.pad_h), ow = conv_out_size(W, kw, sw, a.pad_w);
  const int64_t th = (kh + sh - 1) / sh, tw = (kw + sw - 1) / sw, S = sh * sw;
  const int64_t Hq = oh + th - 1, Wq = ow + tw - 1, K = th * tw * S * C;
  ConvScratch& sc = conv_scratch();
  // The weight rows in the GEMM's channel order: tap (u, v), channel c, phase (p, q) at ((u tw + v) C + c)
  // S + p s_w + q is kernel element (s_h u + p, s_w v + q) of channel c, zero past the kernel. The rows'
  // sums are the kernel's (zeros added).
  sc.w.assign(size_t(O * K), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ky = 0; ky < kh; ++ky)
        for (int64_t kx = 0; kx < kw; ++kx) {
          const int64_t k = (((ky / sh) * tw + kx / sw) * C + c) * S + (ky % sh) * sw + kx % sw;
          sc.w[size_t(o * K + k)] = a.weight[((o * C + c) * kh + ky) * kw + kx];
        }
  // The quantized input as interleaved phases: [n][c][y < Hq][x < Wq][phase (p, q)] holds
  // q_pad[c, s_h y + p, s_w x + q] (the zero point outside the image). Each input row is quantized once,
  // then its columns spread over their phases. A GEMM channel's rows are Wq S bytes apart, its pixels S.
  const int64_t plane = Hq * Wq * S, image = C * plane;
  if (sc.xq.size() < size_t(N * image)) sc.xq.resize(size_t(N * image));
  int8_t* xq = sc.xq.data();
  const int64_t padded_w = std::max(W + 2 * a.pad_w, sw * Wq);
  const int8_t zp = static_cast<int8_t>(a.zero_point);
  run_parallel(parallel, N * C, [&](int64_t i0, int64_t i1) {
    std::vector<int8_t> row(static_cast<size_t>(padded_w));
    for (int64_t i = i0; i < i1; ++i) {
      const float* src = a.x + i * H * W;
      int8_t* dst = xq + i * plane;
      for (int64_t y = 0; y < Hq; ++y)
        for (int64_t p = 0; p < sh; ++p) {
          const int64_t iy = sh * y + p - a.pad_h;
          int8_t* out = dst + y * Wq * S + p * sw;
          if (iy < 0 || iy >= H) {
            for (int64_t x = 0; x < Wq; ++x)
              for (int64_t q = 0; q < sw; ++q) out[x * S + q] = zp;
            continue;
          }
          std::memset(row.data(), zp, size_t(padded_w));
          quantize_row(src + iy * W, W, a.input_scale_inv, a.zero_point, row.data() + a.pad_w);
          if (sw == 2 && S == 4) {  // the stems: byte pairs to every other pair
            const int64_t n = Wq;  // (a local: the int8 stores may alias the captured one)
            const int8_t* r = row.data();
            for (int64_t x = 0; x < n; ++x) {
              uint16_t pair;
              std::memcpy(&pair, r + 2 * x, 2);
              std::memcpy(out + 4 * x, &pair, 2);
            }
          } else {
            for (int64_t x = 0; x < Wq; ++x)
              for (int64_t q = 0; q < sw; ++q) out[x * S + q] = row[size_t(sw * x + q)];
          }
        }
    }
  });
  PointwiseArgs pa;
  pa.batch = N, pa.in_channels = K, pa.in_w = ow;
  pa.weight = sc.w.data(), pa.weight_sum = a.weight_sum, pa.scale = a.scale, pa.bias = a.bias;
  pa.out_channels = O, pa.input_scale_inv = a.input_scale_inv, pa.zero_point = a.zero_point, pa.relu = a.relu;
  pa.xq_row_stride = Wq * S, pa.xq_pixel_stride = S, pa.xq_image_stride = image;
  // The GEMM's channel k read in place from its interleaved plane, shifted by its tap and the band's first
  // row: channels[k] for a band from conv row r0.
  const auto point_channels = [&](int64_t r0, std::vector<const int8_t*>& channels) {
    channels.resize(size_t(K));
    for (int64_t u = 0; u < th; ++u)
      for (int64_t v = 0; v < tw; ++v)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t ph = 0; ph < S; ++ph)
            channels[size_t(((u * tw + v) * C + c) * S + ph)] = xq + c * plane + ((u + r0) * Wq + v) * S + ph;
    return channels.data();
  };
  const bool pooled = a.pool_h > 1 || a.pool_w > 1 || a.pool_stride_h > 1 || a.pool_stride_w > 1;
  if (!pooled) {
    pa.xq_channels = point_channels(0, sc.channels);
    pa.in_h = oh, pa.out = a.out;
    int8_pointwise(pa, parallel);
    return;
  }
  const int64_t ph_out = conv_out_size(oh, a.pool_h, a.pool_stride_h, a.pool_pad_h);
  const int64_t pw_out = conv_out_size(ow, a.pool_w, a.pool_stride_w, a.pool_pad_w);
  // Bands of pooled rows whose conv rows (with the windows' overlap computed twice) fill kPoolBandBytes, of
  // one size and an even count (balanced_strip). The bands are the work items: a thread runs a band's GEMM
  // and pool alone, into its own band buffer in its own L2, so a call is one parallel region instead of two a
  // band (the stems gained only 1.2-1.25x from a second thread with a region per GEMM and per pool).
  const int64_t per_row = N * O * a.pool_stride_h * ow * int64_t(sizeof(float));
  const int64_t band_rows = balanced_strip(ph_out, std::min(ph_out, kPoolBandBytes / per_row));
  const int64_t bands = (ph_out + band_rows - 1) / band_rows;
  const int64_t max_rows = std::min(oh, (band_rows - 1) * a.pool_stride_h + a.pool_h);
  run_parallel(parallel, bands, [&](int64_t b0, int64_t b1) {
    static thread_local std::vector<float> band;
    static thread_local std::vector<const int8_t*> channels;
    if (band.size() < size_t(N * O * max_rows * ow)) band.resize(size_t(N * O * max_rows * ow));
    std::vector<float> m(static_cast<size_t>(ow));
    PointwiseArgs bpa = pa;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * band_rows, i1 = std::min(ph_out, i0 + band_rows);
      const int64_t r_lo = std::max<int64_t>(0, i0 * a.pool_stride_h - a.pool_pad_h);
      const int64_t r_hi = std::min<int64_t>(oh, (i1 - 1) * a.pool_stride_h - a.pool_pad_h + a.pool_h);
      const int64_t rows = r_hi - r_lo;
      bpa.xq_channels = point_channels(r_lo, channels);
      bpa.in_h = rows, bpa.out = band.data();
      int8_pointwise(bpa, serial_for);
      for (int64_t j = 0; j < N * O; ++j)
        pool_band(a, band.data() + j * rows * ow, r_lo, rows, ow, i0, i1, pw_out, a.out + j * ph_out * pw_out,
                  m.data());
    }
  });
}

}  // namespace bidrn

using bidrn::serial_for;

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

const char* bidrn_int8_conv2d(const int64_t* v, const float* x, const int8_t* weight, const int32_t* weight_sum,
                              const float* scale, const float* bias, float input_scale_inv, int32_t zero_point,
                              float* out) {
  bidrn::Int8ConvArgs a;
  a.batch = v[0], a.in_channels = v[1], a.in_h = v[2], a.in_w = v[3], a.out_channels = v[4];
  a.kernel_h = v[5], a.kernel_w = v[6], a.stride_h = v[7], a.stride_w = v[8], a.pad_h = v[9], a.pad_w = v[10];
  a.pool_h = a.pool_w = v[11], a.pool_stride_h = a.pool_stride_w = v[12], a.pool_pad_h = a.pool_pad_w = v[13];
  a.relu = v[14] != 0;
  a.x = x, a.weight = weight, a.weight_sum = weight_sum, a.scale = scale, a.bias = bias;
  a.input_scale_inv = input_scale_inv, a.zero_point = zero_point, a.out = out;
  if (const char* err = bidrn::check_conv(a)) return err;
  bidrn::int8_conv2d(a, serial_for);
  return nullptr;
}
