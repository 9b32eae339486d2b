#include "engine/context_store.h"

#include <openssl/evp.h>

#include <cstdio>
#include <filesystem>
#include <cstring>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "engine/context_files.h"
#include "engine/context_summary_json.h"

namespace squeezeserve {

void ContextStore::AttachDirectory(const Engine* engine, std::string store_dir) {
  engine_ = engine;
  store_dir_ = std::move(store_dir);
  if (!store_dir_.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(store_dir_, ec);
    RemoveStaleTemporaries(store_dir_);
  }
}

absl::Status ContextStore::Put(std::shared_ptr<const Context> context) {
  if (!store_dir_.empty()) {
    if (absl::Status saved = engine_->SaveContext(*context, store_dir_); !saved.ok()) return saved;
  }
  const std::string id = context->summary().id;
  absl::MutexLock load_lock(&load_mu_);
  {
    absl::MutexLock lock(&mu_);
    contexts_[id] = Resident{std::move(context), ++tick_, MemoryTier::kDevice};
  }
  RebalanceTiers(id);
  return absl::OkStatus();
}

namespace {
uint64_t ResidentBytes(const Context& context) {
  return context.summary().kv_bytes + context.summary().index_bytes;
}
}  // namespace

uint64_t ContextStore::TierBytesLocked(MemoryTier tier) const {
  uint64_t total = 0;
  for (const auto& [id, resident] : contexts_) {
    if (resident.tier == tier) total += ResidentBytes(*resident.context);
  }
  return total;
}

void ContextStore::RebalanceTiers(const std::string& keep) const {
  if (resident_limit_ == 0 || store_dir_.empty()) return;
  for (;;) {
    std::string victim_id;
    std::shared_ptr<const Context> victim;
    {
      absl::MutexLock lock(&mu_);
      if (TierBytesLocked(MemoryTier::kDevice) <= resident_limit_) break;
      uint64_t oldest = 0;
      for (const auto& [id, resident] : contexts_) {
        if (id == keep || resident.tier != MemoryTier::kDevice) continue;
        if (victim == nullptr || resident.last_use < oldest) {
          victim_id = id;
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
    auto it = contexts_.find(victim_id);
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

absl::StatusOr<std::shared_ptr<const Context>> ContextStore::Get(const std::string& id) const {
  {
    absl::MutexLock lock(&mu_);
    auto it = contexts_.find(id);
    if (it != contexts_.end() && it->second.tier == MemoryTier::kDevice) {
      it->second.last_use = ++tick_;
      return it->second.context;
    }
  }
  if (store_dir_.empty()) return absl::NotFoundError(absl::StrCat("context_id: no context \"", id, "\""));
  absl::MutexLock load_lock(&load_mu_);
  std::shared_ptr<const Context> parked;
  {
    absl::MutexLock lock(&mu_);  // brought back by the request we waited for?
    auto it = contexts_.find(id);
    if (it != contexts_.end() && it->second.tier == MemoryTier::kDevice) {
      it->second.last_use = ++tick_;
      return it->second.context;
    }
    if (it != contexts_.end()) parked = it->second.context;
  }
  absl::StatusOr<std::shared_ptr<const Context>> loaded =
      parked != nullptr ? engine_->MoveContext(*parked, MemoryTier::kDevice) : engine_->LoadContext(store_dir_, id);
  if (!loaded.ok()) {
    if (absl::IsNotFound(loaded.status())) {
      return absl::NotFoundError(absl::StrCat("context_id: no context \"", id, "\""));
    }
    return loaded.status();
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = contexts_.find(id);
    // Deleted while it was being copied (Delete does not wait for moves): serve this copy, keep none.
    if (parked != nullptr && (it == contexts_.end() || it->second.context != parked)) return *loaded;
    contexts_[id] = Resident{*loaded, ++tick_, MemoryTier::kDevice};
  }
  RebalanceTiers(id);
  return *loaded;
}

std::vector<ContextSummary> ContextStore::List() const {
  std::map<std::string, ContextSummary> summaries;
  if (!store_dir_.empty()) {
    for (const std::string& id : ListContextDirs(store_dir_)) {
      absl::StatusOr<nlohmann::json> manifest = ReadContextManifest(store_dir_, id);
      if (!manifest.ok() || !manifest->contains("summary")) continue;  // unreadable: Get reports why
      absl::StatusOr<ContextSummary> summary = SummaryFromJson((*manifest)["summary"]);
      if (summary.ok()) summaries[id] = *std::move(summary);
    }
  }
  absl::MutexLock lock(&mu_);
  for (const auto& [id, resident] : contexts_) summaries[id] = resident.context->summary();
  std::vector<ContextSummary> out;
  out.reserve(summaries.size());
  for (auto& [id, summary] : summaries) out.push_back(std::move(summary));
  return out;
}

absl::Status ContextStore::Delete(const std::string& id) {
  bool in_memory = false;
  {
    absl::MutexLock lock(&mu_);
    in_memory = contexts_.erase(id) > 0;
  }
  if (store_dir_.empty()) {
    return in_memory ? absl::OkStatus() : absl::NotFoundError(absl::StrCat("context_id: no context \"", id, "\""));
  }
  absl::Status removed = RemoveContextDir(store_dir_, id);
  if (absl::IsNotFound(removed) && in_memory) return absl::OkStatus();
  if (absl::IsNotFound(removed)) return absl::NotFoundError(absl::StrCat("context_id: no context \"", id, "\""));
  return removed;
}


namespace {

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  void Update(const void* data, size_t size) { EVP_DigestUpdate(ctx_, data, size); }
  std::string HexDigest() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx_, digest, &size);
    return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), size));
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace

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
                           const IndexOptions& index) {
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
  return sha.HexDigest();
}

}  // namespace squeezeserve
