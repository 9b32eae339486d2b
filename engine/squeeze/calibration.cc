#include "engine/squeeze/calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/squeeze/scoring.h"

namespace squeezeserve::squeeze {
namespace {

// Thresholds that keep nothing: keep iff score > τ, and scores are finite or −inf.
constexpr float kKeepNone = std::numeric_limits<float>::max();

// τ such that the keys with score <= τ carry at least `sparsity` of the total weight (a weighted
// lower quantile: each cluster's score counts once per key), for each row of scores/weights
// [R, E] -> [R]. Entries of weight 0 never decide τ. If the quantile lands on −inf (keys already
// pruned by an upper level) nothing more needs pruning: τ = kKeepAll; on +inf (keys the per-head
// floor keeps anyway): τ = kKeepNone.
at::Tensor RowQuantile(const at::Tensor& scores, const at::Tensor& weights, float sparsity) {
  const int64_t rows = scores.size(0), E = scores.size(1);
  if (sparsity <= 0 || E == 0) return at::full({rows}, kKeepAll, scores.options());
  auto [sorted, order] = scores.sort(1);
  const at::Tensor cum = weights.to(at::kDouble).gather(1, order).cumsum(1);
  const at::Tensor target = cum.narrow(1, E - 1, 1) * double{sparsity};
  const at::Tensor i = at::searchsorted(cum, target).clamp_max(E - 1);
  at::Tensor tau = sorted.gather(1, i).squeeze(1);
  tau = tau.masked_fill(at::isinf(tau) & (tau < 0), kKeepAll);
  return tau.masked_fill(at::isinf(tau) & (tau > 0), kKeepNone);
}

float KeptWeight(const at::Tensor& keep, const at::Tensor& weights) {
  return static_cast<float>((weights * keep.to(weights.scalar_type())).sum().item<double>());
}

// One score kind over the layers that have data (scores[l] [H, E], undefined otherwise): each
// head's floor τ (its own quantile at 1 − floor_share·(1 − sparsity)), then the global τ over all
// keys the floors do not already keep, and per layer min(global, floor) [H].
struct Floored {
  float global = kKeepAll;
  std::vector<at::Tensor> per_head;  // [H] per layer; undefined where the layer has no data
};
Floored FloorAndGlobal(const std::vector<at::Tensor>& scores, const std::vector<CalibrationScores>& layers,
                       float sparsity, float floor_share) {
  Floored f;
  std::vector<at::Tensor> rest, weights;
  std::vector<at::Tensor> floors(scores.size());
  for (size_t l = 0; l < scores.size(); ++l) {
    if (!scores[l].defined()) continue;
    const at::Tensor& w = layers[l].weights;
    floors[l] = floor_share > 0 ? RowQuantile(scores[l], w, 1 - floor_share * (1 - sparsity))
                                : at::full({scores[l].size(0)}, kKeepNone, scores[l].options());
    // Keys a floor keeps are out of the global quantile's reach (+inf), but keep their weight.
    rest.push_back(scores[l].masked_fill(scores[l] > floors[l].unsqueeze(1), std::numeric_limits<float>::infinity())
                       .reshape({1, -1}));
    weights.push_back(w.reshape({1, -1}));
  }
  f.global = RowQuantile(at::cat(rest, 1), at::cat(weights, 1), sparsity).item<float>();
  f.per_head.resize(scores.size());
  for (size_t l = 0; l < scores.size(); ++l) {
    if (floors[l].defined()) f.per_head[l] = floors[l].clamp_max(f.global);
  }
  return f;
}

// One threshold set of a sparsity level from the per-layer scores; kept fractions on the same data.
ThresholdSet ThresholdsFor(const std::vector<CalibrationScores>& layers, int levels, float sparsity,
                              const CalibrationOptions& options) {
  const size_t L = layers.size();
  std::vector<at::Tensor> one(L), coarse(L);
  for (size_t l = 0; l < L; ++l) {
    one[l] = layers[l].one_level;
    coarse[l] = layers[l].coarse_of_fine;
  }
  ThresholdSet t;
  const Floored flat = FloorAndGlobal(one, layers, sparsity, options.head_floor_share);
  t.global.one_level = flat.global;
  Floored coarse_t, fine_t;
  std::vector<at::Tensor> coarse_kept(L), fine(L);
  if (levels == 2) {
    coarse_t = FloorAndGlobal(coarse, layers, sparsity * options.coarse_sparsity_scale, options.head_floor_share);
    for (size_t l = 0; l < L; ++l) {
      if (!coarse[l].defined()) continue;
      coarse_kept[l] = coarse[l] > coarse_t.per_head[l].unsqueeze(1);
      // Fine keys under pruned coarse clusters count as pruned (−inf) in the fine quantile.
      fine[l] = layers[l].fine_hier.masked_fill(~coarse_kept[l], -std::numeric_limits<float>::infinity());
    }
    fine_t = FloorAndGlobal(fine, layers, sparsity, options.head_floor_share);
    t.global.coarse = coarse_t.global;
    t.global.fine = fine_t.global;
  }
  std::vector<at::Tensor> per_layer;
  double total = 0, kept_one = 0, kept_hier = 0;
  for (size_t l = 0; l < L; ++l) {
    const int64_t H = layers[l].heads;
    at::Tensor tau = at::full({3, H}, kKeepAll, at::kFloat);
    if (one[l].defined()) {
      const at::Tensor& w = layers[l].weights;
      total += w.sum().item<double>();
      tau[kOneLevel].copy_(flat.per_head[l]);
      kept_one += KeptWeight(one[l] > flat.per_head[l].unsqueeze(1), w);
      if (levels == 2) {
        tau[kCoarse].copy_(coarse_t.per_head[l]);
        tau[kFine].copy_(fine_t.per_head[l]);
        kept_hier += KeptWeight(coarse_kept[l] & (layers[l].fine_hier > fine_t.per_head[l].unsqueeze(1)), w);
      }
    }
    per_layer.push_back(tau);
  }
  t.per_head = at::stack(per_layer);
  t.kept_one_level = static_cast<float>(kept_one / std::max(1.0, total));
  t.kept_hierarchical = levels == 2 ? static_cast<float>(kept_hier / std::max(1.0, total)) : 0.f;
  return t;
}

bool Finite(const Thresholds& t) {
  return std::isfinite(t.one_level) && std::isfinite(t.coarse) && std::isfinite(t.fine);
}

}  // namespace

Calibrator::Calibrator(CalibrationOptions options) : options_(std::move(options)) {}

absl::Status Calibrator::AddLayer(const LayerIndex& index, const at::Tensor& window_queries) {
  if (levels_ != 0 && index.levels != levels_) {
    return absl::InvalidArgumentError("all layers must have the same number of index levels");
  }
  levels_ = index.levels;
  const int64_t H = index.num_heads(), K = index.num_clusters();
  if (!window_queries.defined() || window_queries.dim() != 3) {
    return absl::InvalidArgumentError("window_queries must be [H_q, W, D]");
  }
  if (K == 0 || window_queries.size(1) == 0) {  // nothing to score; keeps the layer numbering
    CalibrationScores none;
    none.heads = H;
    layers_.push_back(none);
    decode_layers_.push_back(none);
    return absl::OkStatus();
  }
  if (window_queries.dim() != 3 || window_queries.size(0) % H != 0 ||
      window_queries.size(2) != index.centroids.size(2)) {
    return absl::InvalidArgumentError("window_queries must be [H_q, W, D] with H_q a multiple of H_kv");
  }
  const int64_t G = window_queries.size(0) / H, W = window_queries.size(1);
  const double scale = SoftmaxScale(options_.softmax_scale, index.centroids.size(2));
  // Prefill: one selection group holding all W queries, p̂ averaged over them (the authors').
  layers_.push_back(ScoreLayer(index, GroupQueries(window_queries, H, /*per_token=*/false), G, scale));
  // Decode: one selection per single query, on W' strided queries (see decode_scores_per_layer).
  const int64_t budget_queries = options_.decode_scores_per_layer / std::max<int64_t>(1, H * K);
  const int64_t Wp = std::clamp<int64_t>(budget_queries, 1, W);
  const int64_t stride = W / Wp;  // >= 1; the shift spreads the layers over the skipped queries
  const int64_t shift = static_cast<int64_t>(decode_layers_.size()) % stride;
  const at::Tensor picked =
      at::arange(Wp, at::TensorOptions().dtype(at::kLong).device(window_queries.device())) * stride + shift;
  decode_layers_.push_back(
      ScoreLayer(index, GroupQueries(window_queries.index_select(1, picked), H, /*per_token=*/true), G, scale));
  return absl::OkStatus();
}

CalibrationScores Calibrator::ScoreLayer(const LayerIndex& index, const at::Tensor& q, int64_t G, double scale) {
  // q: grouped queries [H, T', M, D]; every score below is [H, T', K], kept as [H, T'·K] on the
  // index's device: the quantiles sort these scores pooled over all layers once per level and kind,
  // which took ~10 s of a 16K-token ingest on the CPU (8 layers, 32 KV heads) and milliseconds on a GPU.
  const int64_t H = q.size(0), Tp = q.size(1), K = index.num_clusters();
  const at::Tensor sizes = FineSizes(index);                              // [H, K]
  const at::Tensor z = CentroidLogits(q, index.centroids, sizes, scale);  // [H, T', M, K]
  CalibrationScores s;
  s.heads = H;
  // Each of the T' selections sees every key once: weight n_j / T' keeps one layer's total = its keys.
  s.weights = (sizes.to(at::kFloat) / static_cast<double>(Tp)).unsqueeze(1).expand({H, Tp, K}).reshape({H, -1});
  s.one_level = GroupScore(z, LogDenominator(z, sizes), G).reshape({H, -1});
  if (index.levels == 2) {
    const at::Tensor coarse_sizes = CoarseSizes(index);
    const at::Tensor zc = CentroidLogits(q, index.coarse_centroids, coarse_sizes, scale);
    const at::Tensor coarse_logden = LogDenominator(zc, coarse_sizes);
    const at::Tensor coarse_score = GroupScore(zc, coarse_logden, G);  // [H, T', Kc]
    const at::Tensor parent = CoarseParent(index).unsqueeze(1).expand({H, Tp, K});
    s.coarse_of_fine = coarse_score.gather(2, parent).reshape({H, -1});
    // Fine scores with the coarse denominator, as the hierarchical lookup computes them.
    s.fine_hier = GroupScore(z, coarse_logden, G).reshape({H, -1});
  }
  return s;
}

absl::StatusOr<CalibrationResult> Calibrator::Finish() const {
  const bool any_data = std::any_of(layers_.begin(), layers_.end(),
                                    [](const CalibrationScores& l) { return l.weights.defined(); });
  if (!any_data) {
    return absl::FailedPreconditionError("no calibration data: no clustered keys or no window queries");
  }
  for (float q : options_.sparsity_levels) {
    if (!(q >= 0 && q < 1)) return absl::InvalidArgumentError(absl::StrCat("sparsity level ", q, " not in [0, 1)"));
  }
  if (!(options_.head_floor_share >= 0 && options_.head_floor_share <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("head_floor_share ", options_.head_floor_share, " not in [0, 1]"));
  }
  CalibrationResult result;
  result.levels = levels_;
  for (float q : options_.sparsity_levels) {
    CalibratedLevel level;
    level.sparsity = q;
    level.prefill = ThresholdsFor(layers_, levels_, q, options_);
    level.decode = ThresholdsFor(decode_layers_, levels_, q, options_);
    for (const ThresholdSet* set : {&level.prefill, &level.decode}) {
      if (!Finite(set->global) || !at::isfinite(set->per_head).all().item<bool>()) {
        return absl::InternalError(absl::StrCat("non-finite threshold at sparsity ", q));
      }
    }
    result.levels_info.push_back(std::move(level));
  }
  return result;
}

at::Tensor CalibrationResult::HeadThresholdsOfLayer(int64_t layer) const {
  std::vector<at::Tensor> per_level;
  for (const CalibratedLevel& l : levels_info) {
    per_level.push_back(at::stack({l.prefill.per_head[layer], l.decode.per_head[layer]}));  // [2, 3, H]
  }
  return at::stack(per_level);
}

std::vector<SparsityLevelInfo> CalibrationResult::Summary() const {
  std::vector<SparsityLevelInfo> out;
  for (const CalibratedLevel& l : levels_info) {
    SparsityLevelInfo info;
    info.sparsity = l.sparsity;
    info.one_level_threshold = l.prefill.global.one_level;
    info.decode_one_level_threshold = l.decode.global.one_level;
    if (levels == 2) {
      info.thresholds = {l.prefill.global.coarse, l.prefill.global.fine};
      info.kept_fraction = l.prefill.kept_hierarchical;
      info.decode_thresholds = {l.decode.global.coarse, l.decode.global.fine};
      info.decode_kept_fraction = l.decode.kept_hierarchical;
    } else {
      info.thresholds = {l.prefill.global.one_level};
      info.kept_fraction = l.prefill.kept_one_level;
      info.decode_thresholds = {l.decode.global.one_level};
      info.decode_kept_fraction = l.decode.kept_one_level;
    }
    out.push_back(info);
  }
  return out;
}

}  // namespace squeezeserve::squeeze
