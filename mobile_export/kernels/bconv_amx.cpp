// AMX path (Intel Sapphire Rapids and later Xeons): a binary conv is an integer GEMM of +-1 values, and the
// tile matrix unit multiplies int8 matrices at up to 1,024 MACs a cycle, against at most 341 binary MACs a
// cycle for AVX-512's xor + popcount + add (one 512-bit popcount port on these cores). So where the count
// dominates a layer (3 x 3 convs of 64+ channels on 512+ output positions) the binary conv runs as an int8
// GEMM of sign bytes: +1 / -1 as the bit says, 0 in the zero padding (PyTorch pads the binarised input with
// zeros, so no padding correction) and in the channels past C. The int32 tiles are the layer's accumulators
// themselves, bit for bit what the popcount paths compute. The weights stay 1 bit each in the .pte; the first
// call of a layer expands them, later calls reuse that (expanded_weights). Every other layer (the 1 x 1 ones,
// whose time is their float epilogue, strided and transposed convs, small layers) runs on the AVX-512
// kernels. Measurements: docs/kernels.md, "AMX path".
//
// Layout. One image's input becomes sign bytes in "word planes": plane w holds, for every position of the
// zero-padded image, the 64 channels of packed word w as 64 bytes (one cache line a position). An A tile (16
// rows x 64 bytes) is then 16 consecutive positions: one contiguous, aligned 1 KB block, and tap (ky, kx) is
// a position offset, ky * Wp + kx. The positions of the padded image are one flat sequence (one zero run
// between rows serves as right and left padding, make_plan): output (y, x) is position y * Wp + x, and the
// positions with x >= out_w are computed and dropped. The B tiles are the weights in the VNNI order of the
// tile unit (row r = 4 input channels of 16 output channels), one contiguous 1 KB block per (16 output
// channels, word of a tap), from the packed words by a 16 x 16 transpose, stored in the order the k loop
// reads them. A work item runs 32 output channels (2 B tiles) over its groups of 16 positions, two groups (2
// A tiles) at a time: 4 int32 C tiles [position][channel], 4 tile loads per 4 tile multiplies, the k loop
// word-major (the 9 taps of a 3 x 3 conv's word plane share 15 of every tile's 16 lines with the previous
// tap's, in L1). The C tiles of kBatchPairs group pairs wait in memory; then the epilogue applies scale, bias
// and RPReLU (eq. 6) to each tile's rows with the channels in the lanes, transposes the tile in place, and
// runs channel by channel over the batch with the positions in the lanes: residual, partial sum, post affine,
// shortcut, store, in the AVX-512 path's order and rounding. A conv without those streams (a bare binary conv
// such as the reference layer) stores each transposed tile straight from the registers, in the 4-group
// order inside the next call's k loop. The epilogue reads a tile's rows with the dropped positions left
// out (Group::src), so that a group's outputs are one run of lanes: one store a channel.
//
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mamx-tile -mamx-int8.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "bconv_internal.h"
#include "int8_pack_avx512.h"

namespace bidrn {

namespace {

constexpr int kGroup = 16;         // output positions per A tile
constexpr int kPairChannels = 32;  // output channels per work item (2 B tiles)
constexpr int64_t kL1Bytes = 48 << 10;  // L1 data cache of the Xeons with AMX (Sapphire / Emerald Rapids)
constexpr int kBatchPairs = 16;    // group pairs (512 positions) whose C tiles (64 KB) wait for one epilogue pass

struct alignas(64) Line {  // the element of the cache-line-aligned buffers
  int8_t bytes[64];
};

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Eight tiles of 16 rows x 64 bytes: C 0-3, A 4-5, B 6-7.
void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
}

// 16 x 16 transpose of 32-bit lanes: r[i] lane j -> r[j] lane i.
__attribute__((always_inline)) inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // r[4i + m], 128-bit lane j: column 4j + m of rows 4i .. 4i + 3
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 a = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88), b = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xDD);
    const __m512 c = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88), d = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xDD);
    t[m] = _mm512_shuffle_f32x4(a, c, 0x88);
    t[8 + m] = _mm512_shuffle_f32x4(a, c, 0xDD);
    t[4 + m] = _mm512_shuffle_f32x4(b, d, 0x88);
    t[12 + m] = _mm512_shuffle_f32x4(b, d, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// A group's 16 positions are consecutive in a word plane, but a group that crosses the end of an output row
// also holds the dropped columns (x >= out_w) between its rows. The epilogue reads the C tile's rows (one a
// position) through `src`, the valid positions first in their order, so that after the transpose a
// channel's valid outputs sit in lanes 0 .. n - 1: the group's outputs are consecutive in the output plane
// (the dropped columns are exactly what lies between one output row and the next), one masked store a
// channel from `at` instead of one per row segment (the reference layer: 51 groups, 28 with a row end;
// 16 stores a tile instead of about 25; docs/kernels.md, "AMX path"). Lanes from n on repeat row 0 and are
// masked off.
struct Group {
  int64_t base;    // position of the group's lane 0 at tap (0, 0) in a word plane
  int64_t at;      // output index (within a plane) of its first valid position
  __mmask16 mask;  // lanes 0 .. n - 1: its n valid positions
  uint8_t src[kGroup];  // C tile row of lane i
};

// Geometry of one call, shared by every image.
struct Plan {
  int64_t cw = 0, H = 0, W = 0, pad_h = 0, pad_w = 0, Hp = 0, Wp = 0;
  int64_t plane = 0;  // positions per word plane
  int64_t k_words = 0, O = 0, pairs = 0, out_plane = 0;
  std::vector<int64_t> tap_off;  // positions
  std::vector<Group> groups;
};

// Groups of 16 consecutive positions over rows x width outputs in the flat sequence of a plane Wp wide
// (output (y, x) at position y Wp + x; the positions with x >= width computed and dropped), each group's
// valid lanes first (Group::src), appended to `groups`.
void flat_groups(int64_t rows, int64_t width, int64_t Wp, std::vector<Group>& groups) {
  const int64_t span = (rows - 1) * Wp + width;
  for (int64_t g0 = 0; g0 < span; g0 += kGroup) {
    Group g;
    g.base = g0, g.at = 0;
    int n = 0;
    for (int l = 0; l < kGroup && g0 + l < span; ++l) {
      const int64_t pos = g0 + l, y = pos / Wp, x = pos - y * Wp;
      if (x >= width) continue;  // a dropped column
      if (n == 0) g.at = y * width + x;
      g.src[n++] = uint8_t(l);
    }
    for (int i = n; i < kGroup; ++i) g.src[i] = 0;
    g.mask = static_cast<__mmask16>((1u << n) - 1);
    groups.push_back(g);
  }
}

Plan make_plan(const ConvShape& s) {
  Plan p;
  p.cw = words_for(s.in_channels);
  p.H = s.in_h, p.W = s.in_w, p.pad_h = s.pad_h, p.pad_w = s.pad_w;
  // One zero run between rows serves as the right padding of a row and the left padding of the next: a
  // row of the plane is pad_w zero positions, then the in_w pixels, then only the zeros the taps read past
  // the row that the next row's pad_w do not already give (none for a "same" conv: 2 pad_w >= kernel_w - 1).
  // For a 3 x 3 conv that is one dropped column per output row instead of two (the reference layer: 51
  // groups of 16 positions instead of 53).
  p.Hp = s.in_h + 2 * s.pad_h;
  p.Wp = s.in_w + std::max(s.pad_w, s.kernel_w - 1 - s.pad_w);
  // The last group's dropped lanes read up to 15 positions past the padded image: a slack row of zeros.
  p.plane = (p.Hp + 1) * p.Wp + kGroup;
  p.k_words = s.kernel_h * s.kernel_w * p.cw, p.O = s.out_channels;
  p.pairs = (p.O + kPairChannels - 1) / kPairChannels;
  p.out_plane = s.out_h * s.out_w;
  for (int64_t ky = 0; ky < s.kernel_h; ++ky)
    for (int64_t kx = 0; kx < s.kernel_w; ++kx) p.tap_off.push_back(ky * p.Wp + kx);
  // Output rows of whole groups (out_w a multiple of 16: the 64-, 48-, 32- and 16-wide layers): each group
  // is 16 positions of one row, so none is dropped, its output and stream offsets 16-aligned within their
  // planes. 1.06-1.13x on the 3 x 3 LCR convs of 64 at 64 x 64, 128 at 32 x 32 and 256 at 16 x 16 (batch 2)
  // against the flat sequence, which the other widths keep.
  Group g;
  if (s.out_w % kGroup == 0) {
    for (int i = 0; i < kGroup; ++i) g.src[i] = uint8_t(i);
    g.mask = static_cast<__mmask16>(0xFFFF);
    for (int64_t y = 0; y < s.out_h; ++y)
      for (int64_t x = 0; x < s.out_w; x += kGroup) {
        g.base = y * p.Wp + x, g.at = y * s.out_w + x;
        p.groups.push_back(g);
      }
    return p;
  }
  flat_groups(s.out_h, s.out_w, p.Wp, p.groups);
  return p;
}

// Input row iy of word plane w from the packed input (words_for(C) words a pixel): 64 sign bytes a position
// (+1, or -1 where the bit is set; the padding bits of the last word give +1, which the weights' zero bytes
// there cancel). The padding around it is fill_padding's.
void fill_row(const Plan& p, const uint64_t* packed, int64_t w, int64_t iy, int8_t* planes) {
  const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
  const uint64_t* src = packed + iy * p.W * p.cw + w;
  int8_t* row = planes + (w * p.plane + (iy + p.pad_h) * p.Wp + p.pad_w) * 64;
  for (int64_t x = 0; x < p.W; ++x) _mm512_store_si512(row + x * 64, _mm512_mask_blend_epi8(src[x * p.cw], plus, minus));
}

// Every position of word plane w that holds no pixel, set to `value` (0 around sign bytes; the int8 deconv's
// zero point): the positions before the first row's pixels, the run after each row's (shared with the next
// row's left padding) and everything after the last row, the slack that dropped lanes read included.
void fill_padding(const Plan& p, int64_t w, int8_t* planes, int8_t value = 0) {
  int8_t* dst = planes + w * p.plane * 64;
  const __m512i v = _mm512_set1_epi8(static_cast<char>(value));
  const auto fill_run = [&](int64_t from, int64_t to) {
    for (int64_t q = from; q < to; ++q) _mm512_store_si512(dst + q * 64, v);
  };
  fill_run(0, p.pad_h * p.Wp + p.pad_w);
  for (int64_t iy = 0; iy < p.H; ++iy) {
    const int64_t end = (iy + p.pad_h) * p.Wp + p.pad_w + p.W;
    fill_run(end, iy + 1 < p.H ? end + p.Wp - p.W : p.plane);
  }
}

constexpr int64_t kFillPixels = 1024;  // pixels of a plane per sweep of the 64 channels of a word

// Float input straight into word plane w's sign bytes (what pack + fill_row do for packed input, without the
// packed words in between), pixels [q0, q1) of the H x W plane: per channel, the signs of a run of pixels
// (NGE_UQ: -1 for negative and NaN, exactly where torch's sign gives -1); then per pixel its 64 channels'
// bits gathered into a 64-bit mask and blended to +1 / -1 bytes at the pixel's padded position. Channels
// past C give +1 bytes, which the weights' zero bytes there cancel.
void fill_from_float(const Plan& p, const float* x, int64_t C, int64_t w, int64_t q0, int64_t q1, int8_t* planes) {
  alignas(64) uint16_t m[kFillPixels / 16][64];
  const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
  const int64_t c0 = 64 * w, nc = std::min<int64_t>(64, C - c0), plane = p.H * p.W;
  int8_t* dst = planes + w * p.plane * 64;
  for (int64_t q = q0; q < q1; q += kFillPixels) {
    const int64_t np = std::min(kFillPixels, q1 - q), groups = (np + 15) / 16;
    for (int64_t c = 0; c < 64; ++c) {
      const float* row = x + (c0 + c) * plane + q;
      for (int64_t k = 0; k < groups; ++k) {
        const int64_t left = np - 16 * k;
        const __mmask16 live = left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
        m[k][c] = c < nc ? static_cast<uint16_t>(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(live, row + 16 * k),
                                                                   _mm512_setzero_ps(), _CMP_NGE_UQ))
                         : 0;
      }
    }
    int64_t iy = q / p.W, ix = q - iy * p.W;
    for (int64_t k = 0; k < groups; ++k) {
      const __m512i lo = _mm512_load_si512(m[k]), hi = _mm512_load_si512(m[k] + 32);
      const int n = int(std::min<int64_t>(16, np - 16 * k));
      for (int i = 0; i < n; ++i) {
        const __m512i bit = _mm512_set1_epi16(static_cast<short>(1u << i));
        const __mmask64 negative = static_cast<__mmask64>(_mm512_test_epi16_mask(lo, bit)) |
                                   static_cast<__mmask64>(_mm512_test_epi16_mask(hi, bit)) << 32;
        _mm512_store_si512(dst + ((iy + p.pad_h) * p.Wp + p.pad_w + ix) * 64,
                           _mm512_mask_blend_epi8(negative, plus, minus));
        if (++ix == p.W) ix = 0, ++iy;
      }
    }
  }
}

// The weights of output channels [16 cb, 16 cb + 16) (rows of k_words words, ldw apart) as B tiles: for each
// word kk of their rows, 1 KB in the VNNI order, row r = bytes 4r .. 4r + 3 (input channels 64 (kk mod cw) + 4r + i) of the 16 channels: the
// 16 channels' sign bytes, transposed as 16 x 16 dwords. Bytes of input channels past C (the packed words'
// padding bits) and of output channels past O are zero.
void expand_weights(const uint64_t* w, int64_t ldw, int64_t cw, int64_t k_words, int64_t C, int64_t cb, int64_t O,
                    int8_t* out) {
  const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1), zero = _mm512_setzero_si512();
  const int64_t tail = C - 64 * (cw - 1);  // channels in the last word of a tap: 1 .. 64
  const __mmask64 last = tail == 64 ? ~__mmask64(0) : (__mmask64(1) << tail) - 1;
  // Stored in the order `multiply` reads them: per channel pair, word-major, the taps of a word in turn,
  // the pair's two 16-channel tiles side by side; one sequential 2 KB-a-step stream per group pair.
  const int64_t taps = k_words / cw;
  int8_t* tiles = out + (cb / 2) * 2 * k_words * 1024 + (cb % 2) * 1024;
  for (int64_t kk = 0, word = 0; kk < k_words; ++kk, word = word + 1 == cw ? 0 : word + 1) {
    int8_t* tile = tiles + ((word * taps + kk / cw) * 2) * 1024;
    const __mmask64 valid = word == cw - 1 ? last : ~__mmask64(0);
    __m512 r[16];
    for (int n = 0; n < 16; ++n) {
      const int64_t o = cb * 16 + n;
      r[n] = o < O ? _mm512_castsi512_ps(_mm512_maskz_mov_epi8(valid, _mm512_mask_blend_epi8(w[o * ldw + kk], plus, minus)))
                   : _mm512_castsi512_ps(zero);
    }
    transpose16(r);
    for (int n = 0; n < 16; ++n) _mm512_store_ps(tile + n * 64, r[n]);
  }
}

// What the epilogue needs of one image.
struct Image {
  void* out;
  const float* residual;
  const float* partial;
  const float* shortcut;
};

// Per-channel constants of a C tile's 16 channels, lane = channel (zero past O).
struct Channels {
  __m512 scale, bias, beta, gamma, zeta;
  Channels(const TileJob& j, int64_t o0, __mmask16 live) {
    const int64_t O = j.out_channels;
    const float* rp = j.ep.rprelu;
    scale = _mm512_maskz_loadu_ps(live, j.ep.scale + o0), bias = _mm512_maskz_loadu_ps(live, j.ep.bias + o0);
    beta = rp ? _mm512_maskz_loadu_ps(live, rp + o0) : _mm512_setzero_ps();
    gamma = rp ? _mm512_maskz_loadu_ps(live, rp + O + o0) : _mm512_setzero_ps();
    zeta = rp ? _mm512_maskz_loadu_ps(live, rp + 2 * O + o0) : _mm512_setzero_ps();
  }
};

// Epilogue, pass 1, on one C tile (16 positions x 16 channels, int32 rows at t): y = acc * scale + bias and
// RPReLU with the channels in the lanes, then a transpose in registers, so that r[c] holds channel c's 16
// positions (the raw int32 accumulators for the accumulator output).
__attribute__((always_inline)) inline void affine_transpose(const int32_t* t, const uint8_t* src, const Channels& ch,
                                                            bool rprelu, bool accumulator_out, __m512 r[16]) {
  for (int i = 0; i < 16; ++i) r[i] = _mm512_castsi512_ps(_mm512_load_si512(t + src[i] * 16));
  if (!accumulator_out) {
    for (int i = 0; i < 16; ++i) {
      __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_castps_si512(r[i])), ch.scale), ch.bias);
      if (rprelu) {
        const __m512 s = _mm512_sub_ps(y, ch.gamma);
        const __mmask16 positive = _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ);
        y = _mm512_add_ps(_mm512_mask_mul_ps(s, static_cast<__mmask16>(~positive), ch.beta, s), ch.zeta);
      }
      r[i] = y;
    }
  }
  transpose16(r);
}

// The whole epilogue of a conv without streams (float output, no residual, partial sum, post affine or
// shortcut: a bare binary conv such as the reference layer): the tile's nc channels go straight from the
// registers into their output planes. 5 % faster on the reference layer than pass 2's round trip through
// memory, which pays where streams are read (docs/kernels.md, "AMX path").
__attribute__((always_inline)) inline void store_tile(const Plan& p, const int32_t* t, const Channels& ch, bool rprelu,
                                                      const Group& g, float* out, int nc) {
  __m512 r[16];
  affine_transpose(t, g.src, ch, rprelu, false, r);
  float* at = out + g.at;
  for (int i = 0; i < nc; ++i) _mm512_mask_storeu_ps(at + i * p.out_plane, g.mask, r[i]);
}

// Epilogue, pass 2: output channel o over the batch's groups [g0, g0 + ng), its values of group gi (lanes
// in Group's order) at row + gi * stride: Hardtanh'ed residual, partial sum, post affine and shortcut with
// the positions in the lanes, and the masked store, one contiguous run of each stream a group.
void channel_run(const Plan& p, const TileJob& j, const Image& im, int64_t o, int64_t g0, int ng, const int32_t* row,
                 int64_t stride, bool accumulator_out) {
  const int64_t plane = p.out_plane, O = p.O;
  const Group* groups = p.groups.data() + g0;
  if (accumulator_out) {
    int32_t* out = static_cast<int32_t*>(im.out) + o * plane;
    for (int gi = 0; gi < ng; ++gi)
      _mm512_mask_storeu_epi32(out + groups[gi].at, groups[gi].mask, _mm512_load_si512(row + gi * stride));
    return;
  }
  const bool post = j.ep.post != nullptr;
  const __m512 lo = _mm512_set1_ps(j.ep.clamp_residual ? -1.0f : -INFINITY);
  const __m512 hi = _mm512_set1_ps(j.ep.clamp_residual ? 1.0f : INFINITY);
  const __m512 post_scale = _mm512_set1_ps(post ? j.ep.post[o] : 1.0f);
  const __m512 post_bias = _mm512_set1_ps(post ? j.ep.post[O + o] : 0.0f);
  const float* res = im.residual ? im.residual + (o % j.ep.residual_channels) * plane : nullptr;
  const float* partial = im.partial ? im.partial + o * plane : nullptr;
  const float* shortcut = im.shortcut ? im.shortcut + o * plane : nullptr;
  float* out = static_cast<float*>(im.out) + o * plane;
  for (int gi = 0; gi < ng; ++gi) {
    const int64_t at = groups[gi].at;
    const __mmask16 m = groups[gi].mask;
    __m512 y = _mm512_load_ps(reinterpret_cast<const float*>(row + gi * stride));
    if (res) y = _mm512_add_ps(y, _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_maskz_loadu_ps(m, res + at))));
    if (partial) y = _mm512_add_ps(_mm512_maskz_loadu_ps(m, partial + at), y);
    if (post) y = _mm512_add_ps(_mm512_mul_ps(y, post_scale), post_bias);
    if (shortcut) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, shortcut + at));
    _mm512_mask_storeu_ps(out + at, m, y);
  }
}

// The tile products of NB (1 or 2) groups of outputs (A tiles from the word planes) against one pair of
// channel groups (B tiles at b and b + the next 16 channels' tiles) over the whole k loop, word-major;
// tile (group i, channel group h) stored at c + (2 i + h) * 256, 16 rows of 16 int32.
template <int NB>
void multiply(const Plan& p, const int8_t* b, const int8_t* planes, const Group* g, int32_t* c) {
  const int64_t taps = int64_t(p.tap_off.size());
  _tile_zero(0);
  _tile_zero(1);
  if (NB == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t w = 0; w < p.cw; ++w) {
    const int8_t* a0 = planes + (w * p.plane + g[0].base) * 64;
    const int8_t* a1 = planes + (w * p.plane + g[NB - 1].base) * 64;
    for (int64_t t = 0; t < taps; ++t, b += 2048) {
      const int64_t off = p.tap_off[size_t(t)] * 64;
      _tile_loadd(6, b, 64);
      _tile_loadd(7, b + 1024, 64);
      _tile_loadd(4, a0 + off, 64);
      _tile_dpbssd(0, 4, 6);
      _tile_dpbssd(1, 4, 7);
      if (NB == 2) {
        _tile_loadd(5, a1 + off, 64);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
      }
    }
  }
  _tile_stored(0, c, 64);
  _tile_stored(1, c + 256, 64);
  if (NB == 2) {
    _tile_stored(2, c + 512, 64);
    _tile_stored(3, c + 768, 64);
  }
}

// The tile products of NG (1 to 4) groups of outputs against ONE 16-channel group h of the pair (its B
// tile at b + h * 1024 of each 2 KB step), the B tiles alternating between two tile registers; tile
// (group i, h) stored where `multiply` stores it. 5 tile loads per 4 multiplies instead of 4, but each B
// tile serves 4 groups instead of 2: half the stream of B tiles, which matters where a channel pair's B
// tiles (2 KB a k step) outgrow L1 and come from L2 for every group pair (the reference layer's 72 KB:
// 1.03-1.04x faster; on 64 or 128 channels, where they fit or nearly, 0.97-1.03x, so not used there).
template <int NG, class Between>
void multiply_quad(const Plan& p, const int8_t* b, const int8_t* planes, const Group* g, int h, int32_t* c,
                   Between&& between) {
  const int64_t taps = int64_t(p.tap_off.size());
  _tile_zero(0);
  if (NG > 1) _tile_zero(1);
  if (NG > 2) _tile_zero(2);
  if (NG > 3) _tile_zero(3);
  b += h * 1024;
  // One k step: the B tile into register B (6 and 7 alternate), the groups' A tiles alternating in 4 and 5.
  // The B tiles stream from L2 (this order is for the layers whose B tiles outgrow L1), loaded with the
  // no-reuse hint (`tileloaddt1`): the A planes' lines, which the next taps read again, then stay in L1
  // (reference layer and 256 channels at 16 x 16 1.015-1.047x faster in the C++ harness, both orders of
  // alternation; the same hint on the 2 x 2 order's B tiles, which L1 keeps for the next group pair, made
  // 64 channels at 64 x 64 1.03x slower, so not there).
  // (A macro: the tile intrinsics take their register numbers as literal tokens.)
#define BIDRN_QUAD_STEP(B)                     \
  _tile_stream_loadd(B, b, 64);                \
  _tile_loadd(4, a[0] + off, 64);              \
  _tile_dpbssd(0, 4, B);                       \
  if (NG > 1) {                                \
    _tile_loadd(5, a[1] + off, 64);            \
    _tile_dpbssd(1, 5, B);                     \
  }                                            \
  if (NG > 2) {                                \
    _tile_loadd(4, a[2] + off, 64);            \
    _tile_dpbssd(2, 4, B);                     \
  }                                            \
  if (NG > 3) {                                \
    _tile_loadd(5, a[3] + off, 64);            \
    _tile_dpbssd(3, 5, B);                     \
  }
  for (int64_t w = 0; w < p.cw; ++w) {
    const int8_t* a[4] = {};
    for (int i = 0; i < NG; ++i) a[i] = planes + (w * p.plane + g[i].base) * 64;
    for (int64_t t = 0; t < taps; ++t, b += 2048) {
      const int64_t off = p.tap_off[size_t(t)] * 64;
      if (t % 2 == 0) {
        BIDRN_QUAD_STEP(6)
      } else {
        BIDRN_QUAD_STEP(7)
      }
    }
    between(w);
  }
#undef BIDRN_QUAD_STEP
  _tile_stored(0, c + h * 256, 64);
  if (NG > 1) _tile_stored(1, c + 512 + h * 256, 64);
  if (NG > 2) _tile_stored(2, c + 1024 + h * 256, 64);
  if (NG > 3) _tile_stored(3, c + 1536 + h * 256, 64);
}

// multiply_quad for a call of ng (1 to 4) groups.
template <class Between>
void multiply_quad_n(int ng, const Plan& p, const int8_t* b, const int8_t* planes, const Group* g, int h, int32_t* c,
                     Between&& between) {
  switch (ng) {
    case 4: multiply_quad<4>(p, b, planes, g, h, c, between); break;
    case 3: multiply_quad<3>(p, b, planes, g, h, c, between); break;
    case 2: multiply_quad<2>(p, b, planes, g, h, c, between); break;
    default: multiply_quad<1>(p, b, planes, g, h, c, between); break;
  }
}

// One work item: channel pair `pair` over groups [g0, g1), kBatchPairs group pairs at a time.
void run_item(const Plan& p, const TileJob& j, const Image& im, const int8_t* weights, const int8_t* planes,
              int64_t pair, int64_t g0, int64_t g1, bool accumulator_out) {
  static thread_local std::vector<Line> buffer(kBatchPairs * 4 * 16);
  int32_t* c = reinterpret_cast<int32_t*>(buffer.data());
  const int8_t* b = weights + pair * 2 * p.k_words * 1024;
  const int64_t o0 = pair * kPairChannels;
  const int nc = int(std::min<int64_t>(kPairChannels, p.O - o0));
  const int nc0 = std::min(nc, 16), nc1 = nc - nc0;
  const Channels ch0(j, o0, static_cast<__mmask16>((1u << nc0) - 1));
  const Channels ch1(j, o0 + 16, static_cast<__mmask16>((1u << nc1) - 1));
  const bool rprelu = j.ep.rprelu != nullptr;
  const bool direct = !accumulator_out && !im.residual && !im.partial && !im.shortcut && !j.ep.post;
  const bool quad = p.k_words * 2048 > kL1Bytes;
  const int nh = nc1 > 0 ? 2 : 1;  // channel groups of the pair with live channels
  if (quad && direct) {
    float* out = static_cast<float*>(im.out) + o0 * p.out_plane;
    // The tiles of the previous call, finished word by word inside the next call's k loop.
    struct Pending {
      const int32_t* t;
      const Group* g;
      int h;
    } pend[4];
    int npend = 0, slot = 0;
    const auto finish = [&](int i) {
      const Pending& q = pend[i];
      store_tile(p, q.t, q.h ? ch1 : ch0, rprelu, *q.g, out + q.h * 16 * p.out_plane, q.h ? nc1 : nc0);
    };
    const int64_t cw = p.cw;
    for (int64_t gi = g0; gi < g1; gi += 4)
      for (int h = 0; h < nh; ++h) {
        const Group* gg = &p.groups[size_t(gi)];
        int32_t* cc = c + slot * 2048;
        const int n = npend;
        const auto between = [&](int64_t w) {
          for (int64_t i = w * n / cw; i < (w + 1) * n / cw; ++i) finish(int(i));
        };
        const int ng = int(std::min<int64_t>(4, g1 - gi));
        multiply_quad_n(ng, p, b, planes, gg, h, cc, between);
        npend = ng;
        for (int i = 0; i < ng; ++i) pend[i] = {cc + i * 512 + h * 256, gg + i, h};
        slot ^= 1;
      }
    for (int i = 0; i < npend; ++i) finish(i);
    return;
  }
  const auto nothing = [](int64_t) {};
  for (int64_t bt = g0; bt < g1; bt += kBatchPairs * 2) {
    const int ng = int(std::min<int64_t>(g1 - bt, kBatchPairs * 2));
    if (quad) {
      for (int gi = 0; gi < ng; gi += 4)
        for (int h = 0; h < nh; ++h)
          multiply_quad_n(std::min(4, ng - gi), p, b, planes, &p.groups[size_t(bt + gi)], h, c + gi * 512, nothing);
    } else {
      for (int gi = 0; gi < ng; gi += 2) {
        if (gi + 1 < ng) {
          multiply<2>(p, b, planes, &p.groups[size_t(bt + gi)], c + gi * 512);
        } else {
          multiply<1>(p, b, planes, &p.groups[size_t(bt + gi)], c + gi * 512);
        }
      }
    }
    if (direct) {
      float* out = static_cast<float*>(im.out) + o0 * p.out_plane;
      for (int gi = 0; gi < ng; ++gi) {
        const Group& g = p.groups[size_t(bt + gi)];
        store_tile(p, c + gi * 512, ch0, rprelu, g, out, nc0);
        if (nc1 > 0) store_tile(p, c + gi * 512 + 256, ch1, rprelu, g, out + 16 * p.out_plane, nc1);
      }
      continue;
    }
    for (int gi = 0; gi < ng; ++gi)
      for (int h = 0; h < nh; ++h) {  // in place: row c of the tile becomes channel c's run
        int32_t* t = c + gi * 512 + h * 256;
        __m512 r[16];
        affine_transpose(t, p.groups[size_t(bt + gi)].src, h ? ch1 : ch0, rprelu, accumulator_out, r);
        for (int i = 0; i < 16; ++i) _mm512_store_ps(reinterpret_cast<float*>(t + i * 16), r[i]);
      }
    for (int oc = 0; oc < nc; ++oc)
      channel_run(p, j, im, o0 + oc, bt, ng, c + (oc / 16) * 256 + (oc % 16) * 16, 512, accumulator_out);
  }
}

// Buffers of one call, reused from call to call (as the driver's Scratch).
struct AmxScratch {
  std::vector<Line> planes, weights;  // weights: the expansion when the cache is full
};

AmxScratch& amx_scratch() {
  static thread_local AmxScratch s;
  return s;
}

template <class T>
T* grown(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Expanded weights kept from call to call: a loaded program's weights do not change, and expanding them
// on every call took about 4 % of the reference layer. An entry is found by the packed weights' address
// and the conv's shape, and used only while those words are still the same (it keeps a copy and compares:
// a program loaded later at the same address with other weights gets its own entry). At most
// kWeightCacheBytes of expansions in all; past that a layer expands into the call's scratch as before.
constexpr size_t kWeightCacheBytes = size_t(64) << 20;

struct CachedWeights {
  const void* source;
  int64_t key[5];                  // what tells two layers at one address apart: kind, C, O, kernel
  std::vector<uint8_t> bytes;      // the weights the tiles were expanded from
  std::vector<Line> tiles;
};

struct WeightCache {
  std::mutex mutex;
  std::vector<std::unique_ptr<CachedWeights>> entries;  // never removed: their tiles stay where they are
  size_t bytes = 0;
};

WeightCache& weight_cache() {
  static WeightCache c;
  return c;
}

// The n_lines of B tiles expand(out) makes from the `bytes` bytes at `source`: from the cache, or expanded
// now (into the cache while it has room, else into `scratch`).
template <class Expand>
const int8_t* cached_tiles(const void* source, size_t bytes, const int64_t (&key)[5], size_t n_lines,
                           std::vector<Line>& scratch, Expand&& expand) {
  WeightCache& cache = weight_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  for (const auto& e : cache.entries)
    if (e->source == source && std::equal(key, key + 5, e->key) && e->bytes.size() == bytes &&
        std::memcmp(e->bytes.data(), source, bytes) == 0)
      return e->tiles.front().bytes;
  if (cache.bytes + n_lines * sizeof(Line) > kWeightCacheBytes) {
    int8_t* out = grown(scratch, n_lines)->bytes;
    expand(out);
    return out;
  }
  auto e = std::make_unique<CachedWeights>();
  e->source = source;
  std::copy(key, key + 5, e->key);
  e->bytes.assign(static_cast<const uint8_t*>(source), static_cast<const uint8_t*>(source) + bytes);
  e->tiles.resize(n_lines);
  expand(e->tiles.front().bytes);
  cache.bytes += n_lines * sizeof(Line) + bytes;
  cache.entries.push_back(std::move(e));
  return cache.entries.back()->tiles.front().bytes;
}

// The expanded B tiles of this call's weights (expand_weights), through the cache.
const int8_t* expanded_weights(const ConvShape& s, const Plan& p, const uint64_t* w, std::vector<Line>& scratch,
                               ParallelFor parallel) {
  const int64_t blocks = 2 * p.pairs;
  const int64_t key[5] = {0, s.in_channels, s.out_channels, s.kernel_h, s.kernel_w};
  return cached_tiles(w, size_t(weight_words(s)) * sizeof(uint64_t), key, size_t(blocks * p.k_words * 16), scratch,
                      [&](int8_t* out) {
                        run_parallel(parallel, blocks, [&](int64_t b0, int64_t b1) {
                          for (int64_t cb = b0; cb < b1; ++cb)
                            expand_weights(w, p.k_words, p.cw, p.k_words, s.in_channels, cb, p.O, out);
                        });
                      });
}

}  // namespace

double amx_probe_ns(int64_t multiplies) {
  // Four independent accumulators (C 0-3) against one A and one B tile: the unit's throughput, no memory.
  const int64_t steps = std::max<int64_t>(multiplies / 4, 1);
  configure_tiles();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(6);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) {
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 6);
    _tile_dpbssd(2, 4, 6);
    _tile_dpbssd(3, 4, 6);
  }
  alignas(64) static thread_local int32_t sink[16 * 16];
  _tile_stored(3, sink, 64);  // the last multiply has finished before the clock stops
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  _tile_release();
  return ns / static_cast<double>(steps * 4);
}

bool amx_available() {
  static const bool ok = [] {
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-int8")) return false;
    // Linux keeps the 8 KB tile state off until a process asks for it (ARCH_REQ_XCOMP_PERM, XTILEDATA).
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

namespace {
// The binary transposed convs on the tile unit (section "int8_conv_transpose2d" below, the same kernel).
bool amx_deconv_handles(const ConvShape& s, const Epilogue& ep, const ConvArgs& args);
void amx_binary_deconv(const ConvShape& s, const Epilogue& ep, const ConvArgs& args, ParallelFor parallel);
}  // namespace

bool amx_handles(const ConvShape& s, const Epilogue& ep, const ConvArgs& args) {
  // Where the count dominates: rows of 9+ words (a 3 x 3 conv of 64+ channels) on 512+ output positions,
  // or on 192+ where the expanded weights, kept from call to call, are 1 MB or less (up to 256 channels at
  // 3 x 3). Measured (docs/kernels.md): 3 x 3 convs of 64-256 channels at 16 x 16 to 64 x 64 1.1-1.6x faster
  // than AVX-512. With the weights kept, 256 at 16 x 12 and 12 x 12 (batch 1) 1.6-1.7x called alone, but
  // inside the network, where each layer's 590 KB of expanded weights come from L3 (the packed ones are
  // 74 KB), 1.13x at 16 x 12 (the body's five, 0.96 -> 0.85 ms) and 0.9x at 12 x 12 (the face's two). 512
  // channels on small planes (2.4 MB of expanded weights) 0.97-1.05x alone, and the 1 x 1 layers (where the
  // float epilogue is the time and the tile order costs a transpose per 256 outputs) 0.6-0.8x, so those stay
  // on AVX-512.
  const int64_t k_words = s.kernel_h * s.kernel_w * words_for(s.in_channels);
  const int64_t expanded_bytes = (s.out_channels + kPairChannels - 1) / kPairChannels * 2 * k_words * 1024;
  const int64_t positions = s.batch * s.out_h * s.out_w;
  if (s.transposed) return amx_deconv_handles(s, ep, args);
  return s.stride_h == 1 && s.stride_w == 1 && args.branches == 1 && ep.residual_pool == 1 &&
         (args.output == Output::kFloat || args.output == Output::kAccumulator) && k_words >= 9 &&
         (positions >= 512 || (positions >= 192 && expanded_bytes <= (int64_t(1) << 20)));
}

void amx_binary_conv(const ConvShape& s, const Epilogue& ep, const ConvArgs& args, ParallelFor parallel) {
  if (s.transposed) {
    amx_binary_deconv(s, ep, args, parallel);
    return;
  }
  const Plan p = make_plan(s);
  AmxScratch& sc = amx_scratch();
  const int64_t in_plane = s.in_h * s.in_w;
  const int8_t* weights = expanded_weights(s, p, args.weight, sc.weights, parallel);
  int8_t* planes = grown(sc.planes, size_t(p.cw * p.plane))->bytes;
  // The epilogue reads these fields of a TileJob (as the other paths' epilogues do).
  TileJob j;
  j.out_channels = p.O, j.ep = ep;
  const bool accumulator_out = args.output == Output::kAccumulator;
  const int64_t n_groups = int64_t(p.groups.size());
  // Work items: channel pairs x chunks of groups, at least 4 items where the groups allow (two threads).
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((4 + p.pairs - 1) / p.pairs, n_groups / 16));
  const int64_t per_chunk = ((n_groups + chunks - 1) / chunks + 1) / 2 * 2;
  const int64_t res_stride = ep.residual_batch_stride ? ep.residual_batch_stride : ep.residual_channels * p.out_plane;
  for (int64_t n = 0; n < s.batch; ++n) {
    if (args.x_float) {
      const float* x = args.x_float + n * (args.x_batch_stride ? args.x_batch_stride : s.in_channels * in_plane);
      const int64_t sweeps = (in_plane + kFillPixels - 1) / kFillPixels;
      run_parallel(parallel, p.cw * sweeps, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t w = i / sweeps, q0 = i % sweeps * kFillPixels;
          if (q0 == 0) fill_padding(p, w, planes);
          fill_from_float(p, x, s.in_channels, w, q0, std::min(in_plane, q0 + kFillPixels), planes);
        }
      });
    } else {
      const uint64_t* xp = args.x_packed + n * in_plane * p.cw;
      run_parallel(parallel, p.cw * p.H, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          if (r % p.H == 0) fill_padding(p, r / p.H, planes);
          fill_row(p, xp, r / p.H, r % p.H, planes);
        }
      });
    }
    Image im;
    im.out = accumulator_out ? static_cast<void*>(static_cast<int32_t*>(args.out) + n * p.O * p.out_plane)
                             : static_cast<void*>(static_cast<float*>(args.out) + n * p.O * p.out_plane);
    im.residual = ep.residual ? ep.residual + n * res_stride : nullptr;
    im.partial = ep.partial ? ep.partial + n * p.O * p.out_plane : nullptr;
    im.shortcut = ep.shortcut ? ep.shortcut + n * p.O * p.out_plane : nullptr;
    run_parallel(parallel, p.pairs * chunks, [&](int64_t i0, int64_t i1) {
      configure_tiles();
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t pair = i / chunks, chunk = i % chunks;
        const int64_t g0 = chunk * per_chunk, g1 = std::min(n_groups, g0 + per_chunk);
        if (g0 < g1) run_item(p, j, im, weights, planes, pair, g0, g1, accumulator_out);
      }
      _tile_release();
    });
  }
}


// ---------------------------------------------------------------- int8_pointwise (int8_pointwise.h)
//
// The 1 x 1 conv is C[o][p] = sum_c W[o][c] q[c][p]: A tiles are the weights (16 output channels x 64
// input channels, rows straight from the O x C matrix), B tiles the quantized input in the tile unit's VNNI
// order (row = 4 input channels of 16 pixels), so a C tile is 16 output channels x 16 pixels: each row is
// 16 consecutive floats of one NCHW output plane after the epilogue. The input is quantized once per call
// into [pixel / 16][c / 4][pixel % 16][c % 4], so every B tile is one contiguous 1 KB block (rows a plane
// apart put all 16 lines of a tile in one L1 set: 64 -> 256 at 64 x 64 ran at 99 GMAC/s). Pixels are padded
// to 32; channels past C meet zero weights and the pad pixels' columns are dropped.

namespace {

struct PointwiseAmxScratch {
  std::vector<Line> planes;  // N x (kp / 4) x pp x 4 bytes
  std::vector<int8_t> weights;
};

PointwiseAmxScratch& pointwise_amx_scratch() {
  static thread_local PointwiseAmxScratch s;
  return s;
}

constexpr int kPointwiseBatch = 8;  // pixel pairs whose C tiles (32 KB) wait for one epilogue pass

// Output channels [o0, o0 + 32) x pixel pairs [q0, q1) (32 pixels each) of images [n0, n1): the 32 weight
// rows are read from memory once and from L1 after. The C tiles of kPointwiseBatch pairs wait in memory, then
// each channel's 512 floats are finished and written in one run (tile by tile, 16 floats to each of 32
// planes at a time, the 64 -> 256 hand layer took 1.4 ms).
void pointwise_item(const PointwiseArgs& a, const int8_t* w, int64_t ldw, const int8_t* planes, int64_t image_bytes,
                    int64_t kp, int64_t pixels, int64_t o0, int64_t q0, int64_t q1, int64_t n0, int64_t n1) {
  static thread_local std::vector<Line> buffer(kPointwiseBatch * 4 * 16);
  int32_t(*c)[4][16][16] = reinterpret_cast<int32_t(*)[4][16][16]>(buffer.data());
  const int64_t O = a.out_channels, tile_bytes = kp / 4 * 64, out_plane = a.out_plane ? a.out_plane : pixels;
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* image = planes + n * image_bytes;
    float* out = a.out + n * O * out_plane;
    for (int64_t qb = q0; qb < q1; qb += kPointwiseBatch) {
      const int nq = int(q1 - qb < kPointwiseBatch ? q1 - qb : kPointwiseBatch);
      for (int qi = 0; qi < nq; ++qi) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        const int8_t* xb = image + ((qb + qi) * 2) * tile_bytes;
        for (int64_t kb = 0; kb < kp / 64; ++kb) {
          const int8_t* wa = w + o0 * ldw + kb * 64;
          _tile_loadd(4, wa, ldw);
          _tile_loadd(5, wa + 16 * ldw, ldw);
          _tile_loadd(6, xb + kb * 1024, 64);
          _tile_loadd(7, xb + tile_bytes + kb * 1024, 64);
          _tile_dpbssd(0, 4, 6);
          _tile_dpbssd(1, 4, 7);
          _tile_dpbssd(2, 5, 6);
          _tile_dpbssd(3, 5, 7);
        }
        _tile_stored(0, c[qi][0], 64);
        _tile_stored(1, c[qi][1], 64);
        _tile_stored(2, c[qi][2], 64);
        _tile_stored(3, c[qi][3], 64);
      }
      // Tile t = 2 * (channel half) + (pixel half); pixels past the plane are dropped.
      const int64_t p_first = qb * 32, p_end = std::min(pixels, (qb + nq) * 32);
      for (int r = 0; r < 32 && o0 + r < O; ++r) {
        const int64_t o = o0 + r;
        const __m512i offset = _mm512_set1_epi32(a.zero_point * a.weight_sum[o]);
        const __m512 scale = _mm512_set1_ps(a.scale[o]), bias = _mm512_set1_ps(a.bias[o]);
        float* plane = out + o * out_plane;
        float* row = plane + p_first;
        const int32_t* acc_row = c[0][(r >> 4) * 2][r & 15];  // + 256 ints per tile: half 1, then the next pair
        const int64_t n = p_end - p_first, whole = n / 16;
        if (a.dest) {  // a transposed conv's phase: scattered to the interleaved positions
          for (int64_t v = 0; v * 16 < n; ++v) {
            const __m512i acc = _mm512_sub_epi32(_mm512_load_si512(acc_row + (v >> 1) * 1024 + (v & 1) * 256), offset);
            const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale), bias);
            store_pixels(plane, a.dest, p_first + v * 16, int(std::min<int64_t>(16, n - v * 16)), relu_if(y, a.relu));
          }
          continue;
        }
        for (int64_t v = 0; v < whole; ++v) {
          const __m512i acc = _mm512_sub_epi32(_mm512_load_si512(acc_row + (v >> 1) * 1024 + (v & 1) * 256), offset);
          const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale), bias);
          _mm512_storeu_ps(row + v * 16, relu_if(y, a.relu));
        }
        if (n % 16) {
          const __m512i acc = _mm512_sub_epi32(_mm512_load_si512(acc_row + (whole >> 1) * 1024 + (whole & 1) * 256), offset);
          const __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale), bias);
          _mm512_mask_storeu_ps(row + whole * 16, static_cast<__mmask16>((1u << (n % 16)) - 1),
                                relu_if(y, a.relu));
        }
      }
    }
  }
}

}  // namespace

void amx_int8_pointwise(const PointwiseArgs& a, ParallelFor parallel) {
  const int64_t oh = pointwise_out_size(a.in_h, a.stride_h), ow = pointwise_out_size(a.in_w, a.stride_w);
  const int64_t pixels = oh * ow, pp = (pixels + 31) / 32 * 32, C = a.in_channels, O = a.out_channels;
  const int64_t kp = (C + 63) / 64 * 64, o32 = (O + 31) / 32 * 32;
  PointwiseAmxScratch& sc = pointwise_amx_scratch();
  // The weights straight from the tensor when whole tiles cover them, else zero-padded to kp x o32.
  const int8_t* w = padded_weight_rows(a.weight, O, C, kp, o32, sc.weights);
  const int64_t ldw = kp;
  const int64_t image_bytes = kp * pp;  // (kp / 4) rows of pp x 4 bytes
  int8_t* planes = grown(sc.planes, size_t((a.batch * image_bytes + 63) / 64))->bytes;
  const int64_t groups = (C + 3) / 4;
  run_parallel(parallel, a.batch * groups, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      quantize_group(a, i / groups, i % groups, ow, oh, kp, planes + (i / groups) * image_bytes);
  });
  // Work items: 32 output channels x a chunk of pixel pairs x every image, at least 4 items where the
  // pixels allow.
  const int64_t pairs = pp / 32, ochunks = o32 / 32;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pairs, (4 + ochunks - 1) / ochunks));
  const int64_t per_chunk = (pairs + chunks - 1) / chunks;
  run_parallel(parallel, ochunks * chunks, [&](int64_t i0, int64_t i1) {
    configure_tiles();
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t oc = i / chunks, ch = i % chunks;
      // The next channel block's weight rows to L2 while this one runs: the tile loads of rows 1 KB or more
      // apart go to memory one line at a time otherwise (1024 -> 2048 ran at 220 GMAC/s).
      if (ch == 0 && oc + 1 < ochunks) {
        const int8_t* next = w + (oc + 1) * 32 * ldw;
        for (int64_t r = 0; r < 32; ++r)
          for (int64_t k = 0; k < kp; k += 64) _mm_prefetch(reinterpret_cast<const char*>(next + r * ldw + k), _MM_HINT_T1);
      }
      const int64_t q0 = ch * per_chunk, q1 = std::min(pairs, q0 + per_chunk);
      if (q0 < q1) pointwise_item(a, w, ldw, planes, image_bytes, kp, pixels, oc * 32, q0, q1, 0, a.batch);
    }
    _tile_release();
  });
}

// ---------------------------------------------------------------- int8_conv_transpose2d (int8_pointwise.h)
//
// A transposed conv whose output is stride x its input (kernel = stride + 2 padding) is, per output phase
// (ry, rx), a stride-1 conv of the input with that phase's taps (int8_pointwise.h): output (s_h j + ry,
// s_w i + rx) is the phase's pixel (j, i). With stride_w 2 the phases (ry, 0) and (ry, 1) interleave along
// x. Here the input is quantized once into word planes (as the binary path's sign bytes, but the int8 values
// themselves, and the zero point in the padding), so an A tile is 16 consecutive positions and each tap of
// each phase a position offset: no per-phase copy of the input, and the taps of a word share their lines in
// L1. The weights (B tiles) are each phase's int8 rows in the VNNI order, expanded once and kept (the
// binary weights' cache). A work item runs one row phase's two x phases for 32 output channels over a batch
// of groups of 16 positions (the binary plan's flat sequence: a phase's pixels are the positions y Wp + x,
// x < W), and the epilogue interleaves the two phases' values of a channel into 32 consecutive output
// floats: every output row written once, whole, instead of two strided passes of 16-lane scatters over it
// (int8_pointwise.cpp's generic form). The binary transposed convs of the same geometry run the same kernel
// on sign bytes (amx_binary_deconv: the stride-1 convs' fill, weight expansion and epilogue affine).

namespace {

constexpr int kDeconvGroups = 8;  // groups whose C tiles (both x phases, 32 channels: 32 KB) wait for one epilogue

// Where a group's outputs go. Its pixels are consecutive (lanes 0 .. n - 1 after compaction); half e (lanes
// 8 e .. 8 e + 7) becomes 16 interleaved floats (x phase 0, 1 of each pixel), and its 8 pixels span at most
// two input rows where W >= 8 (amx_int8_deconv_takes): run 2 e + r is its part in its r-th row, the floats
// stored at at + lane under mask in an output plane of row phase 0 (+ ry rows for the others); an empty run
// has mask 0.
struct DeconvRuns {
  int64_t at[4];
  __mmask16 mask[4];
};

struct DeconvPlan {
  Plan phase[2];                  // the two x phases of a row phase: their tap offsets (groups in phase[0])
  std::vector<DeconvRuns> runs;   // per group
};

// Tile t's 16 positions x 16 channels (rows read through src: the group's valid positions first): y = (acc -
// offset) * scale + bias, ReLU where asked, with the channels in the lanes; then transposed, so that r[k]
// holds channel k's values of the group's pixels.
__attribute__((always_inline)) inline void finish_tile(const int32_t* t, const uint8_t* src, __m512i offset,
                                                       __m512 scale, __m512 bias, bool relu, __m512 r[16]) {
  for (int i = 0; i < 16; ++i) {
    const __m512i acc = _mm512_sub_epi32(_mm512_load_si512(t + src[i] * 16), offset);
    r[i] = relu_if(_mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale), bias), relu);
  }
  transpose16(r);
}

struct DeconvAmxScratch {
  std::vector<Line> planes, weights;
  std::vector<DeconvPlan> plans;  // one per row phase
};

DeconvAmxScratch& deconv_amx_scratch() {
  static thread_local DeconvAmxScratch s;
  return s;
}

// Word plane w of image n: channels [64 w, 64 w + 64) of every pixel quantized (int8_pointwise.h's steps) to
// its position, the zero point everywhere else (padding, the slack).
void deconv_fill(const Int8DeconvArgs& a, const Plan& p, int64_t n, int64_t w, int8_t* planes) {
  const int64_t C = a.in_channels, H = a.in_h, W = a.in_w;
  int8_t* dst = planes + w * p.plane * 64;
  fill_padding(p, w, planes, static_cast<int8_t>(a.zero_point));
  const __m512 inv = _mm512_set1_ps(a.input_scale_inv), zp = _mm512_set1_ps(float(a.zero_point));
  const float* x = a.x + (n * C + 64 * w) * H * W;
  for (int64_t iy = 0; iy < H; ++iy) {
    const int64_t row = (iy + p.pad_h) * p.Wp + p.pad_w;
    for (int64_t ix = 0; ix < W; ix += 16) {
      const int cnt = int(W - ix < 16 ? W - ix : 16);
      const __mmask16 m = static_cast<__mmask16>((1u << cnt) - 1);
      __m512 v[16];  // v[g]: channels 4g .. 4g + 3 of the 16 pixels, 4 bytes a pixel
      for (int g = 0; g < 16; ++g) {
        __m128i q[4];
        for (int k = 0; k < 4; ++k)
          q[k] = quantize16(_mm512_maskz_loadu_ps(m, x + (4 * g + k) * H * W + iy * W + ix), inv, zp);
        v[g] = _mm512_castsi512_ps(interleave4(q));
      }
      transpose16(v);  // v[l]: pixel l's 64 channels
      for (int l = 0; l < cnt; ++l) _mm512_store_ps(reinterpret_cast<float*>(dst + (row + ix + l) * 64), v[l]);
    }
  }
}

// Phase `phase`'s weights (O x (taps C), taps row-major) as B tiles in `multiply`'s order (expand_weights's
// layout: per channel pair, word-major, the taps of a word in turn, the pair's two 16-channel tiles side by
// side); row r of a tile = input channels 4r .. 4r + 3 of the word, 4 bytes a channel.
void deconv_expand(const Int8DeconvArgs& a, const Plan& p, int64_t phase, int64_t cb, int8_t* out) {
  const int64_t C = a.in_channels, taps = p.k_words / p.cw, K = taps * C;
  const int8_t* w = a.weight + (phase * a.out_channels + 16 * cb) * K;
  int8_t* tiles = out + (cb / 2) * 2 * p.k_words * 1024 + (cb % 2) * 1024;
  for (int64_t word = 0; word < p.cw; ++word)
    for (int64_t t = 0; t < taps; ++t) {
      __m512 r[16];
      for (int n = 0; n < 16; ++n)
        r[n] = _mm512_loadu_ps(reinterpret_cast<const float*>(w + n * K + t * C + 64 * word));
      transpose16(r);
      int8_t* tile = tiles + ((word * taps + t) * 2) * 1024;
      for (int n = 0; n < 16; ++n) _mm512_store_ps(reinterpret_cast<float*>(tile + n * 64), r[n]);
    }
}

// Row phase ry's two x phases, output channels [o0, o0 + 32), groups [g0, g1); out = channel o0's output plane
// of the image, from row phase ry's first row. finish(rx, o, t, src, r): tile t of x phase rx (16 positions x
// channels o .. o + 15, rows through src) to r[k], channel o + k's values of the group's pixels.
template <class Finish>
void deconv_item(const DeconvPlan& dp, const int8_t* const weights[2], const int8_t* planes, float* out,
                 int64_t out_plane, int64_t o0, int64_t g0, int64_t g1, Finish&& finish) {
  static thread_local std::vector<Line> buffer(2 * kDeconvGroups * 2 * 16);
  int32_t* c = reinterpret_cast<int32_t*>(buffer.data());  // [x phase][group][channel half]: 16 x 16 int32
  const Plan& p = dp.phase[0];
  const Group* groups = p.groups.data();
  // Lane i of the low (high) half: x phase i % 2 of lane i / 2 (8 + i / 2).
  const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(8));
  for (int64_t bt = g0; bt < g1; bt += kDeconvGroups) {
    const int ng = int(std::min<int64_t>(g1 - bt, kDeconvGroups));
    for (int rx = 0; rx < 2; ++rx) {
      const int8_t* b = weights[rx] + (o0 / 32) * 2 * p.k_words * 1024;
      for (int gi = 0; gi < ng; gi += 2) {
        int32_t* cc = c + (rx * kDeconvGroups + gi) * 512;
        if (gi + 1 < ng) {
          multiply<2>(dp.phase[rx], b, planes, groups + bt + gi, cc);
        } else {
          multiply<1>(dp.phase[rx], b, planes, groups + bt + gi, cc);
        }
      }
    }
    // Pass 1: every tile finished into channel rows in place. Pass 2, channel by channel over the batch: its
    // two x phases' rows interleaved and stored (the same time as interleaving each tile's 16 channels
    // straight from registers; the output's 3 MB of stores are most of it, docs/kernels.md).
    for (int rx = 0; rx < 2; ++rx)
      for (int gi = 0; gi < ng; ++gi)
        for (int h = 0; h < 2; ++h) {
          int32_t* t = c + ((rx * kDeconvGroups + gi) * 2 + h) * 256;
          __m512 r[16];
          finish(rx, o0 + 16 * h, t, groups[bt + gi].src, r);
          for (int i = 0; i < 16; ++i) _mm512_store_ps(reinterpret_cast<float*>(t + i * 16), r[i]);
        }
    for (int k = 0; k < 32; ++k) {
      float* plane = out + k * out_plane;
      const float* row = reinterpret_cast<const float*>(c + (k / 16) * 256 + (k % 16) * 16);
      for (int gi = 0; gi < ng; ++gi, row += 512) {
        const DeconvRuns& runs = dp.runs[size_t(bt + gi)];
        const __m512 v0 = _mm512_load_ps(row), v1 = _mm512_load_ps(row + kDeconvGroups * 512);
        const __m512 lo = _mm512_permutex2var_ps(v0, lo_idx, v1), hi = _mm512_permutex2var_ps(v0, hi_idx, v1);
        _mm512_mask_storeu_ps(plane + runs.at[0], runs.mask[0], lo);
        if (runs.mask[1]) _mm512_mask_storeu_ps(plane + runs.at[1], runs.mask[1], lo);
        _mm512_mask_storeu_ps(plane + runs.at[2], runs.mask[2], hi);
        if (runs.mask[3]) _mm512_mask_storeu_ps(plane + runs.at[3], runs.mask[3], hi);
      }
    }
  }
}

// A transposed conv's phases as the tile unit runs them: stride_h row phases x 2 column phases of th x tw
// taps, phase (ry, rx)'s tap (ty, tx) at input offset (dy[ry][ty], dx[rx][tx]), taps in the order of the
// phase's weights.
struct DeconvTaps {
  int64_t th = 0, tw = 0;
  int64_t dy[16][16] = {}, dx[2][16] = {};
};

// The geometry of one call (C input channels of H x W, O outputs, stride_h x 2 phases): the word planes of the
// padded input (padded by the most any tap reads past each side), each phase's tap offsets, the groups and
// their halves' output runs.
void deconv_plans(int64_t C, int64_t H, int64_t W, int64_t O, int64_t sh, const DeconvTaps& taps,
                  std::vector<DeconvPlan>& plans) {
  int64_t pt = 0, pb = 0, pl = 0, pr = 0;
  for (int64_t r = 0; r < sh; ++r)
    for (int64_t t = 0; t < taps.th; ++t) pt = std::max(pt, -taps.dy[r][t]), pb = std::max(pb, taps.dy[r][t]);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t t = 0; t < taps.tw; ++t) pl = std::max(pl, -taps.dx[r][t]), pr = std::max(pr, taps.dx[r][t]);
  const int64_t ow = 2 * W;
  Plan base;
  base.cw = words_for(C), base.H = H, base.W = W, base.pad_h = pt, base.pad_w = pl;
  base.Hp = H + pt + pb, base.Wp = W + std::max(pl, pr);  // one zero run between rows, as make_plan
  base.plane = (base.Hp + 1) * base.Wp + kGroup;
  base.k_words = taps.th * taps.tw * base.cw, base.O = O, base.pairs = O / 32;
  base.out_plane = sh * H * ow;
  plans.resize(size_t(sh));
  for (int64_t ry = 0; ry < sh; ++ry) {
    DeconvPlan& dp = plans[size_t(ry)];
    for (int rx = 0; rx < 2; ++rx) {
      Plan& p = dp.phase[rx];
      p = base;
      p.tap_off.clear(), p.groups.clear();
      for (int64_t ty = 0; ty < taps.th; ++ty)
        for (int64_t tx = 0; tx < taps.tw; ++tx)
          p.tap_off.push_back((taps.dy[ry][ty] + pt) * base.Wp + taps.dx[rx][tx] + pl);
    }
    // Groups of 16 positions j Wp + i over the pixels (i < W valid), compacted as make_plan's.
    Plan& p = dp.phase[0];
    flat_groups(H, W, base.Wp, p.groups);
    dp.runs.clear();
    for (const Group& g : p.groups) {
      const int nv = __builtin_popcount(g.mask);
      DeconvRuns runs = {{0, 0, 0, 0}, {0, 0, 0, 0}};
      for (int e = 0; e < 2; ++e) {  // lanes 8 e + l: pixel at + 8 e + l, floats 2 l and 2 l + 1 of the half
        int run = 2 * e - 1;
        for (int l = 0; l < 8 && 8 * e + l < nv; ++l) {
          const int64_t px = g.at + 8 * e + l, j = px / W, i = px - j * W;
          if (l == 0 || i == 0) ++run, runs.at[run] = sh * j * ow + 2 * i - 2 * l;
          runs.mask[run] = static_cast<__mmask16>(runs.mask[run] | (3u << (2 * l)));
        }
      }
      dp.runs.push_back(runs);
    }
  }
}

// One deconv call on the tile unit: per image, fill(n, w) fills word plane w, then the work items (row phase
// x 32 output channels x a chunk of groups) run; weights: the phases' B tiles, phase after phase, each
// phase_lines lines; out: N x O x (stride_h H) x 2 W.
template <class Fill, class Finish>
void run_deconv(const std::vector<DeconvPlan>& plans, const int8_t* weights, int64_t phase_lines, int8_t* planes,
                int64_t batch, float* out, Fill&& fill, Finish&& finish, ParallelFor parallel) {
  const Plan& p = plans[0].phase[0];
  const int64_t sh = int64_t(plans.size()), ow = 2 * p.W, out_plane = p.out_plane;
  const int64_t n_groups = int64_t(p.groups.size()), blocks = sh * p.pairs;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((4 + blocks - 1) / blocks, n_groups / 8));
  const int64_t per_chunk = ((n_groups + chunks - 1) / chunks + 1) / 2 * 2;
  for (int64_t n = 0; n < batch; ++n) {
    run_parallel(parallel, p.cw, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) fill(n, w);
    });
    run_parallel(parallel, blocks * chunks, [&](int64_t i0, int64_t i1) {
      configure_tiles();
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / chunks, ch = i % chunks, ry = b / p.pairs, pair = b % p.pairs;
        const int64_t g0 = ch * per_chunk, g1 = std::min(n_groups, g0 + per_chunk);
        const int8_t* const w2[2] = {weights + (ry * 2) * phase_lines * 64, weights + (ry * 2 + 1) * phase_lines * 64};
        float* o = out + (n * p.O + pair * 32) * out_plane + ry * ow;
        if (g0 < g1)
          deconv_item(plans[size_t(ry)], w2, planes, o, out_plane, pair * 32, g0, g1,
                      [&](int rx, int64_t oc, const int32_t* t, const uint8_t* src, __m512 r[16]) {
                        finish(ry * 2 + rx, oc, t, src, r);
                      });
      }
      _tile_release();
    });
  }
}

// The binary transposed convs the tile unit takes (amx_handles): BoxNet's k4 s2 p1 deconvs and any other
// whose output is exactly twice its input (kernel = 2 + 2 padding), float output without streams, whole
// 32-channel blocks out, rows of 8+ pixels, 192+ pixels, and at most 1 MB of expanded weights (BoxNet's
// 256 -> 256 at 16 x 12; the 2248 -> 256 one, 9 MB expanded, stays with AVX-512's packed words).
bool amx_deconv_handles(const ConvShape& s, const Epilogue& ep, const ConvArgs& args) {
  const int64_t cw = words_for(s.in_channels);
  const int64_t expanded_bytes = s.out_channels / 32 * 2 * s.kernel_h * s.kernel_w * cw * 1024;
  return s.transposed && s.stride_h == 2 && s.stride_w == 2 && s.kernel_h == 2 + 2 * s.pad_h &&
         s.kernel_w == 2 + 2 * s.pad_w && s.out_h == 2 * s.in_h && s.out_w == 2 * s.in_w && s.in_w >= 8 &&
         s.out_channels % 32 == 0 && s.batch * s.in_h * s.in_w >= 192 && expanded_bytes <= (int64_t(1) << 20) &&
         args.branches == 1 && args.output == Output::kFloat && !ep.residual && !ep.partial && !ep.shortcut &&
         !ep.post && ep.residual_pool == 1;
}

void amx_binary_deconv(const ConvShape& s, const Epilogue& ep, const ConvArgs& args, ParallelFor parallel) {
  // Taps in the packed weights' order (ops.transposed_tap_order): phase (ry, rx), then ky = (ry + pad) mod 2
  // ascending in steps of 2, kx likewise; input offset (r + pad - k) / 2.
  DeconvTaps taps;
  for (int64_t r = 0; r < 2; ++r) {
    taps.th = taps.tw = 0;
    for (int64_t k = (r + s.pad_h) % 2; k < s.kernel_h; k += 2) taps.dy[r][taps.th++] = (r + s.pad_h - k) / 2;
    for (int64_t k = (r + s.pad_w) % 2; k < s.kernel_w; k += 2) taps.dx[r][taps.tw++] = (r + s.pad_w - k) / 2;
  }
  DeconvAmxScratch& sc = deconv_amx_scratch();
  deconv_plans(s.in_channels, s.in_h, s.in_w, s.out_channels, 2, taps, sc.plans);
  const Plan& p = sc.plans[0].phase[0];
  const int64_t phase_lines = 2 * p.pairs * p.k_words * 16, ldw = s.kernel_h * s.kernel_w * p.cw;
  const int64_t key[5] = {2, s.in_channels, s.out_channels, s.kernel_h * 64 + s.kernel_w, s.pad_h * 64 + s.pad_w};
  const int8_t* weights = cached_tiles(
      args.weight, size_t(weight_words(s)) * sizeof(uint64_t), key, size_t(4 * phase_lines), sc.weights,
      [&](int8_t* out) {
        run_parallel(parallel, 4 * 2 * p.pairs, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t phase = i / (2 * p.pairs), cb = i % (2 * p.pairs);
            expand_weights(args.weight + phase * p.k_words, ldw, p.cw, p.k_words, s.in_channels, cb, p.O,
                           out + phase * phase_lines * 64);
          }
        });
      });
  int8_t* planes = grown(sc.planes, size_t(p.cw * p.plane))->bytes;
  const int64_t in_plane = s.in_h * s.in_w;
  TileJob j;
  j.out_channels = p.O, j.ep = ep;
  const bool rprelu = ep.rprelu != nullptr;
  run_deconv(
      sc.plans, weights, phase_lines, planes, s.batch, static_cast<float*>(args.out),
      [&](int64_t n, int64_t w) {
        fill_padding(p, w, planes);
        if (args.x_float) {
          const float* x = args.x_float + n * (args.x_batch_stride ? args.x_batch_stride : s.in_channels * in_plane);
          fill_from_float(p, x, s.in_channels, w, 0, in_plane, planes);
        } else {
          for (int64_t iy = 0; iy < p.H; ++iy) fill_row(p, args.x_packed + n * in_plane * p.cw, w, iy, planes);
        }
      },
      [&](int64_t, int64_t o, const int32_t* t, const uint8_t* src, __m512 r[16]) {
        affine_transpose(t, src, Channels(j, o, static_cast<__mmask16>(0xFFFF)), rprelu, false, r);
      },
      parallel);
}

}  // namespace

bool amx_int8_deconv_takes(const Int8DeconvArgs& a) {
  return a.stride_w == 2 && a.in_w >= 8 && a.in_channels % 64 == 0 && a.out_channels % 32 == 0;
}

void amx_int8_conv_transpose2d(const Int8DeconvArgs& a, const int64_t (*dy)[16], const int64_t (*dx)[16], int64_t th,
                               int64_t tw, ParallelFor parallel) {
  DeconvTaps taps;
  taps.th = th, taps.tw = tw;
  for (int64_t r = 0; r < a.stride_h; ++r) std::copy(dy[r], dy[r] + th, taps.dy[r]);
  for (int64_t r = 0; r < 2; ++r) std::copy(dx[r], dx[r] + tw, taps.dx[r]);
  DeconvAmxScratch& sc = deconv_amx_scratch();
  deconv_plans(a.in_channels, a.in_h, a.in_w, a.out_channels, a.stride_h, taps, sc.plans);
  const Plan& p = sc.plans[0].phase[0];
  // Every phase's B tiles, one block after another, through the binary weights' cache.
  const int64_t phases = a.stride_h * 2, phase_lines = 2 * p.pairs * p.k_words * 16;
  const int64_t key[5] = {1, a.in_channels, a.out_channels, a.kernel_h * 64 + a.kernel_w, a.stride_h * 64 + a.stride_w};
  const int8_t* weights = cached_tiles(
      a.weight, size_t(phases * a.out_channels * th * tw * a.in_channels), key, size_t(phases * phase_lines),
      sc.weights, [&](int8_t* out) {
        run_parallel(parallel, phases * 2 * p.pairs, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i)
            deconv_expand(a, p, i / (2 * p.pairs), i % (2 * p.pairs), out + (i / (2 * p.pairs)) * phase_lines * 64);
        });
      });
  int8_t* planes = grown(sc.planes, size_t(p.cw * p.plane))->bytes;
  const int64_t O = a.out_channels;
  run_deconv(
      sc.plans, weights, phase_lines, planes, a.batch, a.out,
      [&](int64_t n, int64_t w) { deconv_fill(a, p, n, w, planes); },
      [&](int64_t phase, int64_t o, const int32_t* t, const uint8_t* src, __m512 r[16]) {
        // (acc - zero point x the phase's weight sums) x scale + bias, ReLU where asked
        const __m512i offset = _mm512_mullo_epi32(_mm512_set1_epi32(a.zero_point),
                                                  _mm512_loadu_si512(a.weight_sum + phase * O + o));
        finish_tile(t, src, offset, _mm512_loadu_ps(a.scale + o), _mm512_loadu_ps(a.bias + o), a.relu, r);
      },
      parallel);
}

}  // namespace bidrn
