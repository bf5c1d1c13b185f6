// Driver: sign-packing, im2col with the padding-correction masks, phases of a transposed conv, threading,
// and the run-time choice of kernel path. The inner loops live in bconv_<isa>.cpp.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bconv_internal.h"

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace bidrn {

// ---------------------------------------------------------------- paths

const char* path_name(Path p) {
  switch (p) {
    case Path::kAmx: return "amx";
    case Path::kAvx512: return "avx512";
    case Path::kAvx2: return "avx2";
    case Path::kNeonDot: return "neon_dotprod";
    case Path::kNeon: return "neon";
    case Path::kScalar: return "scalar";
  }
  return "unknown";
}

bool path_supported(Path p) {
  switch (p) {
#if defined(__x86_64__)
#if defined(BIDRN_AMX)
    case Path::kAmx:
      // AMX-TILE + AMX-INT8 for the convs it takes, the AVX-512 path for everything else.
      return path_supported(Path::kAvx512) && amx_available();
#endif
    case Path::kAvx512:
      // VPOPCNTDQ for the popcount, BW for the sign packing, VL for the 256-bit epilogue; DQ because the
      // unit is compiled with it (every CPU with VPOPCNTDQ has it, but the check costs nothing).
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vpopcntdq");
    case Path::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#endif
#if defined(__aarch64__)
    case Path::kNeon:
      return true;  // Advanced SIMD is part of the aarch64 base ISA.
    case Path::kNeonDot:
#if defined(__linux__)
      return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
      return false;
#endif
#endif
    case Path::kScalar:
      return true;
    default:
      return false;
  }
}

Path best_path() {
  for (Path p : kPathsBestFirst) {
    if (path_supported(p)) return p;
  }
  return Path::kScalar;
}

namespace {
// -1 = not chosen yet. BIDRN_KERNEL_PATH (a path name) overrides the choice, e.g. to time the AVX2 path
// on an AVX-512 machine; an unsupported name falls back to the best path.
std::atomic<int> g_active{-1};

Path initial_path() {
  if (const char* env = std::getenv("BIDRN_KERNEL_PATH")) {
    for (Path p : kPathsBestFirst) {
      if (std::strcmp(env, path_name(p)) == 0 && path_supported(p)) return p;
    }
  }
  return best_path();
}
}  // namespace

Path active_path() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(initial_path());
    g_active.store(v, std::memory_order_relaxed);
  }
  return static_cast<Path>(v);
}

bool set_active_path(Path p) {
  if (!path_supported(p)) return false;
  g_active.store(static_cast<int>(p), std::memory_order_relaxed);
  return true;
}

const Kernels& kernels_for(Path p) {
  switch (p) {
#if defined(__x86_64__)
    case Path::kAmx:  // what the AMX convs do not take runs on the AVX-512 kernels
    case Path::kAvx512: return kAvx512Kernels;
    case Path::kAvx2: return kAvx2Kernels;
#endif
#if defined(__aarch64__)
    case Path::kNeonDot: return kNeonDotKernels;
    case Path::kNeon: return kNeonKernels;
#endif
    default: return kScalarKernels;
  }
}

// ---------------------------------------------------------------- shape checks

const char* check_shape(const ConvShape& s) {
  if (s.batch < 0 || s.in_channels < 1 || s.out_channels < 1 || s.in_h < 1 || s.in_w < 1)
    return "batch must be >= 0 and channels and input size >= 1";
  if (s.kernel_h < 1 || s.kernel_w < 1 || s.stride_h < 1 || s.stride_w < 1 || s.pad_h < 0 || s.pad_w < 0)
    return "kernel and stride must be >= 1 and padding >= 0";
  if (s.out_h < 1 || s.out_w < 1) return "the output would be empty: check kernel size, stride and padding";
  // A phase's taps are indexed by the bits of one uint64 mask (padding correction).
  const int64_t th = s.transposed ? (s.kernel_h + s.stride_h - 1) / s.stride_h : s.kernel_h;
  const int64_t tw = s.transposed ? (s.kernel_w + s.stride_w - 1) / s.stride_w : s.kernel_w;
  if (th * tw > 64) return "at most 64 kernel taps per output phase are supported";
  return nullptr;
}

namespace {

// One output phase: every output pixel for a conv; pixels with oy % sh == ry, ox % sw == rx for a
// transposed conv, whose taps are then those with ky = (ry + pad_h) mod sh (mod stride), see docs.
struct Phase {
  std::vector<int32_t> ky, kx;  // taps used, row-major
  int64_t w_offset = 0;         // words into a weight row where these taps start
  int64_t ry = 0, rx = 0, ny = 0, nx = 0;  // first output row/col and counts (transposed); ny = out_h for conv
};

std::vector<Phase> phases_of(const ConvShape& s) {
  std::vector<Phase> phases;
  const int64_t cw = words_for(s.in_channels);
  if (!s.transposed) {
    Phase ph;
    for (int32_t y = 0; y < s.kernel_h; ++y)
      for (int32_t x = 0; x < s.kernel_w; ++x) ph.ky.push_back(y), ph.kx.push_back(x);
    ph.ny = s.out_h, ph.nx = s.out_w;
    phases.push_back(ph);
    return phases;
  }
  int64_t offset = 0;
  for (int64_t ry = 0; ry < s.stride_h; ++ry) {
    for (int64_t rx = 0; rx < s.stride_w; ++rx) {
      Phase ph;
      ph.ry = ry, ph.rx = rx;
      for (int64_t y = (ry + s.pad_h) % s.stride_h; y < s.kernel_h; y += s.stride_h)
        for (int64_t x = (rx + s.pad_w) % s.stride_w; x < s.kernel_w; x += s.stride_w)
          ph.ky.push_back(int32_t(y)), ph.kx.push_back(int32_t(x));
      ph.w_offset = offset;
      offset += int64_t(ph.ky.size()) * cw;
      ph.ny = ry < s.out_h ? (s.out_h - ry + s.stride_h - 1) / s.stride_h : 0;
      ph.nx = rx < s.out_w ? (s.out_w - rx + s.stride_w - 1) / s.stride_w : 0;
      phases.push_back(ph);
    }
  }
  return phases;
}

// Input pixel read by phase pixel (j, i) through tap t, or -1 when the tap falls in the zero padding.
inline int64_t source_pixel(const ConvShape& s, const Phase& ph, int64_t j, int64_t i, size_t t) {
  int64_t iy, ix;
  if (!s.transposed) {
    iy = j * s.stride_h - s.pad_h + ph.ky[t];
    ix = i * s.stride_w - s.pad_w + ph.kx[t];
  } else {
    // out = in * stride - pad + k, so in = (out + pad - k) / stride, exact by the choice of taps.
    const int64_t ny = ph.ry + j * s.stride_h + s.pad_h - ph.ky[t];
    const int64_t nx = ph.rx + i * s.stride_w + s.pad_w - ph.kx[t];
    if (ny < 0 || nx < 0) return -1;
    iy = ny / s.stride_h, ix = nx / s.stride_w;
  }
  if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) return -1;
  return iy * s.in_w + ix;
}

// Work buffers of one call. They live in a thread_local Scratch reused from call to call: a fresh 200 KB
// im2col buffer per call costs an mmap, page faults and zeroing (measured: 8% of the reference layer).
struct PhaseBuffers {
  std::vector<uint64_t> a;         // im2col
  std::vector<uint64_t> pix_mask;  // per pixel: bit t set when tap t is padding
  std::vector<uint16_t> mask_id;
  std::vector<int32_t> dest;
  std::vector<int32_t> corr;
  std::vector<int32_t> tap_sum;
  int64_t corr_stride = 0;
  bool any_border = false;
};

struct Scratch {
  std::vector<uint64_t> packed;
  PhaseBuffers phase;
  std::vector<PhaseBuffers> branch;  // FDR: one im2col per branch
  std::vector<float> rprelu;         // FDR: each branch's RPReLU rows, contiguous
};

Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// Copies the cw words of one input pixel into lane l of an im2col block (words kLanes apart); fixed-size
// copies for the common widths.
inline void put_words(const uint64_t* from, uint64_t* dst, int64_t cw) {
  switch (cw) {
    case 1: dst[0] = from[0]; return;
    case 2: dst[0] = from[0], dst[kLanes] = from[1]; return;
    case 4: dst[0] = from[0], dst[kLanes] = from[1], dst[2 * kLanes] = from[2], dst[3 * kLanes] = from[3]; return;
    default:
      for (int64_t w = 0; w < cw; ++w) dst[w * kLanes] = from[w];
  }
}

inline void zero_words(uint64_t* dst, int64_t cw) {
  for (int64_t w = 0; w < cw; ++w) dst[w * kLanes] = 0;
}

// Whether block blk of a plain conv's phase has 8 pixels in one output row and no tap in the padding.
inline bool interior_block(const ConvShape& s, const Phase& ph, int64_t blk, int64_t pixels) {
  const int64_t p = blk * kLanes;
  if (p + kLanes > pixels) return false;
  const int64_t j = p / ph.nx, i = p - j * ph.nx;
  if (i + kLanes > ph.nx) return false;
  const int64_t y0 = j * s.stride_h - s.pad_h, x0 = i * s.stride_w - s.pad_w;
  const int64_t x_last = x0 + (kLanes - 1) * s.stride_w;
  for (size_t t = 0; t < ph.ky.size(); ++t) {
    const int64_t iy = y0 + ph.ky[t];
    if (iy < 0 || iy >= s.in_h || x0 + ph.kx[t] < 0 || x_last + ph.kx[t] >= s.in_w) return false;
  }
  return true;
}

// im2col of one phase into [blocks][k_words][kLanes]; padding taps and lanes past the last pixel are zero.
// A plain conv computes each pixel's input origin once and the taps as offsets from it; a transposed conv
// goes through source_pixel (its phases are few and small).
void build_rows(const ConvShape& s, const Phase& ph, const uint64_t* xp, ParallelFor parallel, PhaseBuffers& b) {
  const int64_t cw = words_for(s.in_channels);
  const int64_t taps = int64_t(ph.ky.size()), k_words = taps * cw;
  const int64_t pixels = ph.ny * ph.nx, blocks = (pixels + kLanes - 1) / kLanes;
  grow(b.a, size_t(blocks * k_words * kLanes));
  grow(b.pix_mask, size_t(pixels));
  std::atomic<bool> any_border{false};
  run_parallel(parallel, blocks, [&](int64_t b0, int64_t b1) {
    bool border = false;
    for (int64_t blk = b0; blk < b1; ++blk) {
      uint64_t* base = b.a.data() + blk * k_words * kLanes;
      if (!s.transposed && interior_block(s, ph, blk, pixels)) {
        // All 8 pixels in one output row, every tap inside the image: tap t of lane l reads input pixel
        // origin + l * stride_w + offset_t, so each tap's rows are 8 evenly spaced words per channel word.
        const int64_t p = blk * kLanes, j = p / ph.nx, i = p - j * ph.nx;
        const int64_t y0 = j * s.stride_h - s.pad_h, x0 = i * s.stride_w - s.pad_w, step = s.stride_w * cw;
        for (int64_t t = 0; t < taps; ++t) {
          const uint64_t* src = xp + ((y0 + ph.ky[size_t(t)]) * s.in_w + x0 + ph.kx[size_t(t)]) * cw;
          uint64_t* dst = base + t * cw * kLanes;
          for (int64_t w = 0; w < cw; ++w)
            for (int64_t l = 0; l < kLanes; ++l) dst[w * kLanes + l] = src[l * step + w];
        }
        for (int64_t l = 0; l < kLanes; ++l) b.pix_mask[size_t(p + l)] = 0;
        continue;
      }
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t p = blk * kLanes + l;
        if (p >= pixels) {
          for (int64_t k = 0; k < k_words; ++k) base[k * kLanes + l] = 0;
          continue;
        }
        const int64_t j = p / ph.nx, i = p - j * ph.nx;
        uint64_t mask = 0;
        if (!s.transposed) {
          const int64_t y0 = j * s.stride_h - s.pad_h, x0 = i * s.stride_w - s.pad_w;
          for (int64_t t = 0; t < taps; ++t) {
            const int64_t iy = y0 + ph.ky[size_t(t)], ix = x0 + ph.kx[size_t(t)];
            uint64_t* dst = base + t * cw * kLanes + l;
            if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) {
              mask |= uint64_t(1) << t;
              zero_words(dst, cw);
            } else {
              put_words(xp + (iy * s.in_w + ix) * cw, dst, cw);
            }
          }
        } else {
          for (int64_t t = 0; t < taps; ++t) {
            const int64_t src = source_pixel(s, ph, j, i, size_t(t));
            uint64_t* dst = base + t * cw * kLanes + l;
            if (src < 0) {
              mask |= uint64_t(1) << t;
              zero_words(dst, cw);
            } else {
              put_words(xp + src * cw, dst, cw);
            }
          }
        }
        b.pix_mask[size_t(p)] = mask;
        border |= mask != 0;
      }
    }
    if (border) any_border.store(true, std::memory_order_relaxed);
  });
  b.any_border = any_border.load();
}

// Distinct padding masks -> ids, and corr[o][id] = sum over masked taps of sum_c sign(w[o, c, tap]); rows
// padded to a multiple of 16 ids so the in-register epilogues can look a row up with one or two permutes
// (NEON: one tbl).
void build_correction(const ConvShape& s, const Phase& ph, const uint64_t* weight, int64_t ldw,
                      const Kernels& kern, PhaseBuffers& b) {
  const int64_t cw = words_for(s.in_channels), taps = int64_t(ph.ky.size());
  const int64_t pixels = ph.ny * ph.nx, O = s.out_channels;
  grow(b.mask_id, size_t(pixels));
  if (!b.any_border) {  // e.g. every 1x1 conv without padding: no correction at all
    std::memset(b.mask_id.data(), 0, sizeof(uint16_t) * size_t(pixels));
    b.corr_stride = 16;
    grow(b.corr, size_t(16 * O));
    std::memset(b.corr.data(), 0, sizeof(int32_t) * size_t(16 * O));
    return;
  }
  std::vector<uint64_t> masks{0};
  uint64_t used = 0, last = 0;
  uint16_t last_id = 0;
  for (int64_t p = 0; p < pixels; ++p) {
    const uint64_t m = b.pix_mask[size_t(p)];
    if (m != last) {  // neighbouring pixels mostly share their mask
      size_t id = std::find(masks.begin(), masks.end(), m) - masks.begin();
      if (id == masks.size()) masks.push_back(m), used |= m;
      last = m, last_id = uint16_t(id);
    }
    b.mask_id[size_t(p)] = last_id;
  }
  b.corr_stride = int64_t((masks.size() + 15) / 16 * 16);
  grow(b.corr, size_t(b.corr_stride * O));
  std::memset(b.corr.data(), 0, sizeof(int32_t) * size_t(b.corr_stride * O));
  grow(b.tap_sum, size_t(taps));
  for (int64_t o = 0; o < O; ++o) {
    const uint64_t* row = weight + o * ldw + ph.w_offset;
    for (int64_t t = 0; t < taps; ++t) {
      if (used >> t & 1)
        b.tap_sum[size_t(t)] = int32_t(s.in_channels - 2 * kern.popcount(row + t * cw, cw));
    }
    for (size_t m = 1; m < masks.size(); ++m) {
      int32_t c = 0;
      for (uint64_t bits = masks[m]; bits; bits &= bits - 1) c += b.tap_sum[size_t(__builtin_ctzll(bits))];
      b.corr[size_t(o * b.corr_stride) + m] = c;
    }
  }
}

// Tiles per work item: as many as keep the strip's im2col rows within 24 KB (three quarters of a 32 KB L1,
// half of a 48 KB one), so the rows stay cached while the channels sweep over them; one tile for the wide
// layers (k_words > 48). 16 KB gave the reference layer (36 words) one tile a strip, and every output
// channel then paid its call's set-up for 32 pixels: two tiles ran it 5-6 % faster on AVX-512, three (32 KB)
// about the same, five (48 KB, past a 48 KB L1 with the other streams) 5 % slower (docs/kernels.md).
int64_t strip_tiles(int64_t k_words) {
  if (k_words < 1) return kMaxStripTiles;  // a transposed-conv phase no tap reaches
  const int64_t fit = (24 * 1024) / (kTilePixels * k_words * int64_t(sizeof(uint64_t)));
  return std::max<int64_t>(1, std::min<int64_t>(kMaxStripTiles, fit));
}

// A 1x1, stride-1, unpadded conv of at most 64 input channels reads one word per pixel, and its im2col
// layout [block][1 word][8 lanes] is the packed input itself: pack straight into the im2col buffer (lanes
// past the last pixel zeroed) instead of packing and then copying every word.
bool pointwise_one_word(const ConvShape& s) {
  return !s.transposed && s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 &&
         s.pad_h == 0 && s.pad_w == 0 && words_for(s.in_channels) == 1;
}

void pack_as_rows(const ConvShape& s, const Kernels& kern, const float* x, ParallelFor parallel, PhaseBuffers& b) {
  const int64_t pixels = s.in_h * s.in_w, padded = (pixels + kLanes - 1) / kLanes * kLanes;
  grow(b.a, size_t(padded));
  run_parallel(parallel, (pixels + 63) / 64, [&](int64_t c0, int64_t c1) {
    kern.pack(x, s.in_channels, pixels, c0 * 64, std::min(c1 * 64, pixels), b.a.data());
  });
  for (int64_t p = pixels; p < padded; ++p) b.a[size_t(p)] = 0;
  b.any_border = false;
}

}  // namespace

void pack_signs(const float* x, int64_t channels, int64_t pixels, uint64_t* out) {
  kernels_for(active_path()).pack(x, channels, pixels, 0, pixels, out);
}

namespace {

// FDR's k branches in one call (ConvArgs::branches). Per image the pixels are cut into strips; each work item
// (one strip) runs the k branches in turn, and branch i first packs its input chunk's pixels of the strip,
// then sweeps its output channels, adding the strip branch i - 1 just wrote (`partial` = the output itself).
// Both stay in L2: the chunk's floats, read once for the signs, are read again as the residual (FDR's a_f,
// the same tensor) while still cached, and the partial sums never leave L2. Against k separate ops this
// writes the output once instead of also writing and re-reading k - 1 partial sums; against packing whole
// planes first, it reads the k C input channels from memory once instead of twice.
// Where the kernels have a branch_tile (every SIMD path), a strip packs all k chunks first and then sweeps
// the output channels once, the k branches' sums added in registers: no partial sum is written or read back (FDR ops
// 10-15 % faster in isolation, docs/kernels.md).
void binary_conv_branches(const ConvShape& s, const Epilogue& ep, const ConvArgs& args, ParallelFor parallel) {
  const Kernels& kern = kernels_for(active_path());
  const int64_t k = args.branches, C = s.in_channels, O = s.out_channels;
  const int64_t cw = words_for(C), in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t ldw = cw;  // 1x1
  const bool one_word = pointwise_one_word(s);
  const std::vector<Phase> phases = phases_of(s);
  const Phase& ph = phases[0];
  Scratch& sc = scratch();
  if (!one_word) grow(sc.packed, size_t(k * in_plane * cw));
  if (sc.branch.size() < size_t(k)) sc.branch.resize(size_t(k));
  grow(sc.rprelu, size_t(3 * k * O));
  if (ep.rprelu) {  // rows beta, gamma, zeta of k * O -> per branch 3 x O
    for (int64_t i = 0; i < k; ++i)
      for (int64_t r = 0; r < 3; ++r)
        std::memcpy(&sc.rprelu[size_t((i * 3 + r) * O)], ep.rprelu + r * k * O + i * O, sizeof(float) * size_t(O));
  }
  const int64_t x_stride = args.x_batch_stride ? args.x_batch_stride : k * C * in_plane;
  const int64_t res_stride = ep.residual_batch_stride ? ep.residual_batch_stride
                                                      : k * ep.residual_channels * out_plane;
  const int64_t blocks = (out_plane + kLanes - 1) / kLanes, padded = blocks * kLanes;
  const int64_t tiles = (blocks + kTileBlocks - 1) / kTileBlocks, chunks = (O + 63) / 64;
  // Strip width: a branch's strip of output (O channels) and of input (C channels) 256 KB each, so both
  // fit L2 next to each other; at least one tile, at most the kernels' maximum.
  // (With the kernels' branch_tile all k chunks are packed first and read back together as residuals; sizing
  // the strip to the k C channels instead, 4x shorter strips, measured 10-30 % slower than this.)
  const bool together = kern.branch_tile != nullptr && k <= kMaxFusedBranches;
  const int64_t fit = (256 * 1024) / (std::max(O, C) * kTilePixels * int64_t(sizeof(float)));
  // (and at least two strips where there are two tiles, so that two threads share the work).
  const int64_t most = std::min<int64_t>({fit, strip_tiles(cw), kMaxStripTiles, (tiles + 1) / 2});
  const int64_t per_strip = balanced_strip(tiles, most);
  const int64_t strips = (tiles + per_strip - 1) / per_strip;
  std::vector<TileJob> jobs(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    PhaseBuffers& buf = sc.branch[size_t(i)];
    grow(buf.a, size_t(padded * cw));
    buf.any_border = false;  // 1x1, no padding
    build_correction(s, ph, args.weight + i * O * ldw, ldw, kern, buf);  // an all-zero table
  }
  for (int64_t n = 0; n < s.batch; ++n) {
    float* out = static_cast<float*>(args.out) + n * O * out_plane;
    for (int64_t i = 0; i < k; ++i) {
      PhaseBuffers& buf = sc.branch[size_t(i)];
      TileJob& job = jobs[size_t(i)];
      job.a = buf.a.data();
      job.pixels = out_plane;
      job.k_words = cw;
      job.w = args.weight + i * O * ldw;
      job.ldw = ldw;
      job.out_channels = O;
      job.k_bits = int32_t(C);
      job.corr = buf.corr.data();
      job.corr_stride = buf.corr_stride;
      job.mask_id = buf.mask_id.data();
      job.out_plane = out_plane;
      job.out_w = s.out_w;
      job.res_plane = out_plane;
      job.output = Output::kFloat;
      job.out = out;
      job.ep = ep;
      job.ep.scale = ep.scale + i * O;
      job.ep.bias = ep.bias + i * O;
      job.ep.rprelu = ep.rprelu ? sc.rprelu.data() + i * 3 * O : nullptr;
      job.residual = ep.residual ? ep.residual + n * res_stride + i * ep.residual_channels * out_plane : nullptr;
      job.partial = i > 0 ? out : nullptr;
      const bool last = i == k - 1;
      job.ep.post = last ? ep.post : nullptr;
      job.shortcut = last && ep.shortcut ? ep.shortcut + n * O * out_plane : nullptr;
      if (kern.prepare && n == 0) kern.prepare(job, int(i));
    }
    // The kernels' work items take all output channels (Kernels::strip_tiles).
    const bool whole_channels = together && kern.strip_tiles && kern.strip_tiles(jobs[0]) > 0;
    run_parallel(parallel, strips, [&](int64_t s0, int64_t s1) {
      for (int64_t st = s0; st < s1; ++st) {
        const int64_t b0 = st * per_strip * kTileBlocks, b1 = std::min((st + 1) * per_strip * kTileBlocks, blocks);
        const int64_t p0 = b0 * kLanes, p1 = std::min(b1 * kLanes, in_plane);
        for (int64_t i = 0; i < k; ++i) {
          const float* x = args.x_float + n * x_stride + i * C * in_plane;
          uint64_t* rows = sc.branch[size_t(i)].a.data();
          if (one_word) {  // the packed words are the im2col rows ([block][1 word][8 lanes])
            kern.pack(x, C, in_plane, p0, p1, rows);
          } else {  // pack the strip, then lay its words out as rows [block][cw][8 lanes]
            uint64_t* packed = sc.packed.data() + i * in_plane * cw;
            kern.pack(x, C, in_plane, p0, p1, packed);
            for (int64_t p = p0; p < p1; ++p) put_words(packed + p * cw, rows + (p / kLanes) * cw * kLanes + p % kLanes, cw);
          }
          for (int64_t p = p1; p < b1 * kLanes; ++p) zero_words(rows + (p / kLanes) * cw * kLanes + p % kLanes, cw);
          if (!together)
            for (int64_t c = 0; c < chunks; ++c) kern.tile(jobs[size_t(i)], b0, b1, c * 64, std::min(c * 64 + 64, O));
        }
        if (together && whole_channels) {
          kern.branch_tile(jobs.data(), int(k), b0, b1, 0, O);
        } else if (together) {
          for (int64_t c = 0; c < chunks; ++c)
            kern.branch_tile(jobs.data(), int(k), b0, b1, c * 64, std::min(c * 64 + 64, O));
        }
      }
    });
  }
}

}  // namespace

void binary_conv(const ConvShape& s, const Epilogue& ep, const ConvArgs& args, ParallelFor parallel) {
  if (args.branches > 1) {
    binary_conv_branches(s, ep, args, parallel);
    return;
  }
#if defined(__x86_64__) && defined(BIDRN_AMX)
  if (active_path() == Path::kAmx && amx_handles(s, ep, args)) {
    amx_binary_conv(s, ep, args, parallel);
    return;
  }
#endif
  const Kernels& kern = kernels_for(active_path());
  const int64_t cw = words_for(s.in_channels), O = s.out_channels;
  const int64_t in_plane = s.in_h * s.in_w, out_plane = s.out_h * s.out_w;
  const int64_t ldw = s.kernel_h * s.kernel_w * cw;
  const int64_t out_words = words_for(O);
  const std::vector<Phase> phases = phases_of(s);
  Scratch& scratch_ = scratch();
  std::vector<uint64_t>& packed = scratch_.packed;
  const bool direct = args.x_float && pointwise_one_word(s);  // packed straight into the im2col buffer
  if (args.x_float && !direct) grow(packed, size_t(in_plane * cw));
  PhaseBuffers& buf = scratch_.phase;
  for (int64_t n = 0; n < s.batch; ++n) {
    const uint64_t* xp = nullptr;
    if (direct) {
      pack_as_rows(s, kern, args.x_float + n * (args.x_batch_stride ? args.x_batch_stride : s.in_channels * in_plane),
                   parallel, buf);
    } else if (args.x_float) {
      const float* x = args.x_float + n * (args.x_batch_stride ? args.x_batch_stride : s.in_channels * in_plane);
      run_parallel(parallel, (in_plane + 63) / 64, [&](int64_t c0, int64_t c1) {
        kern.pack(x, s.in_channels, in_plane, c0 * 64, std::min(c1 * 64, in_plane), packed.data());
      });
      xp = packed.data();
    } else {
      xp = args.x_packed + n * in_plane * cw;
    }
    void* out;
    switch (args.output) {
      case Output::kFloat: out = static_cast<float*>(args.out) + n * O * out_plane; break;
      case Output::kAccumulator: out = static_cast<int32_t*>(args.out) + n * O * out_plane; break;
      default:
        out = static_cast<uint64_t*>(args.out) + n * out_plane * out_words;
        std::memset(out, 0, sizeof(uint64_t) * size_t(out_plane * out_words));
    }
    for (const Phase& ph : phases) {
      const int64_t pixels = ph.ny * ph.nx;
      if (pixels == 0) continue;
      if (!direct) build_rows(s, ph, xp, parallel, buf);
      build_correction(s, ph, args.weight, ldw, kern, buf);
      if (s.transposed) {
        grow(buf.dest, size_t(pixels));
        for (int64_t p = 0; p < pixels; ++p)
          buf.dest[size_t(p)] = int32_t((ph.ry + (p / ph.nx) * s.stride_h) * s.out_w + ph.rx + (p % ph.nx) * s.stride_w);
      }
      TileJob job;
      job.a = buf.a.data();
      job.pixels = pixels;
      job.k_words = int64_t(ph.ky.size()) * cw;
      job.w = args.weight + ph.w_offset;
      job.ldw = ldw;
      job.out_channels = O;
      job.k_bits = int32_t(int64_t(ph.ky.size()) * s.in_channels);
      job.corr = buf.corr.data();
      job.corr_stride = buf.corr_stride;
      job.mask_id = buf.mask_id.data();
      job.dest = s.transposed ? buf.dest.data() : nullptr;
      job.out_plane = out_plane;
      job.out_w = s.out_w;
      job.res_plane = out_plane * ep.residual_pool * ep.residual_pool;
      job.out_words = out_words;
      job.output = args.output;
      job.out = out;
      const int64_t res_stride = ep.residual_batch_stride ? ep.residual_batch_stride : ep.residual_channels * job.res_plane;
      job.residual = ep.residual ? ep.residual + n * res_stride : nullptr;
      job.partial = ep.partial ? ep.partial + n * O * out_plane : nullptr;
      job.shortcut = ep.shortcut ? ep.shortcut + n * O * out_plane : nullptr;
      job.ep = ep;
      // Work items: strips of 32-pixel tiles x 64-channel chunks (a chunk owns whole words of packed output),
      // or the strips the kernels ask for with all the channels (Kernels::strip_tiles: AVX2's table count).
      const int64_t blocks = (pixels + kLanes - 1) / kLanes;
      const int64_t tiles = (blocks + kTileBlocks - 1) / kTileBlocks, chunks = (O + 63) / 64;
      const int64_t wanted = kern.strip_tiles ? kern.strip_tiles(job) : 0;
      const int64_t per_strip = wanted > 0 ? wanted : balanced_strip(tiles, strip_tiles(job.k_words));
      const int64_t strips = (tiles + per_strip - 1) / per_strip;
      if (kern.prepare) kern.prepare(job, 0);
      const int64_t items = wanted > 0 ? 1 : chunks;  // channel chunks per strip
      run_parallel(parallel, strips * items, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t t = i / items * per_strip, c = i % items;
          kern.tile(job, t * kTileBlocks, std::min((t + per_strip) * kTileBlocks, blocks), wanted > 0 ? 0 : c * 64,
                    wanted > 0 ? O : std::min(c * 64 + 64, O));
        }
      });
    }
  }
}

}  // namespace bidrn

// ---------------------------------------------------------------- C API

namespace {
using bidrn::serial_for;

// The best of three timings of `loop` (which runs `count` operations): operations per ns.
template <class Loop>
double best_rate(int64_t count, Loop loop) {
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    loop(rep);
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    if (ns > 0) best = std::max(best, static_cast<double>(count) / ns);
  }
  return best;
}

// The C API's shape13: batch, in_channels, in_h, in_w, out_channels, out_h, out_w, kernel_h, kernel_w,
// stride_h, stride_w, pad_h, pad_w.
bidrn::ConvShape shape_of(const int64_t* v, bool transposed) {
  bidrn::ConvShape s;
  s.batch = v[0], s.in_channels = v[1], s.in_h = v[2], s.in_w = v[3];
  s.out_channels = v[4], s.out_h = v[5], s.out_w = v[6];
  s.kernel_h = v[7], s.kernel_w = v[8], s.stride_h = v[9], s.stride_w = v[10], s.pad_h = v[11], s.pad_w = v[12];
  s.transposed = transposed;
  return s;
}
}  // namespace

extern "C" {

const char* bidrn_kernels_active_path() { return bidrn::path_name(bidrn::active_path()); }

int bidrn_kernels_set_path(const char* name) {
  for (bidrn::Path p : bidrn::kPathsBestFirst) {
    if (std::strcmp(name, bidrn::path_name(p)) == 0) return bidrn::set_active_path(p) ? 1 : 0;
  }
  return 0;
}

const char* bidrn_kernels_supported_paths() {
  static const std::string list = [] {
    std::string s;
    for (bidrn::Path p : bidrn::kPathsBestFirst) {
      if (bidrn::path_supported(p)) s += (s.empty() ? "" : ",") + std::string(bidrn::path_name(p));
    }
    return s;
  }();
  return list.c_str();
}

int bidrn_kernels_amx_takes(const int64_t* v, int transposed) {
#if defined(__x86_64__) && defined(BIDRN_AMX)
  static const float zero = 0.0f;
  bidrn::ConvArgs args{&zero, nullptr, nullptr, nullptr, bidrn::Output::kFloat};
  return bidrn::path_supported(bidrn::Path::kAmx) && bidrn::amx_handles(shape_of(v, transposed != 0), {}, args) ? 1 : 0;
#else
  (void)v, (void)transposed;
  return 0;
#endif
}

double bidrn_probe_clock_ghz(int64_t adds) {
  const int64_t steps = std::max<int64_t>(adds / 16, 1);
  return best_rate(steps * 16, [steps](int rep) {
    uint64_t x = static_cast<uint64_t>(rep), step = 1;
    asm volatile("" : "+r"(step));  // a register operand: newer cores fold a chain of `add reg, imm` at rename
    for (int64_t i = 0; i < steps; ++i) {
      // Each add waits for the previous one (the empty asm keeps x in a register and the adds unmerged);
      // the loop's own counter and branch run beside the chain.
#define BIDRN_CHAIN_ADD x += step; asm volatile("" : "+r"(x));
      BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD
      BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD
      BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD BIDRN_CHAIN_ADD
#undef BIDRN_CHAIN_ADD
    }
  });
}

double bidrn_probe_adds_per_ns(int64_t adds) {
  const int64_t steps = std::max<int64_t>(adds / 8, 1);
  return best_rate(steps * 8, [steps](int rep) {
    uint64_t a = static_cast<uint64_t>(rep), b = 0, c = 0, d = 0, e = 0, f = 0, g = 0, h = 0, step = 1;
    asm volatile("" : "+r"(step));
    for (int64_t i = 0; i < steps; ++i) {
      // Eight independent adds a step: the rate is how many the core's ALUs retire per ns, which falls
      // when another thread shares the core's ports (SMT) while a single chain's rate does not.
      a += step, b += step, c += step, d += step, e += step, f += step, g += step, h += step;
      asm volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d), "+r"(e), "+r"(f), "+r"(g), "+r"(h));
    }
  });
}

double bidrn_probe_tile_ns(int64_t multiplies) {
#if defined(__x86_64__) && defined(BIDRN_AMX)
  if (!bidrn::path_supported(bidrn::Path::kAmx)) return -1.0;
  double best = -1.0;
  for (int rep = 0; rep < 3; ++rep) {
    const double ns = bidrn::amx_probe_ns(multiplies);
    if (best < 0 || ns < best) best = ns;
  }
  return best;
#else
  (void)multiplies;
  return -1.0;
#endif
}

double bidrn_probe_count_ceiling(const char* path, int64_t steps) {
  for (bidrn::Path p : bidrn::kPathsBestFirst) {
    if (std::strcmp(path, bidrn::path_name(p)) != 0) continue;
    if (!bidrn::path_supported(p)) return -1.0;
    if (p == bidrn::Path::kAmx) {  // one tdpbssd: 16 x 16 outputs x 64 int8 (sign byte) products
      const double ns = bidrn_probe_tile_ns(steps);
      return ns > 0 ? 16.0 * 16.0 * 64.0 / ns : -1.0;
    }
    int64_t (*loop)(int64_t) = bidrn::kernels_for(p).count_loop;
    if (!loop) return -1.0;
    int64_t macs = 0;  // what the loop did: steps x its MACs per step
    const double per_ns = best_rate(1, [&](int) { macs = loop(steps); });
    return per_ns * static_cast<double>(macs);
  }
  return -1.0;
}

const char* bidrn_binary_conv(const int64_t* v, int transposed, const float* x_float, const uint64_t* x_packed,
                              const uint64_t* weight, const float* scale, const float* bias, const float* rprelu,
                              int output, void* out) {
  const bidrn::ConvShape s = shape_of(v, transposed != 0);
  if (const char* err = bidrn::check_shape(s)) return err;
  bidrn::Epilogue ep{scale, bias, rprelu};
  bidrn::ConvArgs args{x_float, x_packed, weight, out, static_cast<bidrn::Output>(output)};
  bidrn::binary_conv(s, ep, args, serial_for);
  return nullptr;
}
}
