// Contract: append_kv.h; reference: append_kv_ref.cc. A grid-stride loop over 16-byte chunks: the
// copy is a few KB per step, so launch latency, not bandwidth, is its cost: it is launched chained
// (chained_launch.cuh), the first of the decode step's chain of kernels per layer.
#include <algorithm>

#include "kernels/append_kv.h"
#include "kernels/chained_launch.cuh"
#include "kernels/cuda_common.cuh"

namespace squeezeserve::kernels {
namespace {

__global__ void append_dense_kv_kernel(const SequenceLayerBf16* seqs, NewKv source, const int64_t* src_rows,
                                       int batch, int kv_heads, int query_len, int head_dim) {
  detail::allow_next_grid();
  detail::wait_for_previous_grid();
  const int chunks = head_dim / 8;  // 16-byte chunks per row
  const int64_t total = static_cast<int64_t>(batch) * kv_heads * query_len * chunks * 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rest = i;
    const int chunk = static_cast<int>(rest % chunks);
    rest /= chunks;
    const bool is_value = rest % 2;
    rest /= 2;
    const int t = static_cast<int>(rest % query_len);
    rest /= query_len;
    const int h = static_cast<int>(rest % kv_heads);
    const int b = static_cast<int>(rest / kv_heads);
    const SequenceLayerBf16& s = seqs[b];
    const int64_t src = src_rows[b] + t, dst = s.dense_len - query_len + t;
    const uint16_t* from = is_value ? source.values + h * source.value_head_stride + src * source.value_row_stride
                                    : source.keys + h * source.key_head_stride + src * source.key_row_stride;
    uint16_t* to = const_cast<uint16_t*>(is_value ? s.dense_values : s.dense_keys) + h * s.dense_head_stride +
                   dst * head_dim;
    reinterpret_cast<uint4*>(to)[chunk] = reinterpret_cast<const uint4*>(from)[chunk];
  }
}

}  // namespace

int append_dense_kv(const AttentionShape& shape, const SequenceLayerBf16* seqs, const NewKv& source,
                    const int64_t* src_rows, void* stream) {
  if (shape.head_dim % 8 != 0) return static_cast<int>(cudaErrorInvalidValue);
  const int64_t total =
      static_cast<int64_t>(shape.batch) * shape.num_kv_heads * shape.query_len * (shape.head_dim / 8) * 2;
  if (total == 0) return 0;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, 1024));
  return static_cast<int>(detail::launch_chained(append_dense_kv_kernel, dim3(blocks), dim3(threads), 0,
                                                 static_cast<cudaStream_t>(stream), seqs, source, src_rows,
                                                 shape.batch, shape.num_kv_heads, shape.query_len, shape.head_dim));
}

}  // namespace squeezeserve::kernels
