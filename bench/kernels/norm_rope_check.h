// The fused RMSNorm and RoPE kernels (kernels/norm_rope.h) against their CPU references
// (kernels/norm_rope_ref.h) on the same bf16 inputs: part of kernels_check.
#pragma once

#include <cstdint>

namespace squeezeserve::kernels::bench {

// Prints one table row per case; true when every case passes.
bool run_norm_rope_checks(uint64_t seed);

}  // namespace squeezeserve::kernels::bench
