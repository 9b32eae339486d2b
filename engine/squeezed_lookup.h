// A generation's attention to its stored context through the Squeezed index, on libtorch (the
// reference implementation; torch_attention.h): for every layer, the cluster lookup with the
// request's thresholds, exact attention over the selected clusters + window, and the statistics
// GenerationStats reports. One per generation; not thread-safe. Internal to engine/.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/attention.h"
#include "engine/attention_backend.h"
#include "engine/engine.h"
#include "engine/squeeze/read_ahead.h"
#include "engine/squeeze/sparse_attention.h"
#include "engine/stored_context.h"

namespace squeezeserve {

// The two threshold sets of one calibrated level: the query prefill selects once for all its
// tokens (scores averaged over them), each decode step selects per token (single-query scores,
// more spread, hence its own thresholds; docs/index_layout.md).
struct LookupThresholds {
  squeeze::Thresholds prefill;
  squeeze::Thresholds decode;
  int level = 0;  // index of the level in the summary: picks LayerIndex::head_thresholds[level]
};

// The thresholds of the calibrated level `attention.sparsity` names. FailedPrecondition when the
// context has no index; InvalidArgument naming attention.sparsity (and listing the levels) when it
// matches none within 1e-4, or attention.hierarchical on a 1-level index.
absl::StatusOr<LookupThresholds> ThresholdsFor(const ContextSummary& summary, const AttentionOptions& attention);

class SqueezedLookup {
 public:
  // Uses attention.hierarchical, attention.estimate_pruned and attention.read_ahead.
  SqueezedLookup(std::shared_ptr<const StoredContext> context, const AttentionOptions& attention,
                 LookupThresholds thresholds);

  // queries [H, n, D] of layer `layer`. per_token = false: one cluster set shared by the n tokens
  // with the prefill thresholds (prefill, as the authors); true: one set per token with the decode
  // thresholds (decode). Calls come in token order (read-ahead follows the generation).
  AttentionPart Attend(int64_t layer, const at::Tensor& queries, bool per_token);

  bool hierarchical() const { return selection_.hierarchical; }
  const LookupThresholds& thresholds() const { return thresholds_; }

  // Closes one step (a prefill chunk or a decode token) after all layers ran.
  void FinishStep() { stats_.FinishStep(); }

  bool estimate_pruned() const { return selection_.estimate_pruned; }
  bool read_ahead() const { return selection_.read_ahead; }
  // Per layer and KV head: (selected clustered keys + window keys + half a row per pruned cluster
  // whose mean value the estimate reads) / context tokens, and the centroid vectors scored.
  const LookupStats& stats() const { return stats_; }

 private:
  std::shared_ptr<const StoredContext> context_;
  squeeze::SelectionOptions selection_;  // thresholds unset: chosen per call
  LookupThresholds thresholds_;
  std::vector<squeeze::ReadAheadCursor> read_ahead_;  // per layer (with attention.read_ahead)
  LookupStats stats_;
};

}  // namespace squeezeserve
