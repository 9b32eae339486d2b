// CPU reference of merge_parts.h (same contract, host memory, fp32 outputs).
#pragma once

#include <cstdint>

namespace squeezeserve::kernels {

void merge_attention_parts_ref(int rows, int head_dim, const float* a_out, const float* a_lse, const int32_t* a_row,
                               const float* b_out, const float* b_lse, float* out, float* lse);

}  // namespace squeezeserve::kernels
