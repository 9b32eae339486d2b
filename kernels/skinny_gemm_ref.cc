#include "kernels/skinny_gemm_ref.h"

#include <cmath>
#include <vector>

#include "kernels/norm_rope_ref.h"

namespace squeezeserve::kernels {

float silu_mul_ref(float gate, float up) {
  // libtorch's silu on bf16: x / (1 + exp(-x)) in fp32, rounded; mul_ rounds the fp32 product.
  const float silu = round_to_bf16(gate / (1.f + std::exp(-gate)));
  return round_to_bf16(silu * up);
}

void skinny_gemm_ref(int m, int n, int k, const float* x, int64_t x_stride, const float* w, const float* bias,
                     const float* residual, float* out, const float* norm_weight, float norm_eps) {
  std::vector<float> terms(static_cast<size_t>(k));
  for (int i = 0; i < m; ++i) {
    const float* row = x + i * x_stride;
    float scale = 1.f;
    if (norm_weight != nullptr) {
      double sum = 0.0;
      for (int j = 0; j < k; ++j) sum += static_cast<double>(row[j]) * row[j];
      scale = 1.f / std::sqrt(static_cast<float>(sum) * (1.f / static_cast<float>(k)) + norm_eps);
      for (int j = 0; j < k; ++j) terms[j] = round_to_bf16(row[j] * norm_weight[j]);
      row = terms.data();
    }
    for (int f = 0; f < n; ++f) {
      const float* wf = w + static_cast<int64_t>(f) * k;
      double dot = 0.0;
      for (int j = 0; j < k; ++j) dot += static_cast<double>(row[j]) * wf[j];
      float v = static_cast<float>(dot) * scale;
      if (bias) v += bias[f];
      if (residual) v += residual[static_cast<int64_t>(i) * n + f];
      out[static_cast<int64_t>(i) * n + f] = round_to_bf16(v);
    }
  }
}

}  // namespace squeezeserve::kernels
