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
  absl::MutexLock lock(&mu_);
  const std::string id = context->summary().id;
  contexts_[id] = Resident{std::move(context), ++tick_};
  EvictOverLimitLocked(id);
  return absl::OkStatus();
}

namespace {
uint64_t ResidentBytes(const Context& context) {
  return context.summary().kv_bytes + context.summary().index_bytes;
}
}  // namespace

void ContextStore::EvictOverLimitLocked(const std::string& keep) const {
  if (resident_limit_ == 0 || store_dir_.empty()) return;
  uint64_t total = 0;
  for (const auto& [id, resident] : contexts_) total += ResidentBytes(*resident.context);
  while (total > resident_limit_) {
    auto victim = contexts_.end();
    for (auto it = contexts_.begin(); it != contexts_.end(); ++it) {
      if (it->first != keep && (victim == contexts_.end() || it->second.last_use < victim->second.last_use)) {
        victim = it;
      }
    }
    if (victim == contexts_.end()) return;  // only `keep` is left: it stays even if it alone is larger
    total -= ResidentBytes(*victim->second.context);
    contexts_.erase(victim);
  }
}

absl::StatusOr<std::shared_ptr<const Context>> ContextStore::Get(const std::string& id) const {
  {
    absl::MutexLock lock(&mu_);
    auto it = contexts_.find(id);
    if (it != contexts_.end()) {
      it->second.last_use = ++tick_;
      return it->second.context;
    }
  }
  if (store_dir_.empty()) return absl::NotFoundError(absl::StrCat("context_id: no context \"", id, "\""));
  absl::MutexLock load_lock(&load_mu_);
  {
    absl::MutexLock lock(&mu_);  // loaded by the request we waited for?
    auto it = contexts_.find(id);
    if (it != contexts_.end()) return it->second.context;
  }
  absl::StatusOr<std::shared_ptr<const Context>> loaded = engine_->LoadContext(store_dir_, id);
  if (!loaded.ok()) {
    if (absl::IsNotFound(loaded.status())) {
      return absl::NotFoundError(absl::StrCat("context_id: no context \"", id, "\""));
    }
    return loaded.status();
  }
  absl::MutexLock lock(&mu_);
  contexts_[id] = Resident{*loaded, ++tick_};
  EvictOverLimitLocked(id);
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
                                     index.coarse_centroid_fraction, ",", index.dense_only);
  for (float level : index.sparsity_levels) absl::StrAppend(&options, ",", level);
  field("index", options);
  return sha.HexDigest();
}

}  // namespace squeezeserve
