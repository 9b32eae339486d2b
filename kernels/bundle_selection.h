// Squeezed bundles (docs/attention.md "Questions on one document"): a decode step's squeezed
// questions on one context read the union of their selected clusters once, each attending only its
// own (Selection::member_masks, squeeze_types.h), as the dense questions' bundles read the context
// once. Here the union: per (bundle, KV head), the clusters any member selected, ascending, each
// with the mask of the members that selected it, and their rows end to end. Plain C++ header; CPU
// reference with the same contract: bundle_selection_ref.h.
#pragma once

#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

// Which sequences of the members' launch make up each bundle: members[k * slots + m] is the
// sequence (b of the members' Selection, bh = b * H_kv + h) in slot m of bundle k, -1 for an unused
// slot. slots <= 32 (a mask bit each). Every member of a bundle reads one context: the offsets of
// the bundle's view (`bundle_seqs`) are theirs.
struct BundleMembers {
  const int32_t* members = nullptr;
  int32_t bundles = 0;
  int32_t slots = 0;
};

// For each bundle k and KV head h (bh = k * H_kv + h of `out`): out.cluster_ids, out.row_start
// (exclusive prefix sum of the clusters' rows), out.counts, out.rows and masks[bh * out.capacity +
// i] (bit m: slot m selected cluster i) from the members' cluster_ids and counts; out.capacity >=
// every bundle view's num_clusters. With estimate_masks (one-level indexes; members.estimate_ids,
// members.estimated, out.estimate_ids and out.estimated set): the same union of the members'
// estimate lists into out.estimate_ids and out.estimated, with estimate_masks[bh *
// out.estimate_capacity + i] (Selection::estimate_masks) and estimate_log_sizes[same] = ln of the
// cluster's rows (Selection::estimate_log_sizes; required with estimate_masks); a member without
// the estimate (estimated null, or 0) adds nothing. Nothing else of `out` is written. Device arrays; `bundle_seqs` one view
// per bundle (its offsets and num_clusters are read). Launched as a kernel of the decode chain
// (chained_launch.cuh): it waits for the previous kernel (the members' selection) before reading
// it, and reads the views, their offsets and bundles.members before that wait (written by the host
// before the step, as the index). Returns a cudaError_t value.
int bundle_selections(const BundleMembers& bundles, int num_kv_heads, const SequenceLayerBf16* bundle_seqs,
                      const Selection& members, const Selection& out, uint32_t* masks, uint32_t* estimate_masks,
                      float* estimate_log_sizes, void* stream);

}  // namespace squeezeserve::kernels
