#include "engine/squeezed_lookup.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace squeezeserve {

namespace {
// Sparsity levels are floats that travel through JSON and protobuf; match them loosely.
constexpr float kSparsityTolerance = 1e-4f;
}  // namespace

absl::StatusOr<squeeze::Thresholds> ThresholdsFor(const ContextSummary& summary, const AttentionOptions& attention) {
  if (!summary.has_index) {
    return absl::FailedPreconditionError(absl::StrCat("attention.mode: context \"", summary.id,
                                                      "\" has no Squeezed Attention index; ask for dense"));
  }
  const int levels = summary.centroids_per_level.size() == 2 ? 2 : 1;
  if (attention.hierarchical && levels != 2) {
    return absl::InvalidArgumentError(absl::StrCat("attention.hierarchical: context \"", summary.id,
                                                   "\" has a 1-level index"));
  }
  for (const SparsityLevelInfo& level : summary.sparsity_levels) {
    if (std::fabs(level.sparsity - attention.sparsity) > kSparsityTolerance) continue;
    squeeze::Thresholds t;
    t.one_level = level.one_level_threshold;
    if (attention.hierarchical && level.thresholds.size() == 2) {
      t.coarse = level.thresholds[0];
      t.fine = level.thresholds[1];
    }
    return t;
  }
  std::vector<std::string> calibrated;
  for (const SparsityLevelInfo& level : summary.sparsity_levels) calibrated.push_back(absl::StrCat(level.sparsity));
  return absl::InvalidArgumentError(absl::StrCat("attention.sparsity ", attention.sparsity,
                                                 " is not a calibrated level of context \"", summary.id,
                                                 "\"; its levels are [", absl::StrJoin(calibrated, ", "), "]"));
}

SqueezedLookup::SqueezedLookup(std::shared_ptr<const StoredContext> context, bool hierarchical,
                               squeeze::Thresholds thresholds)
    : context_(std::move(context)) {
  selection_.hierarchical = hierarchical;
  selection_.thresholds = thresholds;
}

AttentionPart SqueezedLookup::Attend(int64_t layer, const at::Tensor& queries, bool per_token) {
  const squeeze::LayerIndex& index = context_->index()[layer];
  squeeze::SelectionOptions options = selection_;
  options.per_token = per_token;
  squeeze::ContextAttention attended = squeeze::SparseContextAttention(index, queries, options);

  // kept_keys, centroid_comparisons: [H_kv, T'] (T' selections of this call); one host sync per
  // layer for the statistics, acceptable on the CPU reference path.
  const double context_tokens = static_cast<double>(context_->summary().num_tokens);
  const at::Tensor loaded = attended.selection.kept_keys.to(at::kDouble) + static_cast<double>(index.window());
  step_fraction_ += (loaded / context_tokens).mean().item<double>();
  step_comparisons_ += attended.selection.centroid_comparisons.to(at::kDouble).mean().item<double>();
  step_samples_ += 1;
  return AttentionPart{attended.out, attended.lse};
}

void SqueezedLookup::FinishStep() {
  if (step_samples_ == 0) return;
  kv_fraction_sum_ += step_fraction_ / step_samples_;
  comparisons_sum_ += step_comparisons_ / step_samples_;
  ++steps_;
  step_fraction_ = step_comparisons_ = 0;
  step_samples_ = 0;
}

}  // namespace squeezeserve
