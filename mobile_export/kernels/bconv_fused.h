// The in-register epilogue of the 8-pixel-block paths (AVX2, NEON), written once over an ISA's vector ops.
// For each output channel the strip's pixel blocks are swept in order, so every float stream (output,
// residual, partial, shortcut) is one contiguous run per channel; a block's popcounts go from the count
// straight into the epilogue and the store without leaving the registers:
//   acc = k_bits - 2 r - corr[o][mask id];  y = acc * scale + bias (mul then add, as PyTorch);
//   RPReLU (eq. 6); y = y + Hardtanh(residual) (or its 2 x 2 average, DScR's eq. 8); y = partial + y;
//   y = y * post_scale + post_bias; y = y + shortcut; store.
// FDR's branches (eq. 10) run the same way, K branches per block, summed in the eager order.
// Against the per-tile integer buffer and scalar epilogue (finish_tile, kept for the other outputs) this
// made the AVX2 1 x 1 layers 5-10x faster (docs/kernels.md).
//
// An ISA unit provides `struct Isa` with:
//   F, I                          8 floats, 8 int32 (one pixel block)
//   Block                         what the epilogue needs about one block; describe(job, first, live, block)
//   count<N, KW>(a, w, k_words, r)  popcount(row a[n] xor w[n]) per pixel for N rows (KW > 0: k_words fixed)
//   store_int(p, r)               8 int32 (the register tile's counts)
//   Corr, corr_row(row), acc(r, k_bits, block, corr)   k_bits - 2 r - corr[o][id] (the correction on border
//                                 blocks only)
//   set, set_int, to_float, add, mul, rprelu(y, beta, gamma, zeta), clamp(v, lo, hi)
//   load(p, block), store(p, v, block)   the block's live lanes
//   pooled(block, res, residual_w, lo, hi)  DScR's pooled residual;  prefetch(p) a hint for p's line
// Like bconv_internal.h, everything here is in an anonymous namespace: one copy per ISA unit.
#pragma once

#include <cmath>

#include "bconv_internal.h"

namespace bidrn {
namespace {

// The features of a channel_run instance: fixed at compile time (the combinations BiDRN's ops use: no
// per-block tests, fewer live registers), or kRuntime: read from the job (DScR's pooled residual, a partial
// sum, any other combination).
enum Feature : unsigned { kRprelu = 1, kResidual = 2, kPost = 4, kShortcut = 8, kRuntime = 16 };

// Word counts fixed at compile time: the 1 x 1 convs of 64, 128, 256 and 512 channels (no word loop, no
// spilled accumulators) and the 3 x 3 convs of 64 and 128 (unrolled: 4 % fewer instructions); 0 = read
// from the job.
inline int fixed_words(int64_t k_words) {
  return k_words == 1 || k_words == 2 || k_words == 4 || k_words == 8 || k_words == 9 || k_words == 18 ? int(k_words) : 0;
}

// Blocks counted together in channel_run (sharing the broadcast weight words).
constexpr int kChannelBlocks = 2;

// channel_run's KW for counts computed beforehand (the AVX2 lookup-table count, bconv_avx2.cpp): `a` is then
// the channel's counts, uint16 per pixel in block order, read through Isa::load_counts.
constexpr int kFromCounts = -1;

template <class Isa>
struct Fused {
  using F = typename Isa::F;
  using I = typename Isa::I;
  using Block = typename Isa::Block;

  // One output channel's constants, broadcast once per channel (the stores could alias the job's arrays,
  // so the compiler would otherwise read them again after every store).
  struct Channel {
    F scale, bias, beta, gamma, zeta;
    Channel() = default;
    Channel(const TileJob& j, int64_t o) {
      const int64_t O = j.out_channels;
      const bool rprelu = j.ep.rprelu != nullptr;
      scale = Isa::set(j.ep.scale[o]), bias = Isa::set(j.ep.bias[o]);
      beta = Isa::set(rprelu ? j.ep.rprelu[o] : 0.0f);
      gamma = Isa::set(rprelu ? j.ep.rprelu[O + o] : 0.0f);
      zeta = Isa::set(rprelu ? j.ep.rprelu[2 * O + o] : 0.0f);
    }
    F operator()(I acc, bool rprelu) const {
      const F y = Isa::add(Isa::mul(Isa::to_float(acc), scale), bias);
      return rprelu ? Isa::rprelu(y, beta, gamma, zeta) : y;
    }
  };

  static void describe(const TileJob& j, int64_t b0, int64_t b1, Block* blocks) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t first = b * kLanes;
      Isa::describe(j, first, int(j.pixels - first < kLanes ? j.pixels - first : kLanes), blocks[b - b0]);
    }
  }

  // Output channel o over the strip's blocks (`first` = its first pixel, `a` its im2col rows); rc = the
  // residual channel o mod R.
  template <unsigned Feat, int KW>
  __attribute__((noinline)) static void channel_run(const TileJob& j, const Block* blocks, int64_t n_blocks,
                                                    const uint64_t* a, int64_t first, int64_t o, int64_t rc) {
    constexpr bool runtime = (Feat & kRuntime) != 0;
    const bool rprelu = runtime ? j.ep.rprelu != nullptr : (Feat & kRprelu) != 0;
    const bool residual = runtime ? j.residual != nullptr : (Feat & kResidual) != 0;
    const bool post = runtime ? j.ep.post != nullptr : (Feat & kPost) != 0;
    const bool with_shortcut = runtime ? j.shortcut != nullptr : (Feat & kShortcut) != 0;
    const bool pooled = runtime && j.ep.residual_pool == 2;
    const bool with_partial = runtime && j.partial != nullptr;
    const int64_t a_stride = j.k_words * kLanes, k_words = j.k_words, plane = j.out_plane, O = j.out_channels;
    const uint64_t* w = j.w + o * j.ldw;
    const Channel channel(j, o);
    const I k_bits = Isa::set_int(j.k_bits);
    const F post_scale = Isa::set(post ? j.ep.post[o] : 1.0f), post_bias = Isa::set(post ? j.ep.post[O + o] : 0.0f);
    // Hardtanh bounds; +-inf make the clamp the identity (NaN still passes).
    const F lo = Isa::set(j.ep.clamp_residual ? -1.0f : -INFINITY), hi = Isa::set(j.ep.clamp_residual ? 1.0f : INFINITY);
    const typename Isa::Corr corr = Isa::corr_row(j.corr + o * j.corr_stride);
    const float* res = residual ? j.residual + rc * j.res_plane : nullptr;
    const float* flat_res = residual && !pooled ? res + first : nullptr;
    const float* partial = with_partial ? j.partial + o * plane + first : nullptr;
    const float* shortcut = with_shortcut ? j.shortcut + o * plane + first : nullptr;
    float* out = static_cast<float*>(j.out) + o * plane + first;
    const auto finish = [&](const Block& t, I r, int64_t at) {
      F y = channel(Isa::acc(r, k_bits, t, corr), rprelu);
      if (residual) {
        y = Isa::add(y, pooled ? Isa::pooled(t, res, j.ep.residual_w, lo, hi)
                               : Isa::clamp(Isa::load(flat_res + at, t), lo, hi));
      }
      if (with_partial) y = Isa::add(Isa::load(partial + at, t), y);
      if (post) y = Isa::add(Isa::mul(y, post_scale), post_bias);
      if (with_shortcut) y = Isa::add(y, Isa::load(shortcut + at, t));
      Isa::store(out + at, y, t);
    };
    int64_t b = 0;
    for (; b + kChannelBlocks <= n_blocks; b += kChannelBlocks) {
      const int64_t at = b * kLanes;
      if (with_shortcut) Isa::prefetch(shortcut + at + kPrefetchAhead);
      if (flat_res) Isa::prefetch(flat_res + at + kPrefetchAhead);
      if (with_partial) Isa::prefetch(partial + at + kPrefetchAhead);
      const uint64_t* rows[kChannelBlocks];
      const uint64_t* weights[kChannelBlocks];
      for (int m = 0; m < kChannelBlocks; ++m) rows[m] = a + (b + m) * a_stride, weights[m] = w;
      I r[kChannelBlocks];
      if constexpr (KW == kFromCounts) {
        for (int m = 0; m < kChannelBlocks; ++m) r[m] = Isa::load_counts(reinterpret_cast<const uint16_t*>(a) + at + m * kLanes);
      } else {
        Isa::template count<kChannelBlocks, KW>(rows, weights, k_words, r);
      }
      for (int m = 0; m < kChannelBlocks; ++m) finish(blocks[b + m], r[m], at + m * kLanes);
    }
    for (; b < n_blocks; ++b) {
      const uint64_t* rows[1] = {a + b * a_stride};
      const uint64_t* weights[1] = {w};
      I r[1];
      if constexpr (KW == kFromCounts) {
        r[0] = Isa::load_counts(reinterpret_cast<const uint16_t*>(a) + b * kLanes);
      } else {
        Isa::template count<1, KW>(rows, weights, k_words, r);
      }
      finish(blocks[b], r[0], b * kLanes);
    }
  }

  using ChannelRun = void (*)(const TileJob&, const Block*, int64_t, const uint64_t*, int64_t, int64_t, int64_t);

  template <unsigned Feat>
  static ChannelRun channel_run_words(int64_t k_words) {
    if (k_words == kFromCounts) return channel_run<Feat, kFromCounts>;
    switch (fixed_words(k_words)) {
      case 1: return channel_run<Feat, 1>;
      case 2: return channel_run<Feat, 2>;
      case 4: return channel_run<Feat, 4>;
      case 8: return channel_run<Feat, 8>;
      case 9: return channel_run<Feat, 9>;
      case 18: return channel_run<Feat, 18>;
      default: return channel_run<Feat, 0>;
    }
  }

  // The instance for a job: an LCR module with or without the block residual, a plain conv with or
  // without RPReLU fixed at compile time; anything else read from the job.
  // words = j.k_words, or kFromCounts for the instance that reads counts computed beforehand (only an ISA
  // unit with Isa::load_counts asks for it).
  static ChannelRun channel_run_for(const TileJob& j, int64_t words) {
    const bool special = j.ep.residual_pool == 2 || j.partial;
    const unsigned f = (j.ep.rprelu ? kRprelu : 0) | (j.residual ? kResidual : 0) | (j.ep.post ? kPost : 0) |
                       (j.shortcut ? kShortcut : 0);
    if (!special && f == (kRprelu | kResidual | kPost | kShortcut))
      return channel_run_words<kRprelu | kResidual | kPost | kShortcut>(words);
    if (!special && f == (kRprelu | kResidual | kPost)) return channel_run_words<kRprelu | kResidual | kPost>(words);
    if (!special && f == kRprelu) return channel_run_words<kRprelu>(words);
    if (!special && f == 0) return channel_run_words<0>(words);
    return words == kFromCounts ? channel_run<kRuntime, kFromCounts> : channel_run<kRuntime, 0>;
  }

  // Whether tile() finishes this job in registers (else the register tile and the scalar epilogue).
  static bool fused(const TileJob& j) { return j.output == Output::kFloat && !j.dest && j.corr_stride == 16; }

  // Kernels::tile for the float NCHW output of a plain conv whose correction rows hold at most 16 masks
  // (9 for a 3 x 3 conv); false when the job is not such (the caller's register tile and scalar epilogue
  // take it).
  static bool tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
    if (!fused(j)) return false;
    Block blocks[kMaxStripTiles * kTileBlocks];
    describe(j, b0, b1, blocks);
    const uint64_t* a = j.a + b0 * j.k_words * kLanes;
    const ChannelRun run = channel_run_for(j, j.k_words);
    // Residual channel of output o is o mod R: one division per strip, then wrap by subtraction.
    const int64_t R = j.ep.residual_channels;
    int64_t rc = j.residual ? o0 % R : 0;
    for (int64_t o = o0; o < o1; ++o, rc = j.residual && rc + 1 == R ? 0 : rc + 1) run(j, blocks, b1 - b0, a, b0 * kLanes, o, rc);
    return true;
  }

  // FDR's K branches at once, one output channel at a time, block by block: the K branches' counts, then
  // b_i = RPReLU_i(scale_i acc_i + bias_i) + Hardtanh(residual chunk i), summed as out = b_0, then out + b_i in
  // the branch order, then the last branch's post affine and shortcut, and one store. An unpadded 1 x 1
  // conv: no padding correction.
  template <int K, int KW>
  __attribute__((noinline)) static void branch_run(const TileJob* jobs, const Block* blocks, int64_t n_blocks,
                                                   int64_t block0, int64_t o, int64_t rc,
                                                   const uint16_t* const* counts = nullptr) {
    const TileJob& last = jobs[K - 1];
    const int64_t a_stride = last.k_words * kLanes, k_words = last.k_words, plane = last.out_plane;
    const int64_t O = last.out_channels, first = block0 * kLanes;
    const I k_bits = Isa::set_int(last.k_bits);
    const bool post = last.ep.post != nullptr, rprelu = last.ep.rprelu != nullptr;
    const F lo = Isa::set(last.ep.clamp_residual ? -1.0f : -INFINITY);
    const F hi = Isa::set(last.ep.clamp_residual ? 1.0f : INFINITY);
    const typename Isa::Corr no_corr{};
    const uint64_t* w[K];
    const uint64_t* a[K];
    const float* res[K];
    Channel channel[K];
    for (int i = 0; i < K; ++i) {
      const TileJob& j = jobs[i];
      channel[i] = Channel(j, o);
      w[i] = j.w + o * j.ldw;
      a[i] = j.a + block0 * a_stride;
      res[i] = j.residual ? j.residual + rc * j.res_plane + first : nullptr;
    }
    const F post_scale = Isa::set(post ? last.ep.post[o] : 1.0f), post_bias = Isa::set(post ? last.ep.post[O + o] : 0.0f);
    const float* shortcut = last.shortcut ? last.shortcut + o * plane + first : nullptr;
    float* out = static_cast<float*>(last.out) + o * plane + first;
    for (int64_t b = 0; b < n_blocks; ++b) {
      const Block& t = blocks[b];
      const int64_t at = b * kLanes;
      if (shortcut && (b & 1) == 0) Isa::prefetch(shortcut + at + kPrefetchAhead);
      I r[K];
      if constexpr (KW == kFromCounts) {  // counts[i]: branch i's counts of this channel, block order
        for (int i = 0; i < K; ++i) r[i] = Isa::load_counts(counts[i] + at);
      } else {
        const uint64_t* rows[K];
        for (int i = 0; i < K; ++i) rows[i] = a[i] + b * a_stride;
        Isa::template count<K, KW>(rows, w, k_words, r);
      }
      F sum{};
#pragma GCC unroll 4
      for (int i = 0; i < K; ++i) {
        F y = channel[i](Isa::acc(r[i], k_bits, t, no_corr), rprelu);
        if (res[i]) y = Isa::add(y, Isa::clamp(Isa::load(res[i] + at, t), lo, hi));
        sum = i == 0 ? y : Isa::add(sum, y);  // out = b_0, then out = out + b_i (the eager order)
      }
      if (post) sum = Isa::add(Isa::mul(sum, post_scale), post_bias);
      if (shortcut) sum = Isa::add(sum, Isa::load(shortcut + at, t));
      Isa::store(out + at, sum, t);
    }
  }

  using BranchRun = void (*)(const TileJob*, const Block*, int64_t, int64_t, int64_t, int64_t, const uint16_t* const*);

  // k_words, or kFromCounts: the instance reading counts computed beforehand (Isa::load_counts).
  template <int K>
  static BranchRun branch_run_words(int64_t k_words) {
    if (k_words == kFromCounts) return branch_run<K, kFromCounts>;
    switch (fixed_words(k_words)) {
      case 1: return branch_run<K, 1>;
      case 2: return branch_run<K, 2>;
      case 4: return branch_run<K, 4>;
      case 8: return branch_run<K, 8>;
      default: return branch_run<K, 0>;
    }
  }

  // Kernels::branch_tile.
  static void branch_tile(const TileJob* jobs, int k, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
    Block blocks[kMaxStripTiles * kTileBlocks];
    describe(jobs[0], b0, b1, blocks);
    const int64_t words = jobs[0].k_words;
    const BranchRun run = branch_run_for(k, words);
    const int64_t R = jobs[0].ep.residual_channels;
    int64_t rc = jobs[0].residual ? o0 % R : 0;
    for (int64_t o = o0; o < o1; ++o, rc = jobs[0].residual && rc + 1 == R ? 0 : rc + 1)
      run(jobs, blocks, b1 - b0, b0, o, rc, nullptr);
  }

  static BranchRun branch_run_for(int k, int64_t words) {
    return k == 2 ? branch_run_words<2>(words) : k == 3 ? branch_run_words<3>(words) : branch_run_words<4>(words);
  }
};

// The register tile of the other outputs (raw accumulators, packed signs, a transposed conv's scattered
// pixels, more than 16 padding masks): one block x nb <= 4 channels through Isa::count, then the shared
// scalar epilogue (tile_by_blocks, finish_tile).
template <class Isa, int NB>
void count_micro(const uint64_t* a, const uint64_t* w, int64_t ldw, int64_t k_words, int32_t* r) {
  const uint64_t* rows[NB];
  const uint64_t* weights[NB];
  for (int n = 0; n < NB; ++n) rows[n] = a, weights[n] = w + n * ldw;
  typename Isa::I counts[NB];
  Isa::template count<NB, 0>(rows, weights, k_words, counts);
  for (int n = 0; n < NB; ++n) Isa::store_int(r + n * kTilePixels, counts[n]);
}

template <class Isa>
void register_tile(const TileJob& j, int64_t b0, int64_t b1, int64_t o0, int64_t o1) {
  static constexpr BlockMicro micro[5] = {nullptr, count_micro<Isa, 1>, count_micro<Isa, 2>, count_micro<Isa, 3>,
                                          count_micro<Isa, 4>};
  tile_by_blocks<4>(j, b0, b1, o0, o1, micro);
}

}  // namespace
}  // namespace bidrn
