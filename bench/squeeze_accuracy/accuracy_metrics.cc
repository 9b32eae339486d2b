#include "bench/squeeze_accuracy/accuracy_metrics.h"

#include <cmath>
#include <limits>

#include "engine/squeeze/tensor_util.h"

namespace squeezeserve::bench {

LookupAccuracy MeasureLookup(const squeeze::LayerIndex& index, const at::Tensor& queries,
                             const squeeze::SelectionOptions& options) {
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
  return result;
}

}  // namespace squeezeserve::bench
