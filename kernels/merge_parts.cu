// Contract: merge_parts.h; reference: merge_parts_ref.cc. One warp per query row: two rows of at
// most 512 bytes in, one out, so a batch's few hundred rows are one short wave; launched chained
// after the attention that wrote part B (chained_launch.cuh).
#include "kernels/chained_launch.cuh"
#include "kernels/cuda_common.cuh"
#include "kernels/merge_parts.h"

namespace squeezeserve::kernels {
namespace {

constexpr int kWarpsPerCta = 8;

struct MergeArgs {
  int rows, head_dim;
  const __nv_bfloat162* a_out;
  const float* a_lse;
  const int32_t* a_row;
  const __nv_bfloat162* b_out;
  const float* b_lse;
  __nv_bfloat162* out;
  float* lse;
};

__global__ void __launch_bounds__(kWarpsPerCta * 32) merge_parts_kernel(MergeArgs a) {
  detail::allow_next_grid();
  const int r = blockIdx.x * kWarpsPerCta + static_cast<int>(threadIdx.x >> 5), lane = threadIdx.x & 31;
  detail::wait_for_previous_grid();  // part B is the previous kernel's output
  if (r >= a.rows) return;
  const int64_t ar = a.a_row != nullptr ? a.a_row[r] : r;
  const float la = a.a_lse[ar], lb = a.b_lse[r];
  const float m = fmaxf(la, lb);
  float wa = la == detail::neg_inf() ? 0.f : __expf(la - m);
  float wb = lb == detail::neg_inf() ? 0.f : __expf(lb - m);
  const float sum = wa + wb;
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  wa *= inv;
  wb *= inv;
  const int pairs = a.head_dim / 2;
  for (int p = lane; p < pairs; p += 32) {
    // An empty part's output is never read (its weight is 0 and its memory may hold anything).
    const float2 x = wa > 0.f ? __bfloat1622float2(a.a_out[ar * pairs + p]) : make_float2(0.f, 0.f);
    const float2 y = wb > 0.f ? __bfloat1622float2(a.b_out[static_cast<int64_t>(r) * pairs + p]) : make_float2(0.f, 0.f);
    a.out[static_cast<int64_t>(r) * pairs + p] = __floats2bfloat162_rn(wa * x.x + wb * y.x, wa * x.y + wb * y.y);
  }
  if (a.lse != nullptr && lane == 0) a.lse[r] = sum > 0.f ? m + __logf(sum) : detail::neg_inf();
}

}  // namespace

int merge_attention_parts(int rows, int head_dim, const void* a_out, const float* a_lse, const int32_t* a_row,
                          const void* b_out, const float* b_lse, void* out, float* lse, void* stream) {
  if (rows < 0 || head_dim < 2 || head_dim % 2 != 0 || head_dim > 256) return static_cast<int>(cudaErrorInvalidValue);
  if (rows == 0) return 0;
  const MergeArgs args{rows,
                       head_dim,
                       static_cast<const __nv_bfloat162*>(a_out),
                       a_lse,
                       a_row,
                       static_cast<const __nv_bfloat162*>(b_out),
                       b_lse,
                       static_cast<__nv_bfloat162*>(out),
                       lse};
  return static_cast<int>(detail::launch_chained(merge_parts_kernel, dim3((rows + kWarpsPerCta - 1) / kWarpsPerCta),
                                                 dim3(kWarpsPerCta * 32), 0, static_cast<cudaStream_t>(stream),
                                                 args));
}

}  // namespace squeezeserve::kernels
