// Binary (1-bit weights, 1-bit activations) convolution engine, free of any ExecuTorch dependency so the
// same sources build into the ExecuTorch kernel library and into the stand-alone self-test run under qemu.
// Bit layout, padding correction and tiling are explained in docs/kernels.md.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bidrn {

// What the conv writes: float NCHW (the model's normal case), the raw int32 accumulator NCHW (bit-exact
// tests), or the signs of the float result packed for the next binary layer (NHWC words).
enum class Output : int { kFloat = 0, kAccumulator = 1, kPackedSigns = 2 };

// Geometry of one binary layer. A Linear is a 1x1 conv on a 1x1 image; a transposed conv is run as
// stride_h * stride_w ordinary convs, one per output phase (see docs/kernels.md).
struct ConvShape {
  int64_t batch = 1, in_channels = 0, in_h = 1, in_w = 1;
  int64_t out_channels = 0, out_h = 1, out_w = 1;
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  bool transposed = false;
};

// Per output channel: y = scale * acc + bias, then optionally RPReLU (eq. 6) with rprelu = [beta; gamma; zeta],
// then optionally y = y + r (r the residual, Hardtanh'ed first when clamp_residual), then optionally
// y = partial + y, then optionally y = y * post_scale + post_bias, then optionally y = y + shortcut: an LCR
// module's BN(RPReLU(bconv(a_f)) + a_f), an FDR branch's running sum and a block's residual add in one pass,
// each step one rounding as PyTorch does it.
struct Epilogue {
  const float* scale = nullptr;
  const float* bias = nullptr;
  const float* rprelu = nullptr;    // 3 x out_channels, or null
  const float* residual = nullptr;  // image 0's first residual channel (NCHW planes), or null
  int64_t residual_channels = 0;    // output channel o adds residual channel o % residual_channels
  const float* post = nullptr;      // 2 x out_channels: [post_scale; post_bias], or null
  int64_t residual_batch_stride = 0;  // floats between images of the residual; 0 = residual_channels planes
  bool clamp_residual = false;        // add Hardtanh(r) = min(max(r, -1), 1) instead of r
  const float* partial = nullptr;     // N x out_channels x out_h x out_w, added before the post affine
  const float* shortcut = nullptr;    // N x out_channels x out_h x out_w, added after the post affine
  // 2: the residual is at twice the output's size and each output adds the 2 x 2 average of (Hardtanh'ed)
  // residual values (DScR's AvgPool(a_f), eq. 8), summed row by row and divided by 4 as ATen's avg_pool2d.
  int64_t residual_pool = 1;
  int64_t residual_w = 0;  // residual plane width (residual_pool 2); its plane is residual_pool^2 output planes
};

// Exactly one of x_float (NCHW float32) and x_packed (NHWC, words_for(in_channels) uint64 per pixel) is set.
// x_float points at the first channel read; x_batch_stride (floats between images, 0 = in_channels planes)
// lets a layer read a channel range of a wider tensor.
struct ConvArgs {
  const float* x_float = nullptr;
  const uint64_t* x_packed = nullptr;
  const uint64_t* weight = nullptr;  // packed by mobile_export.ops (layout in docs/kernels.md)
  void* out = nullptr;
  Output output = Output::kFloat;
  int64_t x_batch_stride = 0;
  // FDR (eq. 10) in one call: branch i is a 1x1 conv of the in_channels from channel i * in_channels on,
  // with weight rows, scale, bias and RPReLU of branch i (stacked: k x out_channels each; rprelu 3 x k O)
  // and residual channels from i * residual_channels; out = b_0, then out = out + b_i, then post and
  // shortcut. Needs a 1x1 conv without padding and float input and output.
  int64_t branches = 1;
};

// Runs body(context, begin, end) over [0, n), possibly on several threads; the ExecuTorch adapter passes
// ExecuTorch's threadpool, the self-test a plain loop.
using ParallelFor = void (*)(int64_t n, void* context, void (*body)(void*, int64_t, int64_t));

// The ParallelFor that runs the whole range on the calling thread: the C API and self-test, and work items
// that are themselves one thread's.
inline void serial_for(int64_t n, void* context, void (*body)(void*, int64_t, int64_t)) { body(context, 0, n); }

constexpr int64_t kLanes = 8;  // pixels interleaved per block of the im2col buffer (one zmm of 64-bit words)

inline int64_t words_for(int64_t channels) { return (channels + 63) / 64; }

// Validates the shape; returns null when usable, else a sentence saying what is wrong.
const char* check_shape(const ConvShape& s);

// Words of the packed weight: out_channels x kernel_h*kernel_w x words_for(in_channels).
inline int64_t weight_words(const ConvShape& s) {
  return s.out_channels * s.kernel_h * s.kernel_w * words_for(s.in_channels);
}

// Packs sign bits (bit = 1 where NOT x >= 0, i.e. sign -1, NaN included) of a C x HW float plane into
// HW x words_for(C) words; padding bits of the last word are 0.
void pack_signs(const float* x, int64_t channels, int64_t pixels, uint64_t* out);

void binary_conv(const ConvShape& shape, const Epilogue& epilogue, const ConvArgs& args, ParallelFor parallel);

// Kernel paths. best_path() takes the first of kPathsBestFirst the CPU supports unless overridden. kAmx runs
// the convs whose time is the count (amx_handles: 3 x 3 convs of 64+ channels on 512+ output positions) on
// the AMX tile unit (bconv_amx.cpp) and everything else on the AVX-512 kernels.
enum class Path : int { kAvx512 = 0, kAvx2 = 1, kNeonDot = 2, kNeon = 3, kScalar = 4, kAmx = 5 };
constexpr Path kPathsBestFirst[] = {Path::kAmx, Path::kAvx512, Path::kAvx2, Path::kNeonDot, Path::kNeon, Path::kScalar};
const char* path_name(Path p);
bool path_supported(Path p);  // compiled in and supported by this CPU
Path best_path();
Path active_path();
bool set_active_path(Path p);  // false (and no change) when unsupported

}  // namespace bidrn

// C entry points for tests and benchmarks (ctypes); names are stable. The library is built with hidden
// visibility, so these and the ExecuTorch registrations are all it exports.
#define BIDRN_API __attribute__((visibility("default")))
extern "C" {
BIDRN_API const char* bidrn_kernels_active_path();
BIDRN_API int bidrn_kernels_set_path(const char* name);  // 1 on success
BIDRN_API const char* bidrn_kernels_supported_paths();   // comma-separated, best first
// Same semantics as the ops, one thread; returns null on success or an error sentence. rprelu may be null.
// shape13 = batch, in_channels, in_h, in_w, out_channels, out_h, out_w, kernel_h, kernel_w, stride_h,
// stride_w, pad_h, pad_w.
// 1 when the `amx` path runs this conv (shape13 as below, a transposed conv when `transposed` is 1; float
// output, no streams) on the tile unit rather than on the AVX-512 kernels; 0 otherwise, and on builds or
// CPUs without it.
BIDRN_API int bidrn_kernels_amx_takes(const int64_t* shape13, int transposed);
// Probes of the core this thread runs on, for the benchmarks' reports (a shared VM's minutes differ), each
// the best of three loops: the clock in GHz from a chain of `adds` dependent integer adds (one cycle each);
// the integer adds per ns of `adds` in eight independent chains (the ALUs' throughput, which a busy SMT
// sibling on the same core halves while the clock stays); ns per tile multiply (`tdpbssd`) of a
// register-only loop of `multiplies`, or -1 where the `amx` path is not available.
BIDRN_API double bidrn_probe_clock_ghz(int64_t adds);
BIDRN_API double bidrn_probe_adds_per_ns(int64_t adds);
BIDRN_API double bidrn_probe_tile_ns(int64_t multiplies);
// The popcount ceiling of kernel path `path` on this core: binary MACs per ns of the path's count in a
// register-only loop of `steps` iterations (8 independent counts each; no loads, no epilogue), best of three
// (`amx`: 16,384 per tile multiply of bidrn_probe_tile_ns). -1 for a path this build or CPU does not have.
BIDRN_API double bidrn_probe_count_ceiling(const char* path, int64_t steps);
BIDRN_API const char* bidrn_binary_conv(const int64_t* shape13, int transposed, const float* x_float,
                              const uint64_t* x_packed, const uint64_t* weight, const float* scale,
                              const float* bias, const float* rprelu, int output, void* out);
}
