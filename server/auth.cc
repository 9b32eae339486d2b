#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace squeezeserve::server {
namespace {

std::array<unsigned char, 32> Digest(std::string_view text) {
  std::array<unsigned char, 32> digest;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return digest;
}

absl::Status Unauthenticated() {
  // One message for every failure: do not tell a caller which part was wrong.
  return absl::UnauthenticatedError("missing or invalid 'authorization: Bearer <token>' metadata");
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--auth_token_file: cannot read ", path));
  std::vector<std::string> tokens;
  std::string line;
  while (std::getline(in, line)) {
    std::string token(absl::StripAsciiWhitespace(line));
    if (token.empty() || token[0] == '#') continue;
    tokens.push_back(std::move(token));
  }
  if (tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("--auth_token_file: no tokens in ", path));
  return tokens;
}

TokenAuthenticator::TokenAuthenticator(const std::vector<std::string>& tokens) {
  for (const std::string& token : tokens) digests_.push_back(Digest(token));
}

absl::Status TokenAuthenticator::CheckAuthorization(std::string_view header) const {
  if (!enabled()) return absl::OkStatus();
  constexpr std::string_view kScheme = "Bearer ";
  absl::string_view value(header.data(), header.size());
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), absl::string_view(kScheme.data(), kScheme.size()))) {
    return Unauthenticated();
  }
  absl::string_view token = absl::StripAsciiWhitespace(value.substr(kScheme.size()));
  const std::array<unsigned char, 32> presented = Digest(std::string_view(token.data(), token.size()));
  bool match = false;
  for (const auto& digest : digests_) {  // no early exit: every token is compared
    match |= CRYPTO_memcmp(presented.data(), digest.data(), digest.size()) == 0;
  }
  return match ? absl::OkStatus() : Unauthenticated();
}

absl::Status TokenAuthenticator::Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  if (!enabled()) return absl::OkStatus();
  auto [begin, end] = metadata.equal_range("authorization");
  if (begin == end || std::next(begin) != end) return Unauthenticated();
  return CheckAuthorization(std::string_view(begin->second.data(), begin->second.size()));
}

}  // namespace squeezeserve::server
