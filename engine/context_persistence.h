// A StoredContext to and from its store directory (engine/context_files.h, docs/index_layout.md "On disk"). Tensors
// (docs/index_layout.md "On disk"): "tokens"; per layer l "layers.l.keys"/"layers.l.values"
// (the whole context KV as held in memory: cluster-sorted rows then the window when indexed),
// "layers.l.window_queries" and, when indexed, "layers.l.perm", ".centroids", ".cluster_offsets",
// ".coarse_centroids", ".coarse_offsets". Thresholds live in the manifest's summary. libtorch.
#pragma once

#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "engine/stored_context.h"

namespace squeezeserve {

absl::Status SaveStoredContext(const StoredContext& context, const std::string& store_dir,
                               const std::string& model_fingerprint, const SaveProgressFn& progress = nullptr);

// Copies the mapped tensors onto `device` as `dtype` (KV) after checking every name, dtype, shape
// and the offsets' invariants against `config` and the manifest: DataLoss on any mismatch, never a
// crash. NotFound / FailedPrecondition as OpenContextDir.
absl::StatusOr<std::shared_ptr<StoredContext>> LoadStoredContext(const std::string& store_dir, const std::string& id,
                                                                 const std::string& model_fingerprint,
                                                                 const ModelConfig& config, at::Device device,
                                                                 at::ScalarType dtype);

// A copy of `context` with every tensor on `device` (dtypes kept; pinned host memory when copying
// off a GPU, so bringing it back is one fast DMA), the index views rebuilt over the copied KV, and the
// summary's tier set to `tier`. For memory tiers (engine.h Engine::MoveContext). Throws what
// libtorch throws on allocation failure.
std::shared_ptr<StoredContext> CopyStoredContext(const StoredContext& context, at::Device device,
                                                 const std::string& tier);

}  // namespace squeezeserve
