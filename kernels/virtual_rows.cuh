// The rows one (sequence, KV head) attends to, as one virtual sequence, shared by the decode and
// prefill attention kernels: the selected cluster segments in selection order, then the dense part
// (window, then the request's own tokens). Virtual row v < sparse_rows lies in selected segment
// s = last i with row_start[i] <= v, at physical row offsets[ids[s]] + (v - row_start[s]).
//
// Both kernels resolve a row's physical location once, in one lane, and hand it to the lanes that
// copy its 16-byte chunks as one int, the row code:
//   code >= 0          clustered row `code` of the head (a row of a selected segment)
//   kNoRow (-1)        past the range: zero-filled and masked
//   dense_code(d)      dense row d = -2 - d
#pragma once

#include <cuda_bf16.h>

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

constexpr int kNoRow = -1;
__device__ __forceinline__ int dense_code(int d) { return -2 - d; }

// Where 16-byte column `col` of a coded row's key and value lives; bytes = 0 (a zero-fill by
// cp.async, from any valid address) for kNoRow.
struct RowSource {
  const __nv_bfloat16* key;
  const __nv_bfloat16* value;
  int bytes;
};

template <int D>
__device__ __forceinline__ RowSource row_source(const VirtualRows& vr, int code, int col) {
  if (code >= 0) return {vr.keys + static_cast<int64_t>(code) * D + col, vr.values + static_cast<int64_t>(code) * D + col, 16};
  if (code == kNoRow) return {vr.keys, vr.values, 0};
  const int64_t d = -2 - static_cast<int64_t>(code);
  return {vr.dense_keys + d * D + col, vr.dense_values + d * D + col, 16};
}

}  // namespace squeezeserve::kernels::detail
