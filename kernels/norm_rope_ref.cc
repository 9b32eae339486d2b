#include "kernels/norm_rope_ref.h"

#include <cmath>
#include <cstring>

namespace squeezeserve::kernels {

float round_to_bf16(float x) {
  if (std::isnan(x)) return x;
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  // Add half an ulp of bf16 (minus one when the kept part is even: ties go to even), then truncate.
  bits += 0x7fffu + ((bits >> 16) & 1u);
  bits &= 0xffff0000u;
  float rounded;
  std::memcpy(&rounded, &bits, sizeof rounded);
  return rounded;
}

void rms_norm_ref(const float* x, const float* weight, float* out, int rows, int hidden, float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<int64_t>(r) * hidden;
    float* outr = out + static_cast<int64_t>(r) * hidden;
    // The sum of squares in double, rounded once to fp32: the fp32 sum's best value. A sequential fp32
    // sum drifts by ~sqrt(N) roundings at N = 8192, more than the kernel's tree order does, and
    // pushed kernels_check's share of outputs within 1 ulp under its 99.9% bar (NOTES.md run 14).
    double sum = 0.0;
    for (int i = 0; i < hidden; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    // libtorch's fp32 mean multiplies the sum by 1/N.
    const float inv_rms = 1.f / std::sqrt(static_cast<float>(sum) * (1.f / static_cast<float>(hidden)) + eps);
    for (int i = 0; i < hidden; ++i) outr[i] = round_to_bf16(weight[i] * round_to_bf16(xr[i] * inv_rms));
  }
}

void rope_ref(const float* in, float* out, const float* cos, const float* sin, int tokens, int heads,
              int head_dim, int64_t in_row_stride, int token_major_heads) {
  const int64_t tm = token_major_heads;
  const int half = head_dim / 2;
  for (int t = 0; t < tokens; ++t) {
    const float* c = cos + static_cast<int64_t>(t) * head_dim;
    const float* s = sin + static_cast<int64_t>(t) * head_dim;
    for (int h = 0; h < heads; ++h) {
      const float* x = in + t * in_row_stride + static_cast<int64_t>(h) * head_dim;
      float* o = out + (h < tm ? t * tm + h : tokens * tm + (h - tm) * tokens + t) * head_dim;
      for (int i = 0; i < head_dim; ++i) {
        const float rotated = i < half ? -x[i + half] : x[i - half];
        o[i] = round_to_bf16(round_to_bf16(x[i] * c[i]) + round_to_bf16(rotated * s[i]));
      }
    }
  }
}

}  // namespace squeezeserve::kernels
