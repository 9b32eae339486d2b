#include "engine/squeeze/sparse_attention.h"

#include <limits>
#include <utility>

#include "engine/squeeze/read_ahead.h"
#include "engine/squeeze/scoring.h"
#include "engine/squeeze/tensor_util.h"

namespace squeezeserve::squeeze {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The threshold of `kind` per KV head as [H, 1, 1], broadcasting over [H, T', K] scores.
at::Tensor HeadTau(const SelectionOptions& options, ThresholdKind kind, int64_t H, const at::Tensor& like) {
  if (options.head_thresholds.defined()) {
    return options.head_thresholds[kind].to(like.device(), at::kFloat).view({H, 1, 1});
  }
  const Thresholds& t = options.thresholds;
  const float tau = kind == kOneLevel ? t.one_level : kind == kCoarse ? t.coarse : t.fine;
  return at::full({H, 1, 1}, tau, like.options().dtype(at::kFloat));
}

// The clusters left out of the pruned-cluster estimate: the kept ones, and those scoring below the
// estimate floor (SelectionOptions::estimate_floor) of their threshold.
at::Tensor NotEstimated(const at::Tensor& kept, const at::Tensor& score, const at::Tensor& tau, float floor) {
  return floor > 0 ? kept | (score < tau * floor) : kept;
}

// 1-level lookup: every fine centroid is scored with the fine denominator.
// `forced` [H, K] bool (or undefined): clusters selected whatever their score (read-ahead).
ClusterSelection SelectOneLevel(const LayerIndex& index, const at::Tensor& q, int64_t G, double scale,
                                const at::Tensor& tau, const at::Tensor& forced, bool estimate_pruned,
                                float estimate_floor) {
  const int64_t H = q.size(0), Tp = q.size(1), K = index.num_clusters();
  const at::Tensor sizes = FineSizes(index);
  const at::Tensor z = CentroidLogits(q, index.centroids, sizes, scale);  // [H, T', M, K]
  const at::Tensor score = GroupScore(z, LogDenominator(z, sizes), G);    // [H, T', K]
  ClusterSelection sel;
  sel.selected = (score > tau) & (sizes > 0).unsqueeze(1);
  if (forced.defined()) sel.selected.logical_or_(forced.unsqueeze(1));
  sel.centroid_comparisons = at::full({H, Tp}, K, sizes.options());
  if (estimate_pruned) {
    sel.pruned_logits = PrunedClusterLogits(z, sizes.unsqueeze(1).expand({H, Tp, K}),
                                            NotEstimated(sel.selected, score, tau, estimate_floor));
    sel.pruned_ids = at::arange(K, sizes.options()).view({1, 1, K}).expand({H, Tp, K});
  }
  return sel;
}

// Hierarchical lookup with a real expansion: the coarse level is scored in full, then only the
// fine children of kept coarse clusters are gathered and scored, against the coarse denominator.
ClusterSelection SelectHierarchical(const LayerIndex& index, const at::Tensor& q, int64_t G, double scale,
                                    const at::Tensor& tau_coarse, const at::Tensor& tau_fine, const at::Tensor& forced,
                                    bool estimate_pruned, float estimate_floor) {
  TORCH_CHECK(index.levels == 2, "hierarchical lookup needs a 2-level index");
  const int64_t H = q.size(0), Tp = q.size(1), K = index.num_clusters();
  const at::Tensor coarse_sizes = CoarseSizes(index);
  const at::Tensor zc = CentroidLogits(q, index.coarse_centroids, coarse_sizes, scale);  // [H, T', M, Kc]
  const at::Tensor logden = LogDenominator(zc, coarse_sizes);                             // [H, T', M]
  const at::Tensor coarse_score = GroupScore(zc, logden, G);                              // [H, T', Kc]
  at::Tensor coarse_kept = coarse_score > tau_coarse;
  const at::Tensor parent_of = CoarseParent(index);                                       // [H, K]
  if (forced.defined()) {  // a forced fine cluster's parent is expanded
    const at::Tensor forced_parent = at::zeros({H, index.num_coarse_clusters()}, parent_of.options())
                                         .scatter_reduce_(1, parent_of, forced.to(at::kLong), "amax", true);
    coarse_kept.logical_or_((forced_parent > 0).unsqueeze(1));
  }

  // Fine clusters to expand: children of kept coarse clusters, non-empty.
  const at::Tensor sizes = FineSizes(index);
  const at::Tensor parent = parent_of.unsqueeze(1).expand({H, Tp, K});
  const at::Tensor expand = coarse_kept.gather(2, parent) & (sizes > 0).unsqueeze(1);  // [H, T', K]
  const Compacted cand = CompactMask(expand);  // candidate fine ids packed first, [H, T', C]
  const int64_t C = cand.index.size(2);

  ClusterSelection sel;
  sel.selected = at::zeros({H, Tp, K}, expand.options());
  sel.centroid_comparisons = index.num_coarse_clusters() + cand.count;
  if (estimate_pruned) {  // pruned coarse clusters: ids K + c into cat(cluster_values, coarse_values)
    const int64_t Kc = index.num_coarse_clusters();
    sel.pruned_logits = PrunedClusterLogits(zc, coarse_sizes.unsqueeze(1).expand({H, Tp, Kc}),
                                            NotEstimated(coarse_kept, coarse_score, tau_coarse, estimate_floor));
    sel.pruned_ids = (K + at::arange(Kc, sizes.options())).view({1, 1, Kc}).expand({H, Tp, Kc});
  }
  if (C == 0) return sel;
  const int64_t D = index.centroids.size(2);
  const at::Tensor cand_centroids =
      GatherRows(index.centroids, cand.index.reshape({H, Tp * C})).view({H, Tp, C, D});
  const at::Tensor cand_sizes = sizes.gather(1, cand.index.reshape({H, Tp * C})).view({H, Tp, C});
  const at::Tensor z = CentroidLogits(q, cand_centroids, cand_sizes, scale);  // [H, T', M, C]
  const at::Tensor fine_score = GroupScore(z, logden, G);
  at::Tensor keep = fine_score > tau_fine;
  if (forced.defined()) keep.logical_or_(forced.unsqueeze(1).expand({H, Tp, K}).gather(2, cand.index));
  keep = keep & cand.valid;
  sel.selected.scatter_(2, cand.index, keep);  // cand.index is a permutation prefix: no collisions
  if (estimate_pruned) {  // expanded but pruned fine clusters (padding is −inf: empty size 0 → log 0)
    const at::Tensor fine_logits = PrunedClusterLogits(z, cand_sizes * cand.valid.to(at::kLong),
                                                       NotEstimated(keep, fine_score, tau_fine, estimate_floor));
    sel.pruned_logits = at::cat({sel.pruned_logits, fine_logits}, -1);
    sel.pruned_ids = at::cat({sel.pruned_ids, cand.index}, -1);
  }
  return sel;
}

}  // namespace

ClusterSelection SelectClusters(const LayerIndex& index, const at::Tensor& queries, const SelectionOptions& options) {
  const int64_t H = index.num_heads(), G = queries.size(0) / H;
  const at::Tensor q = GroupQueries(queries, H, options.per_token);
  const int64_t Tp = q.size(1);
  ClusterSelection sel;
  if (index.num_clusters() == 0) {
    sel.selected = at::zeros({H, Tp, 0}, q.options().dtype(at::kBool));
    sel.centroid_comparisons = at::zeros({H, Tp}, q.options().dtype(at::kLong));
  } else {
    const double scale = SoftmaxScale(options.softmax_scale, index.centroids.size(2));
    TORCH_CHECK(!options.estimate_pruned || index.cluster_values.defined(),
                "estimate_pruned needs the index's cluster mean values (AddDerivedTensors)");
    TORCH_CHECK(options.estimate_floor >= 0 && options.estimate_floor <= 1, "estimate_floor must be in [0, 1]");
    const at::Tensor forced = options.read_ahead && options.read_ahead_positions.defined()
                                  ? ClustersAtPositions(index, options.read_ahead_positions)
                                  : at::Tensor();
    sel = options.hierarchical
              ? SelectHierarchical(index, q, G, scale, HeadTau(options, kCoarse, H, q), HeadTau(options, kFine, H, q),
                                   forced, options.estimate_pruned, options.estimate_floor)
              : SelectOneLevel(index, q, G, scale, HeadTau(options, kOneLevel, H, q), forced, options.estimate_pruned,
                               options.estimate_floor);
  }
  sel.kept_keys = (FineSizes(index).unsqueeze(1) * sel.selected.to(at::kLong)).sum(-1);
  return sel;
}

ContextAttention AttendSelected(const LayerIndex& index, const at::Tensor& queries, const ClusterSelection& selection,
                                double softmax_scale, bool locate_top) {
  const int64_t H = index.num_heads(), G = queries.size(0) / H, N = index.num_clustered();
  const int64_t D = index.keys.size(2), Dv = index.values.size(2), W = index.window();
  // One selection for all tokens (T' = 1) or one per token (T' = T); for T = 1 both layouts agree.
  const int64_t Tp = selection.selected.size(1);
  TORCH_CHECK(Tp == 1 || Tp == queries.size(1), "selection does not match the queries");
  const bool per_token = Tp > 1;
  const at::Tensor q = GroupQueries(queries, H, per_token);
  const double scale = SoftmaxScale(softmax_scale, D);

  // Rows of the selected clusters, packed per (head, selection) and padded to the largest count:
  // each cluster's verdict repeated over its rows (a head's sizes sum to N).
  const int64_t K = index.num_clusters();
  const at::Tensor row_selected =
      N == 0 ? at::zeros({H, Tp, 0}, selection.selected.options())
             : at::repeat_interleave(selection.selected.reshape({-1}),
                                     FineSizes(index).unsqueeze(1).expand({H, Tp, K}).reshape({-1}),
                                     /*dim=*/0, /*output_size=*/H * Tp * N)
                   .view({H, Tp, N});
  const Compacted rows = CompactMask(row_selected);
  const int64_t R = rows.index.size(2);
  const at::Tensor flat_rows = rows.index.reshape({H, Tp * R});
  const at::Tensor k_sel = GatherRows(index.keys.to(at::kFloat), flat_rows).view({H, Tp, R, D});
  const at::Tensor v_sel = GatherRows(index.values.to(at::kFloat), flat_rows).view({H, Tp, R, Dv});

  // The window is attended by every selection, unmasked.
  const at::Tensor k_all = at::cat({k_sel, index.window_keys.to(at::kFloat).unsqueeze(1).expand({H, Tp, W, D})}, 2);
  const at::Tensor v_all = at::cat({v_sel, index.window_values.to(at::kFloat).unsqueeze(1).expand({H, Tp, W, Dv})}, 2);
  const at::Tensor valid = at::cat({rows.valid, at::ones({H, Tp, W}, rows.valid.options())}, 2);

  // Exact softmax attention, fp32; padded rows are −inf.
  at::Tensor logits =
      (at::matmul(q, k_all.transpose(-1, -2)) * scale).masked_fill(~valid.unsqueeze(2), kNegInf);  // [H,T',M,R+W]
  at::Tensor v_attended = v_all;
  if (selection.pruned_logits.defined() && selection.pruned_logits.size(-1) > 0) {
    // The pruned clusters' estimate: one more key per pruned cluster (its logit already includes
    // log n), its mean value.
    const at::Tensor means = index.levels == 2 ? at::cat({index.cluster_values, index.coarse_values}, 1)
                                               : index.cluster_values;
    const int64_t P = selection.pruned_ids.size(2);
    const at::Tensor v_pruned =
        GatherRows(means.to(at::kFloat), selection.pruned_ids.reshape({H, Tp * P})).view({H, Tp, P, Dv});
    logits = at::cat({logits, selection.pruned_logits}, -1);
    v_attended = at::cat({v_all, v_pruned}, 2);
  }
  const at::Tensor lse = at::logsumexp(logits, {-1}, /*keepdim=*/true);
  const at::Tensor shift = at::where(at::isinf(lse), at::zeros_like(lse), lse);  // all −inf: weights 0
  const at::Tensor weights = (logits - shift).exp();                                // [H, T', M, R+W(+P)]
  const at::Tensor out = at::matmul(weights, v_attended);                           // [H, T', M, Dv]

  ContextAttention result;
  result.out = UngroupQueries(out, G, per_token);
  result.lse = UngroupQueries(lse, G, per_token).squeeze(-1);
  result.selection = selection;
  if (locate_top) {
    // The most attended selected row per (selection, query row), its share, and its position.
    const at::Tensor share = weights.narrow(-1, 0, R);  // [H, T', M, R]
    at::Tensor best = at::zeros({H, Tp, q.size(2)}, share.options());
    at::Tensor position = at::full({H, Tp, q.size(2)}, -1, rows.index.options());
    if (R > 0) {
      const auto [top, arg] = share.max(-1);
      const at::Tensor row = rows.index.gather(2, arg);  // [H, T', M] sorted row
      best = top;
      position = at::where(top > 0, index.perm.gather(1, row.reshape({H, -1})).to(at::kLong).view_as(row),
                           at::full_like(row, -1));
    }
    result.top_position = UngroupQueries(position.unsqueeze(-1), G, per_token).squeeze(-1);
    result.top_share = UngroupQueries(best.unsqueeze(-1), G, per_token).squeeze(-1);
  }
  return result;
}

ContextAttention SparseContextAttention(const LayerIndex& index, const at::Tensor& queries,
                                        const SelectionOptions& options) {
  return AttendSelected(index, queries, SelectClusters(index, queries, options), options.softmax_scale,
                        options.read_ahead);
}

std::pair<at::Tensor, at::Tensor> MergeAttention(const at::Tensor& out_a, const at::Tensor& lse_a,
                                                 const at::Tensor& out_b, const at::Tensor& lse_b) {
  const at::Tensor lse = at::logaddexp(lse_a, lse_b);
  const at::Tensor safe = at::where(at::isinf(lse), at::zeros_like(lse), lse);
  const at::Tensor out = (lse_a - safe).exp().unsqueeze(-1) * out_a + (lse_b - safe).exp().unsqueeze(-1) * out_b;
  return {out, lse};
}

}  // namespace squeezeserve::squeeze
