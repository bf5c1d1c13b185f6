// aarch64 NEON path, built twice: plain (armv8-a, every aarch64 core) and with BIDRN_DOTPROD=1
// (-march=armv8.2-a+dotprod), chosen at run time from HWCAP_ASIMDDP.
// Lane = output pixel as on x86: a block of 8 pixels is 4 q registers of two 64-bit words each. Per 128
// bits: eor, cnt (per-byte popcount) and one accumulate: the plain build adds bytes and widens every 31
// words (cnt <= 8 per byte), the dotprod build accumulates with udot against ones straight into 32-bit
// lanes, which needs no widening pass.
#include <arm_neon.h>

#include "bconv_internal.h"

#if BIDRN_DOTPROD
#define BIDRN_NEON_KERNELS kNeonDotKernels
#else
#define BIDRN_NEON_KERNELS kNeonKernels
#endif

namespace bidrn {
namespace {

constexpr int kNB = 4;  // 4 channels x 4 q accumulators = 16 of the 32 q registers

template <int NB>
void micro(const uint64_t* a, const uint64_t* w, int64_t ldw, int64_t k_words, int32_t* r) {
  uint64x2_t total[NB][4];
  for (int n = 0; n < NB; ++n)
    for (int q = 0; q < 4; ++q) total[n][q] = vdupq_n_u64(0);
#if BIDRN_DOTPROD
  const uint8x16_t ones = vdupq_n_u8(1);
  uint32x4_t sums[NB][4];
  for (int n = 0; n < NB; ++n)
    for (int q = 0; q < 4; ++q) sums[n][q] = vdupq_n_u32(0);
  for (int64_t k = 0; k < k_words; ++k) {
    uint8x16_t av[4];
    for (int q = 0; q < 4; ++q) av[q] = vreinterpretq_u8_u64(vld1q_u64(a + k * kLanes + 2 * q));
    for (int n = 0; n < NB; ++n) {
      const uint8x16_t wv = vreinterpretq_u8_u64(vdupq_n_u64(w[n * ldw + k]));
      for (int q = 0; q < 4; ++q) sums[n][q] = vdotq_u32(sums[n][q], vcntq_u8(veorq_u8(av[q], wv)), ones);
    }
  }
  for (int n = 0; n < NB; ++n)
    for (int q = 0; q < 4; ++q) total[n][q] = vpaddlq_u32(sums[n][q]);
#else
  for (int64_t k0 = 0; k0 < k_words; k0 += 31) {
    const int64_t k1 = k0 + 31 < k_words ? k0 + 31 : k_words;
    uint8x16_t bytes[NB][4];
    for (int n = 0; n < NB; ++n)
      for (int q = 0; q < 4; ++q) bytes[n][q] = vdupq_n_u8(0);
    for (int64_t k = k0; k < k1; ++k) {
      uint8x16_t av[4];
      for (int q = 0; q < 4; ++q) av[q] = vreinterpretq_u8_u64(vld1q_u64(a + k * kLanes + 2 * q));
      for (int n = 0; n < NB; ++n) {
        const uint8x16_t wv = vreinterpretq_u8_u64(vdupq_n_u64(w[n * ldw + k]));
        for (int q = 0; q < 4; ++q) bytes[n][q] = vaddq_u8(bytes[n][q], vcntq_u8(veorq_u8(av[q], wv)));
      }
    }
    for (int n = 0; n < NB; ++n)
      for (int q = 0; q < 4; ++q)
        total[n][q] = vaddq_u64(total[n][q], vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(bytes[n][q]))));
  }
#endif
  for (int n = 0; n < NB; ++n)
    for (int q = 0; q < 4; ++q) vst1_s32(r + n * kTilePixels + 2 * q, vreinterpret_s32_u32(vmovn_u64(total[n][q])));
}

constexpr BlockMicro kMicro[kNB + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>};

void neon_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  tile_by_blocks<kNB>(j, b0, b1, o0, o1, kMicro);
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
        float v[4] = {0, 0, 0, 0};
        for (int i = 0; i < np; ++i) v[i] = x[c * plane + p + i];
        // vcgeq is false for NaN, so its complement marks exactly torch's sign == -1.
        const uint32x4_t negative = vmvnq_u32(vcgeq_f32(vld1q_f32(v), zero));
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

}  // namespace

const Kernels BIDRN_NEON_KERNELS{neon_tile, neon_pack, neon_popcount};

}  // namespace bidrn
