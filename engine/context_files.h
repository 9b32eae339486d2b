// On-disk form of a stored context (docs/index_layout.md "On disk"): a directory per context holding
// manifest.json, manifest.sha256 (the manifest's own checksum) and tensors.safetensors (whose checksum
// the manifest holds). Directories are published atomically — written under a temporary name, fsynced,
// then renamed into place — so a crash mid-write never leaves a half-written context visible.
//
// The manifest records the context id and the namespace (a tenant's directory "@NAME" of the store, or
// "" at its top), so a directory copied under another name or into another tenant's namespace does not
// verify; and a generation, unique per publication, so the manifest's checksum names one version of a
// context: replicas sharing a store compare it to learn that a context was replaced or deleted
// (ReadContextGeneration). Messages never carry server paths (they reach clients).
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

// Bumped whenever the files, tensor names or their meaning change; older directories are refused with
// FAILED_PRECONDITION. 2: manifest.sha256, "namespace" and "generation" in the manifest.
inline constexpr int kContextFormatVersion = 2;

struct ContextDir {
  nlohmann::json manifest;  // as written by the engine, plus "format", "format_version", "files"
  std::unique_ptr<SafetensorsFile> tensors;
};

// RESOURCE_EXHAUSTED when the file system holding `store_dir` (or its nearest existing parent) has
// fewer than `bytes` available, naming both sizes and `what` (e.g. "context 'doc'"); OK when the space
// cannot be queried (the write itself still reports a full disk).
absl::Status CheckStoreSpace(const std::string& store_dir, uint64_t bytes, const std::string& what);

// Writes <store_dir>/<id>/{manifest.json, manifest.sha256, tensors.safetensors}. `manifest` must carry
// "model_fingerprint". Replaces an existing directory of the same id (the old version stays until the
// new one is complete, so the new one needs its whole size free). RESOURCE_EXHAUSTED when the disk (or
// a quota or file size limit) has no room, before writing anything where the free space says so
// (CheckStoreSpace: a 512K-token context is ~76 GB); nothing is left behind on any failure.
// `progress`: the tensors file's writing (WriteSafetensors).
absl::Status PublishContextDir(const std::string& store_dir, const std::string& id, nlohmann::json manifest,
                               const std::vector<TensorToWrite>& tensors, const WriteProgressFn& progress = nullptr);

// Opens <store_dir>/<id>: NotFound when absent; FailedPrecondition when built for another model
// fingerprint or format version; DataLoss when a checksum, size or the manifest does not verify (the
// manifest's own checksum, its id and namespace included).
absl::StatusOr<ContextDir> OpenContextDir(const std::string& store_dir, const std::string& id,
                                          const std::string& model_fingerprint);

// Parses and verifies <store_dir>/<id>/manifest.json (its checksum, id and namespace) without the
// tensors' checksum pass: for listing without loading.
absl::StatusOr<nlohmann::json> ReadContextManifest(const std::string& store_dir, const std::string& id);

// The generation of <store_dir>/<id> (its manifest's checksum): changes with every publication.
// NotFound when the context is not in the store. Reads one small file.
absl::StatusOr<std::string> ReadContextGeneration(const std::string& store_dir, const std::string& id);

// The namespace a store directory holds: "NAME" for a tenant's "<store>/@NAME", "" otherwise.
std::string NamespaceOfStoreDir(const std::string& store_dir);

// Ids of the published context directories (sorted); temporaries are skipped.
std::vector<std::string> ListContextDirs(const std::string& store_dir);

// Removes <store_dir>/<id>; NotFound when absent. Atomic: renamed away first, then deleted.
absl::Status RemoveContextDir(const std::string& store_dir, const std::string& id);

// Deletes temporaries left by a crash (called once at start-up). Returns how many were removed.
int RemoveStaleTemporaries(const std::string& store_dir);

}  // namespace squeezeserve
