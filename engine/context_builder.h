// Builds a StoredContext from context tokens: the prefill (LlamaModel::Prefill), then (unless
// dense_only or the context is too short) the Squeezed index of every layer and its calibrated
// thresholds. Shared by the engine's Ingest and the accuracy bench, which drives its own model.
// libtorch; internal.
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

// InvalidArgument naming the field for index options that can never build an index (checked before
// the prefill so that a bad request fails fast). dense_only skips the checks.
absl::Status ValidateIndexOptions(const IndexOptions& index);

// Whether a context of `num_tokens` gets an index: it needs calibration queries (a window of at least
// one token) and at least one centroid's worth of clustered tokens (1 / centroid_fraction).
bool ShouldBuildIndex(int64_t num_tokens, const IndexOptions& index);

// The caller has checked the token ids and the length against the model. Progress stages: "prefill"
// (after each unit of prefill work; tokens_done = the share done × the tokens), then "clustering"
// (at its start and after each layer) and "calibrating"; control.cancelled is polled between units
// of prefill work and between clustering layers. Each stage ends with the device's work done, so
// that the stages' wall times (IngestStageTimer) are their own.
absl::StatusOr<std::shared_ptr<StoredContext>> BuildStoredContext(const LlamaModel& model, std::string id,
                                                                  std::vector<int32_t> tokens,
                                                                  const IndexOptions& index,
                                                                  const PrefillControl& control,
                                                                  const ProgressFn& progress);

}  // namespace squeezeserve
