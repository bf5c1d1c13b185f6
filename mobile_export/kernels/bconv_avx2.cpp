// AVX2 path (Haswell+, Zen 1+). AVX2 has no vector popcount, so each byte of (row xor weight) is counted
// with two 16-entry pshufb lookups (low and high nibble), summed in byte lanes for up to 31 words
// (31 * 8 < 256), then widened once with vpsadbw, which sums the 8 bytes of each 64-bit lane: exactly
// one pixel's count, since lane = pixel here as on the AVX-512 path.
// The float NCHW output of a plain conv and FDR's branches are finished in registers, one output channel at
// a time (bconv_fused.h), as on AVX-512; the other outputs go through the shared scalar epilogue.
// Compiled with -mavx2 -mpopcnt.
#include <immintrin.h>

#include <cmath>

#include "bconv_fused.h"

namespace bidrn {
namespace {

constexpr int64_t kMaxByteSteps = 31;
// Rows of at most this many words (65,472 bits) have counts below 2^16, which vpackusdw narrows exactly.
constexpr int64_t kMaxPackedWords = 1023;

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

// The vector ops of the shared in-register epilogue (bconv_fused.h): a block of 8 pixels is one ymm of
// floats or int32.
struct Avx2 {
  using F = __m256;
  using I = __m256i;

  // What the epilogue needs about one block: its pixels' padding-mask ids (for the correction lookup),
  // whether any is non-zero, its live lanes, and the pooled residual's sources.
  struct alignas(32) Block {
    __m256i ids;
    __m256i live_mask;  // all ones in lanes < live (maskload / maskstore)
    __m256i pool_src;   // residual_pool 2: each lane's top-left residual pixel
    int32_t pool_row;   // >= 0: the live lanes share an output row, windows from this offset
    int32_t live;
    bool border;
  };

  static __m256i lanes_below(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }

  static void describe(const TileJob& j, int64_t first, int live, Block& t) {
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

  // The counts of N im2col rows of one pixel block each (row n at a[n], k_words words of 8 lanes) against
  // weight rows w[n], as 8 int32 per row: channel_run passes N blocks against one weight row, branch_run one
  // block against the N branches' rows, the register tile one block against N channels. KW > 0 fixes
  // k_words at compile time. The 64-bit lane sums of a row's two halves (pixels 0-3, 4-7) are packed to
  // 16 bits, [p0 p1 p4 p5 | p2 p3 p6 p7] as int32, and put in pixel order by one 64-bit permute.
  template <int N, int KW>
  __attribute__((always_inline)) static void count(const uint64_t* const (&a)[N], const uint64_t* const (&w)[N],
                                                  int64_t k_words, __m256i (&r)[N]) {
    const NibbleCount count;
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
    if (KW == 0 && k_words == 0) {  // a transposed conv's phase that no tap reaches
      for (int n = 0; n < N; ++n) r[n] = zero;
      return;
    }
    if (KW > 0 || k_words <= kMaxByteSteps) {  // every 1 x 1 conv up to 1,984 channels, 3 x 3 up to 192
      chunk(0, KW > 0 ? KW : k_words, true);
    } else {
      chunk(0, kMaxByteSteps, true);
      for (int64_t k0 = kMaxByteSteps; k0 < k_words; k0 += kMaxByteSteps)
        chunk(k0, k0 + kMaxByteSteps < k_words ? k0 + kMaxByteSteps : k_words, false);
    }
  #pragma GCC unroll 4
    for (int n = 0; n < N; ++n) {
    if (KW > 0 || k_words <= kMaxPackedWords) {
      r[n] = _mm256_permute4x64_epi64(_mm256_packus_epi32(total[n][0], total[n][1]), 0xd8);
    } else {  // counts of 2^16 or more: the low dwords, [lo0 hi0 lo1 hi1 ...] by a shift and an or
      r[n] = _mm256_permutevar8x32_epi32(_mm256_or_si256(total[n][0], _mm256_slli_epi64(total[n][1], 32)),
                                         _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    }
  }
  }

  // Correction rows of <= 16 ids: two 8-entry permutes, picked by id > 7.
  struct Corr {
    __m256i lo, hi;
  };
  static Corr corr_row(const int32_t* row) {
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row)),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 8))};
  }
  static __m256i acc(__m256i r, __m256i k_bits, const Block& t, const Corr& corr) {
    const __m256i v = _mm256_sub_epi32(k_bits, _mm256_add_epi32(r, r));
    if (!t.border) return v;
    const __m256i c = _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(corr.lo, t.ids),
                                         _mm256_permutevar8x32_epi32(corr.hi, t.ids),
                                         _mm256_cmpgt_epi32(t.ids, _mm256_set1_epi32(7)));
    return _mm256_sub_epi32(v, c);
  }

  static __m256 set(float v) { return _mm256_set1_ps(v); }
  static __m256i set_int(int32_t v) { return _mm256_set1_epi32(v); }
  static void store_int(int32_t* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static __m256 to_float(__m256i v) { return _mm256_cvtepi32_ps(v); }
  static __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
  static __m256 mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
  // (s > 0 ? s : beta s) + zeta with s = y - gamma (eq. 6); NaN takes the beta branch, as in C.
  static __m256 rprelu(__m256 y, __m256 beta, __m256 gamma, __m256 zeta) {
    const __m256 s = _mm256_sub_ps(y, gamma);
    const __m256 positive = _mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_GT_OQ);
    return _mm256_add_ps(_mm256_blendv_ps(_mm256_mul_ps(beta, s), s, positive), zeta);
  }
  // Hardtanh as torch.clamp: with the bound first, max / min return the second operand when one is NaN, so
  // NaN passes; lo / hi = -inf / +inf make it the identity.
  static __m256 clamp(__m256 v, __m256 lo, __m256 hi) { return _mm256_min_ps(hi, _mm256_max_ps(lo, v)); }
  static __m256 load(const float* p, const Block& t) {
    return t.live == kLanes ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, t.live_mask);
  }
  static void store(float* p, __m256 v, const Block& t) {
    if (t.live == kLanes) {
      _mm256_storeu_ps(p, v);
    } else {
      _mm256_maskstore_ps(p, t.live_mask, v);
    }
  }
  static void prefetch(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }

  // DScR's pooled residual (residual_pool 2) of one block: each lane's 2 x 2 window, summed row by row and
  // divided by 4 as ATen's avg_pool2d. Where the live lanes share an output row the windows are two rows of
  // 2 * live contiguous floats, split into even / odd columns; else gathered.
  static __m256 pooled(const Block& t, const float* res, int64_t residual_w, __m256 lo, __m256 hi) {
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
};

void avx2_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  if (!Fused<Avx2>::tile(j, b0, b1, o0, o1)) register_tile<Avx2>(j, b0, b1, o0, o1);
}

void avx2_branch_tile(const TileJob* jobs, int k, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  Fused<Avx2>::branch_tile(jobs, k, b0, b1, o0, o1);
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
      const __m256i tail = Avx2::lanes_below(int(np % 8));
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
