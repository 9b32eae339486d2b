// CPU reference of bundle_selections (bundle_selection.h): the same contract on host arrays.
#pragma once

#include <cstdint>

#include "kernels/bundle_selection.h"
#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

template <typename T>
void bundle_selections_ref(const BundleMembers& bundles, int num_kv_heads, const SequenceLayer<T>* bundle_seqs,
                           const Selection& members, const Selection& out, uint32_t* masks,
                           uint32_t* estimate_masks = nullptr, float* estimate_log_sizes = nullptr);

}  // namespace squeezeserve::kernels
