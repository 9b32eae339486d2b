// Contract: read_ahead.h; reference: read_ahead_ref.cc (both run read_ahead_rule.h). One thread per
// (sequence, query head): a few hundred threads per layer, so launch latency is the whole cost;
// launched chained after the attention kernel (chained_launch.cuh).
#include "kernels/chained_launch.cuh"
#include "kernels/cuda_common.cuh"
#include "kernels/read_ahead.h"
#include "kernels/read_ahead_rule.h"

namespace squeezeserve::kernels {
namespace {

__global__ void advance_read_ahead_kernel(int batch, int query_len, int num_q_heads, const ReadAheadCursor* cursors,
                                          const ReadAheadCursor* advanced, TopKeys top, ReadAheadRule rule) {
  detail::allow_next_grid();
  detail::wait_for_previous_grid();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= batch * num_q_heads) return;
  const int b = i / num_q_heads, h = i % num_q_heads;
  const ReadAheadCursor c = cursors[b];
  if (c.next == nullptr) return;
  detail::advance_one(b, h, query_len, num_q_heads, c, advanced[b], top, rule);
}

}  // namespace

int advance_read_ahead(int batch, int query_len, int num_q_heads, const ReadAheadCursor* cursors,
                       const ReadAheadCursor* advanced, const TopKeys& top, const ReadAheadRule& rule, void* stream) {
  if (batch < 0 || query_len < 1 || num_q_heads < 1) return static_cast<int>(cudaErrorInvalidValue);
  if (batch == 0) return 0;
  const int threads = 128, total = batch * num_q_heads;
  return static_cast<int>(detail::launch_chained(advance_read_ahead_kernel, dim3((total + threads - 1) / threads),
                                                 dim3(threads), 0, static_cast<cudaStream_t>(stream), batch,
                                                 query_len, num_q_heads, cursors, advanced, top, rule));
}

}  // namespace squeezeserve::kernels
