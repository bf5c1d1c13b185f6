// Stand-alone check of every kernel path against a naive convolution written straight from the
// definition (sign(0) = +1, zero padding contributes 0), on random shapes with odd channel counts,
// borders, strides and transposed convs; and of the fused epilogue (residual, 2 x 2-pooled residual,
// partial sum, post affine, shortcut; FDR's branches in one call) against the same steps written out in
// float, in the documented order; and of bidrn::int8_pointwise (int8_pointwise.h) against its definition
// written out step by step, on odd channel counts, pixel and channel tails, strides 1-3, rounding ties, NaN,
// infinities and saturating values, with and without its ReLU; and of bidrn::int8_conv_transpose2d against
// the transposed conv written out output by output. No ExecuTorch: it is what runs under qemu-aarch64.
//   bidrn_selftest [--expect-path NAME] [--cases N]
// Prints the dispatched path and one line per path; exits 1 on any mismatch or unexpected dispatch.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bconv.h"
#include "int8_pointwise.h"

namespace {

using bidrn::ConvShape;
using bidrn::serial_for;

struct Case {
  ConvShape s;
  std::vector<float> x;          // N x C x H x W, with exact zeros, -0.0 and NaN sprinkled in
  std::vector<uint8_t> w_neg;    // O x C x KH x KW: 1 where the weight's sign is -1
  std::vector<uint64_t> w_packed;
  std::vector<float> scale, bias, rprelu;
};

bool negative(float v) { return !(v >= 0.0f); }

// The documented weight layout, written independently of the library: for each output channel, the
// taps in row-major order (transposed: phase by phase, see docs/kernels.md), each tap words_for(C) words.
void pack_weight(Case& c) {
  const ConvShape& s = c.s;
  const int64_t cw = bidrn::words_for(s.in_channels);
  std::vector<std::pair<int64_t, int64_t>> taps;
  if (!s.transposed) {
    for (int64_t y = 0; y < s.kernel_h; ++y)
      for (int64_t x = 0; x < s.kernel_w; ++x) taps.push_back({y, x});
  } else {
    for (int64_t ry = 0; ry < s.stride_h; ++ry)
      for (int64_t rx = 0; rx < s.stride_w; ++rx)
        for (int64_t y = 0; y < s.kernel_h; ++y)
          for (int64_t x = 0; x < s.kernel_w; ++x)
            if ((y - ry - s.pad_h) % s.stride_h == 0 && (x - rx - s.pad_w) % s.stride_w == 0) taps.push_back({y, x});
  }
  c.w_packed.assign(size_t(s.out_channels * int64_t(taps.size()) * cw), 0);
  for (int64_t o = 0; o < s.out_channels; ++o)
    for (size_t t = 0; t < taps.size(); ++t)
      for (int64_t ch = 0; ch < s.in_channels; ++ch) {
        const size_t idx = size_t(((o * s.in_channels + ch) * s.kernel_h + taps[t].first) * s.kernel_w + taps[t].second);
        if (c.w_neg[idx]) c.w_packed[size_t((o * int64_t(taps.size()) + int64_t(t)) * cw + ch / 64)] |= uint64_t(1) << (ch % 64);
      }
}

// acc[n][o][oy][ox] by the definition.
std::vector<int32_t> naive(const Case& c) {
  const ConvShape& s = c.s;
  std::vector<int32_t> acc(size_t(s.batch * s.out_channels * s.out_h * s.out_w), 0);
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t o = 0; o < s.out_channels; ++o)
      for (int64_t oy = 0; oy < s.out_h; ++oy)
        for (int64_t ox = 0; ox < s.out_w; ++ox) {
          int32_t sum = 0;
          for (int64_t ky = 0; ky < s.kernel_h; ++ky)
            for (int64_t kx = 0; kx < s.kernel_w; ++kx) {
              int64_t iy, ix;
              if (!s.transposed) {
                iy = oy * s.stride_h - s.pad_h + ky, ix = ox * s.stride_w - s.pad_w + kx;
              } else {
                const int64_t ny = oy + s.pad_h - ky, nx = ox + s.pad_w - kx;
                if (ny < 0 || nx < 0 || ny % s.stride_h || nx % s.stride_w) continue;
                iy = ny / s.stride_h, ix = nx / s.stride_w;
              }
              if (iy < 0 || iy >= s.in_h || ix < 0 || ix >= s.in_w) continue;
              for (int64_t ch = 0; ch < s.in_channels; ++ch) {
                const bool xn = negative(c.x[size_t(((n * s.in_channels + ch) * s.in_h + iy) * s.in_w + ix)]);
                const bool wn = c.w_neg[size_t(((o * s.in_channels + ch) * s.kernel_h + ky) * s.kernel_w + kx)];
                sum += xn == wn ? 1 : -1;
              }
            }
          acc[size_t(((n * s.out_channels + o) * s.out_h + oy) * s.out_w + ox)] = sum;
        }
  return acc;
}

Case random_case(std::mt19937& rng, int index) {
  auto pick = [&](int lo, int hi) { return int64_t(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  Case c;
  ConvShape& s = c.s;
  s.transposed = index % 4 == 3;
  s.batch = pick(1, 2);
  // Odd counts, a word boundary (63/64/65) and a multi-word count.
  const int64_t channel_choices[] = {1, 3, 7, 31, 63, 64, 65, 100, 129, 200};
  s.in_channels = channel_choices[pick(0, 9)];
  s.out_channels = pick(1, 70);
  s.kernel_h = pick(1, 4), s.kernel_w = pick(1, 4);
  s.stride_h = pick(1, 2), s.stride_w = pick(1, 3);
  s.pad_h = pick(0, s.kernel_h - 1 > 2 ? 2 : s.kernel_h - 1), s.pad_w = pick(0, s.kernel_w - 1);
  s.in_h = pick(1, 11), s.in_w = pick(1, 13);
  if (index % 10 == 5) {  // a large plane of a narrow layer: strips of many tiles, past kMaxStripTiles
    s.in_channels = channel_choices[pick(0, 6)];
    s.kernel_h = s.kernel_w = 1, s.pad_h = s.pad_w = 0;
    s.in_h = pick(40, 50), s.in_w = pick(45, 60);
  }
  if (index % 10 == 7) {  // a 3 x 3 conv of 64+ channels on 96+ output pixels: AVX2's lookup-table count
    const int64_t wide[] = {64, 65, 100, 129, 200};
    s.transposed = false;
    s.in_channels = wide[pick(0, 4)];
    s.kernel_h = s.kernel_w = 3, s.stride_w = 1, s.pad_h = s.pad_w = 1;
    s.in_h = pick(10, 20) * s.stride_h - 3, s.in_w = pick(10, 14) - 3;
  }
  if (index % 10 == 3) {  // a conv with rows of 9+ words on 512+ output positions: the AMX path's convs
    const int64_t wide[] = {64, 65, 100, 129, 200};
    s.transposed = false;
    s.in_channels = wide[pick(0, 4)];
    s.kernel_h = pick(2, 4), s.kernel_w = pick(3, 4), s.stride_h = s.stride_w = 1;
    s.pad_h = pick(0, s.kernel_h - 1), s.pad_w = pick(0, s.kernel_w - 1);
    s.in_h = pick(14, 26) - s.kernel_h, s.in_w = pick(20, 40) - s.kernel_w;  // with the kernel added below
    if (index % 20 == 13) s.in_w = 31 - 2 * s.pad_w;  // out_w = 32: whole-row groups (bconv_amx.cpp make_plan)
    s.batch = 2;
  }
  if (s.transposed) {
    s.out_h = (s.in_h - 1) * s.stride_h - 2 * s.pad_h + s.kernel_h + pick(0, s.stride_h - 1);
    s.out_w = (s.in_w - 1) * s.stride_w - 2 * s.pad_w + s.kernel_w;
  } else {
    s.in_h += s.kernel_h, s.in_w += s.kernel_w;
    s.out_h = (s.in_h + 2 * s.pad_h - s.kernel_h) / s.stride_h + 1;
    s.out_w = (s.in_w + 2 * s.pad_w - s.kernel_w) / s.stride_w + 1;
  }
  std::normal_distribution<float> normal;
  c.x.resize(size_t(s.batch * s.in_channels * s.in_h * s.in_w));
  for (float& v : c.x) {
    const int64_t r = pick(0, 99);
    v = r == 0 ? 0.0f : r == 1 ? -0.0f : r == 2 ? NAN : normal(rng);
  }
  c.w_neg.resize(size_t(s.out_channels * s.in_channels * s.kernel_h * s.kernel_w));
  for (uint8_t& b : c.w_neg) b = uint8_t(pick(0, 1));
  pack_weight(c);
  for (int64_t o = 0; o < s.out_channels; ++o) {
    c.scale.push_back(0.01f + std::fabs(normal(rng)));
    c.bias.push_back(normal(rng));
  }
  for (int64_t i = 0; i < 3 * s.out_channels; ++i) c.rprelu.push_back(normal(rng) * 0.5f);
  return c;
}

float epilogue(const Case& c, int64_t o, int32_t acc, bool rprelu = true) {
  const int64_t O = c.s.out_channels;
  const float y = static_cast<float>(acc) * c.scale[size_t(o)] + c.bias[size_t(o)];
  if (!rprelu) return y;
  const float sh = y - c.rprelu[size_t(O + o)];
  return (sh > 0.0f ? sh : c.rprelu[size_t(o)] * sh) + c.rprelu[size_t(2 * O + o)];
}

// Runs one case on the active path in all three output forms; returns an empty string when exact.
std::string check(const Case& c, const std::vector<int32_t>& want) {
  const ConvShape& s = c.s;
  const int64_t plane = s.out_h * s.out_w, O = s.out_channels, ow = bidrn::words_for(O);
  bidrn::Epilogue ep{c.scale.data(), c.bias.data(), c.rprelu.data()};
  std::vector<int32_t> acc(want.size());
  bidrn::binary_conv(s, ep, {c.x.data(), nullptr, c.w_packed.data(), acc.data(), bidrn::Output::kAccumulator}, serial_for);
  if (acc != want) return "accumulator differs";
  std::vector<float> y(want.size());
  bidrn::binary_conv(s, ep, {c.x.data(), nullptr, c.w_packed.data(), y.data(), bidrn::Output::kFloat}, serial_for);
  std::vector<uint64_t> bits(size_t(s.batch * plane * ow));
  bidrn::binary_conv(s, ep, {c.x.data(), nullptr, c.w_packed.data(), bits.data(), bidrn::Output::kPackedSigns}, serial_for);
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t p = 0; p < plane; ++p) {
        const size_t i = size_t((n * O + o) * plane + p);
        const float e = epilogue(c, o, want[i]);
        if (std::memcmp(&e, &y[i], sizeof(float)) != 0) return "float output differs";
        const bool bit = bits[size_t((n * plane + p) * ow + o / 64)] >> (o % 64) & 1;
        if (bit != !(e >= 0.0f)) return "packed output differs";
      }
  // Packed input must give the same accumulator as float input.
  const int64_t cw = bidrn::words_for(s.in_channels), in_plane = s.in_h * s.in_w;
  std::vector<uint64_t> xp(size_t(s.batch * in_plane * cw));
  for (int64_t n = 0; n < s.batch; ++n)
    bidrn::pack_signs(c.x.data() + n * s.in_channels * in_plane, s.in_channels, in_plane, xp.data() + n * in_plane * cw);
  std::vector<int32_t> acc2(want.size());
  bidrn::binary_conv(s, ep, {nullptr, xp.data(), c.w_packed.data(), acc2.data(), bidrn::Output::kAccumulator}, serial_for);
  if (acc2 != want) return "accumulator from packed input differs";
  return "";
}


bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0; }

std::vector<float> random_floats(std::mt19937& rng, size_t n) {
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> r100(0, 99);
  std::vector<float> v(n);
  for (float& f : v) {
    const int r = r100(rng);
    f = r == 0 ? 0.0f : r == 1 ? -0.0f : r == 2 ? NAN : 2.0f * normal(rng);  // |f| > 1 often: the clamp matters
  }
  return v;
}

float hardtanh(float r, bool clamp) { return clamp ? (r < -1.0f ? -1.0f : r > 1.0f ? 1.0f : r) : r; }

// One plain conv case with a random subset of RPReLU, residual (clamped or not, or 2 x 2-pooled at stride 2),
// partial sum, post affine and shortcut (read from its own buffer or from the output buffer), checked against
//   y = RPReLU(scale acc + bias); y = y + r; y = partial + y; y = y * ps + pb; y = y + shortcut.
std::string check_fused(const Case& c, const std::vector<int32_t>& want, std::mt19937& rng) {
  const ConvShape& s = c.s;
  const int64_t plane = s.out_h * s.out_w, O = s.out_channels;
  auto coin = [&]() { return std::uniform_int_distribution<int>(0, 1)(rng) == 1; };
  const bool rprelu = coin();
  bidrn::Epilogue ep{c.scale.data(), c.bias.data(), rprelu ? c.rprelu.data() : nullptr};
  const bool pooled = s.stride_h == 2 && s.stride_w == 2 && coin();
  const int64_t pool = pooled ? 2 : 1;
  const int64_t R = std::uniform_int_distribution<int64_t>(1, O)(rng);
  const bool with_residual = pooled || coin(), with_partial = coin(), with_post = coin(), with_shortcut = coin();
  const int64_t res_w = pool * s.out_w, res_plane = pool * pool * plane;
  const std::vector<float> residual = random_floats(rng, size_t(s.batch * R * res_plane));
  const std::vector<float> partial = random_floats(rng, size_t(s.batch * O * plane));
  const std::vector<float> shortcut = random_floats(rng, size_t(s.batch * O * plane));
  std::vector<float> post(size_t(2 * O));
  for (float& v : post) v = std::normal_distribution<float>(0.5f, 0.5f)(rng);
  if (with_residual) {
    ep.residual = residual.data(), ep.residual_channels = R, ep.clamp_residual = coin();
    ep.residual_pool = pool, ep.residual_w = res_w;
  }
  if (with_partial) ep.partial = partial.data();
  if (with_post) ep.post = post.data();
  // Output over the shortcut (the export's share_shortcut_storage): the output buffer starts as a copy of
  // the shortcut and is passed as both. Only one-branch convs are planned so: the scalar and NEON FDR
  // paths sum the branches in the output buffer, so an FDR call must not have its shortcut there.
  const bool in_place = with_shortcut && coin();
  std::vector<float> y(want.size());
  if (in_place) y = shortcut;
  if (with_shortcut) ep.shortcut = in_place ? y.data() : shortcut.data();
  bidrn::binary_conv(s, ep, {c.x.data(), nullptr, c.w_packed.data(), y.data(), bidrn::Output::kFloat}, serial_for);
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t p = 0; p < plane; ++p) {
        const size_t i = size_t((n * O + o) * plane + p);
        float e = epilogue(c, o, want[i], rprelu);
        if (with_residual) {
          const float* r = residual.data() + (n * R + o % R) * res_plane;
          if (pooled) {
            const int64_t oy = p / s.out_w, ox = p % s.out_w;
            const float* t = r + 2 * oy * res_w + 2 * ox;
            const bool cl = ep.clamp_residual;
            e = e + (((hardtanh(t[0], cl) + hardtanh(t[1], cl)) + hardtanh(t[res_w], cl)) + hardtanh(t[res_w + 1], cl)) / 4.0f;
          } else {
            e = e + hardtanh(r[p], ep.clamp_residual);
          }
        }
        if (with_partial) e = partial[i] + e;
        if (with_post) e = e * post[size_t(o)] + post[size_t(O + o)];
        if (with_shortcut) e = e + shortcut[i];
        if (!same_float(e, y[i])) {
          static char msg[160];
          std::snprintf(msg, sizeof msg, "fused float output differs (rprelu %d residual %d pooled %d clamp %d partial %d post %d shortcut %d in place %d)",
                        rprelu, with_residual, pooled, ep.clamp_residual, with_partial, with_post, with_shortcut, in_place);
          return msg;
        }
      }
  return "";
}

// FDR (eq. 10) in one call: k branches of 1 x 1 C -> O convs, branch i reading input channels [iC, (i+1)C)
// and adding Hardtanh(residual chunk i); out = b_0, then out = out + b_i, then post affine and shortcut.
struct BranchCase {
  ConvShape s;  // one branch's shape
  int64_t k = 2;
  std::vector<float> x, residual, shortcut, scale, bias, rprelu, post;
  std::vector<uint8_t> w_neg;     // k x O x C
  std::vector<uint64_t> w_packed;  // k x O rows of words_for(C)
};

BranchCase random_branch_case(std::mt19937& rng, int index) {
  auto pick = [&](int lo, int hi) { return int64_t(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  BranchCase b;
  // 1, 2, 4 and 8 words per pixel (the compile-time word counts) and odd counts between them.
  const int64_t channel_choices[] = {3, 16, 31, 64, 65, 128, 130, 256, 512};
  b.k = pick(2, 5);
  b.s.batch = pick(1, 2);
  b.s.in_channels = channel_choices[index % 9];  // each count once in every 9 cases
  b.s.out_channels = index % 2 && b.s.in_channels <= 256 ? b.s.in_channels : pick(1, 70);
  b.s.in_h = b.s.out_h = pick(1, index % 3 == 0 ? 40 : 9);
  b.s.in_w = b.s.out_w = pick(1, index % 3 == 0 ? 50 : 13);
  const int64_t C = b.s.in_channels, O = b.s.out_channels, plane = b.s.in_h * b.s.in_w, cw = bidrn::words_for(C);
  b.x = random_floats(rng, size_t(b.s.batch * b.k * C * plane));
  b.residual = random_floats(rng, size_t(b.s.batch * b.k * O * plane));
  b.shortcut = random_floats(rng, size_t(b.s.batch * O * plane));
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < b.k * O; ++i) b.scale.push_back(0.01f + std::fabs(normal(rng))), b.bias.push_back(normal(rng));
  for (int64_t i = 0; i < 3 * b.k * O; ++i) b.rprelu.push_back(normal(rng) * 0.5f);
  for (int64_t i = 0; i < 2 * O; ++i) b.post.push_back(0.5f + 0.5f * normal(rng));
  b.w_neg.resize(size_t(b.k * O * C));
  for (uint8_t& v : b.w_neg) v = uint8_t(pick(0, 1));
  b.w_packed.assign(size_t(b.k * O * cw), 0);
  for (int64_t row = 0; row < b.k * O; ++row)
    for (int64_t ch = 0; ch < C; ++ch)
      if (b.w_neg[size_t(row * C + ch)]) b.w_packed[size_t(row * cw + ch / 64)] |= uint64_t(1) << (ch % 64);
  return b;
}

std::string check_branches(const BranchCase& b, bool clamp) {
  const ConvShape& s = b.s;
  const int64_t C = s.in_channels, O = s.out_channels, plane = s.out_h * s.out_w, k = b.k;
  bidrn::Epilogue ep{b.scale.data(), b.bias.data(), b.rprelu.data()};
  ep.residual = b.residual.data(), ep.residual_channels = O, ep.clamp_residual = clamp;
  ep.post = b.post.data(), ep.shortcut = b.shortcut.data();
  bidrn::ConvArgs args{b.x.data(), nullptr, b.w_packed.data(), nullptr, bidrn::Output::kFloat};
  std::vector<float> y(size_t(s.batch * O * plane));
  args.out = y.data(), args.branches = k;
  bidrn::binary_conv(s, ep, args, serial_for);
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t p = 0; p < plane; ++p) {
        float out = 0.0f;
        for (int64_t i = 0; i < k; ++i) {
          int32_t acc = 0;
          for (int64_t ch = 0; ch < C; ++ch) {
            const bool xn = negative(b.x[size_t(((n * k + i) * C + ch) * plane + p)]);
            acc += xn == bool(b.w_neg[size_t((i * O + o) * C + ch)]) ? 1 : -1;
          }
          const int64_t row = i * O + o;
          const float y0 = static_cast<float>(acc) * b.scale[size_t(row)] + b.bias[size_t(row)];
          const float sh = y0 - b.rprelu[size_t(k * O + row)];
          float bi = (sh > 0.0f ? sh : b.rprelu[size_t(row)] * sh) + b.rprelu[size_t(2 * k * O + row)];
          bi = bi + hardtanh(b.residual[size_t(((n * k + i) * O + o) * plane + p)], clamp);
          out = i == 0 ? bi : out + bi;
        }
        out = out * b.post[size_t(o)] + b.post[size_t(O + o)];
        out = out + b.shortcut[size_t((n * O + o) * plane + p)];
        if (!same_float(out, y[size_t((n * O + o) * plane + p)])) return "branch output differs";
      }
  return "";
}


// ---------------------------------------------------------------- int8_pointwise

struct PointwiseCase {
  int64_t shape[7];  // batch, in_channels, in_h, in_w, out_channels, stride_h, stride_w
  std::vector<float> x, scale, bias;
  std::vector<int8_t> w;
  std::vector<int32_t> wsum;
  float inv = 1.0f;
  int32_t zp = 0;
  bool relu = false;
  std::vector<float> want;
};

// Odd channel counts, tails of pixels and of output channels, strides 1-3, values on the rounding ties,
// NaN, infinities and magnitudes past the clamp.
PointwiseCase random_pointwise_case(std::mt19937& rng, int i) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  PointwiseCase c;
  const int64_t N = pick(1, 2), C = i % 5 == 0 ? 64 * pick(1, 4) : pick(1, 150), H = pick(1, 23), W = pick(1, 37);
  const int64_t O = i % 3 == 0 ? 32 * pick(1, 3) : pick(1, 70), sh = pick(1, 3), sw = i % 4 == 0 ? 2 : pick(1, 3);
  const int64_t v[7] = {N, C, H, W, O, sh, sw};
  std::copy(v, v + 7, c.shape);
  c.inv = std::uniform_real_distribution<float>(2.0f, 60.0f)(rng);
  c.zp = int32_t(pick(-128, 127));
  c.relu = i % 2 == 1;
  std::normal_distribution<float> normal(0.0f, 1.5f);
  c.x.resize(size_t(N * C * H * W));
  for (float& x : c.x) {
    const int64_t r = pick(0, 99);
    x = r == 0 ? NAN : r == 1 ? INFINITY : r == 2 ? -INFINITY : r == 3 ? 1e9f : r < 10 ? (float(pick(-300, 300)) + 0.5f) / c.inv
        : normal(rng);
  }
  c.w.resize(size_t(O * C));
  for (int8_t& w : c.w) w = int8_t(pick(-128, 127));
  c.wsum.assign(size_t(O), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t ch = 0; ch < C; ++ch) c.wsum[size_t(o)] += c.w[size_t(o * C + ch)];
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t o = 0; o < O; ++o) c.scale.push_back(1e-4f * (1.0f + u(rng))), c.bias.push_back(u(rng));
  // The definition, step by step (int8_pointwise.h).
  const int64_t oh = (H + sh - 1) / sh, ow = (W + sw - 1) / sw;
  c.want.resize(size_t(N * O * oh * ow));
  std::vector<int32_t> q(static_cast<size_t>(C), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t y = 0; y < oh; ++y)
      for (int64_t xx = 0; xx < ow; ++xx) {
        for (int64_t ch = 0; ch < C; ++ch) {
          float t = c.x[size_t(((n * C + ch) * H + y * sh) * W + xx * sw)] * c.inv;
          if (std::isnan(t)) t = 0.0f;
          t = std::min(std::max(t, -256.0f), 256.0f);
          q[size_t(ch)] = std::min(127, std::max(-128, int32_t(std::rint(t)) + c.zp));
        }
        for (int64_t o = 0; o < O; ++o) {
          int32_t acc = 0;
          for (int64_t ch = 0; ch < C; ++ch) acc += int32_t(c.w[size_t(o * C + ch)]) * (q[size_t(ch)] - c.zp);
          const float v = static_cast<float>(acc) * c.scale[size_t(o)] + c.bias[size_t(o)];
          c.want[size_t(((n * O + o) * oh + y) * ow + xx)] = c.relu ? (v > 0.0f ? v : 0.0f) : v;
        }
      }
  return c;
}

std::string check_pointwise_case(const PointwiseCase& c) {
  std::vector<float> y(c.want.size(), -7.0f);
  if (const char* err = bidrn_int8_pointwise(c.shape, c.x.data(), c.w.data(), c.wsum.data(), c.scale.data(),
                                             c.bias.data(), c.inv, c.zp, c.relu, y.data()))
    return err;
  for (size_t i = 0; i < y.size(); ++i)
    if (!same_float(y[i], c.want[i])) return "int8 pointwise output " + std::to_string(i) + " differs";
  return "";
}

// int8_conv_transpose2d: kernel = stride + 2 padding, random C / O / sizes, against the transposed conv
// written out output by output (taps found here by the definition, not by the library).
struct DeconvCase {
  int64_t shape[8];  // batch, in_channels, in_h, in_w, out_channels, kernel, stride, padding
  std::vector<float> x, scale, bias, want;
  std::vector<int8_t> w;
  std::vector<int32_t> wsum;
  float inv = 1.0f;
  int32_t zp = 0;
  bool relu = false;
};

DeconvCase random_deconv_case(std::mt19937& rng, int i) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  static const int64_t ksp[][3] = {{4, 2, 1}, {3, 1, 1}, {2, 2, 0}, {6, 2, 2}};
  const int64_t* g = ksp[i % 4];
  int64_t K = g[0], S = g[1], P = g[2], N = pick(1, 2), C = pick(1, 40), H = pick(1, 9), W = pick(1, 9);
  int64_t O = pick(1, 40);
  // Every third stride-2 case in the shapes the `amx` path's own deconv kernel takes (whole 64-channel words,
  // 32-channel outputs, rows of 8+ pixels).
  if (S == 2 && i % 3 == 2) C = 64 * pick(1, 2), O = 32 * pick(1, 2), H = pick(1, 5), W = pick(8, 26);
  DeconvCase c;
  const int64_t v[8] = {N, C, H, W, O, K, S, P};
  std::copy(v, v + 8, c.shape);
  c.inv = std::uniform_real_distribution<float>(2.0f, 40.0f)(rng), c.zp = int32_t(pick(-128, 127)), c.relu = i % 2;
  std::normal_distribution<float> normal(0.0f, 1.5f);
  for (int64_t k = 0; k < N * C * H * W; ++k) c.x.push_back(pick(0, 60) == 0 ? NAN : normal(rng));
  // Taps of phase r in one dimension: kernel indices k with (r + P - k) divisible by S, input offsets
  // d = (r + P - k) / S ascending.
  auto taps = [&](int64_t r) {
    std::vector<std::pair<int64_t, int64_t>> t;  // (d, k)
    for (int64_t k = 0; k < K; ++k)
      if ((r + P - k + 64 * S) % S == 0) t.push_back({(r + P - k + 64 * S) / S - 64, k});
    std::sort(t.begin(), t.end());
    return t;
  };
  const int64_t T = int64_t(taps(0).size()) * int64_t(taps(0).size());
  c.w.resize(size_t(S * S * O * T * C));
  for (int8_t& w : c.w) w = int8_t(pick(-128, 127));
  for (int64_t row = 0; row < S * S * O; ++row) {
    int32_t sum = 0;
    for (int64_t k = 0; k < T * C; ++k) sum += c.w[size_t(row * T * C + k)];
    c.wsum.push_back(sum);
  }
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t o = 0; o < O; ++o) c.scale.push_back(1e-4f * (1.0f + u(rng))), c.bias.push_back(u(rng));
  auto q = [&](int64_t n, int64_t ch, int64_t y, int64_t xx) {
    float t = c.x[size_t(((n * C + ch) * H + y) * W + xx)] * c.inv;
    if (std::isnan(t)) t = 0.0f;
    t = std::min(std::max(t, -256.0f), 256.0f);
    return std::min(127, std::max(-128, int32_t(std::rint(t)) + c.zp));
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oy = 0; oy < H * S; ++oy)
        for (int64_t ox = 0; ox < W * S; ++ox) {
          const int64_t ry = oy % S, rx = ox % S, j = oy / S, ii = ox / S, row = (ry * S + rx) * O + o;
          const auto ty = taps(ry), tx = taps(rx);
          int32_t acc = 0;
          for (size_t a = 0; a < ty.size(); ++a)
            for (size_t b = 0; b < tx.size(); ++b) {
              const int64_t y = j + ty[a].first, xx = ii + tx[b].first;
              if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
              for (int64_t ch = 0; ch < C; ++ch)
                acc += int32_t(c.w[size_t(row * T * C + int64_t(a * tx.size() + b) * C + ch)]) * (q(n, ch, y, xx) - c.zp);
            }
          const float v2 = static_cast<float>(acc) * c.scale[size_t(o)] + c.bias[size_t(o)];
          c.want.push_back(c.relu ? (v2 > 0.0f ? v2 : 0.0f) : v2);
        }
  return c;
}

std::string check_deconv_case(const DeconvCase& c) {
  std::vector<float> y(c.want.size(), -7.0f);
  if (const char* err = bidrn_int8_conv_transpose2d(c.shape, c.x.data(), c.w.data(), c.wsum.data(), c.scale.data(),
                                                    c.bias.data(), c.inv, c.zp, c.relu, y.data()))
    return err;
  for (size_t i = 0; i < y.size(); ++i)
    if (!same_float(y[i], c.want[i])) return "int8 deconv output " + std::to_string(i) + " differs";
  return "";
}

// int8_conv2d (the stems' conv + max pool): a naive conv on the quantized input (the zero point in the
// padding), the epilogue, then PyTorch's max pool (window row-major, the first maximum kept).
struct ConvCase {
  int64_t shape[16];  // int8_pointwise.h, bidrn_int8_conv2d
  std::vector<float> x, scale, bias, want;
  std::vector<int8_t> w;
  std::vector<int32_t> wsum;
  float inv = 1.0f;
  int32_t zp = 0;
};

ConvCase random_conv_case(std::mt19937& rng, int i) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  // kernel h, kernel w, stride h, stride w, pad h, pad w, pool kernel, pool stride, pool pad
  static const int64_t geo[][9] = {{7, 7, 2, 2, 3, 3, 3, 2, 1}, {3, 3, 1, 1, 1, 1, 1, 1, 0},
                                   {5, 3, 2, 1, 2, 0, 2, 2, 0}, {2, 4, 3, 2, 0, 1, 3, 1, 1}};
  const int64_t* g = geo[i % 4];
  const int64_t N = pick(1, 2), C = pick(1, 6), H = pick(g[0] + 2, 24), W = pick(g[1] + 2, 40), O = pick(1, 40);
  const bool relu = i % 3 == 0;
  ConvCase c;
  const int64_t v[16] = {N, C, H, W, O, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], relu, 0};
  std::copy(v, v + 16, c.shape);
  c.inv = std::uniform_real_distribution<float>(2.0f, 40.0f)(rng), c.zp = int32_t(pick(-128, 127));
  std::normal_distribution<float> normal(0.0f, 1.5f);
  for (int64_t k = 0; k < N * C * H * W; ++k) c.x.push_back(pick(0, 60) == 0 ? NAN : normal(rng));
  const int64_t taps = g[0] * g[1];
  c.w.resize(size_t(O * C * taps));
  for (int8_t& w : c.w) w = int8_t(pick(-128, 127));
  for (int64_t o = 0; o < O; ++o) {
    int32_t sum = 0;
    for (int64_t k = 0; k < C * taps; ++k) sum += c.w[size_t(o * C * taps + k)];
    c.wsum.push_back(sum);
  }
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t o = 0; o < O; ++o) c.scale.push_back(1e-4f * u(rng) + 2e-5f), c.bias.push_back(u(rng));
  auto q = [&](int64_t n, int64_t ch, int64_t y, int64_t xx) {
    if (y < 0 || y >= H || xx < 0 || xx >= W) return c.zp;
    float t = c.x[size_t(((n * C + ch) * H + y) * W + xx)] * c.inv;
    if (std::isnan(t)) t = 0.0f;
    t = std::min(std::max(t, -256.0f), 256.0f);
    return std::min(127, std::max(-128, int32_t(std::rint(t)) + c.zp));
  };
  const int64_t oh = (H + 2 * g[4] - g[0]) / g[2] + 1, ow = (W + 2 * g[5] - g[1]) / g[3] + 1;
  std::vector<float> z(size_t(N * O * oh * ow));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t xx = 0; xx < ow; ++xx) {
          int32_t acc = 0;
          for (int64_t ch = 0; ch < C; ++ch)
            for (int64_t ky = 0; ky < g[0]; ++ky)
              for (int64_t kx = 0; kx < g[1]; ++kx)
                acc += int32_t(c.w[size_t(((o * C + ch) * g[0] + ky) * g[1] + kx)]) *
                       (q(n, ch, y * g[2] + ky - g[4], xx * g[3] + kx - g[5]) - c.zp);
          const float t = static_cast<float>(acc) * c.scale[size_t(o)] + c.bias[size_t(o)];
          z[size_t(((n * O + o) * oh + y) * ow + xx)] = relu ? (t > 0.0f ? t : 0.0f) : t;
        }
  if (g[6] == 1 && g[7] == 1) {
    c.want = z;
    return c;
  }
  const int64_t ph = (oh + 2 * g[8] - g[6]) / g[7] + 1, pw = (ow + 2 * g[8] - g[6]) / g[7] + 1;
  for (int64_t p = 0; p < N * O; ++p)
    for (int64_t i2 = 0; i2 < ph; ++i2)
      for (int64_t j = 0; j < pw; ++j) {
        float m = -INFINITY;
        for (int64_t y = i2 * g[7] - g[8]; y < i2 * g[7] - g[8] + g[6]; ++y)
          for (int64_t xx = j * g[7] - g[8]; xx < j * g[7] - g[8] + g[6]; ++xx)
            if (y >= 0 && y < oh && xx >= 0 && xx < ow && z[size_t((p * oh + y) * ow + xx)] > m)
              m = z[size_t((p * oh + y) * ow + xx)];
        c.want.push_back(m);
      }
  return c;
}

std::string check_conv_case(const ConvCase& c) {
  std::vector<float> y(c.want.size(), -7.0f);
  if (const char* err = bidrn_int8_conv2d(c.shape, c.x.data(), c.w.data(), c.wsum.data(), c.scale.data(),
                                          c.bias.data(), c.inv, c.zp, y.data()))
    return err;
  for (size_t i = 0; i < y.size(); ++i)
    if (!same_float(y[i], c.want[i])) return "int8 conv output " + std::to_string(i) + " differs";
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  std::string expect;
  int cases = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--expect-path") == 0) expect = argv[i + 1];
    else if (std::strcmp(argv[i], "--cases") == 0) cases = std::atoi(argv[i + 1]);
  }
  const std::string dispatched = bidrn_kernels_active_path();
  std::printf("dispatched path: %s (supported: %s)\n", dispatched.c_str(), bidrn_kernels_supported_paths());
  int failures = 0;
  if (!expect.empty() && expect != dispatched) {
    std::printf("FAIL: expected dispatch to %s\n", expect.c_str());
    ++failures;
  }
  std::mt19937 rng(20261121);
  std::vector<Case> all;
  std::vector<std::vector<int32_t>> wants;
  for (int i = 0; i < cases; ++i) {
    Case c = random_case(rng, i);
    while (bidrn::check_shape(c.s)) c = random_case(rng, i);  // e.g. a transposed conv padded to nothing
    all.push_back(c);
    wants.push_back(naive(all.back()));
  }
  std::vector<BranchCase> branch_cases;
  for (int i = 0; i < cases / 4 + 1; ++i) branch_cases.push_back(random_branch_case(rng, i));
  std::vector<PointwiseCase> pointwise_cases;
  for (int i = 0; i < cases / 4 + 1; ++i) pointwise_cases.push_back(random_pointwise_case(rng, i));
  std::vector<DeconvCase> deconv_cases;
  for (int i = 0; i < cases / 8 + 4; ++i) deconv_cases.push_back(random_deconv_case(rng, i));
  std::vector<ConvCase> conv_cases;
  for (int i = 0; i < cases / 8 + 4; ++i) conv_cases.push_back(random_conv_case(rng, i));
  for (bidrn::Path p : bidrn::kPathsBestFirst) {
    if (!bidrn::set_active_path(p)) continue;
    int bad = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      const std::string err = check(all[i], wants[i]);
      if (!err.empty() && bad++ < 3) {
        const ConvShape& s = all[i].s;
        std::printf("  %s case %zu: %s (N%lld C%lld %lldx%lld -> O%lld %lldx%lld k%lldx%lld s%lldx%lld p%lldx%lld%s)\n",
                    bidrn::path_name(p), i, err.c_str(), (long long)s.batch, (long long)s.in_channels,
                    (long long)s.in_h, (long long)s.in_w, (long long)s.out_channels, (long long)s.out_h,
                    (long long)s.out_w, (long long)s.kernel_h, (long long)s.kernel_w, (long long)s.stride_h,
                    (long long)s.stride_w, (long long)s.pad_h, (long long)s.pad_w, s.transposed ? " transposed" : "");
      }
    }
    std::mt19937 fused_rng(7);  // the same fused inputs on every path
    int fused_bad = 0, branch_bad = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      if (all[i].s.transposed) continue;
      const std::string err = check_fused(all[i], wants[i], fused_rng);
      if (!err.empty() && fused_bad++ < 3) std::printf("  %s case %zu: %s\n", bidrn::path_name(p), i, err.c_str());
    }
    for (size_t i = 0; i < branch_cases.size(); ++i) {
      const std::string err = check_branches(branch_cases[i], i % 2 == 0);
      if (!err.empty() && branch_bad++ < 3) std::printf("  %s branch case %zu (k %lld, C %lld -> O %lld, %lldx%lld): %s\n",
                                                        bidrn::path_name(p), i, (long long)branch_cases[i].k,
                                                        (long long)branch_cases[i].s.in_channels,
                                                        (long long)branch_cases[i].s.out_channels,
                                                        (long long)branch_cases[i].s.out_h,
                                                        (long long)branch_cases[i].s.out_w, err.c_str());
    }
    int pointwise_bad = 0;
    for (size_t i = 0; i < pointwise_cases.size(); ++i) {
      const std::string err = check_pointwise_case(pointwise_cases[i]);
      const int64_t* v = pointwise_cases[i].shape;
      if (!err.empty() && pointwise_bad++ < 3)
        std::printf("  %s int8 pointwise case %zu (N%lld C%lld %lldx%lld -> O%lld s%lldx%lld): %s\n",
                    bidrn::path_name(p), i, (long long)v[0], (long long)v[1], (long long)v[2], (long long)v[3],
                    (long long)v[4], (long long)v[5], (long long)v[6], err.c_str());
    }
    int deconv_bad = 0;
    for (size_t i = 0; i < deconv_cases.size(); ++i) {
      const std::string err = check_deconv_case(deconv_cases[i]);
      const int64_t* v = deconv_cases[i].shape;
      if (!err.empty() && deconv_bad++ < 3)
        std::printf("  %s int8 deconv case %zu (N%lld C%lld %lldx%lld -> O%lld k%lld s%lld p%lld): %s\n",
                    bidrn::path_name(p), i, (long long)v[0], (long long)v[1], (long long)v[2], (long long)v[3],
                    (long long)v[4], (long long)v[5], (long long)v[6], (long long)v[7], err.c_str());
    }
    int conv_bad = 0;
    for (size_t i = 0; i < conv_cases.size(); ++i) {
      const std::string err = check_conv_case(conv_cases[i]);
      const int64_t* v = conv_cases[i].shape;
      if (!err.empty() && conv_bad++ < 3)
        std::printf("  %s int8 conv case %zu (N%lld C%lld %lldx%lld -> O%lld k%lldx%lld s%lldx%lld p%lldx%lld pool %lld/%lld/%lld): %s\n",
                    bidrn::path_name(p), i, (long long)v[0], (long long)v[1], (long long)v[2], (long long)v[3],
                    (long long)v[4], (long long)v[5], (long long)v[6], (long long)v[7], (long long)v[8],
                    (long long)v[9], (long long)v[10], (long long)v[11], (long long)v[12], (long long)v[13],
                    err.c_str());
    }
    bad += fused_bad + branch_bad + pointwise_bad + deconv_bad + conv_bad;
    std::printf("%s: %s (%d of %zu cases differ, fused epilogue %d, branches %d of %zu, int8 pointwise %d of %zu, "
                "int8 deconv %d of %zu, int8 conv %d of %zu)\n",
                bidrn::path_name(p), bad ? "FAIL" : "bit-exact",
                bad - fused_bad - branch_bad - pointwise_bad - deconv_bad - conv_bad, all.size(), fused_bad, branch_bad,
                branch_cases.size(), pointwise_bad, pointwise_cases.size(), deconv_bad, deconv_cases.size(), conv_bad,
                conv_cases.size());
    failures += bad;
  }
  return failures ? 1 : 0;
}
