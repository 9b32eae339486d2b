// Fused RMSNorm and RoPE (norm_rope.h). Both are memory-bound and tiny at decode; what matters is
// one launch each and libtorch's rounding: every fp32 result that libtorch stores as a bf16 tensor
// is rounded to bf16 here at the same point, and the fp32 ops are the same ones (explicit _rn
// intrinsics where nvcc could otherwise contract a multiply and an add into one FMA). Both are
// launched with programmatic dependent launch (chained_launch.cuh): at decode the weight product
// after each starts streaming its weights while it runs (kernels/skinny_gemm.h).
#include "kernels/norm_rope.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/chained_launch.cuh"
#include "kernels/cuda_common.cuh"

namespace squeezeserve::kernels {
namespace {

using detail::as_bf16;
using detail::bf16x8_to_float;

constexpr int kNormThreads = 256;

__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// weight * bf16(x * inv_rms), as libtorch's `weight * normed.to(bf16)`.
__device__ __forceinline__ float scaled(float x, float w, float inv_rms) {
  return __fmul_rn(w, round_bf16(__fmul_rn(x, inv_rms)));
}

// One CTA per row: the sum of squares, then the scaled row. kVec: hidden % 8 == 0 and 16-byte
// aligned rows, read and written as 16-byte words of eight bf16 (the second pass rereads x from L1/L2).
template <bool kVec>
__global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(const uint16_t* x_bits, const uint16_t* weight_bits, uint16_t* out_bits, int hidden,
                    float inv_hidden, float eps) {
  detail::allow_next_grid();
  detail::wait_for_previous_grid();  // x is the previous kernel's output
  const int64_t row = blockIdx.x;
  const __nv_bfloat16* x = as_bf16(x_bits) + row * hidden;
  const __nv_bfloat16* weight = as_bf16(weight_bits);
  __nv_bfloat16* out = reinterpret_cast<__nv_bfloat16*>(out_bits) + row * hidden;
  float sum = 0.f;
  if constexpr (kVec) {
    for (int i = threadIdx.x * 8; i < hidden; i += kNormThreads * 8) {
      float v[8];
      bf16x8_to_float(*reinterpret_cast<const uint4*>(x + i), v);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum += v[e] * v[e];
    }
  } else {
    for (int i = threadIdx.x; i < hidden; i += kNormThreads) {
      const float v = __bfloat162float(x[i]);
      sum += v * v;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  __shared__ float warp_sums[kNormThreads / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kNormThreads / 32; ++w) total += warp_sums[w];
  // libtorch: mean = sum * (1/N), then + eps, then rsqrt, each rounded to fp32 on its own.
  const float inv_rms = rsqrtf(__fadd_rn(__fmul_rn(total, inv_hidden), eps));

  if constexpr (kVec) {
    for (int i = threadIdx.x * 8; i < hidden; i += kNormThreads * 8) {
      float v[8], w[8];
      bf16x8_to_float(*reinterpret_cast<const uint4*>(x + i), v);
      bf16x8_to_float(*reinterpret_cast<const uint4*>(weight + i), w);
      uint4 packed;
      __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        pairs[e] = __floats2bfloat162_rn(scaled(v[2 * e], w[2 * e], inv_rms),
                                         scaled(v[2 * e + 1], w[2 * e + 1], inv_rms));
      }
      *reinterpret_cast<uint4*>(out + i) = packed;
    }
  } else {
    for (int i = threadIdx.x; i < hidden; i += kNormThreads) {
      out[i] = __float2bfloat16_rn(scaled(__bfloat162float(x[i]), __bfloat162float(weight[i]), inv_rms));
    }
  }
}

// bf16(bf16(x * c) + bf16(r * s)): libtorch's `heads * cos + rotated * sin` on bf16 tensors.
__device__ __forceinline__ __nv_bfloat16 rope_element(float x, float c, float r, float s) {
  return __float2bfloat16_rn(__fadd_rn(round_bf16(__fmul_rn(x, c)), round_bf16(__fmul_rn(r, s))));
}

// One thread per (token, head, i < half): the pair (x[i], x[i + half]) that rotate_half mixes.
// Consecutive threads take consecutive i, so reads of a token's row and writes of a head's row coalesce.
__global__ void rope_kernel(const uint16_t* in, uint16_t* out, const uint16_t* cos, const uint16_t* sin, int tokens,
                            int heads, int head_dim, int64_t in_row_stride, int token_major_heads) {
  detail::allow_next_grid();
  detail::wait_for_previous_grid();  // in is the previous kernel's output
  const int half = head_dim / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(tokens) * heads * half) return;
  const int i = static_cast<int>(idx % half);
  const int64_t token_head = idx / half;
  const int h = static_cast<int>(token_head % heads);
  const int64_t t = token_head / heads;
  const __nv_bfloat16* x = as_bf16(in) + t * in_row_stride + static_cast<int64_t>(h) * head_dim;
  const __nv_bfloat16* c = as_bf16(cos) + t * head_dim;
  const __nv_bfloat16* s = as_bf16(sin) + t * head_dim;
  const int64_t tm = token_major_heads;
  __nv_bfloat16* o = reinterpret_cast<__nv_bfloat16*>(out) +
                     (h < tm ? t * tm + h : tokens * tm + (h - tm) * tokens + t) * head_dim;
  const float x1 = __bfloat162float(x[i]), x2 = __bfloat162float(x[i + half]);
  o[i] = rope_element(x1, __bfloat162float(c[i]), -x2, __bfloat162float(s[i]));
  o[i + half] = rope_element(x2, __bfloat162float(c[i + half]), x1, __bfloat162float(s[i + half]));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

int rms_norm_bf16(const uint16_t* x, const uint16_t* weight, uint16_t* out, int rows, int hidden, float eps,
                  void* stream) {
  if (rows < 0 || hidden <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const auto st = static_cast<cudaStream_t>(stream);
  const float inv_hidden = 1.f / static_cast<float>(hidden);
  const bool vec = hidden % 8 == 0 && aligned16(x) && aligned16(weight) && aligned16(out);
  return detail::launch_chained(vec ? rms_norm_kernel<true> : rms_norm_kernel<false>, dim3(rows), dim3(kNormThreads), 0,
                                st, x, weight, out, hidden, inv_hidden, eps);
}

int rope_bf16(const uint16_t* in, uint16_t* out, const uint16_t* cos, const uint16_t* sin, int tokens, int heads,
              int head_dim, int64_t in_row_stride, int token_major_heads, void* stream) {
  if (tokens < 0 || heads <= 0 || head_dim <= 0 || head_dim % 2 != 0 || in_row_stride < int64_t{heads} * head_dim ||
      token_major_heads < 0 || token_major_heads > heads) {
    return cudaErrorInvalidValue;
  }
  const int64_t threads = static_cast<int64_t>(tokens) * heads * (head_dim / 2);
  if (threads == 0) return cudaSuccess;
  constexpr int kBlock = 256;
  const auto blocks = static_cast<unsigned>((threads + kBlock - 1) / kBlock);
  return detail::launch_chained(rope_kernel, dim3(blocks), dim3(kBlock), 0, static_cast<cudaStream_t>(stream), in, out,
                                cos, sin, tokens, heads, head_dim, in_row_stride, token_major_heads);
}

}  // namespace squeezeserve::kernels
