#include "bench/squeeze_accuracy/accuracy_metrics.h"

#include <cmath>
#include <limits>

#include "engine/squeeze/calibration.h"
#include "engine/squeeze/tensor_util.h"

namespace squeezeserve::bench {

namespace {

// The selection with only `fraction` of each selection's pruned clusters still estimated: those of
// the largest estimated mass (their logit s q·c + ln n, the max over the group's query heads).
squeeze::ClusterSelection KeepLargestEstimates(squeeze::ClusterSelection sel, double fraction) {
  if (fraction >= 1.0) return sel;
  const at::Tensor mass = sel.pruned_logits.amax(2);                  // [H, T', P]; -inf: padding
  const at::Tensor count = at::isfinite(mass).sum(-1, /*keepdim=*/true);  // pruned clusters per selection
  const at::Tensor keep_n = (count.to(at::kDouble) * fraction).ceil().to(at::kLong);
  const at::Tensor order = std::get<1>(mass.sort(-1, /*descending=*/true));
  const at::Tensor rank = at::empty_like(order).scatter_(-1, order, at::arange(mass.size(-1), order.options()).expand_as(order));
  const at::Tensor keep = rank < keep_n;                                // [H, T', P]
  sel.pruned_logits = sel.pruned_logits.masked_fill(~keep.unsqueeze(2), -std::numeric_limits<float>::infinity());
  return sel;
}

}  // namespace

LookupAccuracy MeasureLookup(const squeeze::LayerIndex& index, const at::Tensor& queries,
                             const squeeze::SelectionOptions& options, const std::vector<double>& estimate_fractions,
                             const std::vector<double>& estimate_floors) {
  const int64_t H = index.num_heads(), N = index.num_clustered(), W = index.window();
  const int64_t Hq = queries.size(0), T = queries.size(1), D = queries.size(2), G = Hq / H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const at::Tensor q = queries.to(at::kFloat);

  const squeeze::ClusterSelection sel = squeeze::SelectClusters(index, queries, options);  // [H, T', K]
  const int64_t Tp = sel.selected.size(1);
  // Selected clustered rows per query head: [H_q, T' (broadcast over T when 1), N].
  const at::Tensor row_cluster = squeeze::SegmentOfPosition(index.cluster_offsets, N).unsqueeze(1).expand({H, Tp, N});
  const at::Tensor rows = sel.selected.gather(2, row_cluster).repeat_interleave(G, 0);

  // Dense scores over clustered keys then window, per query head.
  const at::Tensor k_all = at::cat({index.keys, index.window_keys}, 1).to(at::kFloat).repeat_interleave(G, 0);
  const at::Tensor v_all = at::cat({index.values, index.window_values}, 1).to(at::kFloat).repeat_interleave(G, 0);
  const at::Tensor logits = at::matmul(q, k_all.transpose(1, 2)) * scale;  // [H_q, T, N + W]
  const at::Tensor probs = at::softmax(logits, -1);
  const at::Tensor clustered_probs = probs.narrow(2, 0, N);
  const at::Tensor clustered_mass = clustered_probs.sum(-1);                          // [H_q, T]
  const at::Tensor selected_mass = (clustered_probs * rows.to(at::kFloat)).sum(-1);  // [H_q, T]
  LookupAccuracy result;
  result.recall = (selected_mass / clustered_mass.clamp_min(1e-30)).mean().item<double>();

  const at::Tensor keep = at::cat({rows.expand({Hq, T, N}), at::ones({Hq, T, W}, rows.options())}, 2);
  const at::Tensor sparse_probs =
      at::softmax(logits.masked_fill(~keep, -std::numeric_limits<float>::infinity()), -1);
  const at::Tensor dense_out = at::matmul(probs, v_all);
  const at::Tensor sparse_out = at::matmul(sparse_probs, v_all);
  result.relative_error = ((sparse_out - dense_out).norm() / dense_out.norm().clamp_min(1e-30)).item<double>();

  const double context_tokens = static_cast<double>(N + W);
  result.kv_fraction = ((sel.kept_keys.to(at::kDouble) + W) / context_tokens).mean().item<double>();
  result.centroid_comparisons = sel.centroid_comparisons.to(at::kDouble).mean().item<double>();
  if (Tp == 1) {
    const at::Tensor library = squeeze::AttendSelected(index, queries, sel).out;
    result.library_deviation = (library - sparse_out).abs().max().item<double>();
  }
  if (estimate_fractions.empty() && estimate_floors.empty()) return result;
  squeeze::SelectionOptions estimating = options;
  estimating.estimate_pruned = true;
  const squeeze::ClusterSelection with_estimate = squeeze::SelectClusters(index, queries, estimating);
  auto error_of = [&](const squeeze::ClusterSelection& s) {
    const at::Tensor out = squeeze::AttendSelected(index, queries, s).out.to(at::kFloat);
    return ((out - dense_out).norm() / dense_out.norm().clamp_min(1e-30)).item<double>();
  };
  // Pruned clusters the estimate takes (a finite logit for some query head of the group).
  auto estimated = [](const squeeze::ClusterSelection& s) {
    return at::isfinite(s.pruned_logits.amax(2)).sum().item<double>();
  };
  for (const double fraction : estimate_fractions)
    result.estimate_errors.push_back(error_of(KeepLargestEstimates(with_estimate, fraction)));
  const double num_pruned = std::max(1.0, estimated(with_estimate));
  for (const double floor : estimate_floors) {  // the library's own rule (SelectionOptions::estimate_floor)
    squeeze::SelectionOptions floored = estimating;
    floored.estimate_floor = static_cast<float>(floor);
    const squeeze::ClusterSelection s = squeeze::SelectClusters(index, queries, floored);
    result.floor_errors.push_back(error_of(s));
    result.floor_shares.push_back(estimated(s) / num_pruned);
  }
  return result;
}

BundleRows BundleReadRows(const std::vector<at::Tensor>& selections, const at::Tensor& cluster_offsets) {
  BundleRows rows;
  if (selections.empty()) return rows;
  const at::Tensor offsets = cluster_offsets.to(at::kLong);
  const int64_t K = offsets.size(1) - 1;
  const at::Tensor sizes = (offsets.narrow(1, 1, K) - offsets.narrow(1, 0, K)).to(at::kDouble).unsqueeze(1);  // [H, 1, K]
  const at::Tensor members = at::stack(selections, 0);  // [S, H, T', K]
  rows.union_rows = (members.any(0).to(at::kDouble) * sizes).sum().item<double>();
  rows.member_rows = (members.to(at::kDouble) * sizes.unsqueeze(0)).sum().item<double>();
  return rows;
}

std::vector<double> DroppedPrunedErrors(const squeeze::LayerIndex& index, const at::Tensor& queries,
                                        const std::vector<at::Tensor>& selections) {
  std::vector<double> errors;
  if (selections.empty()) return errors;
  squeeze::ClusterSelection all;
  all.selected = at::ones_like(selections[0]);  // every cluster: dense attention over the stored context
  const at::Tensor dense = squeeze::AttendSelected(index, queries, all).out.to(at::kFloat);
  for (const at::Tensor& selected : selections) {
    squeeze::ClusterSelection some;
    some.selected = selected;
    const at::Tensor out = squeeze::AttendSelected(index, queries, some).out.to(at::kFloat);
    errors.push_back(((out - dense).norm() / dense.norm().clamp_min(1e-30)).item<double>());
  }
  return errors;
}

}  // namespace squeezeserve::bench
