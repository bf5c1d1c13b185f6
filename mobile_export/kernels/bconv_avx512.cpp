// AVX-512 VPOPCNTDQ path (Ice Lake+, Zen 4/5). Lane = output pixel: one zmm holds word k of 8 pixels'
// im2col rows, the weight word W[o][k] is broadcast, so a tile of MB pixel blocks x NB output channels
// needs 3 instructions (xor, popcnt, add) per 512 binary MACs and no horizontal reduction at the end.
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vpopcntdq -mpopcnt.
#include <immintrin.h>

#include <cmath>

#include "bconv_internal.h"
#include "int8_gemm.h"
#include "int8_pack_avx512.h"

namespace bidrn {
namespace {

// What the in-register epilogue needs about a tile: per pair of blocks (16 pixels, one zmm of floats), the
// pixels' padding-mask ids (int32 lanes, for the correction-row permute), whether any of them is non-zero,
// and a store mask.
struct FusedTile {
  __m512i ids[(kTileBlocks + 1) / 2];
  __m512i pool_src[(kTileBlocks + 1) / 2];  // residual_pool 2: each lane's top-left residual pixel
  int32_t pool_row[(kTileBlocks + 1) / 2];   // >= 0: the lanes share an output row, windows from this offset
  bool border[(kTileBlocks + 1) / 2];
  __mmask16 live[(kTileBlocks + 1) / 2];
};

// DScR's pooled residual (residual_pool 2) for one pair of blocks: each lane's 2 x 2 window of the (Hardtanh'ed,
// through lo / hi) residual plane, summed row by row and divided by 4 as ATen's avg_pool2d. Where the 16 lanes
// share an output row the windows are 2 x 32 contiguous floats, split into even / odd columns; else gathered.
inline __m512 pooled_residual(const FusedTile& t, int pair, const float* res, int64_t residual_w, __m512 lo,
                              __m512 hi) {
  // Hardtanh as torch.clamp: with the bound first, max/min return the second operand, so NaN passes.
  const auto clamp = [&](__m512 v) { return _mm512_min_ps(hi, _mm512_max_ps(lo, v)); };
  __m512 a, b, c, d;  // the window's top-left, top-right, bottom-left, bottom-right values
  const __mmask16 live = t.live[pair];
  if (t.pool_row[pair] >= 0) {
    const float* top = res + t.pool_row[pair];
    const float* bottom = top + residual_w;
    const unsigned n2 = 2u * static_cast<unsigned>(__builtin_popcount(live));
    const __mmask16 first = static_cast<__mmask16>(n2 >= 16 ? 0xFFFF : (1u << n2) - 1);
    const __mmask16 second = static_cast<__mmask16>(n2 <= 16 ? 0 : n2 >= 32 ? 0xFFFF : (1u << (n2 - 16)) - 1);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 t0 = _mm512_maskz_loadu_ps(first, top), t1 = _mm512_maskz_loadu_ps(second, top + 16);
    const __m512 b0 = _mm512_maskz_loadu_ps(first, bottom), b1 = _mm512_maskz_loadu_ps(second, bottom + 16);
    a = clamp(_mm512_permutex2var_ps(t0, even, t1)), b = clamp(_mm512_permutex2var_ps(t0, odd, t1));
    c = clamp(_mm512_permutex2var_ps(b0, even, b1)), d = clamp(_mm512_permutex2var_ps(b0, odd, b1));
  } else {
    const __m512i src = t.pool_src[pair];
    const __m512i one = _mm512_set1_epi32(1);
    const __m512 zero = _mm512_setzero_ps();
    const __m512i below = _mm512_add_epi32(src, _mm512_set1_epi32(static_cast<int>(residual_w)));
    a = clamp(_mm512_mask_i32gather_ps(zero, live, src, res, 4));
    b = clamp(_mm512_mask_i32gather_ps(zero, live, _mm512_add_epi32(src, one), res, 4));
    c = clamp(_mm512_mask_i32gather_ps(zero, live, below, res, 4));
    d = clamp(_mm512_mask_i32gather_ps(zero, live, _mm512_add_epi32(below, one), res, 4));
  }
  return _mm512_div_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), c), d), _mm512_set1_ps(4.0f));
}

// Two blocks' 64-bit popcount sums as one zmm of 16 int32 (the second half zero for an odd last block).
inline __m512i narrow_pair(__m512i a, __m512i b) {
  // The low dword of every qword of a, then of b: one two-source permute.
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  return _mm512_permutex2var_epi32(a, even, b);
}

// The in-register epilogue, one output channel at a time (the float NCHW output of a plain conv). Per channel
// the strip's tiles are swept in order, so every float stream (output, residual, partial, shortcut) is one
// contiguous run, and a tile's MB accumulators go from the popcount to the store without leaving registers:
// acc = k_bits - 2 r - corr[o][id], y = acc * scale + bias (mul then add, as PyTorch), optional RPReLU,
// residual, partial sum, post affine and shortcut, masked store. The job's per-channel constants are
// broadcast once per channel. Against the MB x NB register tile below (which spilled its 24 accumulators
// to the stack before the epilogue and re-read the job per 16 outputs) this halved the 1 x 1 layers and
// took a quarter to a third off the 3 x 3 ones (docs/kernels.md).

template <int MB>
__attribute__((noinline)) void channel_run(const TileJob& j, const FusedTile* fused, const int64_t* p0, int tiles,
                                           const uint64_t* a, int64_t o, int64_t rc) {
  const int64_t a_stride = j.k_words * kLanes, k_words = j.k_words, plane = j.out_plane, O = j.out_channels;
  const uint64_t* w = j.w + o * j.ldw;
  const __m512i k_bits = _mm512_set1_epi32(j.k_bits);
  const __m512 k_bits_f = _mm512_set1_ps(float(j.k_bits)), two = _mm512_set1_ps(2.0f);
  const __m512 scale = _mm512_set1_ps(j.ep.scale[o]), bias = _mm512_set1_ps(j.ep.bias[o]);
  const bool rprelu = j.ep.rprelu != nullptr, post = j.ep.post != nullptr;
  const __m512 beta = _mm512_set1_ps(rprelu ? j.ep.rprelu[o] : 0.0f);
  const __m512 gamma = _mm512_set1_ps(rprelu ? j.ep.rprelu[O + o] : 0.0f);
  const __m512 zeta = _mm512_set1_ps(rprelu ? j.ep.rprelu[2 * O + o] : 0.0f);
  const __m512 post_scale = _mm512_set1_ps(post ? j.ep.post[o] : 1.0f);
  const __m512 post_bias = _mm512_set1_ps(post ? j.ep.post[O + o] : 0.0f);
  // Hardtanh bounds; +-inf make the clamp the identity (NaN still passes).
  const __m512 lo = _mm512_set1_ps(j.ep.clamp_residual ? -1.0f : -INFINITY);
  const __m512 hi = _mm512_set1_ps(j.ep.clamp_residual ? 1.0f : INFINITY);
  const bool pooled = j.ep.residual_pool == 2;
  const float* res = j.residual ? j.residual + rc * j.res_plane : nullptr;
  const float* partial = j.partial ? j.partial + o * plane : nullptr;
  const float* shortcut = j.shortcut ? j.shortcut + o * plane : nullptr;
  float* out = static_cast<float*>(j.out) + o * plane;
  const int32_t* corr = j.corr + o * j.corr_stride;
  for (int i = 0; i < tiles; ++i, a += kTileBlocks * a_stride) {
    const FusedTile& t = fused[i];
    // The prefetchers follow these streams poorly next to the im2col reads; ask for lines 1 KB on (a hint,
    // harmless past a plane's end).
    const int64_t ahead = p0[i] + kPrefetchAhead;
    if (shortcut) _mm_prefetch(reinterpret_cast<const char*>(shortcut + ahead), _MM_HINT_T0);
    if (shortcut) _mm_prefetch(reinterpret_cast<const char*>(shortcut + ahead + 16), _MM_HINT_T0);
    if (res && !pooled) _mm_prefetch(reinterpret_cast<const char*>(res + ahead), _MM_HINT_T0);
    if (res && !pooled) _mm_prefetch(reinterpret_cast<const char*>(res + ahead + 16), _MM_HINT_T0);
    if (partial) _mm_prefetch(reinterpret_cast<const char*>(partial + ahead), _MM_HINT_T0);
    if (partial) _mm_prefetch(reinterpret_cast<const char*>(partial + ahead + 16), _MM_HINT_T0);
    // The first word's counts start the sums (k_words >= 1): no adds to zero.
    __m512i acc[MB];
    const __m512i w0 = _mm512_set1_epi64(static_cast<long long>(w[0]));
    for (int m = 0; m < MB; ++m)
      acc[m] = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a + m * a_stride), w0));
    for (int64_t k = 1; k < k_words; ++k) {
      const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w[k]));
      for (int m = 0; m < MB; ++m) {
        const __m512i av = _mm512_loadu_si512(a + m * a_stride + k * kLanes);
        acc[m] = _mm512_add_epi64(acc[m], _mm512_popcnt_epi64(_mm512_xor_si512(av, wv)));
      }
    }
    for (int m = 0; m < MB; m += 2) {
      const int pair = m / 2;
      const int64_t at = p0[i] + m * kLanes;
      const __mmask16 live = t.live[pair];
      const __m512i r = narrow_pair(acc[m], m + 1 < MB ? acc[m + 1] : _mm512_setzero_si512());
      // k_bits - 2 r (- the padding correction): as one exact FMA on the float count where no tap is padding
      // (every term an integer below 2^24), in integers where the correction applies.
      __m512 v;
      if (t.border[pair]) {
        const __m512i corrected = _mm512_sub_epi32(_mm512_sub_epi32(k_bits, _mm512_add_epi32(r, r)),
                                                   _mm512_permutexvar_epi32(t.ids[pair], _mm512_loadu_si512(corr)));
        v = _mm512_cvtepi32_ps(corrected);
      } else {
        v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(r), two, k_bits_f);
      }
      __m512 y = _mm512_add_ps(_mm512_mul_ps(v, scale), bias);
      if (rprelu) {
        const __m512 s = _mm512_sub_ps(y, gamma);
        const __mmask16 positive = _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ);
        y = _mm512_add_ps(_mm512_mask_mul_ps(s, static_cast<__mmask16>(~positive), beta, s), zeta);
      }
      if (res) {
        y = _mm512_add_ps(y, pooled ? pooled_residual(t, pair, res, j.ep.residual_w, lo, hi)
                                    : _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_maskz_loadu_ps(live, res + at))));
      }
      if (partial) y = _mm512_add_ps(_mm512_maskz_loadu_ps(live, partial + at), y);
      if (post) y = _mm512_add_ps(_mm512_mul_ps(y, post_scale), post_bias);
      if (shortcut) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(live, shortcut + at));
      _mm512_mask_storeu_ps(out + at, live, y);
    }
  }
}

// The other outputs (raw accumulators, packed signs, a transposed conv's scattered pixels, > 16 padding
// masks): MB blocks x NB channels of accumulators = 24 zmm at the full 4 x 6 tile, plus 4 row loads and the
// broadcast, written as int32 for the shared scalar epilogue (finish_tile).
template <int MB, int NB>
void micro(const TileJob& j, int64_t o, const uint64_t* a, int32_t* r) {
  const int64_t a_stride = j.k_words * kLanes, ldw = j.ldw;
  const uint64_t* w = j.w + o * ldw;
  __m512i acc[MB][NB];
  for (int m = 0; m < MB; ++m)
    for (int n = 0; n < NB; ++n) acc[m][n] = _mm512_setzero_si512();
  for (int64_t k = 0; k < j.k_words; ++k) {
    __m512i av[MB];
    for (int m = 0; m < MB; ++m) av[m] = _mm512_loadu_si512(a + m * a_stride + k * kLanes);
    for (int n = 0; n < NB; ++n) {
      const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w[n * ldw + k]));
      for (int m = 0; m < MB; ++m)
        acc[m][n] = _mm512_add_epi64(acc[m][n], _mm512_popcnt_epi64(_mm512_xor_si512(av[m], wv)));
    }
  }
  for (int n = 0; n < NB; ++n)
    for (int m = 0; m < MB; ++m)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + n * kTilePixels + m * kLanes), _mm512_cvtepi64_epi32(acc[m][n]));
}

constexpr int kNB = 6;
using Micro = void (*)(const TileJob&, int64_t, const uint64_t*, int32_t*);

template <int MB>
constexpr Micro pick(int nb) {
  return nb == 1 ? micro<MB, 1> : nb == 2 ? micro<MB, 2> : nb == 3 ? micro<MB, 3>
       : nb == 4 ? micro<MB, 4> : nb == 5 ? micro<MB, 5> : micro<MB, 6>;
}

Micro micro_for(int mb, int nb) {
  switch (mb) {
    case 1: return pick<1>(nb);
    case 2: return pick<2>(nb);
    case 3: return pick<3>(nb);
    default: return pick<4>(nb);
  }
}

// Per tile of the strip [b0, b1): its pairs' mask ids, border flags, live lanes and pooled-residual sources.
void build_fused(const TileJob& j, const Strip& strip, int64_t b0, int64_t b1, FusedTile* fused) {
  for (int i = 0; i < strip.tiles; ++i) {
    const int mb = int((i + 1) * kTileBlocks <= b1 - b0 ? kTileBlocks : b1 - b0 - i * kTileBlocks);
    for (int m = 0; m < mb; m += 2) {
      const int64_t first = strip.tile[i].p0 + m * kLanes;
      const int64_t live = j.pixels - first < 2 * kLanes ? j.pixels - first : 2 * kLanes;
      const __mmask16 lanes = static_cast<__mmask16>((1u << live) - 1);
      fused[i].ids[m / 2] = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes, j.mask_id + first));
      fused[i].border[m / 2] = _mm512_test_epi32_mask(fused[i].ids[m / 2], fused[i].ids[m / 2]) != 0;
      fused[i].live[m / 2] = lanes;
      if (j.ep.residual_pool == 2) {
        alignas(64) int32_t src[16] = {};
        for (int64_t l = 0; l < live; ++l) {
          const int64_t p = first + l, oy = p / j.out_w, ox = p - oy * j.out_w;
          src[l] = static_cast<int32_t>(2 * oy * j.ep.residual_w + 2 * ox);
        }
        fused[i].pool_src[m / 2] = _mm512_load_si512(src);
        const bool one_row = first % j.out_w + live <= j.out_w;
        fused[i].pool_row[m / 2] = one_row ? src[0] : -1;
      }
    }
  }
}

void avx512_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  const Strip strip(j, b0, b1);
  alignas(64) int32_t r[kNB * kTilePixels];
  // The in-register epilogue covers the common case: float NCHW output of a plain conv whose correction
  // rows fit one two-register permute (<= 16 distinct padding masks, 9 for a 3x3 conv).
  const bool use_fused = j.output == Output::kFloat && !j.dest && j.corr_stride == 16;
  FusedTile fused[kMaxStripTiles];
  if (use_fused) build_fused(j, strip, b0, b1, fused);
  if (use_fused) {
    int64_t p0[kMaxStripTiles];
    for (int i = 0; i < strip.tiles; ++i) p0[i] = strip.tile[i].p0;
    const int last = strip.tiles - 1;
    const int64_t last_blocks = b1 - strip.first_block(last, b0);
    const int whole = last_blocks == kTileBlocks ? strip.tiles : last;
    const uint64_t* a = j.a + b0 * j.k_words * kLanes;
    const uint64_t* a_last = j.a + strip.first_block(last, b0) * j.k_words * kLanes;
    // Residual channel of output o is o mod R: one division per strip, then wrap by subtraction.
    const int64_t R = j.ep.residual_channels;
    int64_t rc = j.residual ? o0 % R : 0;
    for (int64_t o = o0; o < o1; ++o, rc = j.residual && rc + 1 == R ? 0 : rc + 1) {
      if (whole) channel_run<kTileBlocks>(j, fused, p0, whole, a, o, rc);
      if (whole == last) {
        switch (last_blocks) {
          case 1: channel_run<1>(j, fused + last, p0 + last, 1, a_last, o, rc); break;
          case 2: channel_run<2>(j, fused + last, p0 + last, 1, a_last, o, rc); break;
          default: channel_run<3>(j, fused + last, p0 + last, 1, a_last, o, rc);
        }
      }
    }
    return;
  }
  for (int64_t o = o0; o < o1; o += kNB) {
    const int nb = int(o1 - o < kNB ? o1 - o : kNB);
    for (int i = 0; i < strip.tiles; ++i) {
      const int64_t tb0 = strip.first_block(i, b0);
      const int mb = int(tb0 + kTileBlocks <= b1 ? kTileBlocks : b1 - tb0);
      micro_for(mb, nb)(j, o, j.a + tb0 * j.k_words * kLanes, r);
      finish_tile(j, strip.tile[i], o, nb, r);
    }
  }
}

// FDR's K branches (eq. 10) at once, one output channel at a time (Kernels::branch_tile): per tile, the K
// branches' MB accumulators each (K x MB zmm), then per pair of blocks b_i = RPReLU_i(scale_i acc_i + bias_i)
// + Hardtanh(residual chunk i), summed as out = b_0, then out + b_i in the branch order, then the last
// branch's post affine and shortcut, and one store. Against K passes of channel_run, which wrote each partial
// sum out and read it back (and read the residual of every pass through L2), it keeps the sum in registers.
// An unpadded 1 x 1 conv: no padding correction.
template <int K, int MB>
__attribute__((noinline)) void branch_run(const TileJob* jobs, const FusedTile* fused, const int64_t* p0,
                                          int tiles, int64_t block0, int64_t o, int64_t rc) {
  const TileJob& last = jobs[K - 1];
  const int64_t a_stride = last.k_words * kLanes, k_words = last.k_words, plane = last.out_plane;
  const int64_t O = last.out_channels;
  const __m512 k_bits_f = _mm512_set1_ps(float(last.k_bits)), two = _mm512_set1_ps(2.0f);
  const bool rprelu = last.ep.rprelu != nullptr, post = last.ep.post != nullptr;
  const __m512 lo = _mm512_set1_ps(last.ep.clamp_residual ? -1.0f : -INFINITY);
  const __m512 hi = _mm512_set1_ps(last.ep.clamp_residual ? 1.0f : INFINITY);
  // Each branch's constants, read once per channel (the stores below could alias the job's arrays, so the
  // compiler would otherwise read them again after every store).
  const uint64_t* w[K];
  const uint64_t* a[K];
  const float* res[K];
  __m512 scale[K], bias[K], beta[K], gamma[K], zeta[K];
  for (int b = 0; b < K; ++b) {
    const TileJob& j = jobs[b];
    w[b] = j.w + o * j.ldw;
    a[b] = j.a + block0 * a_stride;
    res[b] = j.residual ? j.residual + rc * j.res_plane : nullptr;
    scale[b] = _mm512_set1_ps(j.ep.scale[o]), bias[b] = _mm512_set1_ps(j.ep.bias[o]);
    beta[b] = _mm512_set1_ps(rprelu ? j.ep.rprelu[o] : 0.0f);
    gamma[b] = _mm512_set1_ps(rprelu ? j.ep.rprelu[O + o] : 0.0f);
    zeta[b] = _mm512_set1_ps(rprelu ? j.ep.rprelu[2 * O + o] : 0.0f);
  }
  const __m512 post_scale = _mm512_set1_ps(post ? last.ep.post[o] : 1.0f);
  const __m512 post_bias = _mm512_set1_ps(post ? last.ep.post[O + o] : 0.0f);
  const float* shortcut = last.shortcut ? last.shortcut + o * plane : nullptr;
  float* out = static_cast<float*>(last.out) + o * plane;
  for (int i = 0; i < tiles; ++i) {
    const FusedTile& t = fused[i];
    const int64_t ahead = p0[i] + kPrefetchAhead;
    if (shortcut) _mm_prefetch(reinterpret_cast<const char*>(shortcut + ahead), _MM_HINT_T0);
    if (shortcut) _mm_prefetch(reinterpret_cast<const char*>(shortcut + ahead + 16), _MM_HINT_T0);
    // K x MB accumulators in registers: the word loop outside, branches and blocks unrolled inside (with
    // the branch loop outside, GCC kept the accumulators on the stack).
    // The first word's counts start the sums (k_words >= 1): no adds to zero.
    __m512i acc[K][MB];
    const int64_t tile_offset = int64_t(i) * kTileBlocks * a_stride;
#pragma GCC unroll 4
    for (int b = 0; b < K; ++b) {
      const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w[b][0]));
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m)
        acc[b][m] = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a[b] + tile_offset + m * a_stride), wv));
    }
    for (int64_t k = 1; k < k_words; ++k) {
#pragma GCC unroll 4
      for (int b = 0; b < K; ++b) {
        const __m512i wv = _mm512_set1_epi64(static_cast<long long>(w[b][k]));
        const uint64_t* ab = a[b] + tile_offset + k * kLanes;
#pragma GCC unroll 4
        for (int m = 0; m < MB; ++m) {
          const __m512i av = _mm512_loadu_si512(ab + m * a_stride);
          acc[b][m] = _mm512_add_epi64(acc[b][m], _mm512_popcnt_epi64(_mm512_xor_si512(av, wv)));
        }
      }
    }
#pragma GCC unroll 2
    for (int m = 0; m < MB; m += 2) {
      const int pair = m / 2;
      const int64_t at = p0[i] + m * kLanes;
      const __mmask16 live = t.live[pair];
      __m512 sum = _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int b = 0; b < K; ++b) {
        const __m512i r = narrow_pair(acc[b][m], m + 1 < MB ? acc[b][m + 1] : _mm512_setzero_si512());
        // k_bits - 2 r in float: every term an integer below 2^24, so the FMA is exact.
        const __m512 v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(r), two, k_bits_f);
        __m512 y = _mm512_add_ps(_mm512_mul_ps(v, scale[b]), bias[b]);
        if (rprelu) {
          const __m512 s = _mm512_sub_ps(y, gamma[b]);
          const __mmask16 positive = _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ);
          y = _mm512_add_ps(_mm512_mask_mul_ps(s, static_cast<__mmask16>(~positive), beta[b], s), zeta[b]);
        }
        if (res[b]) y = _mm512_add_ps(y, _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_maskz_loadu_ps(live, res[b] + at))));
        sum = b == 0 ? y : _mm512_add_ps(sum, y);  // out = b_0, then out = out + b_i (the eager order)
      }
      if (post) sum = _mm512_add_ps(_mm512_mul_ps(sum, post_scale), post_bias);
      if (shortcut) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(live, shortcut + at));
      _mm512_mask_storeu_ps(out + at, live, sum);
    }
  }
}

template <int K>
void branch_channels(const TileJob* jobs, const FusedTile* fused, const int64_t* p0, int whole, int last,
                     int64_t last_blocks, int64_t b0, int64_t last_block0, int64_t o0, int64_t o1) {
  const int64_t R = jobs[0].ep.residual_channels;
  int64_t rc = jobs[0].residual ? o0 % R : 0;
  for (int64_t o = o0; o < o1; ++o, rc = jobs[0].residual && rc + 1 == R ? 0 : rc + 1) {
    if (whole) branch_run<K, kTileBlocks>(jobs, fused, p0, whole, b0, o, rc);
    if (whole == last) {
      switch (last_blocks) {
        case 1: branch_run<K, 1>(jobs, fused + last, p0 + last, 1, last_block0, o, rc); break;
        case 2: branch_run<K, 2>(jobs, fused + last, p0 + last, 1, last_block0, o, rc); break;
        default: branch_run<K, 3>(jobs, fused + last, p0 + last, 1, last_block0, o, rc);
      }
    }
  }
}

void avx512_branch_tile(const TileJob* jobs, int k, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  const TileJob& j = jobs[0];
  const Strip strip(j, b0, b1);
  FusedTile fused[kMaxStripTiles];
  build_fused(j, strip, b0, b1, fused);
  int64_t p0[kMaxStripTiles];
  for (int i = 0; i < strip.tiles; ++i) p0[i] = strip.tile[i].p0;
  const int last = strip.tiles - 1;
  const int64_t last_block0 = strip.first_block(last, b0), last_blocks = b1 - last_block0;
  const int whole = last_blocks == kTileBlocks ? strip.tiles : last;
  switch (k) {
    case 2: branch_channels<2>(jobs, fused, p0, whole, last, last_blocks, b0, last_block0, o0, o1); break;
    case 3: branch_channels<3>(jobs, fused, p0, whole, last, last_blocks, b0, last_block0, o0, o1); break;
    default: branch_channels<4>(jobs, fused, p0, whole, last, last_blocks, b0, last_block0, o0, o1);
  }
}

// Up to kPackPixels pixels x 64 channels at a time: per channel, one contiguous run of the plane is compared
// 16 pixels at a time into 16-bit masks, m[group][channel]; then, with the 64 channels' masks of one 16-pixel
// group in two zmm of 16-bit lanes, vptestmw against bit i gathers pixel i's 64 channel bits. Reading each
// channel's run whole keeps one stream in flight for the prefetchers; 64-pixel runs (the first form) hopped
// across 64 planes every 256 bytes and spent most of their time waiting on those loads.
constexpr int64_t kPackPixels = 1024;

void avx512_pack(const float* x, int64_t channels, int64_t plane, int64_t p0, int64_t p1, uint64_t* out) {
  const int64_t cw = words_for(channels);
  alignas(64) uint16_t m[kPackPixels / 16][64];
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t g = 0; g < cw; ++g) {
    const int64_t c0 = g * 64, nc = channels - c0 < 64 ? channels - c0 : 64;
    for (int64_t p = p0; p < p1; p += kPackPixels) {
      const int64_t np = p1 - p < kPackPixels ? p1 - p : kPackPixels;
      const int groups = int((np + 15) / 16), full = int(np / 16);
      const __mmask16 tail = static_cast<__mmask16>((1u << (np % 16)) - 1);
      for (int64_t c = 0; c < 64; ++c) {
        if (c >= nc) {
          for (int q = 0; q < groups; ++q) m[q][c] = 0;
          continue;
        }
        const float* row = x + (c0 + c) * plane + p;
        // NGE_UQ: true for negative and NaN, i.e. exactly where torch's sign gives -1.
        for (int q = 0; q < full; ++q)
          m[q][c] = static_cast<uint16_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(row + 16 * q), zero, _CMP_NGE_UQ));
        if (full < groups)
          m[full][c] = static_cast<uint16_t>(
              _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(tail, row + 16 * full), zero, _CMP_NGE_UQ));
      }
      for (int q = 0; q < groups; ++q) {
        const __m512i lo = _mm512_load_si512(m[q]), hi = _mm512_load_si512(m[q] + 32);
        const int n = int(np - 16 * q < 16 ? np - 16 * q : 16);
        uint64_t* dst = out + (p + 16 * q) * cw + g;
        for (int i = 0; i < n; ++i) {
          const __m512i bit = _mm512_set1_epi16(static_cast<short>(1u << i));
          const uint64_t l = _mm512_test_epi16_mask(lo, bit), h = _mm512_test_epi16_mask(hi, bit);
          dst[i * cw] = l | (h << 32);
        }
      }
    }
  }
}

int64_t avx512_popcount(const uint64_t* words, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += _mm_popcnt_u64(words[i]);
  return c;
}

// xor + popcount + add of 512 bits (the count of channel_run and the 32 x 6 tile).
int64_t avx512_count_loop(int64_t steps) {
  __m512i init[8];
  for (int j = 0; j < 8; ++j) init[j] = _mm512_set1_epi64(0x0123456789abcdefLL * (j + 1));
  return count_loop_of(
      steps, 512, init, _mm512_set1_epi64(0x5555555555555555LL),
      [](__m512i acc, __m512i a, __m512i w) {
        return _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(a, w)));
      },
      [](__m512i (&v)[8]) {
        asm volatile("" : "+v"(v[0]), "+v"(v[1]), "+v"(v[2]), "+v"(v[3]),
                          "+v"(v[4]), "+v"(v[5]), "+v"(v[6]), "+v"(v[7]));
      });
}

}  // namespace

void avx512_quantize_row(const float* src, int64_t n, float input_scale_inv, int32_t zero_point, int8_t* dst) {
  const __m512 inv = _mm512_set1_ps(input_scale_inv), zp = _mm512_set1_ps(static_cast<float>(zero_point));
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), quantize16(_mm512_loadu_ps(src + i), inv, zp));
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm_mask_storeu_epi8(dst + i, tail, quantize16(_mm512_maskz_loadu_ps(tail, src + i), inv, zp));
  }
}

void avx512_max_pool_row_3s2(const float* m, int64_t w, int64_t pw, float* out) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512 none = _mm512_set1_ps(-INFINITY);
  // 32 floats from column c on, -inf outside [0, w).
  const auto load32 = [&](int64_t c, __m512& lo, __m512& hi) {
    const auto mask = [&](int64_t at) -> __mmask16 {
      uint32_t bits = 0xFFFF;
      if (at < 0) bits &= 0xFFFFu << (-at < 16 ? -at : 16);
      if (at + 16 > w) bits &= w - at <= 0 ? 0u : (1u << (w - at)) - 1;
      return static_cast<__mmask16>(bits);
    };
    const __mmask16 m0 = mask(c), m1 = mask(c + 16);
    lo = _mm512_mask_loadu_ps(none, m0, m0 ? m + c : m);
    hi = _mm512_mask_loadu_ps(none, m1, m1 ? m + c + 16 : m);
  };
  for (int64_t j = 0; j < pw; j += 16) {
    __m512 a, b, c, d;
    load32(2 * j, a, b);      // columns 2j .. 2j + 31
    load32(2 * j - 1, c, d);  // columns 2j - 1 ..
    const __m512 centre = _mm512_permutex2var_ps(a, even, b), right = _mm512_permutex2var_ps(a, odd, b);
    const __m512 left = _mm512_permutex2var_ps(c, even, d);
    const __m512 y = _mm512_max_ps(_mm512_max_ps(left, centre), right);
    const int64_t n = pw - j < 16 ? pw - j : 16;
    _mm512_mask_storeu_ps(out + j, static_cast<__mmask16>((1u << n) - 1), y);
  }
}

const Kernels kAvx512Kernels{avx512_tile, avx512_pack, avx512_popcount, avx512_branch_tile, nullptr, nullptr,
                                generic_int8_rows, avx512_count_loop};

}  // namespace bidrn
