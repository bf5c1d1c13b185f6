// AVX-512 VPOPCNTDQ path (Ice Lake+, Zen 4/5). Lane = output pixel: one zmm holds word k of 8 pixels'
// im2col rows, the weight word W[o][k] is broadcast, so a tile of MB pixel blocks x NB output channels
// needs 3 instructions (xor, popcnt, add) per 512 binary MACs and no horizontal reduction at the end.
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vpopcntdq -mpopcnt.
#include <immintrin.h>

#include "bconv_internal.h"

namespace bidrn {
namespace {

// What the in-register epilogue needs about a tile: per block, the pixels' padding-mask ids (as int32
// lanes, for the correction-row permute) and whether any of them is non-zero, and a store mask.
struct FusedTile {
  __m256i ids[kTileBlocks];
  bool border[kTileBlocks];
  __mmask8 live[kTileBlocks];
};

// Float output written straight from the accumulators: acc = k_bits - 2 r - corr[o][id], y = acc * scale +
// bias (mul then add, as PyTorch), optional RPReLU, residual and post affine, masked store of 8 pixels.
inline void fused_store(const TileJob& j, const FusedTile& t, int64_t o, int m, float* out, const float* res,
                        __m512i count) {
  __m256i r = _mm512_cvtepi64_epi32(count);
  __m256i acc = _mm256_sub_epi32(_mm256_set1_epi32(j.k_bits), _mm256_add_epi32(r, r));
  if (t.border[m]) {
    const int32_t* row = j.corr + o * j.corr_stride;
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 8));
    acc = _mm256_sub_epi32(acc, _mm256_permutex2var_epi32(lo, t.ids[m], hi));
  }
  __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(j.ep.scale[o])),
                           _mm256_set1_ps(j.ep.bias[o]));
  if (j.ep.rprelu) {
    const __m256 s = _mm256_sub_ps(y, _mm256_set1_ps(j.ep.rprelu[j.out_channels + o]));
    const __mmask8 positive = _mm256_cmp_ps_mask(s, _mm256_setzero_ps(), _CMP_GT_OQ);
    const __m256 slope = _mm256_mul_ps(_mm256_set1_ps(j.ep.rprelu[o]), s);
    y = _mm256_add_ps(_mm256_mask_blend_ps(positive, slope, s), _mm256_set1_ps(j.ep.rprelu[2 * j.out_channels + o]));
  }
  if (res) y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(t.live[m], res));
  if (j.ep.post)
    y = _mm256_add_ps(_mm256_mul_ps(y, _mm256_set1_ps(j.ep.post[o])), _mm256_set1_ps(j.ep.post[j.out_channels + o]));
  _mm256_mask_storeu_ps(out, t.live[m], y);
}

// MB blocks x NB channels of accumulators = 24 zmm at the full 4 x 6 tile, plus 4 row loads and the
// broadcast: fits the 32 registers with room for the temporaries.
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
    for (int n = 0; n < NB; ++n)
      for (int m = 0; m < MB; ++m) {
        const float* res = j.residual ? j.residual + ((o + n) % j.ep.residual_channels) * j.out_plane + p0 + m * kLanes
                                      : nullptr;
        fused_store(j, *fused, o + n, m, out + (o + n) * j.out_plane + m * kLanes, res, acc[m][n]);
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
  const TilePixels tile(j, b0, b1);
  alignas(64) int32_t r[kNB * kTilePixels];
  const int mb = int(b1 - b0);
  const uint64_t* a = j.a + b0 * j.k_words * kLanes;
  // The in-register epilogue covers the common case: float NCHW output of a plain conv whose correction
  // rows fit one two-register permute (<= 16 distinct padding masks, 9 for a 3x3 conv).
  FusedTile fused;
  const bool use_fused = j.output == Output::kFloat && !j.dest && j.corr_stride == 16;
  if (use_fused) {
    for (int m = 0; m < mb; ++m) {
      const int64_t first = tile.p0 + m * kLanes, live = j.pixels - first < kLanes ? j.pixels - first : kLanes;
      alignas(16) uint16_t ids[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t l = 0; l < live; ++l) ids[l] = j.mask_id[first + l];
      fused.ids[m] = _mm256_cvtepu16_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(ids)));
      fused.border[m] = _mm256_testz_si256(fused.ids[m], fused.ids[m]) == 0;
      fused.live[m] = static_cast<__mmask8>((1u << live) - 1);
    }
  }
  for (int64_t o = o0; o < o1; o += kNB) {
    const int nb = int(o1 - o < kNB ? o1 - o : kNB);
    micro_for(mb, nb)(j, use_fused ? &fused : nullptr, tile.p0, o, a, r);
    if (!use_fused) finish_tile(j, tile, o, nb, r);
  }
}

// 16 pixels x 64 channels at a time: one compare per channel gives a 16-bit pixel mask; with the 64
// masks in two zmm of 16-bit lanes, vptestmw against bit j gathers pixel j's 64 channel bits.
void avx512_pack(const float* x, int64_t channels, int64_t plane, int64_t p0, int64_t p1, uint64_t* out) {
  const int64_t cw = words_for(channels);
  alignas(64) uint16_t m[64];
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t g = 0; g < cw; ++g) {
    const int64_t c0 = g * 64, nc = channels - c0 < 64 ? channels - c0 : 64;
    for (int64_t p = p0; p < p1; p += 16) {
      const int np = int(p1 - p < 16 ? p1 - p : 16);
      const __mmask16 live = static_cast<__mmask16>((1u << np) - 1);
      for (int64_t c = 0; c < 64; ++c) {
        if (c >= nc) { m[c] = 0; continue; }
        const __m512 v = _mm512_maskz_loadu_ps(live, x + (c0 + c) * plane + p);
        // NGE_UQ: true for negative and NaN, i.e. exactly where torch's sign gives -1.
        m[c] = static_cast<uint16_t>(_mm512_cmp_ps_mask(v, zero, _CMP_NGE_UQ));
      }
      const __m512i lo = _mm512_load_si512(m), hi = _mm512_load_si512(m + 32);
      for (int i = 0; i < np; ++i) {
        const __m512i bit = _mm512_set1_epi16(static_cast<short>(1u << i));
        const uint64_t l = _mm512_test_epi16_mask(lo, bit), h = _mm512_test_epi16_mask(hi, bit);
        out[(p + i) * cw + g] = l | (h << 32);
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
