#include "engine/squeezed_lookup.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace squeezeserve {

namespace {
// Sparsity levels are floats that travel through JSON and protobuf; match them loosely.
constexpr float kSparsityTolerance = 1e-4f;
}  // namespace

namespace {
squeeze::Thresholds FromSummary(const std::vector<float>& thresholds, float one_level, bool hierarchical) {
  squeeze::Thresholds t;
  t.one_level = one_level;
  if (hierarchical && thresholds.size() == 2) {
    t.coarse = thresholds[0];
    t.fine = thresholds[1];
  }
  return t;
}
}  // namespace

absl::StatusOr<LookupThresholds> ThresholdsFor(const ContextSummary& summary, const AttentionOptions& attention) {
  if (!summary.has_index) {
    return absl::FailedPreconditionError(absl::StrCat("attention.mode: context \"", summary.id,
                                                      "\" has no Squeezed Attention index; ask for dense"));
  }
  const int levels = summary.centroids_per_level.size() == 2 ? 2 : 1;
  if (attention.hierarchical && levels != 2) {
    return absl::InvalidArgumentError(absl::StrCat("attention.hierarchical: context \"", summary.id,
                                                   "\" has a 1-level index"));
  }
  for (size_t i = 0; i < summary.sparsity_levels.size(); ++i) {
    const SparsityLevelInfo& level = summary.sparsity_levels[i];
    if (std::fabs(level.sparsity - attention.sparsity) > kSparsityTolerance) continue;
    LookupThresholds t;
    t.level = static_cast<int>(i);
    t.prefill = FromSummary(level.thresholds, level.one_level_threshold, attention.hierarchical);
    t.decode = FromSummary(level.decode_thresholds, level.decode_one_level_threshold, attention.hierarchical);
    return t;
  }
  std::vector<std::string> calibrated;
  for (const SparsityLevelInfo& level : summary.sparsity_levels) calibrated.push_back(absl::StrCat(level.sparsity));
  return absl::InvalidArgumentError(absl::StrCat("attention.sparsity ", attention.sparsity,
                                                 " is not a calibrated level of context \"", summary.id,
                                                 "\"; its levels are [", absl::StrJoin(calibrated, ", "), "]"));
}

SqueezedLookup::SqueezedLookup(std::shared_ptr<const StoredContext> context, const AttentionOptions& attention,
                               LookupThresholds thresholds)
    : context_(std::move(context)), thresholds_(thresholds) {
  selection_.hierarchical = attention.hierarchical;
  selection_.estimate_pruned = attention.estimate_pruned;
  selection_.estimate_floor = attention.estimate_floor;
  selection_.read_ahead = attention.read_ahead;
  if (attention.read_ahead) read_ahead_.resize(context_->index().size());
}

AttentionPart SqueezedLookup::Attend(int64_t layer, const at::Tensor& queries, bool per_token) {
  const squeeze::LayerIndex& index = context_->index()[layer];
  squeeze::SelectionOptions options = selection_;
  options.per_token = per_token;
  options.hierarchical = TwoLevelStep(selection_.hierarchical, /*decode=*/per_token);
  options.thresholds = per_token ? thresholds_.decode : thresholds_.prefill;
  if (index.head_thresholds.defined()) {
    options.head_thresholds = index.head_thresholds[thresholds_.level][per_token ? 1 : 0];
  }
  if (options.read_ahead) options.read_ahead_positions = read_ahead_[layer].next_position;
  squeeze::ContextAttention attended = squeeze::SparseContextAttention(index, queries, options);
  if (options.read_ahead) {
    read_ahead_[layer] = squeeze::AdvanceReadAhead(read_ahead_[layer], attended.top_position, attended.top_share);
  }

  // kept_keys, centroid_comparisons: [H_kv, T'] (T' selections of this call); one host sync per
  // layer for the statistics, acceptable on the CPU reference path.
  const double context_tokens = static_cast<double>(context_->summary().num_tokens);
  at::Tensor loaded = attended.selection.kept_keys.to(at::kDouble) + static_cast<double>(index.window());
  if (attended.selection.pruned_logits.defined()) {
    // A pruned cluster's estimate reads its mean value: half a KV row (its key is the centroid,
    // read by the selection already).
    loaded = loaded + 0.5 * at::isfinite(attended.selection.pruned_logits.select(2, 0)).sum(-1).to(at::kDouble);
  }
  stats_.AddLayer((loaded / context_tokens).mean().item<double>(),
                  attended.selection.centroid_comparisons.to(at::kDouble).mean().item<double>());
  return AttentionPart{attended.out, attended.lse};
}

}  // namespace squeezeserve
