// AVX2 path (Haswell+, Zen 1+). AVX2 has no vector popcount, so each byte of (row xor weight) is counted
// with two 16-entry pshufb lookups (low and high nibble), summed in byte lanes for up to 31 words
// (31 * 8 < 256), then widened once with vpsadbw, which sums the 8 bytes of each 64-bit lane: exactly
// one pixel's count, since lane = pixel here as on the AVX-512 path.
// The float NCHW output of a plain conv and FDR's branches are finished in registers, one output channel at
// a time (channel_run, branch_run), as on AVX-512; the other outputs go through the shared scalar epilogue.
// Compiled with -mavx2 -mpopcnt.
#include <immintrin.h>

#include <cmath>

#include "bconv_internal.h"

namespace bidrn {
namespace {

constexpr int64_t kMaxByteSteps = 31;

// Per-byte popcount by two nibble lookups.
struct NibbleCount {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  __m256i operator()(__m256i d) const {
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(d, low)),
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(d, 4), low)));
  }
};

// One block of 8 pixels (2 ymm) x NB channels: 2 * NB byte accumulators + 2 rows + broadcast + 2 lookup
// constants stay within the 16 ymm registers at NB = 4.
template <int NB>
void micro(const uint64_t* a, const uint64_t* w, int64_t ldw, int64_t k_words, int32_t* r) {
  const NibbleCount count;
  __m256i total[NB][2];
  for (int n = 0; n < NB; ++n) total[n][0] = total[n][1] = _mm256_setzero_si256();
  for (int64_t k0 = 0; k0 < k_words; k0 += kMaxByteSteps) {
    const int64_t k1 = k0 + kMaxByteSteps < k_words ? k0 + kMaxByteSteps : k_words;
    __m256i bytes[NB][2];
    for (int n = 0; n < NB; ++n) bytes[n][0] = bytes[n][1] = _mm256_setzero_si256();
    for (int64_t k = k0; k < k1; ++k) {
      const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k * kLanes));
      const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k * kLanes + 4));
      for (int n = 0; n < NB; ++n) {
        const __m256i wv = _mm256_set1_epi64x(static_cast<long long>(w[n * ldw + k]));
        bytes[n][0] = _mm256_add_epi8(bytes[n][0], count(_mm256_xor_si256(a0, wv)));
        bytes[n][1] = _mm256_add_epi8(bytes[n][1], count(_mm256_xor_si256(a1, wv)));
      }
    }
    const __m256i zero = _mm256_setzero_si256();
    for (int n = 0; n < NB; ++n) {
      total[n][0] = _mm256_add_epi64(total[n][0], _mm256_sad_epu8(bytes[n][0], zero));
      total[n][1] = _mm256_add_epi64(total[n][1], _mm256_sad_epu8(bytes[n][1], zero));
    }
  }
  // Narrow the 64-bit lane counts (< 2^31) to int32: pick the low dword of each lane.
  const __m256i pick_low = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  for (int n = 0; n < NB; ++n) {
    const __m256i lo = _mm256_permutevar8x32_epi32(total[n][0], pick_low);
    const __m256i hi = _mm256_permutevar8x32_epi32(total[n][1], pick_low);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + n * kTilePixels), _mm256_blend_epi32(lo, hi, 0xf0));
  }
}

constexpr int kNB = 4;
constexpr BlockMicro kMicro[kNB + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>};

// The counts of N im2col rows of one pixel block each (row n at a[n], k_words words of 8 lanes) against
// weight rows w[n], as 8 int32 per row: channel_run passes N blocks against one weight row, branch_run one
// block against the N branches' rows. KW > 0 fixes k_words at compile time (the 1 x 1 convs of 64, 128 and
// 256 channels: no loop, no spilled accumulators). The 64-bit lane sums of a row's two halves (pixels 0-3,
// 4-7; < 2^16, see kMaxFusedWords) are packed to 16 bits, [p0 p1 p4 p5 | p2 p3 p6 p7] as int32, and put in
// pixel order by one 64-bit permute.
template <int N, int KW>
__attribute__((always_inline)) inline void count_rows(const uint64_t* const (&a)[N], const uint64_t* const (&w)[N],
                                                      int64_t k_words, const NibbleCount& count, __m256i (&r)[N]) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i total[N][2];
  // Byte sums of words [k0, k1) (at most kMaxByteSteps), widened into total.
  const auto chunk = [&](int64_t k0, int64_t k1, bool first) {
    __m256i bytes[N][2];
    const auto word = [&](int64_t k, bool first_word) {
#pragma GCC unroll 4
      for (int n = 0; n < N; ++n) {
        const __m256i wv = _mm256_set1_epi64x(static_cast<long long>(w[n][k]));
        const __m256i* row = reinterpret_cast<const __m256i*>(a[n] + k * kLanes);
        const __m256i c0 = count(_mm256_xor_si256(_mm256_loadu_si256(row), wv));
        const __m256i c1 = count(_mm256_xor_si256(_mm256_loadu_si256(row + 1), wv));
        bytes[n][0] = first_word ? c0 : _mm256_add_epi8(bytes[n][0], c0);
        bytes[n][1] = first_word ? c1 : _mm256_add_epi8(bytes[n][1], c1);
      }
    };
    word(k0, true);
    if (KW > 0) {
#pragma GCC unroll 8
      for (int64_t k = k0 + 1; k < KW; ++k) word(k, false);
    } else {
      for (int64_t k = k0 + 1; k < k1; ++k) word(k, false);
    }
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n)
      for (int h = 0; h < 2; ++h) {
        const __m256i s = _mm256_sad_epu8(bytes[n][h], zero);
        total[n][h] = first ? s : _mm256_add_epi64(total[n][h], s);
      }
  };
  if (KW > 0 || k_words <= kMaxByteSteps) {  // every 1 x 1 conv up to 1,984 channels, 3 x 3 up to 192
    chunk(0, KW > 0 ? KW : k_words, true);
  } else {
    chunk(0, kMaxByteSteps, true);
    for (int64_t k0 = kMaxByteSteps; k0 < k_words; k0 += kMaxByteSteps)
      chunk(k0, k0 + kMaxByteSteps < k_words ? k0 + kMaxByteSteps : k_words, false);
  }
#pragma GCC unroll 4
  for (int n = 0; n < N; ++n) r[n] = _mm256_permute4x64_epi64(_mm256_packus_epi32(total[n][0], total[n][1]), 0xd8);
}

// What the in-register epilogue needs about one block of 8 pixels: its pixels' padding-mask ids (for the
// correction lookup), whether any is non-zero, its live lanes, and the pooled residual's sources.
struct alignas(32) BlockInfo {
  __m256i ids;
  __m256i live_mask;  // all ones in lanes < live (maskload / maskstore)
  __m256i pool_src;   // residual_pool 2: each lane's top-left residual pixel
  int32_t pool_row;   // >= 0: the live lanes share an output row, windows from this offset
  int32_t live;
  bool border;
};

inline __m256i lanes_below(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

void build_blocks(const TileJob& j, int64_t b0, int64_t b1, BlockInfo* info) {
  for (int64_t b = b0; b < b1; ++b) {
    BlockInfo& t = info[b - b0];
    const int64_t first = b * kLanes;
    const int live = int(j.pixels - first < kLanes ? j.pixels - first : kLanes);
    alignas(16) uint16_t ids[kLanes] = {};
    for (int l = 0; l < live; ++l) ids[l] = j.mask_id[first + l];
    t.ids = _mm256_cvtepu16_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(ids)));
    t.border = !_mm256_testz_si256(t.ids, t.ids);
    t.live = live;
    t.live_mask = lanes_below(live);
    t.pool_row = -1;
    if (j.ep.residual_pool == 2) {
      alignas(32) int32_t src[kLanes] = {};
      for (int l = 0; l < live; ++l) {
        const int64_t p = first + l, oy = p / j.out_w, ox = p - oy * j.out_w;
        src[l] = static_cast<int32_t>(2 * oy * j.ep.residual_w + 2 * ox);
      }
      t.pool_src = _mm256_load_si256(reinterpret_cast<const __m256i*>(src));
      if (first % j.out_w + live <= j.out_w) t.pool_row = src[0];
    }
  }
}

inline __m256 load_block(const float* p, const BlockInfo& t) {
  return t.live == kLanes ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, t.live_mask);
}

// Hardtanh as torch.clamp: with the bound first, max / min return the second operand when one is NaN, so
// NaN passes; lo / hi = -inf / +inf make it the identity.
inline __m256 clamp(__m256 v, __m256 lo, __m256 hi) { return _mm256_min_ps(hi, _mm256_max_ps(lo, v)); }

// DScR's pooled residual (residual_pool 2) of one block: each lane's 2 x 2 window, summed row by row and
// divided by 4 as ATen's avg_pool2d. Where the live lanes share an output row the windows are two rows of
// 2 * live contiguous floats, split into even / odd columns; else gathered.
inline __m256 pooled_residual(const BlockInfo& t, const float* res, int64_t residual_w, __m256 lo, __m256 hi) {
  __m256 a, b, c, d;  // the window's top-left, top-right, bottom-left, bottom-right values
  if (t.pool_row >= 0) {
    const float* top = res + t.pool_row;
    const float* bottom = top + residual_w;
    __m256 t0, t1, u0, u1;
    if (t.live == kLanes) {
      t0 = _mm256_loadu_ps(top), t1 = _mm256_loadu_ps(top + 8);
      u0 = _mm256_loadu_ps(bottom), u1 = _mm256_loadu_ps(bottom + 8);
    } else {
      const __m256i first = lanes_below(2 * t.live), second = lanes_below(2 * t.live - 8);
      t0 = _mm256_maskload_ps(top, first), t1 = _mm256_maskload_ps(top + 8, second);
      u0 = _mm256_maskload_ps(bottom, first), u1 = _mm256_maskload_ps(bottom + 8, second);
    }
    // shuffle_ps picks within 128-bit halves: [x0 x2 y0 y2 | x4 x6 y4 y6]; the 64-bit permute puts the
    // pairs in order.
    const auto even = [](__m256 x, __m256 y) {
      return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x, y, 0x88)), 0xd8));
    };
    const auto odd = [](__m256 x, __m256 y) {
      return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x, y, 0xdd)), 0xd8));
    };
    a = clamp(even(t0, t1), lo, hi), b = clamp(odd(t0, t1), lo, hi);
    c = clamp(even(u0, u1), lo, hi), d = clamp(odd(u0, u1), lo, hi);
  } else {
    const __m256 zero = _mm256_setzero_ps(), live = _mm256_castsi256_ps(t.live_mask);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i below = _mm256_add_epi32(t.pool_src, _mm256_set1_epi32(static_cast<int>(residual_w)));
    a = clamp(_mm256_mask_i32gather_ps(zero, res, t.pool_src, live, 4), lo, hi);
    b = clamp(_mm256_mask_i32gather_ps(zero, res, _mm256_add_epi32(t.pool_src, one), live, 4), lo, hi);
    c = clamp(_mm256_mask_i32gather_ps(zero, res, below, live, 4), lo, hi);
    d = clamp(_mm256_mask_i32gather_ps(zero, res, _mm256_add_epi32(below, one), live, 4), lo, hi);
  }
  return _mm256_div_ps(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a, b), c), d), _mm256_set1_ps(4.0f));
}

// One output channel's constants, broadcast once per channel (the stores below could alias the job's
// arrays, so the compiler would otherwise read them again after every store).
struct ChannelEpilogue {
  __m256 scale, bias, beta, gamma, zeta;
  ChannelEpilogue() = default;
  ChannelEpilogue(const TileJob& j, int64_t o) {
    const int64_t O = j.out_channels;
    const bool rprelu = j.ep.rprelu != nullptr;
    scale = _mm256_set1_ps(j.ep.scale[o]), bias = _mm256_set1_ps(j.ep.bias[o]);
    beta = _mm256_set1_ps(rprelu ? j.ep.rprelu[o] : 0.0f);
    gamma = _mm256_set1_ps(rprelu ? j.ep.rprelu[O + o] : 0.0f);
    zeta = _mm256_set1_ps(rprelu ? j.ep.rprelu[2 * O + o] : 0.0f);
  }
  // y = acc * scale + bias (mul then add, as PyTorch), then RPReLU (eq. 6) where the job has one.
  __m256 operator()(__m256i acc, bool rprelu) const {
    __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale), bias);
    if (rprelu) {
      const __m256 s = _mm256_sub_ps(y, gamma);
      const __m256 positive = _mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_GT_OQ);
      y = _mm256_add_ps(_mm256_blendv_ps(_mm256_mul_ps(beta, s), s, positive), zeta);
    }
    return y;
  }
};

constexpr int64_t kPrefetchAhead = 8 * kTilePixels;  // floats: 1 KB ahead in each stream the epilogue reads

inline void prefetch(const float* p) {
  if (p) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchAhead), _MM_HINT_T0);
}

// The features of a channel_run instance: fixed at compile time (the common combinations, no per-block tests
// and fewer live registers), or kRuntime: read from the job (DScR's pooled residual, a partial sum).
enum Feature : unsigned { kRprelu = 1, kResidual = 2, kPost = 4, kShortcut = 8, kRuntime = 16 };

// The in-register epilogue, one output channel at a time (float NCHW output of a plain conv): the strip's
// blocks are swept in order, MB at a time, so every float stream (output, residual, partial, shortcut) is
// one contiguous run: acc = k_bits - 2 r - corr[o][id], the channel epilogue, residual, partial sum, post
// affine, shortcut, store. `first` is the strip's first pixel.
template <int MB, unsigned F, int KW>
__attribute__((noinline)) void channel_run(const TileJob& j, const BlockInfo* info, int64_t blocks,
                                           const uint64_t* a, int64_t first, int64_t o, int64_t rc) {
  constexpr bool runtime = (F & kRuntime) != 0;
  const bool rprelu = runtime ? j.ep.rprelu != nullptr : (F & kRprelu) != 0;
  const bool residual = runtime ? j.residual != nullptr : (F & kResidual) != 0;
  const bool post = runtime ? j.ep.post != nullptr : (F & kPost) != 0;
  const bool with_shortcut = runtime ? j.shortcut != nullptr : (F & kShortcut) != 0;
  const bool pooled = runtime && j.ep.residual_pool == 2;
  const bool with_partial = runtime && j.partial != nullptr;
  const NibbleCount count;
  const int64_t a_stride = j.k_words * kLanes, k_words = j.k_words, plane = j.out_plane, O = j.out_channels;
  const uint64_t* w = j.w + o * j.ldw;
  const ChannelEpilogue epilogue(j, o);
  const __m256i k_bits = _mm256_set1_epi32(j.k_bits);
  const __m256 post_scale = _mm256_set1_ps(post ? j.ep.post[o] : 1.0f);
  const __m256 post_bias = _mm256_set1_ps(post ? j.ep.post[O + o] : 0.0f);
  const __m256 lo = _mm256_set1_ps(j.ep.clamp_residual ? -1.0f : -INFINITY);
  const __m256 hi = _mm256_set1_ps(j.ep.clamp_residual ? 1.0f : INFINITY);
  const int32_t* corr = j.corr + o * j.corr_stride;
  const __m256i corr_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr));
  const __m256i corr_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr + 8));
  const __m256i seven = _mm256_set1_epi32(7);
  const float* res = residual ? j.residual + rc * j.res_plane : nullptr;
  const float* partial = with_partial ? j.partial + o * plane + first : nullptr;
  const float* shortcut = with_shortcut ? j.shortcut + o * plane + first : nullptr;
  const float* flat_res = residual && !pooled ? res + first : nullptr;
  float* out = static_cast<float*>(j.out) + o * plane + first;
  const auto finish = [&](const BlockInfo& t, __m256i r, int64_t at) {
    __m256i v = _mm256_sub_epi32(k_bits, _mm256_add_epi32(r, r));
    if (t.border) {  // corr[o][id] for ids < 16: two 8-entry permutes, picked by id > 7
      const __m256i c = _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(corr_lo, t.ids),
                                           _mm256_permutevar8x32_epi32(corr_hi, t.ids), _mm256_cmpgt_epi32(t.ids, seven));
      v = _mm256_sub_epi32(v, c);
    }
    __m256 y = epilogue(v, rprelu);
    if (residual) {
      y = _mm256_add_ps(y, pooled ? pooled_residual(t, res, j.ep.residual_w, lo, hi)
                                  : clamp(load_block(flat_res + at, t), lo, hi));
    }
    if (with_partial) y = _mm256_add_ps(load_block(partial + at, t), y);
    if (post) y = _mm256_add_ps(_mm256_mul_ps(y, post_scale), post_bias);
    if (with_shortcut) y = _mm256_add_ps(y, load_block(shortcut + at, t));
    if (t.live == kLanes) {
      _mm256_storeu_ps(out + at, y);
    } else {
      _mm256_maskstore_ps(out + at, t.live_mask, y);
    }
  };
  int64_t b = 0;
  for (; b + MB <= blocks; b += MB) {
    const int64_t at = b * kLanes;
    if (with_shortcut) prefetch(shortcut + at);
    if (flat_res) prefetch(flat_res + at);
    if (with_partial) prefetch(partial + at);
    const uint64_t* rows[MB];
    const uint64_t* weights[MB];
    for (int m = 0; m < MB; ++m) rows[m] = a + (b + m) * a_stride, weights[m] = w;
    __m256i r[MB];
    count_rows<MB, KW>(rows, weights, k_words, count, r);
    for (int m = 0; m < MB; ++m) finish(info[b + m], r[m], at + m * kLanes);
  }
  for (; b < blocks; ++b) {
    const uint64_t* rows[1] = {a + b * a_stride};
    const uint64_t* weights[1] = {w};
    __m256i r[1];
    count_rows<1, KW>(rows, weights, k_words, count, r);
    finish(info[b], r[0], b * kLanes);
  }
}

// Blocks per count_rows call in channel_run: 2 blocks = 4 byte accumulators, which leaves room for the
// lookup constants and the broadcast weight in the 16 ymm registers.
constexpr int kChannelBlocks = 2;

using ChannelRun = void (*)(const TileJob&, const BlockInfo*, int64_t, const uint64_t*, int64_t, int64_t, int64_t);

// Compile-time word counts: the 1 x 1 convs of 64, 128, 256 and 512 channels; 0 = read from the job.
inline int fixed_words(int64_t k_words) { return k_words == 1 || k_words == 2 || k_words == 4 || k_words == 8 ? int(k_words) : 0; }

template <unsigned F>
ChannelRun channel_run_words(int64_t k_words) {
  switch (fixed_words(k_words)) {
    case 1: return channel_run<kChannelBlocks, F, 1>;
    case 2: return channel_run<kChannelBlocks, F, 2>;
    case 4: return channel_run<kChannelBlocks, F, 4>;
    case 8: return channel_run<kChannelBlocks, F, 8>;
    default: return channel_run<kChannelBlocks, F, 0>;
  }
}

// The instance for a job: the feature sets BiDRN's ops use (an LCR module with or without the block
// residual; a plain conv with or without RPReLU) fixed at compile time, anything else (a pooled residual, a
// partial sum, other combinations) read from the job.
ChannelRun channel_run_for(const TileJob& j) {
  const bool special = j.ep.residual_pool == 2 || j.partial;
  const unsigned f = (j.ep.rprelu ? kRprelu : 0) | (j.residual ? kResidual : 0) | (j.ep.post ? kPost : 0) |
                     (j.shortcut ? kShortcut : 0);
  if (!special && f == (kRprelu | kResidual | kPost | kShortcut))
    return channel_run_words<kRprelu | kResidual | kPost | kShortcut>(j.k_words);
  if (!special && f == (kRprelu | kResidual | kPost)) return channel_run_words<kRprelu | kResidual | kPost>(j.k_words);
  if (!special && f == kRprelu) return channel_run_words<kRprelu>(j.k_words);
  if (!special && f == 0) return channel_run_words<0>(j.k_words);
  return channel_run<kChannelBlocks, kRuntime, 0>;
}

void avx2_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  // The in-register epilogue covers the common case: float NCHW output of a plain conv whose correction
  // rows fit two 8-entry permutes (<= 16 distinct padding masks, 9 for a 3x3 conv).
  if (j.output != Output::kFloat || j.dest || j.corr_stride != 16 || j.k_words > kMaxFusedWords) {
    tile_by_blocks<kNB>(j, b0, b1, o0, o1, kMicro);
    return;
  }
  BlockInfo info[kMaxStripTiles * kTileBlocks];
  build_blocks(j, b0, b1, info);
  const uint64_t* a = j.a + b0 * j.k_words * kLanes;
  // Residual channel of output o is o mod R: one division per strip, then wrap by subtraction.
  const int64_t R = j.ep.residual_channels;
  int64_t rc = j.residual ? o0 % R : 0;
  const ChannelRun run = channel_run_for(j);
  for (int64_t o = o0; o < o1; ++o, rc = j.residual && rc + 1 == R ? 0 : rc + 1) run(j, info, b1 - b0, a, b0 * kLanes, o, rc);
}

// FDR's K branches (eq. 10) at once, one output channel at a time (Kernels::branch_tile), block by block:
// the K branches' counts (2 K byte accumulators), then b_i = RPReLU_i(scale_i acc_i + bias_i) + Hardtanh(
// residual chunk i), summed as out = b_0, then out + b_i in the branch order, then the last branch's post
// affine and shortcut, and one store. An unpadded 1 x 1 conv: no padding correction.
template <int K, int KW>
__attribute__((noinline)) void branch_run(const TileJob* jobs, const BlockInfo* info, int64_t blocks,
                                          int64_t block0, int64_t o, int64_t rc) {
  const NibbleCount count;
  const TileJob& last = jobs[K - 1];
  const int64_t a_stride = last.k_words * kLanes, k_words = last.k_words, plane = last.out_plane;
  const int64_t O = last.out_channels, first = block0 * kLanes;
  const __m256i k_bits = _mm256_set1_epi32(last.k_bits);
  const bool post = last.ep.post != nullptr, rprelu = last.ep.rprelu != nullptr;
  const __m256 lo = _mm256_set1_ps(last.ep.clamp_residual ? -1.0f : -INFINITY);
  const __m256 hi = _mm256_set1_ps(last.ep.clamp_residual ? 1.0f : INFINITY);
  const uint64_t* w[K];
  const uint64_t* a[K];
  const float* res[K];
  // Each branch's epilogue constants, once per channel.
  ChannelEpilogue epilogue[K];
  for (int i = 0; i < K; ++i) {
    const TileJob& j = jobs[i];
    epilogue[i] = ChannelEpilogue(j, o);
    w[i] = j.w + o * j.ldw;
    a[i] = j.a + block0 * a_stride;
    res[i] = j.residual ? j.residual + rc * j.res_plane + first : nullptr;
  }
  const __m256 post_scale = _mm256_set1_ps(post ? last.ep.post[o] : 1.0f);
  const __m256 post_bias = _mm256_set1_ps(post ? last.ep.post[O + o] : 0.0f);
  const float* shortcut = last.shortcut ? last.shortcut + o * plane + first : nullptr;
  float* out = static_cast<float*>(last.out) + o * plane + first;
  for (int64_t b = 0; b < blocks; ++b) {
    const BlockInfo& t = info[b];
    const int64_t at = b * kLanes;
    if ((b & 1) == 0) prefetch(shortcut ? shortcut + at : nullptr);
    const uint64_t* rows[K];
    for (int i = 0; i < K; ++i) rows[i] = a[i] + b * a_stride;
    __m256i r[K];
    count_rows<K, KW>(rows, w, k_words, count, r);
    __m256 sum = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int i = 0; i < K; ++i) {
      __m256 y = epilogue[i](_mm256_sub_epi32(k_bits, _mm256_add_epi32(r[i], r[i])), rprelu);
      if (res[i]) y = _mm256_add_ps(y, clamp(load_block(res[i] + at, t), lo, hi));
      sum = i == 0 ? y : _mm256_add_ps(sum, y);  // out = b_0, then out = out + b_i (the eager order)
    }
    if (post) sum = _mm256_add_ps(_mm256_mul_ps(sum, post_scale), post_bias);
    if (shortcut) sum = _mm256_add_ps(sum, load_block(shortcut + at, t));
    if (t.live == kLanes) {
      _mm256_storeu_ps(out + at, sum);
    } else {
      _mm256_maskstore_ps(out + at, t.live_mask, sum);
    }
  }
}

using BranchRun = void (*)(const TileJob*, const BlockInfo*, int64_t, int64_t, int64_t, int64_t);

template <int K>
BranchRun branch_run_words(int64_t k_words) {
  switch (fixed_words(k_words)) {
    case 1: return branch_run<K, 1>;
    case 2: return branch_run<K, 2>;
    case 4: return branch_run<K, 4>;
    case 8: return branch_run<K, 8>;
    default: return branch_run<K, 0>;
  }
}

void avx2_branch_tile(const TileJob* jobs, int k, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  BlockInfo info[kMaxStripTiles * kTileBlocks];
  build_blocks(jobs[0], b0, b1, info);
  const int64_t words = jobs[0].k_words;
  const BranchRun run = k == 2 ? branch_run_words<2>(words) : k == 3 ? branch_run_words<3>(words) : branch_run_words<4>(words);
  const int64_t R = jobs[0].ep.residual_channels;
  int64_t rc = jobs[0].residual ? o0 % R : 0;
  for (int64_t o = o0; o < o1; ++o, rc = jobs[0].residual && rc + 1 == R ? 0 : rc + 1) run(jobs, info, b1 - b0, b0, o, rc);
}

// Up to kPackPixels pixels x 64 channels at a time: per channel, one contiguous run of the plane is compared
// 8 pixels at a time into byte masks m[group][channel] (movemask_ps); then, with the 64 channels' bytes of
// one 8-pixel group in two ymm, shifting bit i to the top of every byte and movemask_epi8 gathers pixel i's
// channel bits, 32 at a time. Reading each channel's run whole keeps one stream in flight for the
// prefetchers, as on AVX-512 (the first form hopped across 32 planes every 32 bytes).
constexpr int64_t kPackPixels = 1024;

void avx2_pack(const float* x, int64_t channels, int64_t plane, int64_t p0, int64_t p1, uint64_t* out) {
  const int64_t cw = words_for(channels);
  alignas(32) uint8_t m[kPackPixels / 8][64];
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t g = 0; g < cw; ++g) {
    const int64_t c0 = g * 64, nc = channels - c0 < 64 ? channels - c0 : 64;
    for (int64_t p = p0; p < p1; p += kPackPixels) {
      const int64_t np = p1 - p < kPackPixels ? p1 - p : kPackPixels;
      const int groups = int((np + 7) / 8), full = int(np / 8);
      const __m256i tail = lanes_below(int(np % 8));
      for (int64_t c = 0; c < 64; ++c) {
        if (c >= nc) {
          for (int q = 0; q < groups; ++q) m[q][c] = 0;
          continue;
        }
        const float* row = x + (c0 + c) * plane + p;
        // NGE_UQ: true for negative and NaN, i.e. exactly where torch's sign gives -1; the masked-off
        // lanes of the tail load read 0, which is not negative.
        for (int q = 0; q < full; ++q)
          m[q][c] = static_cast<uint8_t>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + 8 * q), zero, _CMP_NGE_UQ)));
        if (full < groups)
          m[full][c] = static_cast<uint8_t>(
              _mm256_movemask_ps(_mm256_cmp_ps(_mm256_maskload_ps(row + 8 * full, tail), zero, _CMP_NGE_UQ)));
      }
      for (int q = 0; q < groups; ++q) {
        const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(m[q]));
        const __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(m[q] + 32));
        const int n = int(np - 8 * q < 8 ? np - 8 * q : 8);
        uint64_t* dst = out + (p + 8 * q) * cw + g;
        for (int i = 0; i < n; ++i) {
          // bit i of each byte -> bit 7 of that byte (a 16-bit shift moves the low byte's bit i to bit 7
          // and the high byte's to bit 15), then one bit per byte = per channel.
          const uint32_t l = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(lo, 7 - i)));
          const uint32_t h = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(hi, 7 - i)));
          dst[i * cw] = l | (uint64_t(h) << 32);
        }
      }
    }
  }
}

int64_t avx2_popcount(const uint64_t* words, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += _mm_popcnt_u64(words[i]);
  return c;
}

}  // namespace

const Kernels kAvx2Kernels{avx2_tile, avx2_pack, avx2_popcount, avx2_branch_tile};

}  // namespace bidrn
