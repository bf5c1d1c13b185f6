// ExecuTorch adapter: the .out kernels of the bidrn:: ops declared in mobile_export/ops.py. Arguments are
// checked here and turned into a ConvShape; the work happens in bconv.cpp on ExecuTorch's threadpool,
// so `_unsafe_reset_threadpool(n)` (or the app's threadpool setting) sets our thread count too.
// Profiling scopes for ETDump (`bidrn bench profile`): the RAII hook is compiled in only with this macro,
// and does nothing unless the program was loaded with an event tracer.
#define ET_EVENT_TRACER_ENABLED 1
#include <executorch/runtime/core/event_tracer_hooks.h>
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <array>
#include <cstdio>
#include <optional>

#include "bconv.h"
#include "int8_pointwise.h"

namespace bidrn {
namespace {

using executorch::aten::ArrayRef;
using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::KernelRuntimeContext;

// One thread: a plain call (the threadpool's dispatch per call is measurable on small layers).
void et_parallel(int64_t n, void* context, void (*body)(void*, int64_t, int64_t)) {
  if (n <= 1 || executorch::extension::get_thread_count() <= 1) {
    body(context, 0, n);
    return;
  }
  executorch::extension::parallel_for(0, n, 1, [&](int64_t b, int64_t e) { body(context, b, e); });
}

bool resize(Tensor& out, std::initializer_list<int64_t> sizes) {
  std::array<executorch::aten::SizesType, 8> s{};
  size_t i = 0;
  for (int64_t v : sizes) s[i++] = static_cast<executorch::aten::SizesType>(v);
  return executorch::runtime::resize_tensor(out, {s.data(), i}) == executorch::runtime::Error::Ok;
}

// The schema's trailing epilogue arguments (mobile_export/ops.py), shared by the three layer ops.
struct Extra {
  int64_t in_offset, residual_offset, residual_channels;
  bool clamp_residual;
  const std::optional<Tensor>& partial;
  const std::optional<Tensor>& shortcut;
  int64_t residual_pool = 1;
  int64_t branches = 1;  // binary_conv2d only: FDR's k branches in one op
};

// Shared by the three layer ops: epilogue tensors, input form and output allocation. `spatial` is false
// for Linear, whose tensors have no H, W dims.
Tensor& run(KernelRuntimeContext& ctx, ConvShape s, bool spatial, const Tensor& x, const Tensor& weight,
            const Tensor& scale, const Tensor& bias, const std::optional<Tensor>& rprelu, int64_t output,
            const std::optional<Tensor>& residual, const std::optional<Tensor>& post, const Extra& extra,
            Tensor& out) {
  const int64_t k = extra.branches;
  ET_KERNEL_CHECK_MSG(ctx, k >= 1 && scale.numel() % k == 0, InvalidArgument, out,
                      "branches must be >= 1 and divide the number of scales");
  ET_KERNEL_CHECK_MSG(ctx, k == 1 || (s.kernel_h == 1 && s.kernel_w == 1 && s.pad_h == 0 && s.pad_w == 0 &&
                                      output == 0 && x.scalar_type() == ScalarType::Float &&
                                      !extra.partial.has_value()),
                      InvalidArgument, out,
                      "branches > 1 (FDR) needs a 1x1 conv without padding, a float input and output, and no partial");
  const int64_t O = scale.numel() / k;
  s.out_channels = O;
  ET_KERNEL_CHECK_MSG(ctx, output >= 0 && output <= 2, InvalidArgument, out,
                      "output must be 0 (float), 1 (int32 accumulator) or 2 (packed signs), got %lld",
                      static_cast<long long>(output));
  ET_KERNEL_CHECK_MSG(ctx, scale.scalar_type() == ScalarType::Float && bias.scalar_type() == ScalarType::Float &&
                               bias.numel() == k * O, InvalidArgument, out,
                      "scale and bias must be float32 with one value per output channel (of every branch)");
  ET_KERNEL_CHECK_MSG(ctx, !rprelu.has_value() || (rprelu->scalar_type() == ScalarType::Float &&
                                                   rprelu->numel() == 3 * k * O),
                      InvalidArgument, out, "rprelu must be float32 3 x out_channels (beta, gamma, zeta)");
  ET_KERNEL_CHECK_MSG(ctx, !post.has_value() || (post->scalar_type() == ScalarType::Float && post->numel() == 2 * O),
                      InvalidArgument, out, "post must be float32 2 x out_channels (scale, bias)");
  const int64_t plane = s.out_h * s.out_w;
  const int64_t pool = extra.residual_pool;
  ET_KERNEL_CHECK_MSG(ctx, pool == 1 || (pool == 2 && spatial && !s.transposed && k == 1 && residual.has_value() &&
                                         residual->dim() == 4 && residual->size(2) == 2 * s.out_h &&
                                         residual->size(3) == 2 * s.out_w),
                      InvalidArgument, out,
                      "residual_pool must be 1, or 2 for a conv2d whose residual is twice the output's height and "
                      "width");
  const int64_t res_plane = plane * pool * pool;
  int64_t residual_channels = 0, residual_total = 0;
  if (residual.has_value()) {
    residual_total = residual->dim() > 1 ? residual->size(1) : 0;
    residual_channels = extra.residual_channels ? extra.residual_channels
                                                : (residual_total - extra.residual_offset) / k;
    ET_KERNEL_CHECK_MSG(ctx, residual->scalar_type() == ScalarType::Float && output != 1 && residual_channels > 0 &&
                                 extra.residual_offset >= 0 &&
                                 extra.residual_offset + k * residual_channels <= residual_total &&
                                 O % residual_channels == 0 && residual->size(0) == s.batch &&
                                 residual->numel() == s.batch * residual_total * res_plane,
                        InvalidArgument, out,
                        "residual must be float32 N x C x out_h x out_w, read from channel residual_offset for "
                        "R = residual_channels channels (R dividing out_channels), with a float or packed output");
  }
  for (const std::optional<Tensor>* t : {&extra.partial, &extra.shortcut}) {
    ET_KERNEL_CHECK_MSG(ctx, !t->has_value() || ((*t)->scalar_type() == ScalarType::Float && output != 1 &&
                                                 (*t)->numel() == s.batch * O * plane),
                        InvalidArgument, out,
                        "partial and shortcut must be float32 shaped like the float output, with a float or packed "
                        "output");
  }
  const char* err = check_shape(s);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s", err ? err : "");
  ET_KERNEL_CHECK_MSG(ctx, weight.scalar_type() == ScalarType::Long && weight.numel() == k * weight_words(s),
                      InvalidArgument, out, "weight must be int64 with %lld packed words (got %lld)",
                      static_cast<long long>(k * weight_words(s)), static_cast<long long>(weight.numel()));
  bool ok;
  ScalarType want;
  if (output == 2) {
    want = ScalarType::Long;
    ok = spatial ? resize(out, {s.batch, s.out_h, s.out_w, words_for(O)}) : resize(out, {s.batch, words_for(O)});
  } else {
    want = output == 1 ? ScalarType::Int : ScalarType::Float;
    ok = spatial ? resize(out, {s.batch, O, s.out_h, s.out_w}) : resize(out, {s.batch, O});
  }
  ET_KERNEL_CHECK_MSG(ctx, ok && out.scalar_type() == want && out.numel() == s.batch * plane * (output == 2 ? words_for(O) : O),
                      InvalidArgument, out, "out has the wrong dtype or size for output kind %lld",
                      static_cast<long long>(output));
  ConvArgs args;
  if (x.scalar_type() == ScalarType::Float) {
    const int64_t in_plane = s.in_h * s.in_w;
    ET_KERNEL_CHECK_MSG(ctx, x.size(1) >= extra.in_offset + k * s.in_channels, InvalidArgument, out,
                        "x has %lld channels; in_offset + branches x in_channels = %lld",
                        static_cast<long long>(x.size(1)), static_cast<long long>(extra.in_offset + k * s.in_channels));
    args.x_float = x.const_data_ptr<float>() + extra.in_offset * in_plane;
    args.x_batch_stride = x.size(1) * in_plane;
    args.branches = k;
  } else {
    ET_KERNEL_CHECK_MSG(ctx, x.scalar_type() == ScalarType::Long && extra.in_offset == 0, InvalidArgument, out,
                        "x must be float32 (NCHW) or int64 packed signs (NHWC words, read whole: in_offset 0)");
    args.x_packed = reinterpret_cast<const uint64_t*>(x.const_data_ptr<int64_t>());
  }
  args.weight = reinterpret_cast<const uint64_t*>(weight.const_data_ptr<int64_t>());
  args.out = out.mutable_data_ptr();
  args.output = static_cast<Output>(output);
  Epilogue ep;
  ep.scale = scale.const_data_ptr<float>(), ep.bias = bias.const_data_ptr<float>();
  ep.rprelu = rprelu.has_value() ? rprelu->const_data_ptr<float>() : nullptr;
  if (residual.has_value()) {
    ep.residual = residual->const_data_ptr<float>() + extra.residual_offset * res_plane;
    ep.residual_channels = residual_channels, ep.residual_batch_stride = residual_total * res_plane;
    ep.residual_pool = pool;
    ep.residual_w = pool == 2 ? residual->size(3) : 0;
    ep.clamp_residual = extra.clamp_residual;
  }
  ep.post = post.has_value() ? post->const_data_ptr<float>() : nullptr;
  ep.partial = extra.partial.has_value() ? extra.partial->const_data_ptr<float>() : nullptr;
  ep.shortcut = extra.shortcut.has_value() ? extra.shortcut->const_data_ptr<float>() : nullptr;
  // Event name: the op and its geometry, so a profile tells the layers apart (the tracer copies it).
  char name[128];
  char in_desc[48];  // input channels, "k x C" for FDR's branches
  if (k > 1) {
    std::snprintf(in_desc, sizeof(in_desc), "%lldx%lld", static_cast<long long>(k), static_cast<long long>(s.in_channels));
  } else {
    std::snprintf(in_desc, sizeof(in_desc), "%lld", static_cast<long long>(s.in_channels));
  }
  std::snprintf(name, sizeof(name), "bidrn::%s %lldx%lld/%lld %s->%lld %lldx%lld%s%s%s",
                !spatial ? "binary_linear" : s.transposed ? "binary_conv_transpose2d" : "binary_conv2d",
                static_cast<long long>(s.kernel_h), static_cast<long long>(s.kernel_w),
                static_cast<long long>(s.stride_h), in_desc,
                static_cast<long long>(O), static_cast<long long>(s.in_h), static_cast<long long>(s.in_w),
                !residual.has_value() ? "" : pool == 2 ? " +pooled res" : " +res", ep.partial ? " +partial" : "", ep.shortcut ? " +shortcut" : "");
  executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(), name);
  binary_conv(s, ep, args, et_parallel);
  return out;
}

// x: float N x C x H x W, or int64 N x H x W x words(C).
bool spatial_input(const Tensor& x, int64_t in_channels, int64_t in_offset, ConvShape& s) {
  if (x.dim() != 4) return false;
  s.batch = x.size(0);
  if (x.scalar_type() == ScalarType::Long) {
    s.in_h = x.size(1), s.in_w = x.size(2);
    return x.size(3) == words_for(in_channels);
  }
  s.in_h = x.size(2), s.in_w = x.size(3);
  return in_offset >= 0 && x.size(1) >= in_offset + in_channels;
}

#define BIDRN_EXTRA_PARAMS                                                                                   \
  int64_t in_offset, int64_t residual_offset, int64_t residual_channels, bool clamp_residual,               \
      const std::optional<Tensor>&partial, const std::optional<Tensor>&shortcut, int64_t residual_pool
#define BIDRN_EXTRA \
  Extra{in_offset, residual_offset, residual_channels, clamp_residual, partial, shortcut, residual_pool}
#define BIDRN_EXTRA_BRANCHES \
  Extra{in_offset, residual_offset, residual_channels, clamp_residual, partial, shortcut, residual_pool, branches}

Tensor& binary_conv2d_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& weight, const Tensor& scale,
                          const Tensor& bias, const std::optional<Tensor>& rprelu, int64_t in_channels,
                          ArrayRef<int64_t> kernel_size, ArrayRef<int64_t> stride, ArrayRef<int64_t> padding,
                          int64_t output, const std::optional<Tensor>& residual, const std::optional<Tensor>& post,
                          BIDRN_EXTRA_PARAMS, int64_t branches, Tensor& out) {
  ConvShape s;
  s.in_channels = in_channels;
  ET_KERNEL_CHECK_MSG(ctx, kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2, InvalidArgument,
                      out, "kernel_size, stride and padding must have two values each");
  ET_KERNEL_CHECK_MSG(ctx, spatial_input(x, in_channels, in_offset, s), InvalidArgument, out,
                      "x must be float32 N x C x H x W with C >= in_offset + in_channels, or int64 N x H x W x "
                      "ceil(in_channels / 64)");
  s.kernel_h = kernel_size[0], s.kernel_w = kernel_size[1], s.stride_h = stride[0], s.stride_w = stride[1];
  s.pad_h = padding[0], s.pad_w = padding[1];
  s.out_h = (s.in_h + 2 * s.pad_h - s.kernel_h) / std::max<int64_t>(s.stride_h, 1) + 1;
  s.out_w = (s.in_w + 2 * s.pad_w - s.kernel_w) / std::max<int64_t>(s.stride_w, 1) + 1;
  return run(ctx, s, true, x, weight, scale, bias, rprelu, output, residual, post, BIDRN_EXTRA_BRANCHES, out);
}

Tensor& binary_conv_transpose2d_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& weight,
                                    const Tensor& scale, const Tensor& bias, const std::optional<Tensor>& rprelu,
                                    int64_t in_channels, ArrayRef<int64_t> kernel_size, ArrayRef<int64_t> stride,
                                    ArrayRef<int64_t> padding, ArrayRef<int64_t> output_padding, int64_t output,
                                    const std::optional<Tensor>& residual, const std::optional<Tensor>& post,
                                    BIDRN_EXTRA_PARAMS, Tensor& out) {
  ConvShape s;
  s.in_channels = in_channels;
  s.transposed = true;
  ET_KERNEL_CHECK_MSG(ctx, kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 &&
                               output_padding.size() == 2, InvalidArgument, out,
                      "kernel_size, stride, padding and output_padding must have two values each");
  ET_KERNEL_CHECK_MSG(ctx, spatial_input(x, in_channels, in_offset, s), InvalidArgument, out,
                      "x must be float32 N x C x H x W with C >= in_offset + in_channels, or int64 N x H x W x "
                      "ceil(in_channels / 64)");
  s.kernel_h = kernel_size[0], s.kernel_w = kernel_size[1], s.stride_h = stride[0], s.stride_w = stride[1];
  s.pad_h = padding[0], s.pad_w = padding[1];
  s.out_h = (s.in_h - 1) * s.stride_h - 2 * s.pad_h + s.kernel_h + output_padding[0];
  s.out_w = (s.in_w - 1) * s.stride_w - 2 * s.pad_w + s.kernel_w + output_padding[1];
  return run(ctx, s, true, x, weight, scale, bias, rprelu, output, residual, post, BIDRN_EXTRA, out);
}

Tensor& binary_linear_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& weight, const Tensor& scale,
                          const Tensor& bias, const std::optional<Tensor>& rprelu, int64_t in_features,
                          int64_t output, const std::optional<Tensor>& residual, const std::optional<Tensor>& post,
                          BIDRN_EXTRA_PARAMS, Tensor& out) {
  ConvShape s;
  s.in_channels = in_features;
  const bool packed = x.scalar_type() == ScalarType::Long;
  ET_KERNEL_CHECK_MSG(ctx, x.dim() == 2 && (packed ? x.size(1) == words_for(in_features)
                                                   : in_offset >= 0 && x.size(1) >= in_offset + in_features),
                      InvalidArgument, out,
                      "x must be float32 B x F with F >= in_offset + in_features, or int64 B x ceil(in_features / 64)");
  s.batch = x.size(0);
  return run(ctx, s, false, x, weight, scale, bias, rprelu, output, residual, post, BIDRN_EXTRA, out);
}

Tensor& pack_signs_out(KernelRuntimeContext& ctx, const Tensor& x, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, x.scalar_type() == ScalarType::Float && (x.dim() == 4 || x.dim() == 2),
                      InvalidArgument, out, "x must be float32 N x C x H x W or B x F");
  const int64_t n = x.size(0), c = x.size(1), h = x.dim() == 4 ? x.size(2) : 1, w = x.dim() == 4 ? x.size(3) : 1;
  const bool ok = x.dim() == 4 ? resize(out, {n, h, w, words_for(c)}) : resize(out, {n, words_for(c)});
  ET_KERNEL_CHECK_MSG(ctx, ok && out.scalar_type() == ScalarType::Long, InvalidArgument, out,
                      "out must be int64 sized N x H x W x ceil(C / 64)");
  uint64_t* dst = reinterpret_cast<uint64_t*>(out.mutable_data_ptr<int64_t>());
  for (int64_t i = 0; i < n; ++i) pack_signs(x.const_data_ptr<float>() + i * c * h * w, c, h * w, dst + i * h * w * words_for(c));
  return out;
}

// Every stride-th pixel of each plane: the input of a block residual's 1 x 1 strided conv, taken before the
// XNNPACK delegate so that its int8 convert and NHWC transpose go over a quarter of the pixels (export.py,
// SubsampledPointwise). Only the rows read are touched.
Tensor& subsample_out(KernelRuntimeContext& ctx, const Tensor& x, ArrayRef<int64_t> stride, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, x.scalar_type() == ScalarType::Float && x.dim() == 4 && stride.size() == 2 &&
                               stride[0] >= 1 && stride[1] >= 1, InvalidArgument, out,
                      "x must be float32 N x C x H x W and stride two values >= 1");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), sh = stride[0], sw = stride[1];
  const int64_t oh = (h + sh - 1) / sh, ow = (w + sw - 1) / sw;
  ET_KERNEL_CHECK_MSG(ctx, resize(out, {n, c, oh, ow}) && out.scalar_type() == ScalarType::Float, InvalidArgument,
                      out, "out must be float32 N x C x ceil(H / stride) x ceil(W / stride)");
  executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(), "bidrn::subsample");
  const float* src = x.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  for (int64_t p = 0; p < n * c; ++p) {
    const float* plane = src + p * h * w;
    for (int64_t i = 0; i < oh; ++i, dst += ow) {
      const float* row = plane + i * sh * w;
      for (int64_t j = 0; j < ow; ++j) dst[j] = row[j * sw];
    }
  }
  return out;
}


// The int8 block residual (int8_pointwise.h): x float32 N x C x H x W, weight int8 O x C, weight_sum int32 O,
// scale and bias float32 O.
Tensor& int8_pointwise_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& weight, const Tensor& weight_sum,
                           const Tensor& scale, const Tensor& bias, double input_scale_inv, int64_t input_zero_point,
                           ArrayRef<int64_t> stride, bool relu, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, x.scalar_type() == ScalarType::Float && x.dim() == 4, InvalidArgument, out,
                      "x must be float32 N x C x H x W");
  ET_KERNEL_CHECK_MSG(ctx, weight.scalar_type() == ScalarType::Char && weight.dim() == 2 && weight.size(1) == x.size(1),
                      InvalidArgument, out, "weight must be int8 out_channels x C (C = %lld, x's channels)",
                      static_cast<long long>(x.size(1)));
  const int64_t O = weight.size(0);
  ET_KERNEL_CHECK_MSG(ctx, weight_sum.scalar_type() == ScalarType::Int && weight_sum.numel() == O &&
                               scale.scalar_type() == ScalarType::Float && scale.numel() == O &&
                               bias.scalar_type() == ScalarType::Float && bias.numel() == O,
                      InvalidArgument, out,
                      "weight_sum must be int32 and scale and bias float32, one value per output channel");
  ET_KERNEL_CHECK_MSG(ctx, stride.size() == 2, InvalidArgument, out, "stride must have two values");
  PointwiseArgs a;
  a.x = x.const_data_ptr<float>();
  a.batch = x.size(0), a.in_channels = x.size(1), a.in_h = x.size(2), a.in_w = x.size(3);
  a.stride_h = stride[0], a.stride_w = stride[1];
  a.weight = weight.const_data_ptr<int8_t>(), a.weight_sum = weight_sum.const_data_ptr<int32_t>();
  a.scale = scale.const_data_ptr<float>(), a.bias = bias.const_data_ptr<float>(), a.out_channels = O;
  const char* err = check_quantization(input_zero_point, input_scale_inv);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s", err ? err : "");
  a.input_scale_inv = static_cast<float>(input_scale_inv), a.zero_point = static_cast<int32_t>(input_zero_point);
  a.relu = relu;
  err = check_pointwise(a);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s", err ? err : "");
  const int64_t oh = pointwise_out_size(a.in_h, a.stride_h), ow = pointwise_out_size(a.in_w, a.stride_w);
  ET_KERNEL_CHECK_MSG(ctx, resize(out, {a.batch, O, oh, ow}) && out.scalar_type() == ScalarType::Float,
                      InvalidArgument, out, "out must be float32 N x out_channels x ceil(H / s_h) x ceil(W / s_w)");
  a.out = out.mutable_data_ptr<float>();
  char name[96];
  std::snprintf(name, sizeof(name), relu ? "bidrn::int8_pointwise %lld->%lld %lldx%lld/%lld +relu"
                                        : "bidrn::int8_pointwise %lld->%lld %lldx%lld/%lld",
                static_cast<long long>(a.in_channels), static_cast<long long>(O), static_cast<long long>(a.in_h),
                static_cast<long long>(a.in_w), static_cast<long long>(a.stride_h));
  executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(), name);
  int8_pointwise(a, et_parallel);
  return out;
}

// int8 transposed conv (int8_pointwise.h): x float32 N x C x H x W, weight int8 phases*O x taps*C,
// weight_sum int32 phases*O, scale and bias float32 O.
Tensor& int8_conv_transpose2d_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& weight,
                                  const Tensor& weight_sum, const Tensor& scale, const Tensor& bias,
                                  double input_scale_inv, int64_t input_zero_point, ArrayRef<int64_t> kernel_size,
                                  ArrayRef<int64_t> stride, ArrayRef<int64_t> padding, bool relu, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, x.scalar_type() == ScalarType::Float && x.dim() == 4, InvalidArgument, out,
                      "x must be float32 N x C x H x W");
  ET_KERNEL_CHECK_MSG(ctx, kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2, InvalidArgument,
                      out, "kernel_size, stride and padding must have two values each");
  Int8DeconvArgs a;
  a.x = x.const_data_ptr<float>();
  a.batch = x.size(0), a.in_channels = x.size(1), a.in_h = x.size(2), a.in_w = x.size(3);
  a.kernel_h = kernel_size[0], a.kernel_w = kernel_size[1], a.stride_h = stride[0], a.stride_w = stride[1];
  a.pad_h = padding[0], a.pad_w = padding[1];
  a.out_channels = scale.numel();
  const char* err = check_quantization(input_zero_point, input_scale_inv);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s", err ? err : "");
  a.input_scale_inv = static_cast<float>(input_scale_inv), a.zero_point = static_cast<int32_t>(input_zero_point);
  a.relu = relu;
  err = check_deconv(a);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s", err ? err : "");
  int64_t d[64], k[64];
  const int64_t taps = deconv_taps(a.kernel_h, a.stride_h, a.pad_h, 0, d, k) *
                       deconv_taps(a.kernel_w, a.stride_w, a.pad_w, 0, d, k);
  const int64_t phases = a.stride_h * a.stride_w, O = a.out_channels;
  ET_KERNEL_CHECK_MSG(ctx, weight.scalar_type() == ScalarType::Char && weight.dim() == 2 &&
                               weight.size(0) == phases * O && weight.size(1) == taps * a.in_channels &&
                               weight_sum.scalar_type() == ScalarType::Int && weight_sum.numel() == phases * O &&
                               scale.scalar_type() == ScalarType::Float && bias.scalar_type() == ScalarType::Float &&
                               bias.numel() == O,
                      InvalidArgument, out,
                      "weight must be int8 (phases x O) x (taps x C) = %lld x %lld, weight_sum int32 phases x O, "
                      "scale and bias float32 O", static_cast<long long>(phases * O),
                      static_cast<long long>(taps * a.in_channels));
  a.weight = weight.const_data_ptr<int8_t>(), a.weight_sum = weight_sum.const_data_ptr<int32_t>();
  a.scale = scale.const_data_ptr<float>(), a.bias = bias.const_data_ptr<float>();
  ET_KERNEL_CHECK_MSG(ctx, resize(out, {a.batch, O, a.in_h * a.stride_h, a.in_w * a.stride_w}) &&
                               out.scalar_type() == ScalarType::Float,
                      InvalidArgument, out, "out must be float32 N x O x (H stride_h) x (W stride_w)");
  a.out = out.mutable_data_ptr<float>();
  char name[112];
  std::snprintf(name, sizeof(name), "bidrn::int8_conv_transpose2d %lldx%lld/%lld %lld->%lld %lldx%lld%s",
                static_cast<long long>(a.kernel_h), static_cast<long long>(a.kernel_w),
                static_cast<long long>(a.stride_h), static_cast<long long>(a.in_channels), static_cast<long long>(O),
                static_cast<long long>(a.in_h), static_cast<long long>(a.in_w), relu ? " +relu" : "");
  executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(), name);
  int8_conv_transpose2d(a, et_parallel);
  return out;
}

// int8 conv + max pool (int8_pointwise.h, int8_conv2d: the stems): x float32 N x C x H x W, weight int8
// O x (C kh kw), weight_sum int32 O, scale and bias float32 O.
Tensor& int8_conv2d_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& weight, const Tensor& weight_sum,
                        const Tensor& scale, const Tensor& bias, double input_scale_inv, int64_t input_zero_point,
                        ArrayRef<int64_t> kernel_size, ArrayRef<int64_t> stride, ArrayRef<int64_t> padding, bool relu,
                        ArrayRef<int64_t> pool_kernel, ArrayRef<int64_t> pool_stride, ArrayRef<int64_t> pool_padding,
                        Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, x.scalar_type() == ScalarType::Float && x.dim() == 4, InvalidArgument, out,
                      "x must be float32 N x C x H x W");
  ET_KERNEL_CHECK_MSG(ctx, kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 &&
                               pool_kernel.size() == 2 && pool_stride.size() == 2 && pool_padding.size() == 2,
                      InvalidArgument, out, "kernel_size, stride, padding and the pool's three must have two values each");
  Int8ConvArgs a;
  a.x = x.const_data_ptr<float>();
  a.batch = x.size(0), a.in_channels = x.size(1), a.in_h = x.size(2), a.in_w = x.size(3);
  a.kernel_h = kernel_size[0], a.kernel_w = kernel_size[1], a.stride_h = stride[0], a.stride_w = stride[1];
  a.pad_h = padding[0], a.pad_w = padding[1];
  a.pool_h = pool_kernel[0], a.pool_w = pool_kernel[1], a.pool_stride_h = pool_stride[0];
  a.pool_stride_w = pool_stride[1], a.pool_pad_h = pool_padding[0], a.pool_pad_w = pool_padding[1];
  const int64_t O = weight.dim() == 2 ? weight.size(0) : 0;
  ET_KERNEL_CHECK_MSG(ctx, weight.scalar_type() == ScalarType::Char && weight.dim() == 2 &&
                               weight.size(1) == a.in_channels * a.kernel_h * a.kernel_w &&
                               weight_sum.scalar_type() == ScalarType::Int && weight_sum.numel() == O &&
                               scale.scalar_type() == ScalarType::Float && scale.numel() == O &&
                               bias.scalar_type() == ScalarType::Float && bias.numel() == O,
                      InvalidArgument, out,
                      "weight must be int8 out_channels x (C kh kw = %lld), weight_sum int32, scale and bias "
                      "float32, one value per output channel", static_cast<long long>(a.in_channels * a.kernel_h * a.kernel_w));
  a.out_channels = O;
  a.weight = weight.const_data_ptr<int8_t>(), a.weight_sum = weight_sum.const_data_ptr<int32_t>();
  a.scale = scale.const_data_ptr<float>(), a.bias = bias.const_data_ptr<float>();
  const char* err = check_quantization(input_zero_point, input_scale_inv);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s", err ? err : "");
  a.input_scale_inv = static_cast<float>(input_scale_inv), a.zero_point = static_cast<int32_t>(input_zero_point);
  a.relu = relu;
  err = check_conv(a);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s", err ? err : "");
  int64_t oh = conv_out_size(a.in_h, a.kernel_h, a.stride_h, a.pad_h);
  int64_t ow = conv_out_size(a.in_w, a.kernel_w, a.stride_w, a.pad_w);
  if (a.pool_h > 1 || a.pool_w > 1 || a.pool_stride_h > 1 || a.pool_stride_w > 1) {
    oh = conv_out_size(oh, a.pool_h, a.pool_stride_h, a.pool_pad_h);
    ow = conv_out_size(ow, a.pool_w, a.pool_stride_w, a.pool_pad_w);
  }
  ET_KERNEL_CHECK_MSG(ctx, resize(out, {a.batch, O, oh, ow}) && out.scalar_type() == ScalarType::Float,
                      InvalidArgument, out, "out must be float32 N x out_channels x pooled height x pooled width");
  a.out = out.mutable_data_ptr<float>();
  char name[128];
  std::snprintf(name, sizeof(name), "bidrn::int8_conv2d %lldx%lld/%lld %lld->%lld %lldx%lld%s +maxpool %lldx%lld/%lld",
                static_cast<long long>(a.kernel_h), static_cast<long long>(a.kernel_w),
                static_cast<long long>(a.stride_h), static_cast<long long>(a.in_channels), static_cast<long long>(O),
                static_cast<long long>(a.in_h), static_cast<long long>(a.in_w), relu ? " +relu" : "",
                static_cast<long long>(a.pool_h), static_cast<long long>(a.pool_w),
                static_cast<long long>(a.pool_stride_h));
  executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(), name);
  int8_conv2d(a, et_parallel);
  return out;
}

}  // namespace
}  // namespace bidrn

// Threads the ops will use: ExecuTorch's threadpool size as this library sees it (benchmarks report it).
extern "C" BIDRN_API int64_t bidrn_kernels_thread_count() { return executorch::extension::get_thread_count(); }

EXECUTORCH_LIBRARY(bidrn, "binary_conv2d.out", bidrn::binary_conv2d_out);
EXECUTORCH_LIBRARY(bidrn, "binary_conv_transpose2d.out", bidrn::binary_conv_transpose2d_out);
EXECUTORCH_LIBRARY(bidrn, "binary_linear.out", bidrn::binary_linear_out);
EXECUTORCH_LIBRARY(bidrn, "pack_signs.out", bidrn::pack_signs_out);
EXECUTORCH_LIBRARY(bidrn, "subsample.out", bidrn::subsample_out);
EXECUTORCH_LIBRARY(bidrn, "int8_pointwise.out", bidrn::int8_pointwise_out);
EXECUTORCH_LIBRARY(bidrn, "int8_conv_transpose2d.out", bidrn::int8_conv_transpose2d_out);
EXECUTORCH_LIBRARY(bidrn, "int8_conv2d.out", bidrn::int8_conv2d_out);
