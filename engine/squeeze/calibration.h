// Threshold calibration (docs/index_layout.md "Calibration"). Per layer, the window queries score
// every cluster (p̂ averaged over the W queries per query head, max over the GQA group); a key's
// score is its cluster's. Thresholds are then quantiles over ALL layers × KV heads × keys (or per
// layer, behind an option). Use: AddLayer() after each layer's index is built, Finish() at the end.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/squeeze/index_builder.h"

namespace squeezeserve::squeeze {

// Thresholds on p̂ (keep iff score > τ). p̂ >= 0, so τ = kKeepAll keeps every non-empty cluster.
inline constexpr float kKeepAll = -1.0f;

struct Thresholds {
  float one_level = kKeepAll;  // fine clusters scored with the fine denominator (1-level lookup)
  float coarse = kKeepAll;     // hierarchical lookup: coarse level
  float fine = kKeepAll;       // hierarchical lookup: fine level, scored with the coarse denominator
};

struct CalibrationOptions {
  std::vector<float> sparsity_levels = {0.5f, 0.7f, 0.8f, 0.9f};  // fractions pruned, each in [0, 1)
  // Also compute one set of thresholds per layer (the global ones are always computed).
  bool per_layer_thresholds = false;
  // Hierarchical: the coarse level alone prunes sparsity × coarse_sparsity_scale of the keys; τ_fine
  // is then the quantile that brings the total pruned fraction (coarse OR fine) to `sparsity`.
  // Lower = safer coarse filter, higher = fewer fine centroids expanded. To be tuned by measurement.
  float coarse_sparsity_scale = 0.6f;
  double softmax_scale = 0;  // 0 = 1/sqrt(D)
};

struct CalibratedLevel {
  float sparsity = 0;
  Thresholds global;
  // Kept fraction of the clustered keys on the calibration queries with the global thresholds.
  float kept_fraction_one_level = 0;
  float kept_fraction_hierarchical = 0;  // 0 when the index has one level
  std::vector<Thresholds> per_layer;     // one per AddLayer call, only with per_layer_thresholds
};

struct CalibrationResult {
  int levels = 1;
  std::vector<CalibratedLevel> levels_info;  // in the order of options.sparsity_levels

  // For ContextSummary: thresholds coarse first ({coarse, fine} for a 2-level index, {one_level}
  // otherwise) and the matching kept fraction; one_level_threshold is always set (a 2-level index
  // can also be queried 1-level).
  std::vector<SparsityLevelInfo> Summary() const;
};

class Calibrator {
 public:
  explicit Calibrator(CalibrationOptions options);

  // window_queries: the post-RoPE queries of the layer's W window tokens, [H_q, W, D]. Layers must
  // be added in order and all have the same number of index levels. Keeps only per-cluster scores
  // (K floats per head), on the CPU.
  absl::Status AddLayer(const LayerIndex& index, const at::Tensor& window_queries);

  // Thresholds for every sparsity level. FailedPrecondition without calibration data (no clustered
  // keys or no window queries), InvalidArgument for a sparsity outside [0, 1), Internal if a
  // threshold is not finite.
  absl::StatusOr<CalibrationResult> Finish() const;

 private:
  struct LayerScores {
    at::Tensor sizes;            // [H·K] keys per fine cluster (float, CPU)
    at::Tensor one_level;        // [H·K] score with the fine denominator
    at::Tensor coarse_of_fine;   // [H·K] score of the fine cluster's coarse parent (levels == 2)
    at::Tensor fine_hier;        // [H·K] fine score with the coarse denominator (levels == 2)
  };
  CalibrationOptions options_;
  int levels_ = 0;
  std::vector<LayerScores> layers_;
};

}  // namespace squeezeserve::squeeze
