// CPU references of the fused RMSNorm and RoPE kernels (norm_rope.h), same contract with float
// arrays. The engine's libtorch code runs these ops on bf16 tensors, rounding to bf16 after every
// op; the references round at exactly those points (round_to_bf16), so on bf16-representable inputs
// they give the bits the kernels and libtorch give (RMSNorm up to the fp32 sum's order and rsqrt).
#pragma once

#include <cstdint>

namespace squeezeserve::kernels {

// Round-to-nearest-even to bf16 (NaN stays NaN), as __float2bfloat16_rn and libtorch do.
float round_to_bf16(float x);

// x, out: [rows][hidden]; weight: [hidden]. Per row, as LlamaModel::RmsNorm on bf16:
//   normed = x * rsqrt(mean(x^2) + eps)   (fp32)
//   out    = bf16(weight * bf16(normed))
void rms_norm_ref(const float* x, const float* weight, float* out, int rows, int hidden, float eps);

// in: [tokens] rows of heads * head_dim, row r at in + r * in_row_stride; cos, sin: [tokens][head_dim];
// out: the first token_major_heads heads as [tokens][token_major_heads][head_dim], then the others as
// [heads - token_major_heads][tokens][head_dim]. As LlamaModel::ApplyRope on bf16 (HF rotate_half,
// half = head_dim / 2):
//   rotated = (-x[half:], x[:half])
//   out     = bf16(bf16(x * cos) + bf16(rotated * sin))
void rope_ref(const float* in, float* out, const float* cos, const float* sin, int tokens, int heads,
              int head_dim, int64_t in_row_stride, int token_major_heads);

}  // namespace squeezeserve::kernels
