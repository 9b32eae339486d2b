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

struct Pooled {
  at::Tensor sizes, one_level, coarse_of_fine, fine_hier;
};

// Thresholds of one sparsity level from pooled per-cluster scores.
std::pair<Thresholds, std::pair<float, float>> ThresholdsFor(const Pooled& p, float sparsity, float coarse_scale,
                                                             int levels) {
  Thresholds t;
  t.one_level = WeightedQuantile(p.one_level, p.sizes, sparsity);
  const float kept_one = KeptFraction(p.one_level > t.one_level, p.sizes);
  float kept_hier = 0;
  if (levels == 2) {
    t.coarse = WeightedQuantile(p.coarse_of_fine, p.sizes, sparsity * coarse_scale);
    const at::Tensor coarse_kept = p.coarse_of_fine > t.coarse;
    // Fine keys under pruned coarse clusters count as pruned (−inf) in the fine quantile.
    const at::Tensor masked = p.fine_hier.masked_fill(~coarse_kept, -std::numeric_limits<float>::infinity());
    t.fine = WeightedQuantile(masked, p.sizes, sparsity);
    kept_hier = KeptFraction(coarse_kept & (p.fine_hier > t.fine), p.sizes);
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
    layers_.push_back(LayerScores{});
    return absl::OkStatus();
  }
  if (window_queries.dim() != 3 || window_queries.size(0) % H != 0 ||
      window_queries.size(2) != index.centroids.size(2)) {
    return absl::InvalidArgumentError("window_queries must be [H_q, W, D] with H_q a multiple of H_kv");
  }
  const int64_t G = window_queries.size(0) / H;
  const double scale = SoftmaxScale(options_.softmax_scale, index.centroids.size(2));
  // One selection group holding all W queries: the score is p̂ averaged over them (the authors').
  const at::Tensor q = GroupQueries(window_queries, H, /*per_token=*/false);  // [H, 1, G·W, D]

  const at::Tensor sizes = FineSizes(index);
  const at::Tensor z = CentroidLogits(q, index.centroids, sizes, scale);  // [H, 1, G·W, K]
  LayerScores s;
  s.sizes = sizes.to(at::kFloat).reshape({-1}).cpu();
  s.one_level = GroupScore(z, LogDenominator(z, sizes), G).reshape({-1}).cpu();
  if (levels_ == 2) {
    const at::Tensor coarse_sizes = CoarseSizes(index);
    const at::Tensor zc = CentroidLogits(q, index.coarse_centroids, coarse_sizes, scale);
    const at::Tensor coarse_logden = LogDenominator(zc, coarse_sizes);
    const at::Tensor coarse_score = GroupScore(zc, coarse_logden, G).squeeze(1);  // [H, Kc]
    s.coarse_of_fine = coarse_score.gather(1, CoarseParent(index)).reshape({-1}).cpu();
    // Fine scores with the coarse denominator, as the hierarchical lookup computes them.
    s.fine_hier = GroupScore(z, coarse_logden, G).reshape({-1}).cpu();
  }
  layers_.push_back(std::move(s));
  return absl::OkStatus();
}

absl::StatusOr<CalibrationResult> Calibrator::Finish() const {
  const bool any_data =
      std::any_of(layers_.begin(), layers_.end(), [](const LayerScores& l) { return l.sizes.defined(); });
  if (!any_data) {
    return absl::FailedPreconditionError("no calibration data: no clustered keys or no window queries");
  }
  for (float q : options_.sparsity_levels) {
    if (!(q >= 0 && q < 1)) return absl::InvalidArgumentError(absl::StrCat("sparsity level ", q, " not in [0, 1)"));
  }
  auto pool = [this](size_t begin, size_t end) {
    std::vector<at::Tensor> sizes, one, coarse, fine;
    for (size_t l = begin; l < end; ++l) {
      if (!layers_[l].sizes.defined()) continue;
      sizes.push_back(layers_[l].sizes);
      one.push_back(layers_[l].one_level);
      if (levels_ == 2) {
        coarse.push_back(layers_[l].coarse_of_fine);
        fine.push_back(layers_[l].fine_hier);
      }
    }
    if (sizes.empty()) return Pooled{};
    Pooled p{at::cat(sizes), at::cat(one), {}, {}};
    if (levels_ == 2) {
      p.coarse_of_fine = at::cat(coarse);
      p.fine_hier = at::cat(fine);
    }
    return p;
  };

  CalibrationResult result;
  result.levels = levels_;
  const Pooled all = pool(0, layers_.size());
  for (float q : options_.sparsity_levels) {
    CalibratedLevel level;
    level.sparsity = q;
    auto [t, kept] = ThresholdsFor(all, q, options_.coarse_sparsity_scale, levels_);
    level.global = t;
    level.kept_fraction_one_level = kept.first;
    level.kept_fraction_hierarchical = kept.second;
    if (!Finite(t)) return absl::InternalError(absl::StrCat("non-finite threshold at sparsity ", q));
    if (options_.per_layer_thresholds) {
      for (size_t l = 0; l < layers_.size(); ++l) {
        const Pooled one_layer = pool(l, l + 1);
        Thresholds lt;  // a layer without clustered keys keeps the defaults (nothing to select)
        if (one_layer.sizes.defined()) lt = ThresholdsFor(one_layer, q, options_.coarse_sparsity_scale, levels_).first;
        if (!Finite(lt)) return absl::InternalError(absl::StrCat("non-finite threshold at layer ", l));
        level.per_layer.push_back(lt);
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
    } else {
      info.thresholds = {l.global.one_level};
      info.kept_fraction = l.kept_fraction_one_level;
    }
    out.push_back(info);
  }
  return out;
}

}  // namespace squeezeserve::squeeze
