#include "engine/context_store.h"

#include <openssl/evp.h>

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace squeezeserve {

void ContextStore::Put(std::shared_ptr<const Context> context) {
  absl::MutexLock lock(&mu_);
  contexts_[context->summary().id] = std::move(context);
}

std::shared_ptr<const Context> ContextStore::Get(std::string_view id) const {
  absl::MutexLock lock(&mu_);
  auto it = contexts_.find(id);
  return it == contexts_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const Context>> ContextStore::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<const Context>> out;
  out.reserve(contexts_.size());
  for (const auto& [id, context] : contexts_) out.push_back(context);
  return out;
}

bool ContextStore::Delete(std::string_view id) {
  absl::MutexLock lock(&mu_);
  auto it = contexts_.find(id);
  if (it == contexts_.end()) return false;
  contexts_.erase(it);
  return true;
}

bool IsValidContextId(std::string_view id) {
  if (id.empty() || id.size() > 128 || id.front() == '.') return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
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
