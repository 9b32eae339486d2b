#include "engine/context_store.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/time/clock.h"
#include "absl/strings/str_cat.h"
#include "engine/context_files.h"
#include "engine/context_summary_json.h"
#include "engine/sha256.h"

namespace squeezeserve {

namespace {

uint64_t ResidentBytes(const Context& context) {
  return context.summary().kv_bytes + context.summary().index_bytes;
}

absl::Status NoContext(const ContextKey& key) {
  return absl::NotFoundError(absl::StrCat("context_id: no context \"", key.id, "\""));
}

// The generation of the copy of `summary`'s context just written to `dir`, or "" when it cannot be
// told apart from a version another replica wrote at the same moment ("" never matches the store, so
// the next check reloads from disk instead of serving a version that is not the store's).
std::string WrittenGeneration(const std::string& dir, const ContextSummary& summary) {
  absl::StatusOr<std::string> before = ReadContextGeneration(dir, summary.id);
  absl::StatusOr<nlohmann::json> manifest = ReadContextManifest(dir, summary.id);
  absl::StatusOr<std::string> after = ReadContextGeneration(dir, summary.id);
  if (!before.ok() || !manifest.ok() || !after.ok() || *before != *after) return "";
  try {
    const nlohmann::json& written = manifest->at("summary");
    if (written.at("created_unix_ms").get<int64_t>() != summary.created_unix_ms ||
        written.at("num_tokens").get<int64_t>() != summary.num_tokens) {
      return "";
    }
  } catch (const nlohmann::json::exception&) {
    return "";
  }
  return *before;
}

}  // namespace

ContextStore::KeyLocks::Held::Held(KeyLocks* locks, ContextKey key) : locks_(locks), key_(std::move(key)) {
  {
    absl::MutexLock lock(&locks_->mu_);
    Entry& entry = locks_->entries_[key_];  // std::map: the entry stays put while it has users
    ++entry.users;
    mu_ = &entry.mu;
  }
  mu_->Lock();
}

ContextStore::KeyLocks::Held::~Held() {
  mu_->Unlock();
  absl::MutexLock lock(&locks_->mu_);
  auto it = locks_->entries_.find(key_);
  if (--it->second.users == 0) locks_->entries_.erase(it);
}

void ContextStore::AttachDirectory(const Engine* engine, std::string store_dir) {
  engine_ = engine;
  store_dir_ = std::move(store_dir);
  if (store_dir_.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(store_dir_, ec);
  RemoveStaleTemporaries(store_dir_);
  for (const auto& entry : std::filesystem::directory_iterator(store_dir_, ec)) {
    if (entry.is_directory() && entry.path().filename().string().rfind('@', 0) == 0) {
      RemoveStaleTemporaries(entry.path().string());
    }
  }
}

std::string ContextStore::TenantDir(const std::string& tenant) const {
  return tenant.empty() ? store_dir_ : absl::StrCat(store_dir_, "/@", tenant);
}

absl::Status ContextStore::CheckRoom(const ContextKey& key, const TenantLimits& limits, uint64_t stored_bytes) const {
  if (limits.max_contexts > 0) {
    const std::map<std::string, ContextSummary> existing = SummariesOf(key.tenant);
    const int64_t after = static_cast<int64_t>(existing.size()) + (existing.count(key.id) ? 0 : 1);
    if (after > limits.max_contexts) {
      return absl::ResourceExhaustedError(absl::StrCat("the tenant's quota allows ", limits.max_contexts,
                                                       " stored contexts; delete one first"));
    }
  }
  if (stored_bytes == 0 || store_dir_.empty()) return absl::OkStatus();
  return CheckStoreSpace(TenantDir(key.tenant), stored_bytes, absl::StrCat("context '", key.id, "'"));
}

absl::Status ContextStore::Put(const std::string& tenant, std::shared_ptr<const Context> context,
                               const TenantLimits& limits, const SaveProgressFn& progress) {
  const ContextKey key{tenant, context->summary().id};
  // Quotas are checked under the tenant's lock (the key with no id), so two ingests cannot both pass.
  std::optional<KeyLocks::Held> tenant_lock;
  if (limits.max_contexts > 0 || limits.max_bytes > 0) {
    tenant_lock.emplace(&key_locks_, ContextKey{tenant, ""});
    if (absl::Status room = CheckRoom(key, limits); !room.ok()) return room;
    if (limits.max_bytes > 0) {
      uint64_t bytes = ResidentBytes(*context);
      for (const auto& [id, summary] : SummariesOf(tenant)) {
        if (id != key.id) bytes += summary.kv_bytes + summary.index_bytes;
      }
      if (bytes > limits.max_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat("the tenant's quota allows ", limits.max_bytes,
                                                         " bytes of stored contexts; this one would make ", bytes));
      }
    }
  }
  KeyLocks::Held key_lock(&key_locks_, key);
  std::string generation;
  if (!store_dir_.empty()) {
    if (absl::Status saved = engine_->SaveContext(*context, TenantDir(tenant), progress); !saved.ok()) return saved;
    generation = WrittenGeneration(TenantDir(tenant), context->summary());
  }
  absl::MutexLock load_lock(&load_mu_);
  {
    absl::MutexLock lock(&mu_);
    contexts_[key] = Resident{std::move(context), ++tick_, MemoryTier::kDevice, generation, absl::Now()};
  }
  RebalanceTiers(key);
  return absl::OkStatus();
}

uint64_t ContextStore::TierBytesLocked(MemoryTier tier) const {
  uint64_t total = 0;
  for (const auto& [key, resident] : contexts_) {
    if (resident.tier == tier) total += ResidentBytes(*resident.context);
  }
  return total;
}

void ContextStore::RebalanceTiers(const ContextKey& keep) const {
  if (resident_limit_ == 0 || store_dir_.empty()) return;
  for (;;) {
    ContextKey victim_key;
    std::shared_ptr<const Context> victim;
    {
      absl::MutexLock lock(&mu_);
      if (TierBytesLocked(MemoryTier::kDevice) <= resident_limit_) break;
      uint64_t oldest = 0;
      for (const auto& [key, resident] : contexts_) {
        if ((!(key < keep) && !(keep < key)) || resident.tier != MemoryTier::kDevice) continue;
        if (victim == nullptr || resident.last_use < oldest) {
          victim_key = key;
          victim = resident.context;
          oldest = resident.last_use;
        }
      }
      if (victim == nullptr) break;  // only `keep` is left: it stays even if it alone is larger
    }
    // The copy runs outside the registry lock; the entry is swapped only if nobody replaced it meanwhile.
    absl::StatusOr<std::shared_ptr<const Context>> parked =
        host_limit_ > 0 ? engine_->MoveContext(*victim, MemoryTier::kHost)
                        : absl::StatusOr<std::shared_ptr<const Context>>(absl::CancelledError("no host tier"));
    absl::MutexLock lock(&mu_);
    auto it = contexts_.find(victim_key);
    if (it == contexts_.end() || it->second.context != victim) continue;
    if (parked.ok()) {
      it->second.context = *std::move(parked);
      it->second.tier = MemoryTier::kHost;
    } else {
      contexts_.erase(it);  // on disk already; no host tier, or host memory is full
    }
  }
  if (host_limit_ == 0) return;
  absl::MutexLock lock(&mu_);
  uint64_t host_bytes = TierBytesLocked(MemoryTier::kHost);
  while (host_bytes > host_limit_) {
    auto victim = contexts_.end();
    for (auto it = contexts_.begin(); it != contexts_.end(); ++it) {
      if (it->second.tier == MemoryTier::kHost &&
          (victim == contexts_.end() || it->second.last_use < victim->second.last_use)) {
        victim = it;
      }
    }
    if (victim == contexts_.end()) break;
    host_bytes -= ResidentBytes(*victim->second.context);
    contexts_.erase(victim);
  }
}

std::shared_ptr<const Context> ContextStore::FreshResidentLocked(const ContextKey& key) const {
  auto it = contexts_.find(key);
  if (it == contexts_.end() || it->second.tier != MemoryTier::kDevice) return nullptr;
  if (!store_dir_.empty() && absl::Now() - it->second.validated >= revalidate_interval_) return nullptr;
  it->second.last_use = ++tick_;
  return it->second.context;
}

absl::StatusOr<std::shared_ptr<const Context>> ContextStore::Get(const ContextKey& key) const {
  {
    absl::MutexLock lock(&mu_);
    if (std::shared_ptr<const Context> fresh = FreshResidentLocked(key)) return fresh;
  }
  if (store_dir_.empty()) {
    absl::MutexLock lock(&mu_);
    auto it = contexts_.find(key);
    if (it == contexts_.end()) return NoContext(key);
    return it->second.context;
  }
  KeyLocks::Held key_lock(&key_locks_, key);
  return LoadLocked(key);
}

absl::StatusOr<std::shared_ptr<const Context>> ContextStore::LoadLocked(const ContextKey& key) const {
  const std::string dir = TenantDir(key.tenant);
  // The store's version now (read before loading: if it changes during the load, the next check
  // sees a difference and reloads, never the other way round).
  absl::StatusOr<std::string> generation = ReadContextGeneration(dir, key.id);
  std::shared_ptr<const Context> parked;
  {
    absl::MutexLock lock(&mu_);
    auto it = contexts_.find(key);
    if (it != contexts_.end()) {
      if (!generation.ok() || *generation != it->second.generation) {
        contexts_.erase(it);  // deleted or replaced by another replica (or under our feet)
      } else if (it->second.tier == MemoryTier::kDevice) {
        it->second.validated = absl::Now();
        it->second.last_use = ++tick_;
        return it->second.context;
      } else {
        parked = it->second.context;
      }
    }
  }
  if (!generation.ok()) return NoContext(key);
  absl::MutexLock load_lock(&load_mu_);
  absl::StatusOr<std::shared_ptr<const Context>> loaded =
      parked != nullptr ? engine_->MoveContext(*parked, MemoryTier::kDevice) : engine_->LoadContext(dir, key.id);
  if (!loaded.ok()) {
    if (absl::IsNotFound(loaded.status())) return NoContext(key);
    return loaded.status();
  }
  {
    absl::MutexLock lock(&mu_);
    contexts_[key] = Resident{*loaded, ++tick_, MemoryTier::kDevice, *generation, absl::Now()};
  }
  RebalanceTiers(key);
  return *loaded;
}

std::map<std::string, ContextSummary> ContextStore::SummariesOf(const std::string& tenant) const {
  std::map<std::string, ContextSummary> summaries;
  if (!store_dir_.empty()) {
    // The store is the truth: a context resident here but deleted by another replica is not listed.
    for (const std::string& id : ListContextDirs(TenantDir(tenant))) {
      absl::StatusOr<nlohmann::json> manifest = ReadContextManifest(TenantDir(tenant), id);
      if (!manifest.ok() || !manifest->contains("summary")) continue;  // damaged: Get reports why
      absl::StatusOr<ContextSummary> summary = SummaryFromJson((*manifest)["summary"]);
      if (!summary.ok()) continue;
      summary->id = id;
      summary->tier = "disk";
      summaries[id] = *std::move(summary);
    }
  }
  absl::MutexLock lock(&mu_);
  for (auto it = contexts_.lower_bound(ContextKey{tenant, ""}); it != contexts_.end() && it->first.tenant == tenant;
       ++it) {
    if (!store_dir_.empty() && !summaries.count(it->first.id)) continue;
    summaries[it->first.id] = it->second.context->summary();
  }
  return summaries;
}

std::vector<ContextSummary> ContextStore::List(const std::string& tenant) const {
  std::vector<ContextSummary> out;
  for (auto& [id, summary] : SummariesOf(tenant)) out.push_back(std::move(summary));
  return out;
}

std::vector<ContextSummary> ContextStore::ListAll() const {
  std::set<std::string> tenants = {""};
  if (!store_dir_.empty()) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(store_dir_, ec)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_directory() && name.size() > 1 && name[0] == '@') tenants.insert(name.substr(1));
    }
  }
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, resident] : contexts_) tenants.insert(key.tenant);
  }
  std::vector<ContextSummary> out;
  for (const std::string& tenant : tenants) {
    for (ContextSummary& summary : List(tenant)) out.push_back(std::move(summary));
  }
  return out;
}

absl::Status ContextStore::Delete(const ContextKey& key) {
  KeyLocks::Held key_lock(&key_locks_, key);
  bool in_memory = false;
  {
    absl::MutexLock lock(&mu_);
    in_memory = contexts_.erase(key) > 0;
  }
  if (store_dir_.empty()) return in_memory ? absl::OkStatus() : NoContext(key);
  absl::Status removed = RemoveContextDir(TenantDir(key.tenant), key.id);
  if (absl::IsNotFound(removed)) return NoContext(key);  // another replica deleted it first
  return removed;
}


std::string Sha256Hex(std::string_view bytes) {
  Sha256 sha;
  sha.Update(bytes.data(), bytes.size());
  return sha.HexDigest();
}

absl::StatusOr<std::string> Sha256FileHex(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  Sha256 sha;
  std::vector<char> block(1 << 20);
  size_t n;
  while ((n = std::fread(block.data(), 1, block.size(), file)) > 0) sha.Update(block.data(), n);
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) return absl::DataLossError(absl::StrCat("read error in ", path));
  return sha.HexDigest();
}

std::string ContentAddress(std::string_view model_fingerprint, absl::Span<const int32_t> tokens,
                           const IndexOptions& index, std::string_view tenant) {
  Sha256 sha;
  // Every field is written with an explicit tag so that two different inputs never hash alike.
  auto field = [&sha](std::string_view tag, std::string_view value) {
    std::string header = absl::StrCat(absl::string_view(tag.data(), tag.size()), ":", value.size(), ":");
    sha.Update(header.data(), header.size());
    sha.Update(value.data(), value.size());
  };
  field("model", model_fingerprint);  // note: absl::string_view is not std::string_view in Debian's Abseil
  field("tokens", std::string_view(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(int32_t)));
  std::string options = absl::StrCat(index.centroid_fraction, ",", index.observation_window, ",",
                                     index.max_iterations, ",", index.seed, ",", index.levels, ",",
                                     index.coarse_centroid_fraction, ",", index.dense_only, ",",
                                     index.head_floor_share);
  for (float level : index.sparsity_levels) absl::StrAppend(&options, ",", level);
  field("index", options);
  if (!tenant.empty()) field("tenant", tenant);  // the default tenant keeps the addresses it always had
  return sha.HexDigest();
}

}  // namespace squeezeserve
