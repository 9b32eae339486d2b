#include "bench/squeeze_accuracy/accuracy_metrics.h"

#include <cmath>
#include <limits>

#include "engine/squeeze/calibration.h"
#include "engine/squeeze/scoring.h"
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

// The one-level selection's cluster scores [H, T', K] (p̂, as SelectClusters computes them).
at::Tensor OneLevelScores(const squeeze::LayerIndex& index, const at::Tensor& queries,
                          const squeeze::SelectionOptions& options) {
  const int64_t H = index.num_heads(), G = queries.size(0) / H;
  const at::Tensor q = squeeze::GroupQueries(queries, H, options.per_token);
  const at::Tensor sizes = squeeze::FineSizes(index);
  const at::Tensor z = squeeze::CentroidLogits(q, index.centroids, sizes,
                                               squeeze::SoftmaxScale(options.softmax_scale, index.centroids.size(2)));
  return squeeze::GroupScore(z, squeeze::LogDenominator(z, sizes), G);
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
  if (estimate_fractions.empty() && (estimate_floors.empty() || options.hierarchical)) return result;
  squeeze::SelectionOptions estimating = options;
  estimating.estimate_pruned = true;
  const squeeze::ClusterSelection with_estimate = squeeze::SelectClusters(index, queries, estimating);
  auto error_of = [&](const squeeze::ClusterSelection& s) {
    const at::Tensor out = squeeze::AttendSelected(index, queries, s).out.to(at::kFloat);
    return ((out - dense_out).norm() / dense_out.norm().clamp_min(1e-30)).item<double>();
  };
  for (const double fraction : estimate_fractions)
    result.estimate_errors.push_back(error_of(KeepLargestEstimates(with_estimate, fraction)));
  if (!estimate_floors.empty() && !options.hierarchical) {
    // One level: pruned slot p is cluster p (pruned_ids = arange(K)), so scores align with it.
    const at::Tensor score = OneLevelScores(index, queries, options);  // [H, T', K]
    const at::Tensor tau = options.head_thresholds.defined()
                               ? options.head_thresholds[squeeze::kOneLevel].to(at::kFloat).view({H, 1, 1})
                               : at::full({H, 1, 1}, options.thresholds.one_level, score.options());
    const at::Tensor pruned = at::isfinite(with_estimate.pruned_logits.amax(2));  // [H, T', K]
    const double num_pruned = std::max(1.0, pruned.sum().item<double>());
    for (const double floor : estimate_floors) {
      squeeze::ClusterSelection s = with_estimate;
      const at::Tensor keep = score >= tau * floor;
      s.pruned_logits = s.pruned_logits.masked_fill(~keep.unsqueeze(2), -std::numeric_limits<float>::infinity());
      result.floor_errors.push_back(error_of(s));
      result.floor_shares.push_back((pruned & keep).sum().item<double>() / num_pruned);
    }
  }
  return result;
}

}  // namespace squeezeserve::bench
