// Fused RMSNorm and RoPE for the bf16 model on the GPU. The libtorch versions (LlamaModel::RmsNorm,
// ::ApplyRope) cost ~11 op dispatches each, twice per layer; at decode these dispatches, not the
// GPU work, set the step time. Each function here is one launch with the same per-op bf16 rounding
// as the libtorch code. Plain C++ header: the stream is an opaque cudaStream_t passed as void*.
// CPU references with the same contract: norm_rope_ref.h.
#pragma once

#include <cstdint>

namespace squeezeserve::kernels {

// x, out: device bf16 [rows][hidden] (contiguous); weight: device bf16 [hidden]. Per row:
// out = bf16(weight * bf16(x * rsqrt(mean(x^2) + eps))), in fp32. Returns a cudaError_t value.
int rms_norm_bf16(const uint16_t* x, const uint16_t* weight, uint16_t* out, int rows, int hidden, float eps,
                  void* stream);

// in: device bf16 [tokens] rows of heads * head_dim elements, row r at in + r * in_row_stride (a
// linear projection's output); cos, sin: device bf16 [tokens][head_dim]; out: device bf16, the first
// `token_major_heads` heads as [tokens][token_major_heads][head_dim] (the attention kernels' query
// layout: no transposing copy before them), then the others as [heads - token_major_heads][tokens]
// [head_dim] (the keys, as the KV stores take them). out = bf16(bf16(x * cos) + bf16(rotate_half(x)
// * sin)) with rotate_half(x) = (-x[half:], x[:half]). head_dim must be even, 0 <= token_major_heads
// <= heads. Returns a cudaError_t value.
int rope_bf16(const uint16_t* in, uint16_t* out, const uint16_t* cos, const uint16_t* sin, int tokens, int heads,
              int head_dim, int64_t in_row_stride, int token_major_heads, void* stream);

}  // namespace squeezeserve::kernels
