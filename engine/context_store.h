// The contexts a server knows, keyed by tenant and id. Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/context_id.h"
#include "engine/engine.h"

namespace squeezeserve {

// Which context: the tenant's namespace ("" = the default one) and the id within it. Contexts of
// different tenants never see each other, whatever their ids.
struct ContextKey {
  std::string tenant;
  std::string id;
  bool operator<(const ContextKey& other) const {
    return std::tie(tenant, id) < std::tie(other.tenant, other.id);
  }
};

// Caps on one tenant's stored contexts (0 = none): checked by Put, atomically with it.
struct TenantLimits {
  int64_t max_contexts = 0;
  uint64_t max_bytes = 0;  // KV + index bytes
};

// The contexts a server knows. In memory only by default. After AttachDirectory, Put writes every
// context through to the store before it becomes visible — the default tenant's under <store_dir>/<id>,
// another tenant's under <store_dir>/@<tenant>/<id> (engine/context_files.h) — Get loads contexts that
// are only on disk (after a restart, or ingested by another replica sharing the directory), List shows
// both, and Delete removes both.
//
// Linearizable per context: Put (a new version), Delete and the load of one context serialize on a
// lock of their own key, so a Delete that returned leaves nothing a later Get could load, and a load
// racing a Delete either finishes first (and the Delete removes what it loaded) or finds nothing.
// Replicas sharing a directory: a resident context is served without looking at the disk for at most
// SetRevalidateInterval; the next Get after that compares the store's generation of the context
// (engine/context_files.h ReadContextGeneration) with the one it loaded, and drops or reloads it when
// another replica deleted or replaced it. That interval is the staleness bound between replicas.
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
  // How long a resident context is served before its store copy is checked again (replicas sharing a
  // directory); zero = on every Get. Only effective with a directory.
  void SetRevalidateInterval(absl::Duration interval) { revalidate_interval_ = interval; }

  // Persists first (when a directory is attached), then replaces any context of the same key.
  // RESOURCE_EXHAUSTED when the tenant's limits would be exceeded (replacing a context counts its
  // new size only) or the disk is full.
  // `progress` follows the writing to the directory (Engine::SaveContext).
  absl::Status Put(const std::string& tenant, std::shared_ptr<const Context> context,
                   const TenantLimits& limits = {}, const SaveProgressFn& progress = nullptr);
  // RESOURCE_EXHAUSTED when one more context of the tenant (other than `key.id`, which would be
  // replaced) would pass its context cap, or when an attached directory's disk has fewer than
  // `stored_bytes` free (a lower bound of what storing it will write): the cheap check before an
  // ingest's work, so that a context too large for the disk fails before its prefill, not after.
  absl::Status CheckRoom(const ContextKey& key, const TenantLimits& limits, uint64_t stored_bytes = 0) const;
  // NotFound when unknown; FailedPrecondition / DataLoss when the stored copy cannot be used.
  absl::StatusOr<std::shared_ptr<const Context>> Get(const ContextKey& key) const;
  // The tenant's contexts, sorted by id; tier "disk" for contexts not resident.
  std::vector<ContextSummary> List(const std::string& tenant) const;
  // Every tenant's contexts (for metrics).
  std::vector<ContextSummary> ListAll() const;
  // NotFound when unknown. Readers holding the context keep it alive until they finish.
  absl::Status Delete(const ContextKey& key);

 private:
  struct Resident {
    std::shared_ptr<const Context> context;
    uint64_t last_use = 0;  // tick of the last Put/Get
    MemoryTier tier = MemoryTier::kDevice;
    std::string generation;  // of the store copy it was loaded from or written to ("" without a store)
    absl::Time validated;    // when that generation was last compared with the store's
  };

  // A mutex per key, created on demand and dropped when unused.
  class KeyLocks {
   public:
    class Held {
     public:
      Held(KeyLocks* locks, ContextKey key);
      ~Held();
      Held(const Held&) = delete;
      Held& operator=(const Held&) = delete;

     private:
      KeyLocks* locks_;
      ContextKey key_;
      absl::Mutex* mu_;
    };

   private:
    struct Entry {
      absl::Mutex mu;
      int users = 0;
    };
    absl::Mutex mu_;
    std::map<ContextKey, Entry> entries_ ABSL_GUARDED_BY(mu_);
  };

  std::string TenantDir(const std::string& tenant) const;
  // Resident and checked recently enough to serve without the disk.
  std::shared_ptr<const Context> FreshResidentLocked(const ContextKey& key) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Get's slow path, under the key's lock.
  absl::StatusOr<std::shared_ptr<const Context>> LoadLocked(const ContextKey& key) const;
  // Summaries of the tenant's stored and resident contexts.
  std::map<std::string, ContextSummary> SummariesOf(const std::string& tenant) const;
  // Moves least recently used device contexts (other than `keep`) to host memory, or drops them,
  // until the device tier fits its limit; then drops host contexts until the host tier fits.
  void RebalanceTiers(const ContextKey& keep) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  uint64_t TierBytesLocked(MemoryTier tier) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Engine* engine_ = nullptr;
  std::string store_dir_;
  uint64_t resident_limit_ = 0;
  uint64_t host_limit_ = 0;
  absl::Duration revalidate_interval_ = absl::Seconds(1);

  mutable KeyLocks key_locks_;
  // Serializes loads from disk and tier moves, so that memory limits hold.
  mutable absl::Mutex load_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  mutable uint64_t tick_ ABSL_GUARDED_BY(mu_) = 0;
  mutable std::map<ContextKey, Resident> contexts_ ABSL_GUARDED_BY(mu_);
};

// Content address of a context: hex SHA-256 over the model fingerprint, the token ids, the index
// options and, for any tenant but the default one, the tenant (so that one tenant cannot compute the
// id another's copy of a document has). Stable across restarts and replicas.
std::string ContentAddress(std::string_view model_fingerprint, absl::Span<const int32_t> tokens,
                           const IndexOptions& index, std::string_view tenant = "");

// Hex SHA-256 of bytes.
std::string Sha256Hex(std::string_view bytes);
// Hex SHA-256 of a file, streamed in 1 MiB blocks (stored contexts can be many GB).
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

}  // namespace squeezeserve
