// Builds a StoredContext from context tokens: the chunked prefill, then (unless dense_only or the
// context is too short) the Squeezed index of every layer and its calibrated thresholds. Shared by
// the engine's Ingest and the accuracy bench, which drives its own model. libtorch; internal.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/llama_model.h"
#include "engine/stored_context.h"

namespace squeezeserve {

// Runs one forward pass (the engine serializes them); returns the logits or an undefined tensor.
using ForwardFn = std::function<absl::StatusOr<at::Tensor>(const ForwardArgs&)>;

// InvalidArgument naming the field for index options that can never build an index (checked before
// the prefill so that a bad request fails fast). dense_only skips the checks.
absl::Status ValidateIndexOptions(const IndexOptions& index);

// Whether a context of `num_tokens` gets an index: it needs calibration queries (a window of at least
// one token) and at least one centroid's worth of clustered tokens (1 / centroid_fraction).
bool ShouldBuildIndex(int64_t num_tokens, const IndexOptions& index);

// The caller has checked the token ids and the length against the model. Progress stages: "prefill",
// then "clustering" (once per layer) and "calibrating"; `cancelled` is polled between chunks and
// between layers.
absl::StatusOr<std::shared_ptr<StoredContext>> BuildStoredContext(const LlamaModel& model, const ForwardFn& forward,
                                                                  std::string id, std::vector<int32_t> tokens,
                                                                  const IndexOptions& index,
                                                                  int64_t prefill_chunk_tokens,
                                                                  const ProgressFn& progress,
                                                                  const CancelFn& cancelled);

}  // namespace squeezeserve
