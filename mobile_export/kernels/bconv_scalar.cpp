// Portable path: plain C++, no target flags. It is the reference every SIMD path is compared against
// (after the naive direct convolution of the self-test), so it favours the obvious over the fast.
#include "bconv_internal.h"
#define BIDRN_INT8_SCALAR 1  // plain loops in int8_gemm.h
#include "int8_gemm.h"

namespace bidrn {
namespace {

void scalar_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  const Strip strip(j, b0, b1);
  int32_t r[kTilePixels];
  for (int64_t o = o0; o < o1; ++o) {
    const uint64_t* w = j.w + o * j.ldw;
    for (int i = 0; i < strip.tiles; ++i) {
      const int64_t tb0 = strip.first_block(i, b0), tb1 = tb0 + kTileBlocks < b1 ? tb0 + kTileBlocks : b1;
      for (int64_t b = tb0; b < tb1; ++b) {
        const uint64_t* a = j.a + b * j.k_words * kLanes;
        for (int64_t l = 0; l < kLanes; ++l) {
          int32_t count = 0;
          for (int64_t k = 0; k < j.k_words; ++k) count += __builtin_popcountll(a[k * kLanes + l] ^ w[k]);
          r[(b - tb0) * kLanes + l] = count;
        }
      }
      finish_tile(j, strip.tile[i], o, 1, r);
    }
  }
}

void scalar_pack(const float* x, int64_t channels, int64_t plane, int64_t p0, int64_t p1, uint64_t* out) {
  const int64_t cw = words_for(channels);
  for (int64_t p = p0; p < p1; ++p)
    for (int64_t w = 0; w < cw; ++w) out[p * cw + w] = 0;
  for (int64_t c = 0; c < channels; ++c) {
    const float* row = x + c * plane;
    const uint64_t bit = uint64_t(1) << (c & 63);
    for (int64_t p = p0; p < p1; ++p) {
      // !(v >= 0) rather than v < 0: NaN must read as -1, as in torch.where(x >= 0, 1, -1).
      if (!(row[p] >= 0.0f)) out[p * cw + (c >> 6)] |= bit;
    }
  }
}

int64_t scalar_popcount(const uint64_t* words, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += __builtin_popcountll(words[i]);
  return c;
}

// xor + popcount + add of one 64-bit word.
int64_t scalar_count_loop(int64_t steps) {
  uint64_t init[8];
  for (int j = 0; j < 8; ++j) init[j] = 0x0123456789abcdefULL * (j + 1);
  return count_loop_of(
      steps, 64, init, uint64_t{0x5555555555555555ULL},
      [](uint64_t acc, uint64_t a, uint64_t w) { return acc + static_cast<uint64_t>(__builtin_popcountll(a ^ w)); },
      [](uint64_t (&v)[8]) {
        asm volatile("" : "+r"(v[0]), "+r"(v[1]), "+r"(v[2]), "+r"(v[3]),
                          "+r"(v[4]), "+r"(v[5]), "+r"(v[6]), "+r"(v[7]));
      });
}

}  // namespace

const Kernels kScalarKernels{scalar_tile, scalar_pack, scalar_popcount, nullptr, nullptr, nullptr, generic_int8_rows,
                             scalar_count_loop};

}  // namespace bidrn
