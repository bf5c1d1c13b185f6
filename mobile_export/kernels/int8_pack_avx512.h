// The int8_pointwise input packing shared by the AMX and AVX-512 VNNI kernels (each unit compiles its own copy
// with AVX-512 BW): quantize (int8_pointwise.h's steps on 16 lanes) and store in blocks of 16 pixels x 4
// channels per 64-byte row, the tile unit's VNNI order and vpdpbusd's operand order alike.
#pragma once

#include <immintrin.h>

#include "bconv_internal.h"

namespace bidrn {
namespace {

// 16 floats of one input row for output pixels [ox, ox + n) at stride sw.
inline __m512 load_strided(const float* row, int64_t ox, int n, int64_t sw, int64_t in_w) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
  if (sw == 1) return _mm512_maskz_loadu_ps(m, row + ox);
  const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  if (sw == 2) {  // the even floats of 32 (masked to the row)
    const int64_t base = 2 * ox, avail = in_w - base;
    const int lo = int(avail < 16 ? avail : 16), hi = int(avail - 16 < 0 ? 0 : avail - 16 < 16 ? avail - 16 : 16);
    const __m512 a = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << lo) - 1), row + base);
    const __m512 b = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << hi) - 1), row + base + 16);
    const __m512 even = _mm512_permutex2var_ps(a, _mm512_add_epi32(lanes, lanes), b);
    return _mm512_maskz_mov_ps(m, even);
  }
  const __m512i idx = _mm512_mullo_epi32(_mm512_add_epi32(lanes, _mm512_set1_epi32(int(ox))),
                                         _mm512_set1_epi32(int(sw)));
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, row, 4);
}

// The op's optional ReLU on 16 floats: y where y > 0, else +0 (-0 and NaN included), as y > 0 ? y : 0.
inline __m512 relu_if(__m512 y, bool relu) {
  return relu ? _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), y) : y;
}

// quantize_int8 on 16 lanes: NaN -> 0, clamp to +-256, round half to even, + zero point, clamp to int8.
inline __m128i quantize16(__m512 v, __m512 inv, __m512 zp) {
  v = _mm512_mul_ps(v, inv);
  v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-256.0f)), _mm512_set1_ps(256.0f));
  v = _mm512_add_ps(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp);
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-128.0f)), _mm512_set1_ps(127.0f));
  return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v));
}

// 16 pixels x 4 channels (q[k]: channel k's 16 bytes) as 16 dwords, pixel-major: 4 bytes per pixel.
inline __m512i interleave4(const __m128i q[4]) {
  const __m128i t0 = _mm_unpacklo_epi8(q[0], q[1]), t1 = _mm_unpackhi_epi8(q[0], q[1]);
  const __m128i t2 = _mm_unpacklo_epi8(q[2], q[3]), t3 = _mm_unpackhi_epi8(q[2], q[3]);
  __m512i v = _mm512_castsi128_si512(_mm_unpacklo_epi16(t0, t2));
  v = _mm512_inserti32x4(v, _mm_unpackhi_epi16(t0, t2), 1);
  v = _mm512_inserti32x4(v, _mm_unpacklo_epi16(t1, t3), 2);
  return _mm512_inserti32x4(v, _mm_unpackhi_epi16(t1, t3), 3);
}

// The op's epilogue store of 16 floats y for pixels [p, p + cnt) of one output plane: contiguous, or to
// dest[p + lane] with dest (the phases of a transposed conv).
inline void store_pixels(float* plane, const int32_t* dest, int64_t p, int cnt, __m512 y) {
  const __mmask16 m = static_cast<__mmask16>(cnt == 16 ? 0xFFFF : (1u << cnt) - 1);
  if (dest) {
    _mm512_mask_i32scatter_ps(plane, m, _mm512_maskz_loadu_epi32(m, dest + p), y, 4);
  } else {
    _mm512_mask_storeu_ps(plane + p, m, y);
  }
}

// Channel group g (4 channels) of image n into blocks of 16 pixels: the group's 4 bytes of pixel p go to block
// p / 16, row g, lane p % 16 (dst + ((p / 16) * kp / 4 + g) * 64 + (p % 16) * 4), kp / 4 groups a block. Output
// rows are read 16 pixels at a time; a run that straddles two blocks is rotated by its start lane and stored
// to both under masks. Channels past C are zeros.
inline void quantize_group(const PointwiseArgs& a, int64_t n, int64_t g, int64_t ow, int64_t oh, int64_t kp,
                           int8_t* dst) {
  const int64_t C = a.in_channels, plane = a.in_h * a.in_w, tile_bytes = kp / 4 * 64;
  const __m512 inv = _mm512_set1_ps(a.input_scale_inv), zp = _mm512_set1_ps(float(a.zero_point));
  const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  bool live[4];
  for (int k = 0; k < 4; ++k) live[k] = 4 * g + k < C;
  const float* src[4] = {};
  const int8_t* src8[4] = {};
  for (int k = 0; k < 4; ++k) {
    if (!live[k]) continue;
    if (a.xq_channels) {
      src8[k] = a.xq_channels[4 * g + k] + n * a.xq_image_stride;
    } else {
      src[k] = a.x + (n * C + 4 * g + k) * plane;
    }
  }
  if (a.stride_h == 1 && a.stride_w == 1 && !a.xq_channels) {
    // Stride 1: the output pixels are the plane's, in order, so 16 of them are 16 consecutive floats
    // whatever the row width (8-wide rows otherwise took two half-empty, rotated vectors per 16 pixels:
    // 2048 -> 512 at 8 x 8 spent half its time here).
    const int64_t pixels = oh * ow;
    for (int64_t p = 0; p < pixels; p += 16) {
      const int cnt = int(pixels - p < 16 ? pixels - p : 16);
      const __mmask16 m = static_cast<__mmask16>((1u << cnt) - 1);
      __m128i q[4];
      for (int k = 0; k < 4; ++k)
        q[k] = live[k] ? quantize16(_mm512_maskz_loadu_ps(m, src[k] + p), inv, zp) : _mm_setzero_si128();
      _mm512_mask_storeu_epi32(dst + (p >> 4) * tile_bytes + g * 64, m, interleave4(q));
    }
    return;
  }
  if (a.xq_channels && a.xq_pixel_stride == 4 && live[3] && src8[1] == src8[0] + 1 && src8[2] == src8[0] + 2 &&
      src8[3] == src8[0] + 3) {
    // Interleaved phases (int8_conv2d): the group's 4 channels are a pixel's 4 consecutive bytes, so 16
    // pixels of one row are one 64-byte load in the tile's order.
    const int64_t pixels = oh * ow, row_stride = a.xq_row_stride;
    const int8_t* base = src8[0];
    int8_t* block = dst + g * 64;
    int64_t y = 0, x = 0;  // of pixel p
    for (int64_t p = 0; p < pixels; p += 16, block += tile_bytes) {
      const int cnt = int(pixels - p < 16 ? pixels - p : 16);
      if (cnt == 16 && ow - x >= 16) {  // within one row
        _mm512_storeu_si512(block, _mm512_loadu_si512(base + y * row_stride + x * 4));
        if ((x += 16) == ow) x = 0, ++y;
        continue;
      }
      __m512i v = _mm512_setzero_si512();
      for (int lane = 0; lane < cnt;) {
        const int n = int(cnt - lane < ow - x ? cnt - lane : ow - x);
        const __mmask16 m = static_cast<__mmask16>(((1u << n) - 1) << lane);
        v = _mm512_mask_loadu_epi32(v, m, base + y * row_stride + (x - lane) * 4);
        lane += n;
        if ((x += n) == ow) x = 0, ++y;
      }
      _mm512_mask_storeu_epi32(block, static_cast<__mmask16>((1u << cnt) - 1), v);
    }
    return;
  }
  if (a.xq_channels && a.xq_pixel_stride != 1) {  // other strides: byte by byte
    const int64_t pixels = oh * ow;
    for (int64_t p = 0; p < pixels; p += 16) {
      const int cnt = int(pixels - p < 16 ? pixels - p : 16);
      alignas(16) int8_t b[4][16] = {};
      for (int l = 0; l < cnt; ++l) {
        const int64_t y = (p + l) / ow, x = (p + l) - y * ow;
        for (int k = 0; k < 4; ++k)
          if (live[k]) b[k][l] = src8[k][y * a.xq_row_stride + x * a.xq_pixel_stride];
      }
      __m128i q[4];
      for (int k = 0; k < 4; ++k) q[k] = _mm_load_si128(reinterpret_cast<const __m128i*>(b[k]));
      _mm512_mask_storeu_epi32(dst + (p >> 4) * tile_bytes + g * 64, static_cast<__mmask16>((1u << cnt) - 1),
                               interleave4(q));
    }
    return;
  }
  if (a.xq_channels) {
    // Already quantized rows (a transposed conv's taps, stride 1), xq_row_stride apart: each block of 16
    // pixels in plane order gathered from its row pieces by masked loads (each lane from its own row), so
    // every block is one whole store (rows of 24 otherwise took a rotate and two masked stores per row).
    const int64_t pixels = oh * ow;
    for (int64_t p = 0; p < pixels; p += 16) {
      const int cnt = int(pixels - p < 16 ? pixels - p : 16);
      __m128i q[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
      int64_t y = p / ow, x = p - y * ow;
      for (int lane = 0; lane < cnt; x = 0, ++y) {
        const int n = int(cnt - lane < ow - x ? cnt - lane : ow - x);
        const __mmask16 m = static_cast<__mmask16>(((1u << n) - 1) << lane);
        for (int k = 0; k < 4; ++k)
          if (live[k]) q[k] = _mm_mask_loadu_epi8(q[k], m, src8[k] + y * a.xq_row_stride + x - lane);
        lane += n;
      }
      _mm512_mask_storeu_epi32(dst + (p >> 4) * tile_bytes + g * 64, static_cast<__mmask16>((1u << cnt) - 1),
                               interleave4(q));
    }
    return;
  }
  for (int64_t oy = 0; oy < oh; ++oy) {
    const int64_t in_row = oy * a.stride_h * a.in_w;
    for (int64_t ox = 0; ox < ow; ox += 16) {
      const int cnt = int(ow - ox < 16 ? ow - ox : 16);
      __m128i q[4];
      for (int k = 0; k < 4; ++k) {
        if (!live[k]) {
          q[k] = _mm_setzero_si128();
        } else if (a.xq_channels) {  // already quantized (stride 1)
          q[k] = _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << cnt) - 1), src8[k] + oy * a.xq_row_stride + ox);
        } else {
          q[k] = quantize16(load_strided(src[k] + in_row, ox, cnt, a.stride_w, a.in_w), inv, zp);
        }
      }
      __m512i v = interleave4(q);
      const int64_t p = oy * ow + ox;
      const int r = int(p & 15);
      int8_t* tile = dst + (p >> 4) * tile_bytes + g * 64;
      if (r == 0) {
        _mm512_mask_storeu_epi32(tile, static_cast<__mmask16>((1u << cnt) - 1), v);
        continue;
      }
      v = _mm512_permutexvar_epi32(_mm512_and_si512(_mm512_sub_epi32(lanes, _mm512_set1_epi32(r)), _mm512_set1_epi32(15)), v);
      const int first = 16 - r < cnt ? 16 - r : cnt;
      _mm512_mask_storeu_epi32(tile, static_cast<__mmask16>(((1u << first) - 1) << r), v);
      if (cnt > first) _mm512_mask_storeu_epi32(tile + tile_bytes, static_cast<__mmask16>((1u << (cnt - first)) - 1), v);
    }
  }
}

}  // namespace
}  // namespace bidrn
