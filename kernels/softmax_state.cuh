// The log-sum-exp state every kernel here merges (FlashInfer's state.cuh plays this role there):
// the selection's softmax denominators and the attention kernels' online softmax both combine
// (max, sum of exp relative to the max) pairs, always in a fixed order so that results are
// deterministic. Device code only.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda_common.cuh"

namespace squeezeserve::kernels::detail {

constexpr float kLog2e = 1.4426950408889634f;

// Natural-log pairs (selection): x = max of the logits, y = sum of exp(logit - x). (-inf, 0) is the
// identity of the merge (the log-sum-exp monoid).
__device__ __forceinline__ float2 lse_merge(float2 a, float2 b) {
  const float m = fmaxf(a.x, b.x);
  if (m == neg_inf()) return make_float2(m, 0.f);
  return make_float2(m, a.y * __expf(a.x - m) + b.y * __expf(b.x - m));
}

__device__ __forceinline__ float2 warp_lse_reduce(float2 v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float2 other = make_float2(__shfl_xor_sync(0xffffffffu, v.x, o), __shfl_xor_sync(0xffffffffu, v.y, o));
    v = lse_merge(v, other);
  }
  return v;
}

// The online-softmax state of one query row of attention, in log2 units (the attention kernels
// scale logits by log2(e) / sqrt(D) and use exp2): m = running max, l = sum of 2^(logit - m) (of
// the keys this thread, warp or piece has seen). The unnormalised output o = sum 2^(logit - m) v
// is rescaled by the factors these functions return.
struct SoftmaxState {
  float m, l;

  __device__ static SoftmaxState empty() { return {neg_inf(), 0.f}; }

  // Raises the max to m_new (>= m); returns the factor for the output accumulators (1 while
  // nothing has been attended).
  __device__ __forceinline__ float rescale(float m_new) {
    const float corr = m_new == neg_inf() ? 1.f : exp2f(m - m_new);
    m = m_new;
    l *= corr;
    return corr;
  }

  // Merges the state of a disjoint key set into this one; returns (keep, add): the new output is
  // keep * o + add * o_other. Merging an empty state changes nothing.
  __device__ __forceinline__ float2 merge(const SoftmaxState& other) {
    const float mx = fmaxf(m, other.m);
    if (mx == neg_inf()) return make_float2(1.f, 0.f);
    const float keep = exp2f(m - mx), add = exp2f(other.m - mx);
    l = l * keep + other.l * add;
    m = mx;
    return make_float2(keep, add);
  }

  // Weight of this state's sums relative to a common max M >= m (0 when empty).
  __device__ __forceinline__ float weight_at(float M) const { return m == neg_inf() ? 0.f : exp2f(m - M); }

  // Natural-log LSE of the attended logits; -inf when nothing was attended.
  __device__ __forceinline__ float lse() const { return l > 0.f ? (m + log2f(l)) / kLog2e : neg_inf(); }
};

}  // namespace squeezeserve::kernels::detail
