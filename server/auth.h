// Bearer-token authentication of squeezeserve.v1.Squeezeserve calls (--auth_token_file).
//
// Where it runs: at the entry of every Squeezeserve RPC (ServiceCore::Admit), streaming ones included,
// not as a grpc::AuthMetadataProcessor. The processor cannot be used with plaintext ports in gRPC 1.51
// and does not see the method path, so it could not leave the health service open; Kubernetes
// grpc probes send no metadata and must keep working. grpc.health.v1 and server reflection (the
// schema only, no data) therefore stay open; everything that touches contexts or the model needs a
// token. Tokens travel in clear text unless --tls_cert is set: use TLS outside a trusted network.
// A token maps to a tenant and scopes (server/tenants.h); the handlers check the scope each RPC needs
// and keep to the tenant's namespace of contexts.
#pragma once

#include <array>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/support/string_ref.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/tenants.h"

namespace squeezeserve::server {

class TokenAuthenticator {
 public:
  // No tokens = authentication off (every call passes as the default tenant with every scope).
  explicit TokenAuthenticator(const std::vector<TokenEntry>& tokens);

  bool enabled() const { return !entries_.empty(); }
  // The value of an "authorization" header: the token's principal for "Bearer <token>" with a known
  // token, otherwise UNAUTHENTICATED. Compares SHA-256 digests in constant time against every token,
  // so neither the position of the first differing byte nor the token's length leaks through timing.
  absl::StatusOr<Principal> CheckAuthorization(std::string_view header) const;
  // The call's metadata (exactly one authorization header).
  absl::StatusOr<Principal> Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;

 private:
  struct Entry {
    std::array<unsigned char, 32> digest;
    Principal principal;
  };
  std::vector<Entry> entries_;
};

}  // namespace squeezeserve::server
