// Accuracy of one Squeezed lookup against dense attention, for one layer and one window of query
// tokens. Everything is computed from the dense scores over the stored context (clustered keys +
// window), so the sparse result is exactly what SparseContextAttention computes, without its
// per-token gathers (the bench checks the two agree in shared mode).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "engine/squeeze/index_builder.h"
#include "engine/squeeze/sparse_attention.h"

namespace squeezeserve::bench {

struct LookupAccuracy {
  // Share of the dense softmax mass over the clustered keys that falls on the selected keys,
  // averaged over query heads and tokens.
  double recall = 0;
  // ‖out_sparse − out_dense‖ / ‖out_dense‖ over the whole [H_q, T, D] context-attention output.
  double relative_error = 0;
  // (selected clustered keys + window) / context tokens, averaged over KV heads and selections.
  double kv_fraction = 0;
  // Centroids scored per KV head and selection.
  double centroid_comparisons = 0;
  // max |out − SparseContextAttention(...).out| (shared selections only, else −1): a self-check.
  double library_deviation = -1;
  // With the pruned-cluster estimate, per entry of `estimate_fractions`: the relative error (as
  // relative_error) when only that fraction of each selection's pruned clusters is estimated, those
  // of the largest estimated mass (n e^(s q·c), the max over the group's query heads); 1 = all of
  // them, as served.
  std::vector<double> estimate_errors;
  // Per entry of `estimate_floors`: the same with the pruned clusters estimated only where their
  // score reaches floor × their threshold (SelectionOptions::estimate_floor), and the share of the
  // pruned clusters that is.
  std::vector<double> floor_errors, floor_shares;
};

// queries: post-RoPE [H_q, T, D] of the query tokens at this layer. estimate_fractions,
// estimate_floors: see LookupAccuracy (empty: not measured; they need the index's cluster values).
LookupAccuracy MeasureLookup(const squeeze::LayerIndex& index, const at::Tensor& queries,
                             const squeeze::SelectionOptions& options, const std::vector<double>& estimate_fractions = {},
                             const std::vector<double>& estimate_floors = {});

// The clustered rows a shared-context bundle of questions would read at one layer (the union of its
// members' selections, each row once) against the rows its members read one by one (the sum of
// their selections): `selections` holds the members' ClusterSelection::selected, [H_kv, T', K]
// bool each, token t of every member stepping together; `cluster_offsets` [H_kv, K+1]. Summed over
// KV heads and tokens.
struct BundleRows {
  double union_rows = 0;
  double member_rows = 0;
};
BundleRows BundleReadRows(const std::vector<at::Tensor>& selections, const at::Tensor& cluster_offsets);

// ‖out − out_dense‖ / ‖out_dense‖ of the context attention of `queries` ([H_q, T, D]) over the
// clusters each of `selections` marks ([H_kv, T', K] bool) plus the window, the pruned clusters
// dropped (the paper's lookup), one error per selection (the dense output computed once): with a
// bundle's union beside a member's own selection, what attending the union does to its error.
std::vector<double> DroppedPrunedErrors(const squeeze::LayerIndex& index, const at::Tensor& queries,
                                        const std::vector<at::Tensor>& selections);

}  // namespace squeezeserve::bench
