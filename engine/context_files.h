// On-disk form of a stored context (DESIGN.md §5): a directory per context holding manifest.json and
// tensors.safetensors. Directories are published atomically — written under a temporary name,
// fsynced, then renamed into place — so a crash mid-write never leaves a half-written context visible.
// Plain C++ (no libtorch): the engine turns its tensors into TensorToWrite and back.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/safetensors.h"

namespace squeezeserve {

// Bumped whenever the tensor names or their meaning change; older directories are refused with
// FAILED_PRECONDITION.
inline constexpr int kContextFormatVersion = 1;

struct ContextDir {
  nlohmann::json manifest;  // as written by the engine, plus "format", "format_version", "files"
  std::unique_ptr<SafetensorsFile> tensors;
};

// Writes <store_dir>/<id>/{manifest.json, tensors.safetensors}. `manifest` must carry
// "model_fingerprint". Replaces an existing directory of the same id.
absl::Status PublishContextDir(const std::string& store_dir, const std::string& id, nlohmann::json manifest,
                               const std::vector<TensorToWrite>& tensors);

// Opens <store_dir>/<id>: NotFound when absent; FailedPrecondition when built for another model
// fingerprint or format version; DataLoss when a checksum, size or the manifest does not verify.
absl::StatusOr<ContextDir> OpenContextDir(const std::string& store_dir, const std::string& id,
                                          const std::string& model_fingerprint);

// Parses <store_dir>/<id>/manifest.json only (no checksum pass): for listing without loading.
absl::StatusOr<nlohmann::json> ReadContextManifest(const std::string& store_dir, const std::string& id);

// Ids of the published context directories (sorted); temporaries are skipped.
std::vector<std::string> ListContextDirs(const std::string& store_dir);

// Removes <store_dir>/<id>; NotFound when absent. Atomic: renamed away first, then deleted.
absl::Status RemoveContextDir(const std::string& store_dir, const std::string& id);

// Deletes temporaries left by a crash (called once at start-up). Returns how many were removed.
int RemoveStaleTemporaries(const std::string& store_dir);

}  // namespace squeezeserve
