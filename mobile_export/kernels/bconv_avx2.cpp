// AVX2 path (Haswell+, Zen 1+). AVX2 has no vector popcount, so each byte of (row xor weight) is counted
// with two 16-entry pshufb lookups (low and high nibble), summed in byte lanes for up to 31 words
// (31 * 8 < 256), then widened once with vpsadbw, which sums the 8 bytes of each 64-bit lane: exactly
// one pixel's count, since lane = pixel here as on the AVX-512 path.
// The float NCHW output of a plain conv and FDR's branches are finished in registers, one output channel at
// a time (bconv_fused.h), as on AVX-512; the other outputs go through the shared scalar epilogue.
// Compiled with -mavx2 -mpopcnt.
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "bconv_fused.h"
#include "int8_gemm.h"

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
  // 8 pixels' counts from the lookup-table count's 16-bit sums (channel_run with kFromCounts).
  static __m256i load_counts(const uint16_t* p) {
    return _mm256_cvtepu16_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(p)));
  }
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

// ---------------------------------------------------------------- lookup-table count (wide rows)
//
// The count above spends 8 vector ops on 256 bit-MACs (xor, two nibble masks with a shift, two lookups, two
// adds). Where the rows are 2 words or longer, the kernel turns the roles around: a 4-bit chunk of the rows
// of 32 pixels is one byte per pixel (X[chunk][tile][pixel], values 0-15), and the weight's 4 bits of that
// chunk pick one of 16 fixed 16-byte tables, T_w[v] = popcount(v xor w). One pshufb of T_w with X's 32
// bytes gives the 32 pixels' counts of the chunk: the xor is in the table, and one broadcast load of the
// table serves 4 tiles, so per 512 bit-MACs one table load, four pshufb (X as the memory operand) and four
// byte adds. The pshufb per bit-MAC are as many as before (one per 128), and on Zen 3 they are what both
// counts wait on; the gain is the other ops (docs/kernels.md has the measurements). Byte sums hold 48 chunks
// (at most 192), then are widened into 16-bit sums per pixel (rows of up to 1,023 words, as above), which
// the shared epilogues read in place of their own count (channel_run / branch_run with kFromCounts, or
// finish_tile for the other outputs): the same integers, so the same floats bit for bit.
//
// A work item is a strip of 4 tiles x all output channels (Kernels::strip_tiles): X is built once for it
// from the im2col rows (a byte transpose of each block's words, 8 pixels x 8 bytes, and a nibble split);
// the weights' table offsets are built once per call (Kernels::prepare). Channels go 64 at a time, chunk
// group by chunk group, so X's 48 chunks x 4 tiles (6 KB) stay in L1 while the 64 channels sweep them and
// the 16-bit sums P[channel][128 pixels] take 16 KB.

constexpr int64_t kLutTiles = 4;     // tiles (of 32 pixels) counted together against one table load
constexpr int64_t kLutGroup = 48;    // chunks summed in bytes before widening (48 * 4 < 256)
constexpr int64_t kLutMinWords = 2;  // rows this long or longer take the table count (128+ channels, or 3 x 3 of 64+)
// Output pixels per image (a phase of a transposed conv) below which the 8-pixel blocks stay faster: two
// full tiles (8 x 8, the hand's last stage) gain, 8 x 6 and 6 x 6 lose (their tiles are a quarter empty or
// more).
constexpr int64_t kLutMinPixels = 64;

// kLutTables[w][v] = popcount(v xor w), one 16-byte row per weight nibble w.
struct LutTables {
  alignas(64) uint8_t t[16][16];
  LutTables() {
    for (int w = 0; w < 16; ++w)
      for (int v = 0; v < 16; ++v) t[w][v] = uint8_t(__builtin_popcount(unsigned(w ^ v)));
  }
};
const LutTables kLutTables;

// Jobs whose counts the tables make: long rows (at most kMaxPackedWords, the 16-bit sums) and at least
// kLutMinPixels pixels; any output. The float NCHW
// output of a plain conv is finished in registers (channel_run), the others (raw accumulators, packed signs,
// a transposed conv's scattered pixels) by the shared scalar epilogue.
bool lut_count(const TileJob& j) {
  return j.k_words >= kLutMinWords && j.k_words <= kMaxPackedWords && j.pixels >= kLutMinPixels;
}

struct LutScratch {
  std::vector<uint8_t> x;      // per branch [chunk][kLutTiles][32]
  std::vector<uint8_t> wn;     // per branch [channel][chunk]: 16 x the weight nibble (a row offset in kLutTables)
  std::vector<uint16_t> p;     // per branch [channel][kLutTiles * 32]
  std::vector<uint64_t> zero;  // a block of zero words, for the tiles past the strip's last block
  // Views of k branches' buffers (x and p 32-byte aligned), sized for chunks and channels.
  uint8_t* x_of(int i, int64_t chunks) { return aligned(x.data()) + i * chunks * kLutTiles * 32; }
  uint16_t* p_of(int i, int64_t channels) {
    return reinterpret_cast<uint16_t*>(aligned(reinterpret_cast<uint8_t*>(p.data()))) + i * channels * kLutTiles * 32;
  }
  uint8_t* wn_of(int i, int64_t chunks, int64_t channels) { return wn.data() + i * channels * chunks; }
  void reserve(int k, int64_t k_words, int64_t channels) {
    const int64_t chunks = k_words * 16;
    if (x.size() < size_t(k * chunks * kLutTiles * 32 + 32)) x.resize(size_t(k * chunks * kLutTiles * 32 + 32));
    if (wn.size() < size_t(k * channels * chunks)) wn.resize(size_t(k * channels * chunks));
    if (p.size() < size_t(k * channels * kLutTiles * 32 + 16)) p.resize(size_t(k * channels * kLutTiles * 32 + 16));
    if (zero.size() < size_t(k_words * kLanes)) zero.assign(size_t(k_words * kLanes), 0);
  }
  static uint8_t* aligned(uint8_t* q) {
    return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(q) + 31) & ~uintptr_t(31));
  }
};

LutScratch& lut_scratch() {
  static thread_local LutScratch s;
  return s;
}

// X of the tile from block b (its slot of X at x; blocks past b_end read as zero). A block's word k is 8
// pixels x 8 bytes; pairs of blocks are transposed to bytes x pixels in the two 128-bit halves (a byte
// interleave by pshufb, then 16- and 32-bit unpacks), and two pairs give, for each byte, the 32 pixels in
// order [block 0 | block 2 | block 1 | block 3], which the 16-bit widening (unpacklo / unpackhi per half)
// turns back into block order.
void lut_build_x(const TileJob& j, int64_t b, int64_t b_end, const uint64_t* zero, uint8_t* x) {
  const int64_t kw = j.k_words;
  const uint64_t* blk[4];
  for (int i = 0; i < 4; ++i) blk[i] = b + i < b_end ? j.a + (b + i) * kw * kLanes : zero;
  const __m256i pair_bytes = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                                              0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int64_t k = 0; k < kw; ++k) {
    __m256i v[2][4];  // [pair][m]: bytes 2m, 2m + 1 of 8 pixels, first block of the pair in the low half
    for (int pr = 0; pr < 2; ++pr) {
      const uint64_t* lo = blk[2 * pr] + k * kLanes;
      const uint64_t* hi = blk[2 * pr + 1] + k * kLanes;
      __m256i s[4];
      for (int q = 0; q < 4; ++q)
        s[q] = _mm256_shuffle_epi8(_mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(hi + 2 * q),
                                                       reinterpret_cast<const __m128i*>(lo + 2 * q)),
                                   pair_bytes);
      const __m256i u0 = _mm256_unpacklo_epi16(s[0], s[1]), u1 = _mm256_unpackhi_epi16(s[0], s[1]);
      const __m256i u2 = _mm256_unpacklo_epi16(s[2], s[3]), u3 = _mm256_unpackhi_epi16(s[2], s[3]);
      v[pr][0] = _mm256_unpacklo_epi32(u0, u2), v[pr][1] = _mm256_unpackhi_epi32(u0, u2);
      v[pr][2] = _mm256_unpacklo_epi32(u1, u3), v[pr][3] = _mm256_unpackhi_epi32(u1, u3);
    }
    for (int m = 0; m < 4; ++m) {
      const __m256i bytes[2] = {_mm256_unpacklo_epi64(v[0][m], v[1][m]), _mm256_unpackhi_epi64(v[0][m], v[1][m])};
      for (int h = 0; h < 2; ++h) {
        const int64_t c = k * 16 + 2 * (2 * m + h);  // byte 2m + h holds nibbles 2 (2m + h) and 2 (2m + h) + 1
        _mm256_store_si256(reinterpret_cast<__m256i*>(x + (c * kLutTiles) * 32), _mm256_and_si256(bytes[h], low));
        _mm256_store_si256(reinterpret_cast<__m256i*>(x + ((c + 1) * kLutTiles) * 32),
                           _mm256_and_si256(_mm256_srli_epi16(bytes[h], 4), low));
      }
    }
  }
}

// wn[o][c] = 16 x nibble c of channel o's weight row (nibble q of word k is chunk 16 k + q).
void lut_build_weights(const TileJob& j, int64_t o0, int64_t o1, uint8_t* wn) {
  const int64_t kw = j.k_words, chunks = kw * 16;
  const __m128i low = _mm_set1_epi8(0x0f);
  for (int64_t o = o0; o < o1; ++o) {
    const uint64_t* w = j.w + o * j.ldw;
    uint8_t* row = wn + (o - o0) * chunks;
    for (int64_t k = 0; k < kw; ++k) {
      const __m128i v = _mm_cvtsi64_si128(static_cast<long long>(w[k]));
      const __m128i n = _mm_unpacklo_epi8(_mm_and_si128(v, low), _mm_and_si128(_mm_srli_epi16(v, 4), low));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(row + 16 * k), _mm_slli_epi16(n, 4));
    }
  }
}

// One channel's counts over chunks [c0, c0 + n) of NB tiles, added into (or, first, stored to) p[NB * 32].
template <int NB, int N>
__attribute__((always_inline)) inline void lut_channel(const uint8_t* x, const uint8_t* wn, int64_t n, uint16_t* p,
                                                       bool first) {
  __m256i acc[NB];
  for (int t = 0; t < NB; ++t) acc[t] = _mm256_setzero_si256();
  const auto step = [&](int64_t c) {
    const __m256i table = _mm256_broadcastsi128_si256(
        _mm_load_si128(reinterpret_cast<const __m128i*>(&kLutTables.t[0][0] + wn[c])));
    const __m256i* xc = reinterpret_cast<const __m256i*>(x + c * kLutTiles * 32);
    for (int t = 0; t < NB; ++t) acc[t] = _mm256_add_epi8(acc[t], _mm256_shuffle_epi8(table, _mm256_load_si256(xc + t)));
  };
  if (N > 0) {  // unrolled by 4 (fully unrolled, the 48 steps ran at half the speed: front-end bound)
    for (int64_t c = 0; c < N; c += 4) {
#pragma GCC unroll 4
      for (int64_t i = 0; i < 4; ++i) step(c + i);
    }
  } else {
    for (int64_t c = 0; c < n; ++c) step(c);
  }
  const __m256i zero = _mm256_setzero_si256();
  for (int t = 0; t < NB; ++t) {
    __m256i* d = reinterpret_cast<__m256i*>(p + 32 * t);
    const __m256i lo = _mm256_unpacklo_epi8(acc[t], zero), hi = _mm256_unpackhi_epi8(acc[t], zero);
    if (first) {
      _mm256_store_si256(d, lo), _mm256_store_si256(d + 1, hi);
    } else {
      _mm256_store_si256(d, _mm256_add_epi16(_mm256_load_si256(d), lo));
      _mm256_store_si256(d + 1, _mm256_add_epi16(_mm256_load_si256(d + 1), hi));
    }
  }
}

template <int NB>
void lut_counts(const uint8_t* x, const uint8_t* wn, int64_t chunks, int64_t channels, uint16_t* p) {
  for (int64_t g = 0; g < chunks; g += kLutGroup) {
    const int64_t n = chunks - g < kLutGroup ? chunks - g : kLutGroup;
    for (int64_t o = 0; o < channels; ++o) {
      if (n == kLutGroup) {
        lut_channel<NB, kLutGroup>(x + g * kLutTiles * 32, wn + o * chunks + g, n, p + o * kLutTiles * 32, g == 0);
      } else {
        lut_channel<NB, 0>(x + g * kLutTiles * 32, wn + o * chunks + g, n, p + o * kLutTiles * 32, g == 0);
      }
    }
  }
}

// lut_counts for 1-4 tiles.
void lut_counts(int64_t tiles, const uint8_t* x, const uint8_t* wn, int64_t chunks, int64_t channels, uint16_t* p) {
  switch (tiles) {
    case 1: lut_counts<1>(x, wn, chunks, channels, p); break;
    case 2: lut_counts<2>(x, wn, chunks, channels, p); break;
    case 3: lut_counts<3>(x, wn, chunks, channels, p); break;
    default: lut_counts<4>(x, wn, chunks, channels, p); break;
  }
}

// Kernels::prepare: the weight nibbles of all the job's channels, once per call (every work item reads them).
void avx2_prepare(TileJob& j, int slot) {
  static thread_local std::vector<uint8_t> wn[kMaxFusedBranches];
  j.lut_weights = nullptr;
  if (!lut_count(j) || slot < 0 || slot >= kMaxFusedBranches) return;
  std::vector<uint8_t>& w = wn[slot];
  if (w.size() < size_t(j.out_channels * j.k_words * 16)) w.resize(size_t(j.out_channels * j.k_words * 16));
  lut_build_weights(j, 0, j.out_channels, w.data());
  j.lut_weights = w.data();
}

// The weight nibbles of channels [o0, o1) of a job: prepared, or built into the scratch (slot i).
const uint8_t* lut_weights(const TileJob& j, int i, int64_t o0, int64_t o1, LutScratch& sc) {
  const int64_t chunks = j.k_words * 16;
  if (j.lut_weights) return j.lut_weights + o0 * chunks;
  uint8_t* wn = sc.wn_of(i, chunks, o1 - o0);
  lut_build_weights(j, o0, o1, wn);
  return wn;
}

// Channels are counted 64 at a time (P: 16 KB), every chunk of them from the same X of the tile group.
constexpr int64_t kLutChannels = 64;

// The other outputs: a tile's counts as int32 [channel][kTilePixels], then finish_tile (bconv_internal.h).
void lut_finish_scalar(const TileJob& j, int64_t b, int64_t be, int64_t c0, int64_t c1, const uint16_t* p) {
  alignas(32) int32_t r[4 * kTilePixels];
  for (int64_t tb = b, t = 0; tb < be; tb += kTileBlocks, ++t) {
    const TilePixels pixels(j, tb, tb + kTileBlocks < be ? tb + kTileBlocks : be);
    for (int64_t o = c0; o < c1; o += 4) {
      const int nb = int(c1 - o < 4 ? c1 - o : 4);
      for (int c = 0; c < nb; ++c)
        for (int q = 0; q < kTileBlocks; ++q)
          Avx2::store_int(r + c * kTilePixels + q * kLanes,
                          Avx2::load_counts(p + (o + c - c0) * kLutTiles * 32 + t * 32 + q * kLanes));
      finish_tile(j, pixels, o, nb, r);
    }
  }
}

// The sweep both table-count entries share, over k jobs (FDR's branches; 1 for a plain conv): per tile
// group of the strip, X of every job; per 64 channels, every job's 16-bit sums into its P; then
// finish(b, be, c0, c1, p) with p[i] = job i's sums, channel c0 first.
template <class Finish>
void lut_sweep(const TileJob* jobs, int k, int64_t b0, int64_t b1, int64_t o0, int64_t o1, Finish&& finish) {
  LutScratch& sc = lut_scratch();
  const int64_t chunks = jobs[0].k_words * 16;
  sc.reserve(k, jobs[0].k_words, o1 - o0 > kLutChannels ? o1 - o0 : kLutChannels);
  const uint8_t* wn[kMaxFusedBranches];
  const uint16_t* p[kMaxFusedBranches];
  for (int i = 0; i < k; ++i) wn[i] = lut_weights(jobs[i], i, o0, o1, sc), p[i] = sc.p_of(i, kLutChannels);
  for (int64_t b = b0; b < b1; b += kLutTiles * kTileBlocks) {
    const int64_t be = b + kLutTiles * kTileBlocks < b1 ? b + kLutTiles * kTileBlocks : b1;
    const int64_t tiles = (be - b + kTileBlocks - 1) / kTileBlocks;
    for (int i = 0; i < k; ++i)
      for (int64_t t = 0; t < tiles; ++t)
        lut_build_x(jobs[i], b + t * kTileBlocks, be, sc.zero.data(), sc.x_of(i, chunks) + 32 * t);
    for (int64_t c0 = o0; c0 < o1; c0 += kLutChannels) {
      const int64_t c1 = c0 + kLutChannels < o1 ? c0 + kLutChannels : o1;
      for (int i = 0; i < k; ++i)
        lut_counts(tiles, sc.x_of(i, chunks), wn[i] + (c0 - o0) * chunks, chunks, c1 - c0, sc.p_of(i, kLutChannels));
      finish(b, be, c0, c1, p);
    }
  }
}

// Kernels::tile with the table count: the float NCHW output of a plain conv through channel_run, the others
// through finish_tile.
void lut_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  using Fu = Fused<Avx2>;
  if (!Fu::fused(j)) {
    lut_sweep(&j, 1, b0, b1, o0, o1, [&](int64_t b, int64_t be, int64_t c0, int64_t c1, const uint16_t* const* p) {
      lut_finish_scalar(j, b, be, c0, c1, p[0]);
    });
    return;
  }
  const Fu::ChannelRun run = Fu::channel_run_for(j, kFromCounts);
  const int64_t R = j.ep.residual_channels;
  Avx2::Block blocks[kLutTiles * kTileBlocks];
  lut_sweep(&j, 1, b0, b1, o0, o1, [&](int64_t b, int64_t be, int64_t c0, int64_t c1, const uint16_t* const* p) {
    if (c0 == o0) Fu::describe(j, b, be, blocks);
    int64_t rc = j.residual ? c0 % R : 0;
    for (int64_t o = c0; o < c1; ++o, rc = j.residual && rc + 1 == R ? 0 : rc + 1)
      run(j, blocks, be - b, reinterpret_cast<const uint64_t*>(p[0] + (o - c0) * kLutTiles * 32), b * kLanes, o, rc);
  });
}

// FDR's k branches (Kernels::branch_tile) with the table count: the shared branch epilogue reading each
// branch's sums (bconv_fused.h, branch_run with kFromCounts).
void lut_branch_tile(const TileJob* jobs, int k, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  using Fu = Fused<Avx2>;
  const Fu::BranchRun run = Fu::branch_run_for(k, kFromCounts);
  const int64_t R = jobs[0].ep.residual_channels;
  Avx2::Block blocks[kLutTiles * kTileBlocks];
  lut_sweep(jobs, k, b0, b1, o0, o1, [&](int64_t b, int64_t be, int64_t c0, int64_t c1, const uint16_t* const* p) {
    if (c0 == o0) Fu::describe(jobs[0], b, be, blocks);
    int64_t rc = jobs[0].residual ? c0 % R : 0;
    const uint16_t* counts[kMaxFusedBranches];
    for (int64_t o = c0; o < c1; ++o, rc = jobs[0].residual && rc + 1 == R ? 0 : rc + 1) {
      for (int i = 0; i < k; ++i) counts[i] = p[i] + (o - c0) * kLutTiles * 32;
      run(jobs, blocks, be - b, b, o, rc, counts);
    }
  });
}

void avx2_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  if (lut_count(j)) {
    lut_tile(j, b0, b1, o0, o1);
    return;
  }
  if (!Fused<Avx2>::tile(j, b0, b1, o0, o1)) register_tile<Avx2>(j, b0, b1, o0, o1);
}

void avx2_branch_tile(const TileJob* jobs, int k, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  if (lut_count(jobs[0]) && Fused<Avx2>::fused(jobs[0])) {
    lut_branch_tile(jobs, k, b0, b1, o0, o1);
    return;
  }
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

// The table count's step (lut_*): one pshufb of a weight chunk's table with 32 pixels' 4-bit chunks and a byte
// add, 128 binary MACs (the nibble count of the other layers costs 8 instructions per 256).
int64_t avx2_count_loop(int64_t steps) {
  __m256i init[8];
  for (int j = 0; j < 8; ++j) init[j] = _mm256_set1_epi8(static_cast<char>(j));
  return count_loop_of(
      steps, 128, init, _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4),
      [](__m256i acc, __m256i a, __m256i table) { return _mm256_add_epi8(acc, _mm256_shuffle_epi8(table, a)); },
      [](__m256i (&v)[8]) {
        asm volatile("" : "+x"(v[0]), "+x"(v[1]), "+x"(v[2]), "+x"(v[3]),
                          "+x"(v[4]), "+x"(v[5]), "+x"(v[6]), "+x"(v[7]));
      });
}

// Strips of the table count: kLutTiles tiles, the tiles one table load serves (0: the driver's default).
int64_t avx2_strip_tiles(const TileJob& j) { return lut_count(j) ? kLutTiles : 0; }

}  // namespace

const Kernels kAvx2Kernels{avx2_tile, avx2_pack, avx2_popcount, avx2_branch_tile, avx2_strip_tiles, avx2_prepare,
                              generic_int8_rows, avx2_count_loop};

}  // namespace bidrn
