// In-memory registry of ingested contexts, keyed by context id. Thread-safe.
// (Persistence to a store directory plugs in behind this interface: see the Squeezed index issue.)
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "engine/context_id.h"
#include "engine/engine.h"

namespace squeezeserve {

// The contexts a server knows, keyed by id. Thread-safe.
//
// In memory only by default. After AttachDirectory, Put writes every context through to
// <store_dir>/<id> (engine/context_files.h) before it becomes visible, Get loads contexts that are only
// on disk (after a restart, or ingested by another replica sharing the directory), List shows both, and
// Delete removes both.
//
// Memory tiers (with a directory): device memory holds the contexts generation reads, up to
// SetResidentLimit bytes; past it the least recently used move to host memory (SetHostLimit bytes,
// Engine::MoveContext), and past that they are dropped from memory — never lost, since every context is
// on disk before it is resident. Get brings a context back to the device from host memory, else from
// disk. Generations that hold a moved or dropped context keep their copy alive until they finish.
// Tier moves and disk loads are serialized (one at a time, outside the registry lock), so a Get of a
// context already on the device never waits behind a copy.
class ContextStore {
 public:
  // Call once, before serving. `engine` must outlive the store.
  void AttachDirectory(const Engine* engine, std::string store_dir);
  const std::string& store_dir() const { return store_dir_; }
  // KV + index bytes kept in device memory at most (0 = no limit). Only effective with a directory.
  void SetResidentLimit(uint64_t bytes) { resident_limit_ = bytes; }
  // KV + index bytes parked in host memory at most (0 = no host tier: evicted contexts go to disk).
  void SetHostLimit(uint64_t bytes) { host_limit_ = bytes; }

  // Persists first (when a directory is attached), then replaces any context of the same id.
  absl::Status Put(std::shared_ptr<const Context> context);
  // NotFound when unknown; FailedPrecondition / DataLoss when the stored copy cannot be used.
  absl::StatusOr<std::shared_ptr<const Context>> Get(const std::string& id) const;
  // Every known context, sorted by id; tier "disk" for contexts not resident.
  std::vector<ContextSummary> List() const;
  // NotFound when unknown. Readers holding the context keep it alive until they finish.
  absl::Status Delete(const std::string& id);

 private:
  const Engine* engine_ = nullptr;
  std::string store_dir_;
  mutable absl::Mutex mu_;
  struct Resident {
    std::shared_ptr<const Context> context;
    uint64_t last_use = 0;  // tick of the last Put/Get
    MemoryTier tier = MemoryTier::kDevice;
  };
  // Moves least recently used device contexts (other than `keep`) to host memory, or drops them,
  // until the device tier fits its limit; then drops host contexts until the host tier fits.
  void RebalanceTiers(const std::string& keep) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  uint64_t TierBytesLocked(MemoryTier tier) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  uint64_t resident_limit_ = 0;
  uint64_t host_limit_ = 0;
  mutable uint64_t tick_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::map<std::string, Resident, std::less<>> contexts_ ABSL_GUARDED_BY(mu_);
  // Serializes loads from disk and tier moves, so two requests for one context load it once.
  mutable absl::Mutex load_mu_ ABSL_ACQUIRED_BEFORE(mu_);
};


// Content address of a context: hex SHA-256 over the model fingerprint, the token ids and the index
// options. Stable across restarts and replicas.
std::string ContentAddress(std::string_view model_fingerprint, absl::Span<const int32_t> tokens,
                           const IndexOptions& index);

// Hex SHA-256 of bytes.
std::string Sha256Hex(std::string_view bytes);
// Hex SHA-256 of a file, streamed in 1 MiB blocks (stored contexts can be many GB).
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

}  // namespace squeezeserve
