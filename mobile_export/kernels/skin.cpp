// bidrn::skin.out: linear blend skinning (SMPL-X paper Eq. 1, v' = sum_k w_k (R_k v + t_k)) with the skinning
// weights as a sparse matrix (CSR: per vertex its joints and weights), as mobile_export.ops.skin_reference
// computes it. A body model's vertices take few joints (the embedded Anny model: 1.9 of 55 on average, at
// most 7), so the dense V x J blend of the eager layer is mostly multiplications by zero. In ExecuTorch that
// dense form (an XNNPACK fully connected layer of 12 rows over the 13,718 x 55 weights, then a transpose,
// the x / y / z slices and broadcast multiplies of the vertex layout) took about 1.5 ms a call; this loop
// reads each vertex's 2 or so transforms and writes its point (about 60 us).
//
// Rounding as the reference: per vertex the products w * R_k (and w * t_k) are added to zero in the CSR
// order, then out_r = ((R[r][0] x + R[r][1] y) + R[r][2] z) + t[r], every product and sum rounded to float32
// (the library is built without FMA contraction), so the two agree bit for bit.
#define ET_EVENT_TRACER_ENABLED 1  // profiling scope for ETDump, as in et_ops.cpp
#include <executorch/runtime/core/event_tracer_hooks.h>
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include <array>
#include <cstdint>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace bidrn {

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::aten::Tensor;
using executorch::runtime::KernelRuntimeContext;

namespace {

// One vertex: its blended rows m (3 x 4, row r = R[r][0..2], t[r]) applied to (x, y, z, 1), each output
// summed left to right: ((R[r][0] x + R[r][1] y) + R[r][2] z) + t[r].
#if defined(__SSE2__)
inline void apply(__m128 m0, __m128 m1, __m128 m2, const float* pv, float* ov) {
  const __m128 point = _mm_setr_ps(pv[0], pv[1], pv[2], 1.0f);
  __m128 c0 = _mm_mul_ps(m0, point), c1 = _mm_mul_ps(m1, point), c2 = _mm_mul_ps(m2, point), c3 = _mm_setzero_ps();
  _MM_TRANSPOSE4_PS(c0, c1, c2, c3);  // c_i holds term i of the three rows
  const __m128 sum = _mm_add_ps(_mm_add_ps(_mm_add_ps(c0, c1), c2), c3);
  _mm_storel_pi(reinterpret_cast<__m64*>(ov), sum);  // exactly three floats: the rows go out of order
  _mm_store_ss(ov + 2, _mm_movehl_ps(sum, sum));
}
#endif

}  // namespace

// points B x V x 3, rot B x J x 3 x 3, trans B x J x 3 (float32); the weights (float32) as a CSR matrix (int32
// indices) whose rows are
// vertices in the order `vertices` (int32, V): row i, vertex vertices[i], has joints[offsets[i] .. offsets[i + 1])
// with those weights. The exporter orders the rows by their entry count (SMPLXLayer.sparse_skinning): a vertex
// takes 1 to 7 joints, and in vertex order the inner loop's length is a coin toss for the branch predictor
// (105 vs 63 us in a C++ harness). out B x V x 3.
Tensor& skin_out(KernelRuntimeContext& ctx, const Tensor& points, const Tensor& rot, const Tensor& trans,
                 const Tensor& vertices, const Tensor& offsets, const Tensor& joints, const Tensor& weights,
                 Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, points.scalar_type() == ScalarType::Float && points.dim() == 3 && points.size(2) == 3,
                      InvalidArgument, out, "points must be float32 B x V x 3");
  const int64_t b = points.size(0), v = points.size(1);
  ET_KERNEL_CHECK_MSG(ctx, rot.scalar_type() == ScalarType::Float && rot.dim() == 4 && rot.size(0) == b &&
                               rot.size(2) == 3 && rot.size(3) == 3,
                      InvalidArgument, out, "rot must be float32 B x J x 3 x 3");
  const int64_t j = rot.size(1);
  ET_KERNEL_CHECK_MSG(ctx, trans.scalar_type() == ScalarType::Float && trans.dim() == 3 && trans.size(0) == b &&
                               trans.size(1) == j && trans.size(2) == 3,
                      InvalidArgument, out, "trans must be float32 B x J x 3");
  ET_KERNEL_CHECK_MSG(ctx, vertices.scalar_type() == ScalarType::Int && vertices.dim() == 1 && vertices.size(0) == v &&
                               offsets.scalar_type() == ScalarType::Int && offsets.dim() == 1 &&
                               offsets.size(0) == v + 1,
                      InvalidArgument, out, "vertices must be int32 of V and offsets int32 of V + 1");
  ET_KERNEL_CHECK_MSG(ctx, joints.scalar_type() == ScalarType::Int && joints.dim() == 1 &&
                               weights.scalar_type() == ScalarType::Float && weights.dim() == 1 &&
                               weights.size(0) == joints.size(0),
                      InvalidArgument, out, "joints (int32) and weights (float32) must be 1-D of the same length");
  const int32_t* vid = vertices.const_data_ptr<int32_t>();
  const int32_t* off = offsets.const_data_ptr<int32_t>();
  const int32_t* jt = joints.const_data_ptr<int32_t>();
  const int64_t nnz = joints.size(0);
  ET_KERNEL_CHECK_MSG(ctx, off[0] == 0 && off[v] == nnz, InvalidArgument, out,
                      "offsets must rise from 0 to len(joints)");
  std::array<SizesType, 3> sizes{SizesType(b), SizesType(v), SizesType(3)};
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::resize_tensor(out, {sizes.data(), 3}) == executorch::runtime::Error::Ok &&
                               out.scalar_type() == ScalarType::Float,
                      InvalidArgument, out, "out must be float32 B x V x 3");
  executorch::runtime::internal::EventTracerProfileOpScope scope(ctx.internal_event_tracer(), "bidrn::skin");
  const float* r_all = rot.const_data_ptr<float>();
  const float* t_all = trans.const_data_ptr<float>();
  const float* w = weights.const_data_ptr<float>();
  // Per joint its transform as three rows (R[r][0], R[r][1], R[r][2], t[r]): 12 contiguous floats, blended as
  // three 4-lane vectors.
  std::vector<float> rows(size_t(j) * 12);
  // `vertices` must be a permutation of [0, V): a repeated vertex would leave another one's output unwritten.
  // Checked on the first image as the rows are read (a bit per vertex).
  std::vector<uint64_t> seen(size_t((v + 63) / 64), 0);
  bool bad = false;
  for (int64_t bi = 0; bi < b && !bad; ++bi) {
    for (int64_t ji = 0; ji < j; ++ji)
      for (int r = 0; r < 3; ++r) {
        for (int c = 0; c < 3; ++c) rows[size_t(ji * 12 + r * 4 + c)] = r_all[(bi * j + ji) * 9 + r * 3 + c];
        rows[size_t(ji * 12 + r * 4 + 3)] = t_all[(bi * j + ji) * 3 + r];
      }
    const float* p = points.const_data_ptr<float>() + bi * v * 3;
    float* o = out.mutable_data_ptr<float>() + bi * v * 3;
    for (int64_t i = 0; i < v; ++i) {
      // The rest of the structure is checked as it is read (an index out of range would read or write outside
      // the tensors): a separate pass over the 320 KB of indices, cold in L3 by the time the body layer runs,
      // took about 80 us in the network.
      if (bad || static_cast<uint32_t>(vid[i]) >= static_cast<uint64_t>(v) || off[i + 1] < off[i] || off[i + 1] > nnz) {
        bad = true;
        break;
      }
      if (bi == 0) {  // branch-free: a repeated vertex only marks the call bad
        uint64_t& word = seen[size_t(vid[i]) >> 6];
        const uint64_t bit = uint64_t(1) << (vid[i] & 63);
        bad |= (word & bit) != 0;
        word |= bit;
      }
      const float* pv = p + int64_t(vid[i]) * 3;
      float* ov = o + int64_t(vid[i]) * 3;
#if defined(__SSE2__)
      __m128 m0 = _mm_setzero_ps(), m1 = _mm_setzero_ps(), m2 = _mm_setzero_ps();
      for (int64_t k = off[i]; k < off[i + 1]; ++k) {  // products added to zero in CSR order
        const __m128 wk = _mm_set1_ps(w[k]);
        bad |= static_cast<uint32_t>(jt[k]) >= static_cast<uint64_t>(j);
        const float* rk = rows.data() + int64_t(bad ? 0 : jt[k]) * 12;
        m0 = _mm_add_ps(m0, _mm_mul_ps(wk, _mm_loadu_ps(rk)));
        m1 = _mm_add_ps(m1, _mm_mul_ps(wk, _mm_loadu_ps(rk + 4)));
        m2 = _mm_add_ps(m2, _mm_mul_ps(wk, _mm_loadu_ps(rk + 8)));
      }
      apply(m0, m1, m2, pv, ov);
#else  // the same sums (NEON vectorises the 12-float loop)
      float m[12] = {0};
      for (int64_t k = off[i]; k < off[i + 1]; ++k) {
        const float wk = w[k];
        bad |= static_cast<uint32_t>(jt[k]) >= static_cast<uint64_t>(j);
        const float* rk = rows.data() + int64_t(bad ? 0 : jt[k]) * 12;
        for (int c = 0; c < 12; ++c) m[c] += wk * rk[c];
      }
      for (int r = 0; r < 3; ++r) ov[r] = m[4 * r] * pv[0] + m[4 * r + 1] * pv[1] + m[4 * r + 2] * pv[2] + m[4 * r + 3];
#endif
    }
  }
  ET_KERNEL_CHECK_MSG(ctx, !bad, InvalidArgument, out,
                      "vertices must be a permutation of [0, V) (each index once), offsets rise and every joint "
                      "index lie in [0, J)");
  return out;
}

}  // namespace bidrn

EXECUTORCH_LIBRARY(bidrn, "skin.out", bidrn::skin_out);
