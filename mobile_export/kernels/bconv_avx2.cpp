// AVX2 path (Haswell+, Zen 1+). AVX2 has no vector popcount, so each byte of (row xor weight) is counted
// with two 16-entry pshufb lookups (low and high nibble), summed in byte lanes for up to 31 words
// (31 * 8 < 256), then widened once with vpsadbw, which sums the 8 bytes of each 64-bit lane: exactly
// one pixel's count, since lane = pixel here as on the AVX-512 path.
// Compiled with -mavx2 -mpopcnt.
#include <immintrin.h>

#include "bconv_internal.h"

namespace bidrn {
namespace {

constexpr int64_t kMaxByteSteps = 31;

// One block of 8 pixels (2 ymm) x NB channels: 2 * NB byte accumulators + 2 rows + broadcast + 2 lookup
// constants stay within the 16 ymm registers at NB = 4.
template <int NB>
void micro(const uint64_t* a, const uint64_t* w, int64_t ldw, int64_t k_words, int32_t* r) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
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
        const __m256i d0 = _mm256_xor_si256(a0, wv), d1 = _mm256_xor_si256(a1, wv);
        const __m256i c0 = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(d0, low)),
                                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(d0, 4), low)));
        const __m256i c1 = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(d1, low)),
                                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(d1, 4), low)));
        bytes[n][0] = _mm256_add_epi8(bytes[n][0], c0);
        bytes[n][1] = _mm256_add_epi8(bytes[n][1], c1);
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

void avx2_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  tile_by_blocks<kNB>(j, b0, b1, o0, o1, kMicro);
}

// 8 pixels x 32 channels at a time: movemask_ps gives each channel's 8-pixel mask as a byte; with the 32
// bytes in one ymm, shifting bit j to the top of every byte and movemask_epi8 gathers pixel j's 32 bits.
void avx2_pack(const float* x, int64_t channels, int64_t plane, int64_t p0, int64_t p1, uint64_t* out) {
  const int64_t cw = words_for(channels);
  alignas(32) uint8_t m[32];
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t p = p0; p < p1; p += 8) {
    const int np = int(p1 - p < 8 ? p1 - p : 8);
    alignas(32) float tail[8];
    for (int64_t g = 0; g < cw * 2; ++g) {
      const int64_t c0 = g * 32, nc = channels - c0 < 32 ? (channels - c0 > 0 ? channels - c0 : 0) : 32;
      for (int64_t c = 0; c < 32; ++c) {
        if (c >= nc) { m[c] = 0; continue; }
        const float* src = x + (c0 + c) * plane + p;
        __m256 v;
        if (np == 8) {
          v = _mm256_loadu_ps(src);
        } else {
          for (int i = 0; i < 8; ++i) tail[i] = i < np ? src[i] : 0.0f;
          v = _mm256_load_ps(tail);
        }
        // NGE_UQ: true for negative and NaN, i.e. exactly where torch's sign gives -1.
        m[c] = static_cast<uint8_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NGE_UQ)));
      }
      const __m256i bytes = _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
      uint32_t* dst = reinterpret_cast<uint32_t*>(out);  // little-endian: half g & 1 of word g / 2
      for (int i = 0; i < np; ++i) {
        const __m256i top = _mm256_slli_epi16(bytes, 7 - i);  // bit i of each byte -> bit 7 of that byte
        dst[((p + i) * cw + g / 2) * 2 + (g & 1)] = static_cast<uint32_t>(_mm256_movemask_epi8(top));
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

const Kernels kAvx2Kernels{avx2_tile, avx2_pack, avx2_popcount};

}  // namespace bidrn
