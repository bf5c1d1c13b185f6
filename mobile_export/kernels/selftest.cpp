// Stand-alone check of every kernel path against a naive convolution written straight from the
// definition (sign(0) = +1, zero padding contributes 0), on random shapes with odd channel counts,
// borders, strides and transposed convs. No ExecuTorch: it is what runs under qemu-aarch64.
//   bidrn_selftest [--expect-path NAME] [--cases N]
// Prints the dispatched path and one line per path; exits 1 on any mismatch or unexpected dispatch.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bconv.h"

namespace {

using bidrn::ConvShape;

void serial_for(int64_t n, void* context, void (*body)(void*, int64_t, int64_t)) { body(context, 0, n); }

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

float epilogue(const Case& c, int64_t o, int32_t acc) {
  const int64_t O = c.s.out_channels;
  const float y = static_cast<float>(acc) * c.scale[size_t(o)] + c.bias[size_t(o)];
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
  for (bidrn::Path p : {bidrn::Path::kAvx512, bidrn::Path::kAvx2, bidrn::Path::kNeonDot, bidrn::Path::kNeon,
                        bidrn::Path::kScalar}) {
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
    std::printf("%s: %s (%d of %zu cases differ)\n", bidrn::path_name(p), bad ? "FAIL" : "bit-exact", bad, all.size());
    failures += bad;
  }
  return failures ? 1 : 0;
}
