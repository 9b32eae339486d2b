#include "kernels/merge_parts_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace squeezeserve::kernels {

void merge_attention_parts_ref(int rows, int head_dim, const float* a_out, const float* a_lse, const int32_t* a_row,
                               const float* b_out, const float* b_lse, float* out, float* lse) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < rows; ++r) {
    const int64_t ar = a_row != nullptr ? a_row[r] : r;
    const float la = a_lse[ar], lb = b_lse[r];
    const float m = std::max(la, lb);
    // Each part's weight: its share of the union's softmax sum (0 for an empty part).
    const float wa = la == kNegInf ? 0.f : std::exp(la - m), wb = lb == kNegInf ? 0.f : std::exp(lb - m);
    const float sum = wa + wb;
    for (int d = 0; d < head_dim; ++d) {
      float v = 0.f;
      if (sum > 0.f) {
        if (wa > 0.f) v += wa / sum * a_out[ar * head_dim + d];
        if (wb > 0.f) v += wb / sum * b_out[static_cast<int64_t>(r) * head_dim + d];
      }
      out[static_cast<int64_t>(r) * head_dim + d] = v;
    }
    if (lse != nullptr) lse[r] = sum > 0.f ? m + std::log(sum) : kNegInf;
  }
}

}  // namespace squeezeserve::kernels
