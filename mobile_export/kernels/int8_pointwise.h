// int8 1 x 1 convolution with float input and output: the int8 export's block residuals (eq. 11's BR at a
// stage's first block, a full-precision 1 x 1 conv + BN) and the heads' 1 x 1 convs (+ BN + ReLU) as one op
// of this library instead of XNNPACK's quantize, NHWC transpose, int8 GEMM, dequantize and NCHW transpose
// around each. Semantics (ops.py,
// int8_pointwise_reference, is the definition):
//
//   q[c, p]  = clamp(round_half_even(x[c, s_h i, s_w j] * input_scale_inv) + zero_point, -128, 127)
//              (NaN reads as 0, the product clamped to +-256 first)
//   acc[o,p] = sum_c weight[o, c] * q[c, p] - zero_point * weight_sum[o]      (exact int32)
//   y[o, p]  = float(acc) * scale[o] + bias[o]                               (two roundings, no FMA)
//   y[o, p]  = y[o, p] > 0 ? y[o, p] : 0                                     (only with relu)
//
// weight_sum[o] = sum_c weight[o, c] is computed once at export. Every path computes the same integers, so
// every path's floats are bit for bit the same.
#pragma once

#include <cstdint>

#include "bconv.h"

namespace bidrn {

struct PointwiseArgs {
  const float* x = nullptr;  // N x C x H x W float32
  int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0, stride_h = 1, stride_w = 1;
  const int8_t* weight = nullptr;       // O x C
  const int32_t* weight_sum = nullptr;  // O
  const float* scale = nullptr;         // O: input scale x the weight's per-channel scale
  const float* bias = nullptr;          // O
  int64_t out_channels = 0;
  float input_scale_inv = 1.0f;
  int32_t zero_point = 0;
  bool relu = false;
  float* out = nullptr;  // N x O x ceil(H / s_h) x ceil(W / s_w)
  // Internal forms (int8_conv_transpose2d, int8_conv2d): an input already quantized (stride 1; x unused),
  // pixel (j, i) of channel k of image n at xq_channels[k] + n * xq_image_stride + j * xq_row_stride +
  // i * xq_pixel_stride; output pixel p
  // stored at dest[p] of planes out_plane floats apart.
  const int8_t* const* xq_channels = nullptr;
  int64_t xq_row_stride = 0, xq_image_stride = 0;
  // Bytes between a channel's consecutive pixels in a row (and xq_row_stride rows apart): 1, or the phase
  // count of int8_conv2d's interleaved phases (where channels 4g .. 4g + 3 at consecutive bytes, pixel
  // stride 4, make each 16 pixels of a group one 64-byte load).
  int64_t xq_pixel_stride = 1;
  const int32_t* dest = nullptr;
  int64_t out_plane = 0;
};

// What the int8 convs with a kernel share (int8_conv_transpose2d, int8_conv2d); the weight's layout is each
// op's.
struct Int8KernelArgs {
  const float* x = nullptr;  // N x C x H x W
  int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
  const int8_t* weight = nullptr;
  const int32_t* weight_sum = nullptr;
  const float* scale = nullptr;  // O
  const float* bias = nullptr;   // O
  int64_t out_channels = 0, kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  float input_scale_inv = 1.0f;
  int32_t zero_point = 0;
  bool relu = false;
  float* out = nullptr;
};

// int8 transposed conv whose output is exactly stride x its input (kernel = stride + 2 padding: BoxNet's
// k4 s2 p1 deconv), as stride_h x stride_w int8 convs, one per output phase (mobile_export/deconv.py's
// decomposition), each run by the int8_pointwise GEMM on the phase's tap-shifted rows of the input (ops.py,
// int8_conv_transpose2d_reference, is the definition):
//   q = the int8_pointwise quantization of x, zero_point in the padding
//   acc[o, s_h j + r_h, s_w i + r_w] = sum_{t, c} weight[r][o][t C + c] q[c, j + dy_t, i + dx_t]
//                                      - zero_point * weight_sum[r][o]
//   y = float(acc) * scale[o] + bias[o], then y > 0 ? y : 0 with relu
// Phase r = r_h s_w + r_w; its taps t = (ty, tx) row-major over the kernel rows k_y = r_h + p_h (mod s_h)
// ordered by input offset dy = (r_h + p_h - k_y) / s_h ascending (likewise x).
// weight: phases x O x (taps C), weight_sum: phases x O; out: N x O x H s_h x W s_w.
struct Int8DeconvArgs : Int8KernelArgs {};

// int8 conv (any kernel, stride and zero padding, groups 1) + per-channel affine, optional ReLU and an
// optional max pool: the ResNet stems (7 x 7 / 2 conv, BN, 3 x 3 / 2 max pool) in one op, instead of
// XNNPACK's pad, space-to-depth transpose, quantize, NHWC transpose, int8 IGEMM, int8 max pool, dequantize
// and NCHW transpose. Semantics (ops.py, int8_conv2d_reference, is the definition):
//   q        = the int8_pointwise quantization of x, zero_point in the conv's zero padding
//   acc[o,.] = sum_{c, ky, kx} weight[o][(c kh + ky) kw + kx] q[c, s_h i + ky - p_h, s_w j + kx - p_w]
//              - zero_point * weight_sum[o]                                 (exact int32)
//   z        = float(acc) * scale[o] + bias[o], then z > 0 ? z : 0 with relu
//   y        = max pool of z (kernel, stride, padding; padding never wins, as PyTorch's -inf), or z
// Run as one stride-1 conv on the s_h x s_w pixel phases of the quantized input (the space-to-depth of
// mobile_export/stems.py, here as the GEMM's tap-shifted channel pointers: a 7 x 7 / 2 conv of 3 channels
// is 4 x 4 taps x 4 phases x 3 = 192 GEMM channels, three whole 64-channel steps of the tile unit), by the
// int8_pointwise GEMM, in bands of output rows whose conv output (L2-sized) the max pool reads.
// weight: O x (C kh kw), a Conv2d weight's order; weight_sum: O; out: N x O x pooled height x pooled width.
struct Int8ConvArgs : Int8KernelArgs {
  int64_t pool_h = 1, pool_w = 1, pool_stride_h = 1, pool_stride_w = 1, pool_pad_h = 0, pool_pad_w = 0;
};

inline int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}
const char* check_conv(const Int8ConvArgs& a);
void int8_conv2d(const Int8ConvArgs& a, ParallelFor parallel);

// Taps of one phase along one dimension: input offsets d, ascending (kernel indices in k).
int64_t deconv_taps(int64_t kernel, int64_t stride, int64_t pad, int64_t phase, int64_t* d, int64_t* k);
const char* check_deconv(const Int8DeconvArgs& a);
void int8_conv_transpose2d(const Int8DeconvArgs& a, ParallelFor parallel);

inline int64_t pointwise_out_size(int64_t in, int64_t stride) { return (in + stride - 1) / stride; }

// The op's quantization of one value (the scalar and generic paths; the AMX path vectorises the same steps).
inline int8_t quantize_int8(float x, float input_scale_inv, int32_t zero_point) {
  float v = x * input_scale_inv;
  if (!(v == v)) v = 0.0f;
  v = v < -256.0f ? -256.0f : v > 256.0f ? 256.0f : v;
  // Round half to even by adding and removing 1.5 x 2^23 (exact for |v| <= 2^22 in the default rounding
  // mode; no libm call, so the generic quantize loop stays inline).
  const int32_t q = static_cast<int32_t>((v + 12582912.0f) - 12582912.0f) + zero_point;
  return static_cast<int8_t>(q < -128 ? -128 : q > 127 ? 127 : q);
}

// Null when usable, else a sentence saying what is wrong. check_quantization: the activation parameters both
// ops take (the zero point as the schema's int64, before it is narrowed).
const char* check_quantization(int64_t zero_point, double input_scale_inv);
const char* check_pointwise(const PointwiseArgs& a);

// Runs on the active path (bconv.h): AMX tiles where the CPU has them, else the ISA's generic GEMM.
void int8_pointwise(const PointwiseArgs& a, ParallelFor parallel);

}  // namespace bidrn

extern "C" {
// The kernel the op runs on the active path: "amx", "avx512_vnni", or the path's block GEMM ("avx2",
// "neon_dotprod", "neon", "scalar"; "avx512" without VNNI).
BIDRN_API const char* bidrn_int8_pointwise_kernel();
// int8_conv_transpose2d, one thread; null on success or an error sentence. shape8 = batch, in_channels,
// in_h, in_w, out_channels, kernel, stride, padding (one value for both dimensions each).
BIDRN_API const char* bidrn_int8_conv_transpose2d(const int64_t* shape8, const float* x, const int8_t* weight,
                                                  const int32_t* weight_sum, const float* scale, const float* bias,
                                                  float input_scale_inv, int32_t zero_point, int relu, float* out);
// int8_conv2d, one thread; null on success or an error sentence. shape16 = batch, in_channels, in_h, in_w,
// out_channels, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, pool_h (= pool_w), pool_stride (both),
// pool_pad (both), relu, 0.
BIDRN_API const char* bidrn_int8_conv2d(const int64_t* shape16, const float* x, const int8_t* weight,
                                        const int32_t* weight_sum, const float* scale, const float* bias,
                                        float input_scale_inv, int32_t zero_point, float* out);
// Same semantics, one thread; null on success or an error sentence. shape7 = batch, in_channels, in_h, in_w,
// out_channels, stride_h, stride_w.
BIDRN_API const char* bidrn_int8_pointwise(const int64_t* shape7, const float* x, const int8_t* weight,
                                           const int32_t* weight_sum, const float* scale, const float* bias,
                                           float input_scale_inv, int32_t zero_point, int relu, float* out);
}
