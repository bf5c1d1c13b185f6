// AVX-512 VPOPCNTDQ path (Ice Lake+, Zen 4/5). Lane = output pixel: one zmm holds word k of 8 pixels'
// im2col rows, the weight word W[o][k] is broadcast, so a tile of MB pixel blocks x NB output channels
// needs 3 instructions (xor, popcnt, add) per 512 binary MACs and no horizontal reduction at the end.
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vpopcntdq -mpopcnt.
#include <immintrin.h>

#include "bconv_internal.h"

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

// 16 pixels of one output channel written straight from the accumulators (r = the popcounts as int32):
// acc = k_bits - 2 r - corr[o][id], y = acc * scale + bias (mul then add, as PyTorch), optional RPReLU,
// residual and post affine, masked store. 16 lanes at a time halves the epilogue's instructions, which
// dominate 1x1 convs of 64-128 channels (a handful of popcounts per output).
inline void fused_store(const TileJob& j, const FusedTile& t, int64_t o, int pair, float* out, const float* res,
                        int64_t at, __m512i r) {
  __m512i acc = _mm512_sub_epi32(_mm512_set1_epi32(j.k_bits), _mm512_add_epi32(r, r));
  if (t.border[pair]) {
    const __m512i row = _mm512_loadu_si512(j.corr + o * j.corr_stride);  // corr_stride == 16 here
    acc = _mm512_sub_epi32(acc, _mm512_permutexvar_epi32(t.ids[pair], row));
  }
  __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(j.ep.scale[o])),
                           _mm512_set1_ps(j.ep.bias[o]));
  if (j.ep.rprelu) {
    const __m512 s = _mm512_sub_ps(y, _mm512_set1_ps(j.ep.rprelu[j.out_channels + o]));
    const __mmask16 positive = _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ);
    const __m512 slope = _mm512_mul_ps(_mm512_set1_ps(j.ep.rprelu[o]), s);
    y = _mm512_add_ps(_mm512_mask_blend_ps(positive, slope, s), _mm512_set1_ps(j.ep.rprelu[2 * j.out_channels + o]));
  }
  if (res) {
    // Hardtanh as torch.clamp: with the constant first, max/min return the second operand, so NaN passes.
    const auto clamp = [&](__m512 v) {
      return j.ep.clamp_residual ? _mm512_min_ps(_mm512_set1_ps(1.0f), _mm512_max_ps(_mm512_set1_ps(-1.0f), v)) : v;
    };
    __m512 rv;
    if (j.ep.residual_pool == 2) {  // res = the channel's plane; the 2 x 2 window summed row by row, then / 4
      __m512 a, b, c, d;  // the window's top-left, top-right, bottom-left, bottom-right values
      const __mmask16 live = t.live[pair];
      if (t.pool_row[pair] >= 0) {
        // One output row: the windows are 2 x 32 contiguous floats; split even / odd columns.
        const float* top = res + t.pool_row[pair];
        const float* bottom = top + j.ep.residual_w;
        const unsigned n2 = 2u * static_cast<unsigned>(__builtin_popcount(live));
        const __mmask16 lo = static_cast<__mmask16>(n2 >= 16 ? 0xFFFF : (1u << n2) - 1);
        const __mmask16 hi = static_cast<__mmask16>(n2 <= 16 ? 0 : n2 >= 32 ? 0xFFFF : (1u << (n2 - 16)) - 1);
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        const __m512 t0 = _mm512_maskz_loadu_ps(lo, top), t1 = _mm512_maskz_loadu_ps(hi, top + 16);
        const __m512 b0 = _mm512_maskz_loadu_ps(lo, bottom), b1 = _mm512_maskz_loadu_ps(hi, bottom + 16);
        a = clamp(_mm512_permutex2var_ps(t0, even, t1)), b = clamp(_mm512_permutex2var_ps(t0, odd, t1));
        c = clamp(_mm512_permutex2var_ps(b0, even, b1)), d = clamp(_mm512_permutex2var_ps(b0, odd, b1));
      } else {
        const __m512i src = t.pool_src[pair];
        const __m512i w = _mm512_set1_epi32(static_cast<int>(j.ep.residual_w));
        const __m512i one = _mm512_set1_epi32(1);
        const __m512 zero = _mm512_setzero_ps();
        const __m512i below = _mm512_add_epi32(src, w);
        a = clamp(_mm512_mask_i32gather_ps(zero, live, src, res, 4));
        b = clamp(_mm512_mask_i32gather_ps(zero, live, _mm512_add_epi32(src, one), res, 4));
        c = clamp(_mm512_mask_i32gather_ps(zero, live, below, res, 4));
        d = clamp(_mm512_mask_i32gather_ps(zero, live, _mm512_add_epi32(below, one), res, 4));
      }
      rv = _mm512_div_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), c), d), _mm512_set1_ps(4.0f));
    } else {
      rv = clamp(_mm512_maskz_loadu_ps(t.live[pair], res));
    }
    y = _mm512_add_ps(y, rv);
  }
  if (j.partial) y = _mm512_add_ps(_mm512_maskz_loadu_ps(t.live[pair], j.partial + o * j.out_plane + at), y);
  if (j.ep.post)
    y = _mm512_add_ps(_mm512_mul_ps(y, _mm512_set1_ps(j.ep.post[o])), _mm512_set1_ps(j.ep.post[j.out_channels + o]));
  if (j.shortcut) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(t.live[pair], j.shortcut + o * j.out_plane + at));
  _mm512_mask_storeu_ps(out, t.live[pair], y);
}

// Two blocks' 64-bit popcount sums as one zmm of 16 int32 (the second half zero for an odd last block).
inline __m512i narrow_pair(__m512i a, __m512i b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(a)), _mm512_cvtepi64_epi32(b), 1);
}

// MB blocks x NB channels of accumulators = 24 zmm at the full 4 x 6 tile, plus 4 row loads and the
// broadcast: fits the 32 registers with room for the temporaries.
constexpr int64_t kPrefetchAhead = 4 * kTilePixels;  // pixels: four tiles, 512 bytes of each float stream

template <int MB, int NB>
void micro(const TileJob& j, const FusedTile* fused, int64_t p0, int64_t o, const uint64_t* a, int32_t* r) {
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
  if (fused) {
    float* out = static_cast<float*>(j.out) + p0;
    // Residual channel of output o + n is (o + n) mod R: one division per call, then wrap by subtraction (a
    // division per 16 outputs cost a tenth of a 1x1 layer).
    const int64_t R = j.ep.residual_channels;
    int64_t rc = j.residual ? o % R : 0;
    for (int n = 0; n < NB; ++n, rc = rc + 1 == R ? 0 : rc + 1) {
      // The epilogue's float streams (residual, partial, shortcut) are read a tile (128 bytes) at a time per
      // channel, 6 channels interleaved: more streams than the prefetchers follow, so ask for the lines
      // kPrefetchAhead pixels on (loads past a plane's end are only hints).
      const int64_t ahead = p0 + kPrefetchAhead;
      if (j.residual && j.ep.residual_pool == 1) _mm_prefetch(reinterpret_cast<const char*>(j.residual + rc * j.out_plane + ahead), _MM_HINT_T0);
      if (j.partial) _mm_prefetch(reinterpret_cast<const char*>(j.partial + (o + n) * j.out_plane + ahead), _MM_HINT_T0);
      if (j.shortcut) _mm_prefetch(reinterpret_cast<const char*>(j.shortcut + (o + n) * j.out_plane + ahead), _MM_HINT_T0);
      if (j.residual && j.ep.residual_pool == 1)
        _mm_prefetch(reinterpret_cast<const char*>(j.residual + rc * j.out_plane + ahead + 16), _MM_HINT_T0);
      if (j.partial) _mm_prefetch(reinterpret_cast<const char*>(j.partial + (o + n) * j.out_plane + ahead + 16), _MM_HINT_T0);
      if (j.shortcut) _mm_prefetch(reinterpret_cast<const char*>(j.shortcut + (o + n) * j.out_plane + ahead + 16), _MM_HINT_T0);
      for (int m = 0; m < MB; m += 2) {
        const float* res = !j.residual ? nullptr
                           : j.ep.residual_pool == 2 ? j.residual + rc * j.res_plane  // lanes placed by pool_src
                                                     : j.residual + rc * j.out_plane + p0 + m * kLanes;
        const __m512i r = narrow_pair(acc[m][n], m + 1 < MB ? acc[m + 1][n] : _mm512_setzero_si512());
        fused_store(j, *fused, o + n, m / 2, out + (o + n) * j.out_plane + m * kLanes, res, p0 + m * kLanes, r);
      }
    }
    return;
  }
  for (int n = 0; n < NB; ++n)
    for (int m = 0; m < MB; ++m)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + n * kTilePixels + m * kLanes), _mm512_cvtepi64_epi32(acc[m][n]));
}

constexpr int kNB = 6;
using Micro = void (*)(const TileJob&, const FusedTile*, int64_t, int64_t, const uint64_t*, int32_t*);

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

void avx512_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  const Strip strip(j, b0, b1);
  alignas(64) int32_t r[kNB * kTilePixels];
  // The in-register epilogue covers the common case: float NCHW output of a plain conv whose correction
  // rows fit one two-register permute (<= 16 distinct padding masks, 9 for a 3x3 conv).
  const bool use_fused = j.output == Output::kFloat && !j.dest && j.corr_stride == 16;
  FusedTile fused[kMaxStripTiles];
  if (use_fused) {
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
  for (int64_t o = o0; o < o1; o += kNB) {
    const int nb = int(o1 - o < kNB ? o1 - o : kNB);
    for (int i = 0; i < strip.tiles; ++i) {
      const int64_t tb0 = strip.first_block(i, b0);
      const int mb = int(tb0 + kTileBlocks <= b1 ? kTileBlocks : b1 - tb0);
      micro_for(mb, nb)(j, use_fused ? &fused[i] : nullptr, strip.tile[i].p0, o, j.a + tb0 * j.k_words * kLanes, r);
      if (!use_fused) finish_tile(j, strip.tile[i], o, nb, r);
    }
  }
}

// 64 pixels x 64 channels at a time: per channel, four compares give four 16-bit pixel masks (256
// contiguous bytes of the channel's plane, so the 64 streams stay prefetch-friendly); with the 64 channels'
// masks of one 16-pixel group in two zmm of 16-bit lanes, vptestmw against bit i gathers pixel i's 64
// channel bits.
void avx512_pack(const float* x, int64_t channels, int64_t plane, int64_t p0, int64_t p1, uint64_t* out) {
  const int64_t cw = words_for(channels);
  alignas(64) uint16_t m[4][64];
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t g = 0; g < cw; ++g) {
    const int64_t c0 = g * 64, nc = channels - c0 < 64 ? channels - c0 : 64;
    for (int64_t p = p0; p < p1; p += 64) {
      const int64_t np = p1 - p < 64 ? p1 - p : 64;
      const int groups = int((np + 15) / 16);
      __mmask16 live[4];
      for (int q = 0; q < 4; ++q) {
        const int64_t n = np - 16 * q;
        live[q] = static_cast<__mmask16>(n >= 16 ? 0xFFFF : n > 0 ? (1u << n) - 1 : 0);
      }
      for (int64_t c = 0; c < 64; ++c) {
        if (c >= nc) {
          for (int q = 0; q < 4; ++q) m[q][c] = 0;
          continue;
        }
        const float* row = x + (c0 + c) * plane + p;
        // NGE_UQ: true for negative and NaN, i.e. exactly where torch's sign gives -1.
        for (int q = 0; q < groups; ++q)
          m[q][c] = static_cast<uint16_t>(
              _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(live[q], row + 16 * q), zero, _CMP_NGE_UQ));
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

}  // namespace

const Kernels kAvx512Kernels{avx512_tile, avx512_pack, avx512_popcount};

}  // namespace bidrn
