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

// τ such that the keys with score <= τ carry at least `sparsity` of the total weight (a weighted
// lower quantile: each cluster's score counts once per key). Entries of weight 0 are ignored. If
// the quantile lands on −inf (keys already pruned by an upper level), nothing more needs pruning
// and τ = kKeepAll.
float WeightedQuantile(const at::Tensor& scores, const at::Tensor& weights, float sparsity) {
  if (sparsity <= 0) return kKeepAll;
  const at::Tensor present = weights > 0;
  auto [sorted, order] = scores.masked_select(present).sort();
  const at::Tensor cum = weights.masked_select(present).to(at::kDouble).index_select(0, order).cumsum(0);
  const double target = double{sparsity} * cum[-1].item<double>();
  const int64_t i = std::min<int64_t>(
      at::searchsorted(cum, at::scalar_tensor(target, cum.options()).reshape({1})).item<int64_t>(),
      cum.size(0) - 1);
  const float tau = sorted[i].item<float>();
  return std::isinf(tau) && tau < 0 ? kKeepAll : tau;
}

// Kept fraction of keys: Σ sizes over kept clusters / Σ sizes.
float KeptFraction(const at::Tensor& keep, const at::Tensor& sizes) {
  return static_cast<float>((sizes * keep.to(sizes.scalar_type())).sum().item<double>() /
                            std::max(1.0, sizes.sum().item<double>()));
}

// Thresholds of one sparsity level from pooled per-cluster scores.
std::pair<Thresholds, std::pair<float, float>> ThresholdsFor(const CalibrationScores& p, float sparsity,
                                                             float coarse_scale, int levels) {
  Thresholds t;
  t.one_level = WeightedQuantile(p.one_level, p.weights, sparsity);
  const float kept_one = KeptFraction(p.one_level > t.one_level, p.weights);
  float kept_hier = 0;
  if (levels == 2) {
    t.coarse = WeightedQuantile(p.coarse_of_fine, p.weights, sparsity * coarse_scale);
    const at::Tensor coarse_kept = p.coarse_of_fine > t.coarse;
    // Fine keys under pruned coarse clusters count as pruned (−inf) in the fine quantile.
    const at::Tensor masked = p.fine_hier.masked_fill(~coarse_kept, -std::numeric_limits<float>::infinity());
    t.fine = WeightedQuantile(masked, p.weights, sparsity);
    kept_hier = KeptFraction(coarse_kept & (p.fine_hier > t.fine), p.weights);
  }
  return {t, {kept_one, kept_hier}};
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
  if (K == 0 || window_queries.size(1) == 0) {  // nothing to score; keeps layer numbering for per-layer τ
    layers_.push_back(CalibrationScores{});
    decode_layers_.push_back(CalibrationScores{});
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
  // q: grouped queries [H, T', M, D]; every score below is [H, T', K], flattened.
  const int64_t H = q.size(0), Tp = q.size(1), K = index.num_clusters();
  const at::Tensor sizes = FineSizes(index);                              // [H, K]
  const at::Tensor z = CentroidLogits(q, index.centroids, sizes, scale);  // [H, T', M, K]
  CalibrationScores s;
  // Each of the T' selections sees every key once: weight n_j / T' keeps one layer's total = its keys.
  s.weights = (sizes.to(at::kFloat) / static_cast<double>(Tp)).unsqueeze(1).expand({H, Tp, K}).reshape({-1}).cpu();
  s.one_level = GroupScore(z, LogDenominator(z, sizes), G).reshape({-1}).cpu();
  if (index.levels == 2) {
    const at::Tensor coarse_sizes = CoarseSizes(index);
    const at::Tensor zc = CentroidLogits(q, index.coarse_centroids, coarse_sizes, scale);
    const at::Tensor coarse_logden = LogDenominator(zc, coarse_sizes);
    const at::Tensor coarse_score = GroupScore(zc, coarse_logden, G);  // [H, T', Kc]
    const at::Tensor parent = CoarseParent(index).unsqueeze(1).expand({H, Tp, K});
    s.coarse_of_fine = coarse_score.gather(2, parent).reshape({-1}).cpu();
    // Fine scores with the coarse denominator, as the hierarchical lookup computes them.
    s.fine_hier = GroupScore(z, coarse_logden, G).reshape({-1}).cpu();
  }
  return s;
}

CalibrationScores Calibrator::Pool(const std::vector<CalibrationScores>& layers, size_t begin, size_t end) const {
  std::vector<at::Tensor> weights, one, coarse, fine;
  for (size_t l = begin; l < end; ++l) {
    if (!layers[l].weights.defined()) continue;
    weights.push_back(layers[l].weights);
    one.push_back(layers[l].one_level);
    if (levels_ == 2) {
      coarse.push_back(layers[l].coarse_of_fine);
      fine.push_back(layers[l].fine_hier);
    }
  }
  CalibrationScores p;
  if (weights.empty()) return p;
  p.weights = at::cat(weights);
  p.one_level = at::cat(one);
  if (levels_ == 2) {
    p.coarse_of_fine = at::cat(coarse);
    p.fine_hier = at::cat(fine);
  }
  return p;
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
  const float scale = options_.coarse_sparsity_scale;
  CalibrationResult result;
  result.levels = levels_;
  const CalibrationScores all = Pool(layers_, 0, layers_.size());
  const CalibrationScores all_decode = Pool(decode_layers_, 0, decode_layers_.size());
  for (float q : options_.sparsity_levels) {
    CalibratedLevel level;
    level.sparsity = q;
    auto [t, kept] = ThresholdsFor(all, q, scale, levels_);
    level.global = t;
    level.kept_fraction_one_level = kept.first;
    level.kept_fraction_hierarchical = kept.second;
    auto [td, kept_d] = ThresholdsFor(all_decode, q, scale, levels_);
    level.decode = td;
    level.decode_kept_fraction_one_level = kept_d.first;
    level.decode_kept_fraction_hierarchical = kept_d.second;
    if (!Finite(t) || !Finite(td)) return absl::InternalError(absl::StrCat("non-finite threshold at sparsity ", q));
    if (options_.per_layer_thresholds) {
      for (size_t l = 0; l < layers_.size(); ++l) {
        // A layer without clustered keys keeps the defaults (nothing to select).
        Thresholds lt, ld;
        if (layers_[l].weights.defined()) {
          lt = ThresholdsFor(Pool(layers_, l, l + 1), q, scale, levels_).first;
          ld = ThresholdsFor(Pool(decode_layers_, l, l + 1), q, scale, levels_).first;
        }
        if (!Finite(lt) || !Finite(ld)) return absl::InternalError(absl::StrCat("non-finite threshold at layer ", l));
        level.per_layer.push_back(lt);
        level.decode_per_layer.push_back(ld);
      }
    }
    result.levels_info.push_back(std::move(level));
  }
  return result;
}

std::vector<SparsityLevelInfo> CalibrationResult::Summary() const {
  std::vector<SparsityLevelInfo> out;
  for (const CalibratedLevel& l : levels_info) {
    SparsityLevelInfo info;
    info.sparsity = l.sparsity;
    info.one_level_threshold = l.global.one_level;
    if (levels == 2) {
      info.thresholds = {l.global.coarse, l.global.fine};
      info.kept_fraction = l.kept_fraction_hierarchical;
      info.decode_thresholds = {l.decode.coarse, l.decode.fine};
      info.decode_kept_fraction = l.decode_kept_fraction_hierarchical;
    } else {
      info.thresholds = {l.global.one_level};
      info.kept_fraction = l.kept_fraction_one_level;
      info.decode_thresholds = {l.decode.one_level};
      info.decode_kept_fraction = l.decode_kept_fraction_one_level;
    }
    info.decode_one_level_threshold = l.decode.one_level;
    out.push_back(info);
  }
  return out;
}

}  // namespace squeezeserve::squeeze
