// Shared between the driver (bconv.cpp) and the per-ISA translation units. Each ISA unit is compiled with
// its own target flags, so everything defined here lives in an anonymous namespace: one private copy per
// unit, vectorised for that unit's ISA, and no ODR clash between them.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "bconv.h"
#include "int8_pointwise.h"

namespace bidrn {

// One tile job: the popcount GEMM of one output phase of one image, plus what its epilogue needs.
struct TileJob {
  const uint64_t* a = nullptr;  // im2col: [blocks][k_words][kLanes], lane = output pixel
  int64_t pixels = 0;           // output pixels in this phase
  int64_t k_words = 0;          // words per pixel row (taps * words_for(C))
  const uint64_t* w = nullptr;  // first word of this phase's taps in weight row 0
  int64_t ldw = 0;              // words between consecutive weight rows
  int64_t out_channels = 0;
  int32_t k_bits = 0;           // taps * C: the accumulator when every bit matches
  const int32_t* corr = nullptr;     // [out_channels][corr_stride]: sum of sign(w) over the masked-out taps
  int64_t corr_stride = 0;           // >= number of distinct masks, a multiple of 16
  const uint16_t* mask_id = nullptr; // per pixel; 0 = every tap valid (row 0 of corr is zero)
  const int32_t* dest = nullptr;     // output pixel index of each phase pixel; null = identity
  int64_t out_plane = 0;             // out_h * out_w
  int64_t out_words = 0;             // words_for(out_channels), packed output only
  Output output = Output::kFloat;
  void* out = nullptr;               // this image's output
  const float* residual = nullptr;   // this image's residual (ep.residual offset by the batch index)
  const float* partial = nullptr;    // this image's partial sum, or null
  const float* shortcut = nullptr;   // this image's shortcut, or null
  int64_t out_w = 0;                 // output width (to place a pixel for the pooled residual)
  int64_t res_plane = 0;             // floats per residual channel: out_plane, or 4 out_plane when pooled
  Epilogue ep;
  const uint8_t* lut_weights = nullptr;  // set by Kernels::prepare (AVX2's table count), else null
};

constexpr int64_t kTileBlocks = 4;            // pixel blocks per tile: 32 pixels
constexpr int64_t kTilePixels = kTileBlocks * kLanes;
// A work item is a strip of up to kMaxStripTiles tiles x a chunk of output channels. Inside it the kernels
// loop channel groups outside and tiles inside, so each output channel gets one contiguous run of up to
// strip * 32 floats. With one tile per item (the old order) a 1x1 conv wrote 32 floats into each of 256
// planes 16 KB apart per tile: every line mapped to the same L1 set, and the 64 -> 256 hand layer ran at
// 8x its memcpy time. The driver sizes strips so their im2col rows stay in L1 (strip_tiles in bconv.cpp).
constexpr int64_t kMaxStripTiles = 64;

// The prefetchers follow the in-register epilogues' float streams poorly next to the im2col reads: they
// ask for the lines this many floats (1 KB) ahead (a hint, harmless past a plane's end).
constexpr int64_t kPrefetchAhead = 8 * kTilePixels;

// One int8_pointwise call as the generic GEMM sees it: the quantized input NHWC ([N][rows][kp], channels
// zero-padded to kp, rows = pixels rounded up to 4, the extra rows zeros) and the weights [O][kp].
struct PointwiseJob {
  const int8_t* xq = nullptr;
  const int8_t* w = nullptr;
  int64_t kp = 0, pixels = 0, rows = 0, out_channels = 0;
  const int32_t* weight_sum = nullptr;
  const float* scale = nullptr;
  const float* bias = nullptr;
  int32_t zero_point = 0;
  bool relu = false;
  float* out = nullptr;  // N x O x out_plane
  const int32_t* dest = nullptr;  // output offset of each pixel in its plane; null = the pixel itself
  int64_t out_plane = 0;          // floats between output channels
};
constexpr int64_t kPointwiseBlock = 64;  // pixels per work item of the generic GEMM

// int8_pointwise's O x C weights as rows of kp >= C bytes, at least `rows` of them (the kernels' whole
// vectors or tiles): the tensor itself when it already is that, else a zero-padded copy in buf.
inline const int8_t* padded_weight_rows(const int8_t* w, int64_t O, int64_t C, int64_t kp, int64_t rows,
                                        std::vector<int8_t>& buf) {
  if (kp == C && rows == O) return w;
  if (buf.size() < size_t(rows * kp)) buf.resize(size_t(rows * kp));
  std::memset(buf.data(), 0, size_t(rows * kp));
  for (int64_t o = 0; o < O; ++o) std::memcpy(buf.data() + o * kp, w + o * C, size_t(C));
  return buf.data();
}

struct Kernels {
  // Strip of blocks [b0, b1) (b0 a multiple of kTileBlocks, at most kMaxStripTiles tiles) x output
  // channels [o0, o1).
  void (*tile)(const TileJob& job, int64_t b0, int64_t b1, int64_t o0, int64_t o1);
  // Sign-packs pixels [p0, p1) of a C x HW plane into out[p][words_for(C)].
  void (*pack)(const float* x, int64_t channels, int64_t plane, int64_t p0, int64_t p1, uint64_t* out);
  // popcount of n words (used for the per-tap weight sums of the padding correction).
  int64_t (*popcount)(const uint64_t* words, int64_t n);
  // Optional (null: the driver runs the branches one by one through `tile`): FDR's k <= kMaxFusedBranches
  // branches of an unpadded 1 x 1 conv with float output, all at once: for each output channel the k
  // branches' sums are formed in registers and added in the branch order (out = b_0, then out + b_i), then
  // the last job's post affine and shortcut. jobs[i] is branch i's job; strip and channels as `tile`.
  void (*branch_tile)(const TileJob* jobs, int k, int64_t b0, int64_t b1, int64_t o0, int64_t o1) = nullptr;
  // Optional, both: strip_tiles > 0 says this path wants work items of that many tiles covering all the
  // output channels (tile / branch_tile then get o0 = 0, o1 = out_channels) instead of the driver's
  // default (rows within 24 KB, 64-channel chunks); prepare(job, slot) is called once per job before its
  // work items (slot: FDR's branch index) to precompute what every item reads. The AVX2 table count
  // (bconv_avx2.cpp) uses both.
  int64_t (*strip_tiles)(const TileJob& job) = nullptr;
  void (*prepare)(TileJob& job, int slot) = nullptr;
  // bidrn::int8_pointwise's GEMM (int8_gemm.h, vectorised for the unit's ISA): items [i0, i1) of the job.
  void (*int8_rows)(const PointwiseJob& job, int64_t i0, int64_t i1) = nullptr;
  // The path's count in a register-only loop of `steps` iterations (no loads, no epilogue): the binary MACs it
  // did. Timed by bidrn_probe_count_ceiling, it is the ceiling the benchmarks measure a layer against.
  int64_t (*count_loop)(int64_t steps) = nullptr;
};

constexpr int kMaxFusedBranches = 4;

// Kernels::count_loop of a path whose count step is acc = step(acc, a, w) on vectors V: eight independent
// accumulators, every operand in a register. `opaque` is an empty asm over eight V with the ISA's register
// constraint: it makes the inputs new to the compiler each iteration (nothing is hoisted or folded) and
// keeps the sums alive at the end, and emits no instruction.
template <class V, class Step, class Opaque>
int64_t count_loop_of(int64_t steps, int64_t macs_per_step, const V (&init)[8], V w, Step step, Opaque opaque) {
  V a[8], acc[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) a[j] = init[j], acc[j] = init[j];
  for (int64_t i = 0; i < steps; ++i) {
    opaque(a);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) acc[j] = step(acc[j], a[j], w);
  }
  opaque(acc);
  return steps * 8 * macs_per_step;
}

#if defined(__x86_64__)
// bidrn::int8_pointwise on AVX-512 VNNI (int8_vnni.cpp): whether the CPU has it; the op (checked arguments).
bool vnni_available();
void vnni_int8_pointwise(const PointwiseArgs& a, ParallelFor parallel);
// quantize_int8 of n floats into dst, 16 lanes at a time (bconv_avx512.cpp; the `avx512` and `amx` paths).
void avx512_quantize_row(const float* src, int64_t n, float input_scale_inv, int32_t zero_point, int8_t* dst);
// One row of a 3-wide, stride-2, padding-1 max pool: out[j] = max(m[2j - 1], m[2j], m[2j + 1]) over the
// columns inside [0, w), j < pw (bconv_avx512.cpp; int8_conv2d's pool on the `avx512` and `amx` paths).
void avx512_max_pool_row_3s2(const float* m, int64_t w, int64_t pw, float* out);
#endif

#if defined(__x86_64__) && defined(BIDRN_AMX)
// The AMX path (bconv_amx.cpp, built where the compiler has AMX): whether the CPU has AMX-INT8 and Linux
// granted this process the tile state; which convs it takes (stride 1, rows of 9+ words, 512+ output
// positions, float or accumulator output); the conv itself.
bool amx_available();
bool amx_handles(const ConvShape& s, const Epilogue& ep, const ConvArgs& args);
void amx_binary_conv(const ConvShape& s, const Epilogue& ep, const ConvArgs& args, ParallelFor parallel);
// bidrn::int8_pointwise on the tile unit (checked arguments).
void amx_int8_pointwise(const PointwiseArgs& a, ParallelFor parallel);
// bidrn::int8_conv_transpose2d on the tile unit where its phases pair up along x (stride_w 2) and whole tiles
// cover the channels (C a multiple of 64, O of 32): amx_int8_deconv_takes. dy[r][t], dx[r][t]: phase r's
// th (tw) tap input offsets along y (x), ascending (int8_conv_transpose2d's deconv_taps).
bool amx_int8_deconv_takes(const Int8DeconvArgs& a);
void amx_int8_conv_transpose2d(const Int8DeconvArgs& a, const int64_t (*dy)[16], const int64_t (*dx)[16], int64_t th,
                               int64_t tw, ParallelFor parallel);
// Nanoseconds per `tdpbssd` of a register-only loop of `multiplies` independent tile multiplies (the
// benchmarks' probe of the tile unit's rate; 16 cycles each on an uncontended Sapphire / Emerald Rapids core).
double amx_probe_ns(int64_t multiplies);
#endif

const Kernels& kernels_for(Path p);
extern const Kernels kScalarKernels;
#if defined(__x86_64__)
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx512Kernels;
#endif
#if defined(__aarch64__)
extern const Kernels kNeonKernels;
extern const Kernels kNeonDotKernels;
#endif

namespace {

// Runs f(begin, end) over [0, n) through the caller's ParallelFor.
template <class F>
void run_parallel(ParallelFor parallel, int64_t n, F&& f) {
  if (n <= 0) return;
  parallel(n, &f, [](void* c, int64_t b, int64_t e) { (*static_cast<F*>(c))(b, e); });
}

// Work items of at most `most` units (tiles, pooled rows) over `units`, all of one size (the last may be
// shorter by less than one item's rounding) and, where there are several, an even number of them:
// ExecuTorch's parallel_for hands each thread one contiguous range of items, so strips of 64 + 32 tiles, or
// three strips, split 2 : 1 between two threads (the body's 64 x 48 FUR and FDR layers gained 1.10x and 1.3x
// from the second thread). Returns the item length; items = ceil(units / length).
inline int64_t balanced_strip(int64_t units, int64_t most) {
  most = std::max<int64_t>(1, most);
  int64_t items = (units + most - 1) / most;
  if (items > 1 && items % 2 == 1 && items < units) ++items;
  return std::max<int64_t>(1, (units + items - 1) / items);
}

// Pixels of a tile that have a masked-out (padding) tap: their offsets in the tile and their mask ids.
// Usually a few per tile (the image border), so the correction is applied to them alone.
struct BorderList {
  int n = 0;
  uint8_t lane[kTilePixels];
  uint16_t mask[kTilePixels];
};

// Finishes one output channel o for tile pixels [p0, p0 + n) given r[i] = popcount(row_i xor w_o).
// acc = k_bits - 2 r - corr; the float form is written as mul then add (no FMA, built with
// -ffp-contract=off) so it rounds exactly like PyTorch's `acc * scale + bias`.
inline void finish_channel(const TileJob& j, int64_t p0, int64_t n, int64_t o, const int32_t* r,
                           const BorderList& border) {
  int32_t acc[kTilePixels];
  for (int64_t i = 0; i < n; ++i) acc[i] = j.k_bits - 2 * r[i];
  for (int b = 0; b < border.n; ++b) acc[border.lane[b]] -= j.corr[o * j.corr_stride + border.mask[b]];
  if (j.output == Output::kAccumulator) {
    int32_t* out = static_cast<int32_t*>(j.out) + o * j.out_plane;
    for (int64_t i = 0; i < n; ++i) out[j.dest ? j.dest[p0 + i] : p0 + i] = acc[i];
    return;
  }
  float y[kTilePixels];
  const float scale = j.ep.scale[o], bias = j.ep.bias[o];
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(acc[i]) * scale + bias;
  if (j.ep.rprelu) {
    const float beta = j.ep.rprelu[o], gamma = j.ep.rprelu[j.out_channels + o];
    const float zeta = j.ep.rprelu[2 * j.out_channels + o];
    for (int64_t i = 0; i < n; ++i) {
      const float s = y[i] - gamma;
      y[i] = (s > 0.0f ? s : beta * s) + zeta;
    }
  }
  if (j.residual) {
    const float* res = j.residual + (o % j.ep.residual_channels) * j.res_plane;
    // Hardtanh as torch.clamp: NaN stays NaN (neither comparison holds).
    const auto clamp = [&](float r) { return j.ep.clamp_residual ? (r < -1.0f ? -1.0f : r > 1.0f ? 1.0f : r) : r; };
    for (int64_t i = 0; i < n; ++i) {
      const int64_t px = j.dest ? j.dest[p0 + i] : p0 + i;
      float r;
      if (j.ep.residual_pool == 2) {
        const int64_t oy = px / j.out_w, ox = px - oy * j.out_w, w = j.ep.residual_w;
        const float* s = res + 2 * oy * w + 2 * ox;
        r = (((clamp(s[0]) + clamp(s[1])) + clamp(s[w])) + clamp(s[w + 1])) / 4.0f;
      } else {
        r = clamp(res[px]);
      }
      y[i] = y[i] + r;
    }
  }
  if (j.partial) {
    const float* part = j.partial + o * j.out_plane;
    for (int64_t i = 0; i < n; ++i) y[i] = part[j.dest ? j.dest[p0 + i] : p0 + i] + y[i];
  }
  if (j.ep.post) {
    const float ps = j.ep.post[o], pb = j.ep.post[j.out_channels + o];
    for (int64_t i = 0; i < n; ++i) y[i] = y[i] * ps + pb;
  }
  if (j.shortcut) {
    const float* sc = j.shortcut + o * j.out_plane;
    for (int64_t i = 0; i < n; ++i) y[i] = y[i] + sc[j.dest ? j.dest[p0 + i] : p0 + i];
  }
  if (j.output == Output::kFloat) {
    float* out = static_cast<float*>(j.out) + o * j.out_plane;
    if (j.dest) {
      for (int64_t i = 0; i < n; ++i) out[j.dest[p0 + i]] = y[i];
    } else {
      for (int64_t i = 0; i < n; ++i) out[p0 + i] = y[i];
    }
    return;
  }
  // Packed signs for the next binary layer: tiles split channels on 64-channel boundaries, so no other
  // thread touches these words.
  uint64_t* out = static_cast<uint64_t*>(j.out);
  const uint64_t bit = uint64_t(1) << (o & 63);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t px = j.dest ? j.dest[p0 + i] : p0 + i;
    if (!(y[i] >= 0.0f)) out[px * j.out_words + (o >> 6)] |= bit;
  }
}

// The tile of blocks [b0, b1): its first pixel, pixel count and border pixels.
struct TilePixels {
  int64_t p0 = 0, n = 0;
  BorderList border;
  TilePixels() = default;
  TilePixels(const TileJob& j, int64_t b0, int64_t b1) {
    p0 = b0 * kLanes;
    n = (b1 * kLanes < j.pixels ? b1 * kLanes : j.pixels) - p0;
    for (int64_t i = 0; i < n; ++i) {
      if (j.mask_id[p0 + i]) {
        border.lane[border.n] = uint8_t(i);
        border.mask[border.n++] = j.mask_id[p0 + i];
      }
    }
  }
};

// Finishes channels [o, o + nb) of a tile from r[c][kTilePixels].
inline void finish_tile(const TileJob& j, const TilePixels& t, int64_t o, int nb, const int32_t* r) {
  for (int c = 0; c < nb; ++c) finish_channel(j, t.p0, t.n, o + c, r + c * kTilePixels, t.border);
}

// The tiles of a strip of blocks [b0, b1): tile i covers blocks [b0 + i kTileBlocks, ...).
struct Strip {
  int tiles = 0;
  TilePixels tile[kMaxStripTiles];
  int64_t first_block(int i, int64_t b0) const { return b0 + i * kTileBlocks; }
  Strip(const TileJob& j, int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b += kTileBlocks, ++tiles)
      tile[tiles] = TilePixels(j, b, b + kTileBlocks < b1 ? b + kTileBlocks : b1);
  }
};

// Tile driver of the paths whose micro-kernel counts one pixel block against nb <= NB channels into
// r[c][kTilePixels] (AVX2, NEON): blocks one by one, then the shared scalar epilogue.
using BlockMicro = void (*)(const uint64_t* a, const uint64_t* w, int64_t ldw, int64_t k_words, int32_t* r);

template <int NB>
inline void tile_by_blocks(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1,
                           const BlockMicro (&micro)[NB + 1]) {
  const Strip strip(j, b0, b1);
  alignas(64) int32_t r[NB * kTilePixels];
  for (int64_t o = o0; o < o1; o += NB) {
    const int nb = int(o1 - o < NB ? o1 - o : NB);
    for (int i = 0; i < strip.tiles; ++i) {
      const int64_t tb0 = strip.first_block(i, b0), tb1 = tb0 + kTileBlocks < b1 ? tb0 + kTileBlocks : b1;
      for (int64_t b = tb0; b < tb1; ++b)
        micro[nb](j.a + b * j.k_words * kLanes, j.w + o * j.ldw, j.ldw, j.k_words, r + (b - tb0) * kLanes);
      finish_tile(j, strip.tile[i], o, nb, r);
    }
  }
}

}  // namespace
}  // namespace bidrn
