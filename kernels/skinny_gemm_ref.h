// CPU reference of the decode step's weight products (skinny_gemm.h), same contract with float
// arrays holding bf16 values: the product summed in double, then the bias and the residual added
// in fp32 and the result rounded to bf16 once, as the kernel (fp32 sums) does up to the order of
// its sum. silu_mul_ref: silu_mul_bf16's element, SiLU and the product with `up` rounded to bf16
// as libtorch's CUDA at::silu(gate).mul_(up) on bf16 tensors does (fp32 math, a bf16 result per op).
#pragma once

#include <cstdint>

#include "kernels/skinny_gemm.h"

namespace squeezeserve::kernels {

// x: rows of k at x + i * x_stride; w: [n][k]; bias: nullable [n]; residual: nullable [m][n];
// out: [m][n].
void skinny_gemm_ref(int m, int n, int k, const float* x, int64_t x_stride, const float* w, const float* bias,
                     const float* residual, float* out);

// bf16(bf16(silu(gate)) * up).
float silu_mul_ref(float gate, float up);

}  // namespace squeezeserve::kernels
