// Read-ahead's cursor kernel (kernels/read_ahead.h) against its CPU reference (read_ahead_ref.h):
// part of kernels_check.
#pragma once

#include <cstdint>

namespace squeezeserve::kernels::bench {

// Prints one table row per case; true when every case passes.
bool run_read_ahead_checks(uint64_t seed);

}  // namespace squeezeserve::kernels::bench
