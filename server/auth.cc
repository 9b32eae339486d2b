#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

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

TokenAuthenticator::TokenAuthenticator(const std::vector<TokenEntry>& tokens) {
  for (const TokenEntry& entry : tokens) entries_.push_back(Entry{Digest(entry.token), entry.principal});
}

absl::StatusOr<Principal> TokenAuthenticator::CheckAuthorization(std::string_view header) const {
  if (!enabled()) return Principal();
  constexpr std::string_view kScheme = "Bearer ";
  absl::string_view value(header.data(), header.size());
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), absl::string_view(kScheme.data(), kScheme.size()))) {
    return Unauthenticated();
  }
  absl::string_view token = absl::StripAsciiWhitespace(value.substr(kScheme.size()));
  const std::array<unsigned char, 32> presented = Digest(std::string_view(token.data(), token.size()));
  const Entry* match = nullptr;
  for (const Entry& entry : entries_) {  // no early exit: every token is compared
    const bool equal = CRYPTO_memcmp(presented.data(), entry.digest.data(), entry.digest.size()) == 0;
    if (equal) match = &entry;
  }
  if (match == nullptr) return Unauthenticated();
  return match->principal;
}

absl::StatusOr<Principal> TokenAuthenticator::Check(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  if (!enabled()) return Principal();
  auto [begin, end] = metadata.equal_range("authorization");
  if (begin == end || std::next(begin) != end) return Unauthenticated();
  return CheckAuthorization(std::string_view(begin->second.data(), begin->second.size()));
}

}  // namespace squeezeserve::server
