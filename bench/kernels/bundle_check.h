// The decode attention at groups 9..32 (kernels/decode_attention.h kMaxDecodeGroup: the engine's
// shared-context bundles) against the CPU reference (attention_ref.h): part of kernels_check.
#pragma once

#include <cstdint>

namespace squeezeserve::kernels::bench {

// Prints one table row per case; true when every case passes.
bool run_bundle_checks(uint64_t seed);

}  // namespace squeezeserve::kernels::bench
