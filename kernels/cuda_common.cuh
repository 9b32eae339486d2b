// Small device helpers shared by the CUDA kernels (no host API here).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels::detail {


__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ const __nv_bfloat16* as_bf16(const uint16_t* p) {
  return reinterpret_cast<const __nv_bfloat16*>(p);
}

// Merge of two (max, sum-of-exp-relative-to-max) pairs: the log-sum-exp monoid. (-inf, 0) is its
// identity; merging in a fixed order keeps results deterministic.
// Eight bf16 values loaded as one 16-byte word -> eight floats (the unit of every vectorized load here).
__device__ __forceinline__ void bf16x8_to_float(const uint4& raw, float* out) {
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 f = __bfloat1622float2(pairs[e]);
    out[2 * e] = f.x;
    out[2 * e + 1] = f.y;
  }
}

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

// 16-byte asynchronous global->shared copy (sm_80+); `bytes` < 16 zero-fills the rest.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int bytes = 16) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// The rows one (sequence, KV head) attends to, as one virtual sequence: the selected cluster
// segments in selection order, then the dense part. Virtual row v < sparse_rows lies in segment
// s = last i with row_start[i] <= v, at physical row offsets[ids[s]] + (v - row_start[s]).
struct VirtualRows {
  const __nv_bfloat16* keys;
  const __nv_bfloat16* values;
  const __nv_bfloat16* dense_keys;
  const __nv_bfloat16* dense_values;
  const int32_t* ids;        // selected cluster ids of this (b, h)
  const int32_t* row_start;  // their virtual start rows
  const int32_t* offsets;    // fine offsets of head h
  int count;                 // selected clusters
  int sparse_rows;           // selected rows
  int dense_len;
  __device__ int total() const { return sparse_rows + dense_len; }
};

__device__ __forceinline__ VirtualRows virtual_rows(const SequenceLayerBf16& s, const Selection& sel, int b,
                                                    int h, int num_kv_heads) {
  const int bh = b * num_kv_heads + h;
  VirtualRows v;
  v.keys = as_bf16(s.keys) + h * s.head_stride;
  v.values = as_bf16(s.values) + h * s.head_stride;
  v.dense_keys = as_bf16(s.dense_keys) + h * s.dense_head_stride;
  v.dense_values = as_bf16(s.dense_values) + h * s.dense_head_stride;
  v.ids = sel.cluster_ids + static_cast<int64_t>(bh) * sel.capacity;
  v.row_start = sel.row_start + static_cast<int64_t>(bh) * sel.capacity;
  v.offsets = s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1);
  v.count = sel.counts[bh];
  v.sparse_rows = sel.rows[bh];
  v.dense_len = s.dense_len;
  return v;
}

// Segment holding virtual row v (< sparse_rows), searched in [lo, hi). Every selected segment has
// >= 1 row, so the segment of row v0 + t is at most t segments past that of v0.
__device__ __forceinline__ int find_segment(const VirtualRows& vr, int v, int lo, int hi) {
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (__ldg(vr.row_start + mid) <= v) lo = mid;
    else hi = mid;
  }
  return lo;
}

// Physical row index of virtual row v (< total()): for v < sparse_rows a row of keys/values,
// else a row of the dense part (returned as dense index, flag set).
__device__ __forceinline__ int64_t physical_row(const VirtualRows& vr, int v, int seg_hint_lo, bool& dense) {
  if (v >= vr.sparse_rows) {
    dense = true;
    return v - vr.sparse_rows;
  }
  dense = false;
  const int hi = min(vr.count, seg_hint_lo + (v - __ldg(vr.row_start + seg_hint_lo)) + 1);
  const int s = find_segment(vr, v, seg_hint_lo, hi);
  return __ldg(vr.offsets + __ldg(vr.ids + s)) + (v - __ldg(vr.row_start + s));
}

}  // namespace squeezeserve::kernels::detail
