// aarch64 NEON path, built twice: plain (armv8-a, every aarch64 core) and with BIDRN_DOTPROD=1
// (-march=armv8.2-a+dotprod), chosen at run time from HWCAP_ASIMDDP.
// Lane = output pixel as on x86: a block of 8 pixels is 4 q registers of two 64-bit words each. Per 128
// bits: eor, cnt (per-byte popcount) and one accumulate: the plain build adds bytes and widens every 31
// words (cnt <= 8 per byte), the dotprod build accumulates with udot against ones straight into 32-bit
// lanes, which needs no widening pass. The float NCHW output of a plain conv and FDR's branches are finished
// in registers, one output channel at a time (bconv_fused.h, as on AVX2); the other outputs go through the
// shared scalar epilogue.
#include <arm_neon.h>

#include "bconv_fused.h"
#include "int8_gemm.h"

#if BIDRN_DOTPROD
#define BIDRN_NEON_KERNELS kNeonDotKernels
#else
#define BIDRN_NEON_KERNELS kNeonKernels
#endif

namespace bidrn {
namespace {

// The vector ops of the shared in-register epilogue (bconv_fused.h): a block of 8 pixels is two q registers
// of floats or int32 (pixels 0-3, 4-7).
struct Neon {
  struct F {
    float32x4_t v[2];
  };
  struct I {
    int32x4_t v[2];
  };

  // What the epilogue needs about one block: table indices of its pixels' correction entries (bytes
  // 4 id .. 4 id + 3 of the 64-byte correction row, for tbl), whether any id is non-zero, its live lanes,
  // and the pooled residual's sources.
  struct Block {
    uint8x16_t corr_index[2];
    int32_t pool_src[kLanes];  // residual_pool 2: each lane's top-left residual pixel
    int32_t pool_row;          // >= 0: the live lanes share an output row, windows from this offset
    int32_t live;
    bool border;
  };

  static void describe(const TileJob& j, int64_t first, int live, Block& t) {
    uint8_t index[2 * 16] = {};
    t.border = false;
    for (int l = 0; l < live; ++l) {
      const uint16_t id = j.mask_id[first + l];
      t.border |= id != 0;
      for (int byte = 0; byte < 4; ++byte) index[4 * l + byte] = uint8_t(4 * id + byte);
    }
    t.corr_index[0] = vld1q_u8(index), t.corr_index[1] = vld1q_u8(index + 16);
    t.live = live;
    t.pool_row = -1;
    if (j.ep.residual_pool == 2) {
      for (int l = 0; l < kLanes; ++l) {
        const int64_t p = first + l, oy = p / j.out_w, ox = p - oy * j.out_w;
        t.pool_src[l] = l < live ? static_cast<int32_t>(2 * oy * j.ep.residual_w + 2 * ox) : 0;
      }
      if (first % j.out_w + live <= j.out_w) t.pool_row = t.pool_src[0];
    }
  }

  // popcount(a[n] xor w[n]) per pixel for N rows (see Fused). q register q of a word holds pixels 2q, 2q + 1; the per-byte counts
  // are summed into 32-bit lanes (udot against ones, or byte adds for up to 31 words, then pairwise
  // widening), two lanes per pixel, and a pairwise add of two registers gives 4 pixels' counts.
  template <int N, int KW>
  __attribute__((always_inline)) static void count(const uint64_t* const (&a)[N], const uint64_t* const (&w)[N],
                                                   int64_t k_words, I (&r)[N]) {
    const int64_t words = KW > 0 ? KW : k_words;
    uint32x4_t total[N][4];
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n)
      for (int q = 0; q < 4; ++q) total[n][q] = vdupq_n_u32(0);
#if BIDRN_DOTPROD
    const uint8x16_t ones = vdupq_n_u8(1);
#pragma GCC unroll 8
    for (int64_t k = 0; k < words; ++k) {
#pragma GCC unroll 4
      for (int n = 0; n < N; ++n) {
        const uint8x16_t wv = vreinterpretq_u8_u64(vdupq_n_u64(w[n][k]));
        for (int q = 0; q < 4; ++q) {
          const uint8x16_t av = vreinterpretq_u8_u64(vld1q_u64(a[n] + k * kLanes + 2 * q));
          total[n][q] = vdotq_u32(total[n][q], vcntq_u8(veorq_u8(av, wv)), ones);
        }
      }
    }
#else
    for (int64_t k0 = 0; k0 < words; k0 += 31) {
      const int64_t k1 = k0 + 31 < words ? k0 + 31 : words;
      uint8x16_t bytes[N][4];
#pragma GCC unroll 4
      for (int n = 0; n < N; ++n)
        for (int q = 0; q < 4; ++q) bytes[n][q] = vdupq_n_u8(0);
#pragma GCC unroll 8
      for (int64_t k = k0; k < k1; ++k) {
#pragma GCC unroll 4
        for (int n = 0; n < N; ++n) {
          const uint8x16_t wv = vreinterpretq_u8_u64(vdupq_n_u64(w[n][k]));
          for (int q = 0; q < 4; ++q) {
            const uint8x16_t av = vreinterpretq_u8_u64(vld1q_u64(a[n] + k * kLanes + 2 * q));
            bytes[n][q] = vaddq_u8(bytes[n][q], vcntq_u8(veorq_u8(av, wv)));
          }
        }
      }
#pragma GCC unroll 4
      for (int n = 0; n < N; ++n)
        for (int q = 0; q < 4; ++q) total[n][q] = vpadalq_u16(total[n][q], vpaddlq_u8(bytes[n][q]));
    }
#endif
#pragma GCC unroll 4
    for (int n = 0; n < N; ++n) {
      r[n].v[0] = vreinterpretq_s32_u32(vpaddq_u32(total[n][0], total[n][1]));
      r[n].v[1] = vreinterpretq_s32_u32(vpaddq_u32(total[n][2], total[n][3]));
    }
  }

  // A correction row (16 int32 = 64 bytes) in four q registers, looked up with one tbl per 4 pixels.
  struct Corr {
    uint8x16x4_t table;
  };
  static Corr corr_row(const int32_t* row) { return {vld1q_u8_x4(reinterpret_cast<const uint8_t*>(row))}; }
  static I acc(I r, I k_bits, const Block& t, const Corr& corr) {
    I v;
    for (int h = 0; h < 2; ++h) {
      v.v[h] = vsubq_s32(k_bits.v[h], vaddq_s32(r.v[h], r.v[h]));
      if (t.border) v.v[h] = vsubq_s32(v.v[h], vreinterpretq_s32_u8(vqtbl4q_u8(corr.table, t.corr_index[h])));
    }
    return v;
  }

  static F set(float x) { return {{vdupq_n_f32(x), vdupq_n_f32(x)}}; }
  static I set_int(int32_t x) { return {{vdupq_n_s32(x), vdupq_n_s32(x)}}; }
  static void store_int(int32_t* p, I x) { vst1q_s32(p, x.v[0]), vst1q_s32(p + 4, x.v[1]); }
  // 8 pixels' 16-bit counts (channel_run / branch_run with kFromCounts; the NEON paths count in place and
  // do not use it yet, but the shared template asks every ISA for it).
  static I load_counts(const uint16_t* p) {
    const uint16x8_t u = vld1q_u16(p);
    return {{vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(u))), vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(u)))}};
  }
  static F to_float(I x) { return {{vcvtq_f32_s32(x.v[0]), vcvtq_f32_s32(x.v[1])}}; }
  static F add(F a, F b) { return {{vaddq_f32(a.v[0], b.v[0]), vaddq_f32(a.v[1], b.v[1])}}; }
  static F mul(F a, F b) { return {{vmulq_f32(a.v[0], b.v[0]), vmulq_f32(a.v[1], b.v[1])}}; }
  // (s > 0 ? s : beta s) + zeta with s = y - gamma (eq. 6); NaN fails the compare, as in C.
  static F rprelu(F y, F beta, F gamma, F zeta) {
    F out;
    for (int h = 0; h < 2; ++h) {
      const float32x4_t s = vsubq_f32(y.v[h], gamma.v[h]);
      const uint32x4_t positive = vcgtq_f32(s, vdupq_n_f32(0.0f));
      out.v[h] = vaddq_f32(vbslq_f32(positive, s, vmulq_f32(beta.v[h], s)), zeta.v[h]);
    }
    return out;
  }
  // Hardtanh as torch.clamp: fmax / fmin return NaN when an operand is NaN, so NaN passes; lo / hi =
  // -inf / +inf make it the identity.
  static F clamp(F x, F lo, F hi) {
    return {{vminq_f32(hi.v[0], vmaxq_f32(lo.v[0], x.v[0])), vminq_f32(hi.v[1], vmaxq_f32(lo.v[1], x.v[1]))}};
  }
  static F load(const float* p, const Block& t) {
    if (t.live == kLanes) return {{vld1q_f32(p), vld1q_f32(p + 4)}};
    float buffer[kLanes] = {};
    for (int l = 0; l < t.live; ++l) buffer[l] = p[l];
    return {{vld1q_f32(buffer), vld1q_f32(buffer + 4)}};
  }
  static void store(float* p, F x, const Block& t) {
    if (t.live == kLanes) {
      vst1q_f32(p, x.v[0]), vst1q_f32(p + 4, x.v[1]);
      return;
    }
    float buffer[kLanes];
    vst1q_f32(buffer, x.v[0]), vst1q_f32(buffer + 4, x.v[1]);
    for (int l = 0; l < t.live; ++l) p[l] = buffer[l];
  }
  static void prefetch(const float* p) { __builtin_prefetch(p); }

  // DScR's pooled residual (residual_pool 2) of one block: each lane's 2 x 2 window, summed row by row and
  // divided by 4 as ATen's avg_pool2d. Where the live lanes share an output row the windows are two rows of
  // 2 * live contiguous floats, which vld2 splits into even / odd columns; else read lane by lane.
  static F pooled(const Block& t, const float* res, int64_t residual_w, F lo, F hi) {
    F a, b, c, d;  // the window's top-left, top-right, bottom-left, bottom-right values
    if (t.pool_row >= 0) {
      const float* top = res + t.pool_row;
      const float* bottom = top + residual_w;
      float rows[2][2 * kLanes] = {};
      if (t.live < kLanes) {  // copy the live windows: the rows may end here
        for (int i = 0; i < 2 * t.live; ++i) rows[0][i] = top[i], rows[1][i] = bottom[i];
        top = rows[0], bottom = rows[1];
      }
      for (int h = 0; h < 2; ++h) {
        const float32x4x2_t up = vld2q_f32(top + 8 * h), down = vld2q_f32(bottom + 8 * h);
        a.v[h] = up.val[0], b.v[h] = up.val[1], c.v[h] = down.val[0], d.v[h] = down.val[1];
      }
    } else {
      float v[4][kLanes] = {};
      for (int l = 0; l < t.live; ++l) {
        const float* s = res + t.pool_src[l];
        v[0][l] = s[0], v[1][l] = s[1], v[2][l] = s[residual_w], v[3][l] = s[residual_w + 1];
      }
      for (int h = 0; h < 2; ++h) {
        a.v[h] = vld1q_f32(v[0] + 4 * h), b.v[h] = vld1q_f32(v[1] + 4 * h);
        c.v[h] = vld1q_f32(v[2] + 4 * h), d.v[h] = vld1q_f32(v[3] + 4 * h);
      }
    }
    a = clamp(a, lo, hi), b = clamp(b, lo, hi), c = clamp(c, lo, hi), d = clamp(d, lo, hi);
    const F sum = add(add(add(a, b), c), d);
    return {{vdivq_f32(sum.v[0], vdupq_n_f32(4.0f)), vdivq_f32(sum.v[1], vdupq_n_f32(4.0f))}};
  }
};

void neon_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  if (!Fused<Neon>::tile(j, b0, b1, o0, o1)) register_tile<Neon>(j, b0, b1, o0, o1);
}

void neon_branch_tile(const TileJob* jobs, int k, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  Fused<Neon>::branch_tile(jobs, k, b0, b1, o0, o1);
}

// 4 pixels per compare; each channel's all-ones/zero lanes are masked to that channel's bit and OR-ed
// into 32-bit words, so 32 channels make one half-word per pixel.
void neon_pack(const float* x, int64_t channels, int64_t plane, int64_t p0, int64_t p1, uint64_t* out) {
  const int64_t cw = words_for(channels);
  uint32_t* dst = reinterpret_cast<uint32_t*>(out);  // little-endian: half h & 1 of word h / 2
  const float32x4_t zero = vdupq_n_f32(0.0f);
  for (int64_t p = p0; p < p1; p += 4) {
    const int np = int(p1 - p < 4 ? p1 - p : 4);
    for (int64_t h = 0; h < 2 * cw; ++h) {
      uint32x4_t bits = vdupq_n_u32(0);
      for (int64_t c = h * 32; c < h * 32 + 32 && c < channels; ++c) {
        float32x4_t v;
        if (np == 4) {
          v = vld1q_f32(x + c * plane + p);
        } else {  // the plane's last pixels: zeros past them read as +1 and are not stored
          float tail[4] = {0, 0, 0, 0};
          for (int i = 0; i < np; ++i) tail[i] = x[c * plane + p + i];
          v = vld1q_f32(tail);
        }
        // vcgeq is false for NaN, so its complement marks exactly torch's sign == -1.
        const uint32x4_t negative = vmvnq_u32(vcgeq_f32(v, zero));
        bits = vorrq_u32(bits, vandq_u32(negative, vdupq_n_u32(1u << (c & 31))));
      }
      uint32_t lanes[4];
      vst1q_u32(lanes, bits);
      for (int i = 0; i < np; ++i) dst[((p + i) * cw + h / 2) * 2 + (h & 1)] = lanes[i];
    }
  }
}

int64_t neon_popcount(const uint64_t* words, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += vaddv_u8(vcnt_u8(vcreate_u8(words[i])));
  return c;
}

// eor + cnt + one accumulate per 128 bits, as in `count`: a byte add (widened every 31 words there), or udot
// against ones on the dotprod build. Three instructions per 128 bits: 2 x 128 / 3 = 85 binary MACs a cycle
// on a core with two 128-bit pipes (Cortex-A76), 171 with four (Cortex-X, Apple's big cores).
int64_t neon_count_loop(int64_t steps) {
  uint8x16_t init[8];
  for (int j = 0; j < 8; ++j) init[j] = vdupq_n_u8(static_cast<uint8_t>(17 * j + 3));
  return count_loop_of(
      steps, 128, init, vdupq_n_u8(0x55),
      [](uint8x16_t acc, uint8x16_t a, uint8x16_t w) {
#if BIDRN_DOTPROD
        return vreinterpretq_u8_u32(vdotq_u32(vreinterpretq_u32_u8(acc), vcntq_u8(veorq_u8(a, w)), vdupq_n_u8(1)));
#else
        return vaddq_u8(acc, vcntq_u8(veorq_u8(a, w)));
#endif
      },
      [](uint8x16_t (&v)[8]) {
        asm volatile("" : "+w"(v[0]), "+w"(v[1]), "+w"(v[2]), "+w"(v[3]),
                          "+w"(v[4]), "+w"(v[5]), "+w"(v[6]), "+w"(v[7]));
      });
}

}  // namespace

const Kernels BIDRN_NEON_KERNELS{neon_tile, neon_pack, neon_popcount, neon_branch_tile, nullptr, nullptr,
                                 generic_int8_rows, neon_count_loop};

}  // namespace bidrn
