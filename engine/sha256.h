// Streaming SHA-256 (OpenSSL's EVP): the checksums of stored contexts (engine/context_files.cc) and
// of the safetensors files the store writes (WriteSafetensors hashes while it writes).
#pragma once

#include <cstddef>
#include <string>

struct evp_md_ctx_st;

namespace squeezeserve {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  // Lowercase hex of the digest; call once, after the last Update.
  std::string HexDigest();

 private:
  evp_md_ctx_st* ctx_;
};

}  // namespace squeezeserve
