// The two-part attention merge (kernels/merge_parts.h) against its CPU reference (merge_parts_ref.h):
// part of kernels_check.
#pragma once

#include <cstdint>

namespace squeezeserve::kernels::bench {

// Prints one table row per case; true when every case passes.
bool run_merge_checks(uint64_t seed);

}  // namespace squeezeserve::kernels::bench
