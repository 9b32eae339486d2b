#include "kernels/skinny_gemm_ref.h"

#include <cmath>

#include "kernels/norm_rope_ref.h"

namespace squeezeserve::kernels {

float silu_mul_ref(float gate, float up) {
  // libtorch's silu on bf16: x / (1 + exp(-x)) in fp32, rounded; mul_ rounds the fp32 product.
  const float silu = round_to_bf16(gate / (1.f + std::exp(-gate)));
  return round_to_bf16(silu * up);
}

void skinny_gemm_ref(int m, int n, int k, const float* x, int64_t x_stride, const float* w, const float* bias,
                     const float* residual, float* out) {
  for (int i = 0; i < m; ++i) {
    const float* row = x + i * x_stride;
    for (int f = 0; f < n; ++f) {
      const float* wf = w + static_cast<int64_t>(f) * k;
      double dot = 0.0;
      for (int j = 0; j < k; ++j) dot += static_cast<double>(row[j]) * wf[j];
      float v = static_cast<float>(dot);
      if (bias) v += bias[f];
      if (residual) v += residual[static_cast<int64_t>(i) * n + f];
      out[static_cast<int64_t>(i) * n + f] = round_to_bf16(v);
    }
  }
}

}  // namespace squeezeserve::kernels
