// The rows one (sequence, KV head) attends to, as one virtual sequence, shared by the decode and
// prefill attention kernels:
//   [0, sparse_rows)              the selected cluster segments, in selection order
//   [sparse_rows, clustered())    the pruned-cluster estimate: one key per estimated cluster
//                                 (its centroid, logit + log2 n, its mean value), when on
//   [clustered(), total())        the dense part: the window, then the request's own tokens
// Virtual row v < sparse_rows lies in selected segment s = last i with row_start[i] <= v, at
// physical row offsets[ids[s]] + (v - row_start[s]).
//
// Both kernels resolve a row's location once, in one lane, and hand it to the lanes that copy its
// 16-byte chunks as one int, the row code:
//   code >= 0            clustered row `code` of the head (a row of a selected segment)
//   kNoRow (-1)          past the range: zero-filled and masked
//   dense_code(d)        dense row d, = -2 - d                    (d < 2^29)
//   estimate_code(id)    estimated cluster id, = INT_MIN + id     (id < 2^29: fine j, or K + coarse c)
#pragma once

#include <cuda_bf16.h>

#include <climits>
#include <cstdint>

#include "kernels/cuda_common.cuh"
#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels::detail {

struct VirtualRows {
  const __nv_bfloat16* keys;
  const __nv_bfloat16* values;
  const __nv_bfloat16* dense_keys;
  const __nv_bfloat16* dense_values;
  const int32_t* ids;        // selected cluster ids of this (b, h)
  const int32_t* row_start;  // their virtual start rows
  const int32_t* offsets;    // fine offsets of head h, [K + 1]
  const uint32_t* masks;     // their member masks (Selection::member_masks; decode), null = none
  int count;                 // selected clusters
  int sparse_rows;           // selected rows
  int dense_len;
  // The estimate (est_count = 0 when off): estimated cluster ids, and head h's centroids, mean
  // values and coarse offsets that give each one's key, value and size.
  const int32_t* est_ids;
  const __nv_bfloat16* centroids;         // [K][D]
  const __nv_bfloat16* cluster_values;    // [K][D]
  const __nv_bfloat16* coarse_centroids;  // [Kc][D]
  const __nv_bfloat16* coarse_values;     // [Kc][D]
  const int32_t* coarse_offsets;          // [Kc + 1]
  // Decode, when the selection provides them (Selection::estimate_logits): each estimated
  // cluster's logit + ln n per group member, [est][est_stride]; its centroid is then not read.
  const float* est_logits;
  // A squeezed bundle's (Selection::estimate_masks; decode): the members that estimate each
  // estimated cluster, [est]; null = every query head.
  const uint32_t* est_masks;
  const float* est_log_sizes;  // its ln n per estimated cluster, [est] (Selection::estimate_log_sizes)
  int est_stride;                         // estimate_logit_stride(group)
  int num_clusters;                       // K
  int est_count;
  int window_len;  // dense rows [0, window_len) are the context window (read-ahead's top share)

  __device__ int clustered() const { return sparse_rows + est_count; }
  __device__ int total() const { return sparse_rows + est_count + dense_len; }
  // Rows of the head's context attention: the selected rows, the estimate and the window.
  __device__ int context_rows() const { return clustered() + min(max(window_len, 0), dense_len); }
};

// decode_group: the group when the estimated clusters' logits may come from
// Selection::estimate_logits (decode: only decode selections write them), else 0.
template <int D>
__device__ __forceinline__ VirtualRows virtual_rows(const SequenceLayerBf16& s, const Selection& sel, int b, int h,
                                                    int num_kv_heads, int decode_group) {
  const int bh = b * num_kv_heads + h;
  VirtualRows v;
  v.keys = as_bf16(s.keys) + h * s.head_stride;
  v.values = as_bf16(s.values) + h * s.head_stride;
  v.dense_keys = as_bf16(s.dense_keys) + h * s.dense_head_stride;
  v.dense_values = as_bf16(s.dense_values) + h * s.dense_head_stride;
  v.ids = sel.cluster_ids + static_cast<int64_t>(bh) * sel.capacity;
  v.row_start = sel.row_start + static_cast<int64_t>(bh) * sel.capacity;
  v.offsets = s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1);
  v.masks = sel.member_masks != nullptr ? sel.member_masks + static_cast<int64_t>(bh) * sel.capacity : nullptr;
  v.count = sel.counts[bh];
  v.sparse_rows = sel.rows[bh];
  v.dense_len = s.dense_len;
  v.num_clusters = s.num_clusters;
  v.window_len = s.window_len;
  const bool estimate = sel.estimated != nullptr && s.cluster_values != nullptr;
  v.est_count = estimate ? sel.estimated[bh] : 0;
  v.est_ids = estimate ? sel.estimate_ids + static_cast<int64_t>(bh) * sel.estimate_capacity : nullptr;
  v.est_masks = estimate && sel.estimate_masks != nullptr
                    ? sel.estimate_masks + static_cast<int64_t>(bh) * sel.estimate_capacity
                    : nullptr;
  v.est_log_sizes = v.est_masks != nullptr ? sel.estimate_log_sizes + static_cast<int64_t>(bh) * sel.estimate_capacity
                                           : nullptr;
  v.est_stride = estimate_logit_stride(decode_group);
  v.est_logits = estimate && decode_group > 0 && sel.estimate_logits
                     ? sel.estimate_logits + static_cast<int64_t>(bh) * sel.estimate_capacity * v.est_stride
                     : nullptr;
  v.centroids = as_bf16(s.centroids) + static_cast<int64_t>(h) * s.num_clusters * D;
  v.cluster_values = estimate ? as_bf16(s.cluster_values) + static_cast<int64_t>(h) * s.num_clusters * D : nullptr;
  const bool coarse = s.coarse_offsets != nullptr;
  v.coarse_centroids = coarse ? as_bf16(s.coarse_centroids) + static_cast<int64_t>(h) * s.num_coarse * D : nullptr;
  v.coarse_values = coarse && estimate ? as_bf16(s.coarse_values) + static_cast<int64_t>(h) * s.num_coarse * D : nullptr;
  v.coarse_offsets = coarse ? s.coarse_offsets + static_cast<int64_t>(h) * (s.num_coarse + 1) : nullptr;
  return v;
}

constexpr int kNoRow = -1;
constexpr int kDenseCodeLimit = -(1 << 30);  // dense codes are above it, estimate codes below
__device__ __forceinline__ int dense_code(int d) { return -2 - d; }
__device__ __forceinline__ int estimate_code(int id) { return INT_MIN + id; }
__device__ __forceinline__ bool is_estimate_code(int code) { return code < kDenseCodeLimit; }

// The code of virtual row v (< total()) outside the selected segments: an estimated cluster
// (one load of its id) or a dense row.
__device__ __forceinline__ int unselected_row_code(const VirtualRows& vr, int v) {
  if (v < vr.clustered()) return estimate_code(__ldg(vr.est_ids + (v - vr.sparse_rows)));
  return dense_code(v - vr.clustered());
}

// log2 of the key count an estimated cluster stands for (its logit offset in log2 units).
__device__ __forceinline__ float estimate_log2_size(const VirtualRows& vr, int code) {
  const int id = code - INT_MIN;
  int lo = id, hi = id + 1;  // fine cluster: [off[id], off[id+1])
  if (id >= vr.num_clusters) {
    lo = __ldg(vr.coarse_offsets + (id - vr.num_clusters));
    hi = __ldg(vr.coarse_offsets + (id - vr.num_clusters) + 1);
  }
  return log2f(static_cast<float>(__ldg(vr.offsets + hi) - __ldg(vr.offsets + lo)));
}

// Where 16-byte column `col` of a coded row's key and value lives; bytes = 0 (a zero-fill by
// cp.async, from any valid address) for kNoRow, and key_bytes = 0 for an estimated cluster whose
// logit the selection provides (est_logits: its key is not needed).
struct RowSource {
  const __nv_bfloat16* key;
  const __nv_bfloat16* value;
  int bytes, key_bytes;
};

template <int D>
__device__ __forceinline__ RowSource row_source(const VirtualRows& vr, int code, int col) {
  if (code >= 0) {
    const int64_t at = static_cast<int64_t>(code) * D + col;
    return {vr.keys + at, vr.values + at, 16, 16};
  }
  if (code == kNoRow) return {vr.keys, vr.values, 0, 0};
  if (!is_estimate_code(code)) {
    const int64_t at = (-2 - static_cast<int64_t>(code)) * D + col;
    return {vr.dense_keys + at, vr.dense_values + at, 16, 16};
  }
  const int id = code - INT_MIN, key_bytes = vr.est_logits ? 0 : 16;
  if (id < vr.num_clusters) {
    const int64_t at = static_cast<int64_t>(id) * D + col;
    return {vr.centroids + at, vr.cluster_values + at, 16, key_bytes};
  }
  const int64_t at = static_cast<int64_t>(id - vr.num_clusters) * D + col;
  return {vr.coarse_centroids + at, vr.coarse_values + at, 16, key_bytes};
}

// Physical (cluster-sorted) row of selected virtual row v < sparse_rows: binary search of its
// segment (used once per query row, for read-ahead's top key).
__device__ __forceinline__ int selected_physical_row(const VirtualRows& vr, int v) {
  int lo = 0, hi = vr.count;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (__ldg(vr.row_start + mid) <= v) lo = mid;
    else hi = mid;
  }
  return __ldg(vr.offsets + __ldg(vr.ids + lo)) + (v - __ldg(vr.row_start + lo));
}

// Read-ahead's top key: the most attended selected row, (logit in log2 units, row; -1 = none): a
// virtual row in the prefill kernels, a physical one in the decode kernel (the two orders agree on
// selected rows). Ties go to the lower row, so merges in any grouping agree with a scan in row order.
struct TopKey {
  float s;
  int v;
  __device__ static TopKey none() { return {neg_inf(), -1}; }
  __device__ __forceinline__ void offer(float s_new, int v_new) {
    if (v_new >= 0 && (v < 0 || s_new > s || (s_new == s && v_new < v))) {
      s = s_new;
      v = v_new;
    }
  }
  // Combines with the lanes xor 1 and xor 2 (the quad holding one row's columns).
  __device__ __forceinline__ void quad_reduce() {
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) offer(__shfl_xor_sync(0xffffffffu, s, o), __shfl_xor_sync(0xffffffffu, v, o));
  }
};

}  // namespace squeezeserve::kernels::detail
