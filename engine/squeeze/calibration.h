// Threshold calibration (docs/index_layout.md "Calibration"). Two threshold sets, because the two
// query-time selections see differently spread scores:
//  - prefill (shared selection): per layer, the window queries score every cluster with p̂ averaged
//    over the W queries per query head, max over the GQA group (as the authors);
//  - decode (per-token selection): every single window query scores every cluster on its own (p̂
//    per query head, max over the GQA group). A single query's p̂ is far more peaked/spread than a
//    W-query mean, so the prefill τ applied per token keeps much more than 1 − sparsity.
// A key's score is its cluster's. Thresholds are quantiles over ALL layers × KV heads × keys (× the
// calibration queries, for decode), with an optional per-head floor (head_floor_share). Use:
// AddLayer() after each layer's index is built, Finish() at the end.
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
  // Per-head floor: every (layer, KV head) keeps at least head_floor_share × (1 − sparsity) of its
  // own keys on the calibration queries, whatever the global τ says; the global τ is then raised so
  // that the total kept stays 1 − sparsity. 0 = one global τ (the authors'); 1 = every head keeps
  // exactly its share. Why: a global τ starves heads whose estimated scores are flat (their
  // best cluster's p̂ sits below τ) although their exact attention may be peaked on one key that its
  // cluster's centroid under-estimates (docs/index_layout.md "Per-head floor").
  float head_floor_share = 0.0f;
  // Hierarchical: the coarse level alone prunes sparsity × coarse_sparsity_scale of the keys; τ_fine
  // is then the quantile that brings the total pruned fraction (coarse OR fine) to `sparsity`.
  // Lower = safer coarse filter, higher = fewer fine centroids expanded. To be tuned by measurement.
  float coarse_sparsity_scale = 0.6f;
  double softmax_scale = 0;  // 0 = 1/sqrt(D)
  // Decode calibration keeps W'·H_kv·K per-query scores per layer (exact quantile over them).
  // W' = min(W, max(1, budget / (H_kv·K))) window queries, evenly strided and shifted per layer so
  // that the layers together still see most of the window. At 8K tokens (K ≈ 400, H_kv = 2,
  // W = 100) all queries are used; at 1M tokens and 8 KV heads one query per layer (32 layers:
  // 32 distinct queries, ~13M scores). Bounds both the stored scores and the [H, W', G, K] logits.
  int64_t decode_scores_per_layer = int64_t{1} << 20;
};

// The thresholds a lookup applies, per layer and KV head: [L, 3, H_kv] float32 on the CPU, the
// middle index a ThresholdKind. Each is min(global τ, the head's floor τ). Layers without clustered
// keys hold kKeepAll.
enum ThresholdKind : int64_t { kOneLevel = 0, kCoarse = 1, kFine = 2 };

// One threshold set (prefill or decode) of a level.
struct ThresholdSet {
  Thresholds global;    // the global τ of each kind (the per-head thresholds are at most these)
  at::Tensor per_head;  // [L, 3, H_kv], see ThresholdKind
  // Kept fraction of the clustered keys on the calibration queries with the per-head thresholds
  // (decode: the mean over single calibration queries).
  float kept_one_level = 0;
  float kept_hierarchical = 0;  // 0 when the index has one level
};

struct CalibratedLevel {
  float sparsity = 0;
  ThresholdSet prefill;  // one selection for the query's tokens (p̂ averaged over them)
  ThresholdSet decode;   // one selection per token: thresholds on single-query scores
};

struct CalibrationResult {
  int levels = 1;
  std::vector<CalibratedLevel> levels_info;  // in the order of options.sparsity_levels

  // For ContextSummary: thresholds coarse first ({coarse, fine} for a 2-level index, {one_level}
  // otherwise) and the matching kept fraction; one_level_threshold is always set (a 2-level index
  // can also be queried 1-level). The same for the decode set (decode_*).
  std::vector<SparsityLevelInfo> Summary() const;

  // Layer `layer`'s thresholds of every level, as LayerIndex::head_thresholds stores them:
  // [levels_info.size(), 2 (prefill, decode), 3 (ThresholdKind), H_kv].
  at::Tensor HeadThresholdsOfLayer(int64_t layer) const;
};

// One layer's cluster scores, [H_kv, E] with E = T'·K (T' selections: 1 for prefill, W' for
// decode), on the index's device; undefined when the layer has nothing to score. Internal to the
// Calibrator.
struct CalibrationScores {
  int64_t heads = 0;
  at::Tensor weights;         // keys per fine cluster / T': each key of a layer weighs 1 in total
  at::Tensor one_level;       // score with the fine denominator
  at::Tensor coarse_of_fine;  // score of the fine cluster's coarse parent (levels == 2)
  at::Tensor fine_hier;       // fine score with the coarse denominator (levels == 2)
};

class Calibrator {
 public:
  explicit Calibrator(CalibrationOptions options);

  // window_queries: the post-RoPE queries of the layer's W window tokens, [H_q, W, D]. Layers must
  // be added in order and all have the same number of index levels. Keeps only per-cluster scores
  // (K floats per head for prefill, W'·K for decode), on the index's device (a few hundred MB at
  // most for 32 layers with the default decode_scores_per_layer; freed when the ingest ends).
  absl::Status AddLayer(const LayerIndex& index, const at::Tensor& window_queries);

  // Thresholds for every sparsity level. FailedPrecondition without calibration data (no clustered
  // keys or no window queries), InvalidArgument for a sparsity outside [0, 1), Internal if a
  // threshold is not finite.
  absl::StatusOr<CalibrationResult> Finish() const;

 private:
  static CalibrationScores ScoreLayer(const LayerIndex& index, const at::Tensor& grouped_queries, int64_t G,
                                      double scale);

  CalibrationOptions options_;
  int levels_ = 0;
  std::vector<CalibrationScores> layers_;         // prefill: p̂ averaged over the W window queries
  std::vector<CalibrationScores> decode_layers_;  // decode: p̂ of each of W' single window queries
};

}  // namespace squeezeserve::squeeze
