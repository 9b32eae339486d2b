// CPU reference of centroid scoring + cluster selection (docs/index_layout.md, "Estimated attention
// weight and selection"). Same contract as the CUDA launcher in selection.h; float math throughout.
#pragma once

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

// q: [B][Lq][Hq][D] fp32 (Lq = shape.query_len; decode is Lq = 1). seqs: B host-side views.
// Thresholds of (sequence b, KV head h): seqs[b].tau_fine[h] / tau_coarse[h] (host arrays) where
// set, else params.tau_fine / tau_coarse. Read-ahead positions (seqs[b].read_ahead, host) force
// their clusters in. Writes every field of `out` (host arrays, capacity >= max K) for each
// (sequence, KV head), the estimate's lists too when out.estimated is set (and, for query_len 1,
// out.estimate_logits when set) (squeeze_types.h).
void select_clusters_ref(const AttentionShape& shape, const SequenceLayerF32* seqs, const float* q,
                         const SelectionParams& params, Selection& out);

}  // namespace squeezeserve::kernels
