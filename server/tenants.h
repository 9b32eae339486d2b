// Who a caller is once its bearer token checks out (server/auth.h): a tenant, whose contexts live in
// their own namespace of the store, and the scopes the token grants. Read from --auth_token_file,
// whose lines are
//
//   TOKEN [tenant=NAME] [scopes=read,generate,ingest,admin]
//   quota NAME [contexts=N] [bytes=N]
//
// ('#' starts a comment line). A token without tenant= belongs to the default tenant, and one without
// scopes= has every scope, so a file of bare tokens (the format before tenants) keeps meaning "full
// access to one shared namespace". Scopes: read = GetContext and ListContexts; generate = Generate;
// ingest = IngestContext; admin = DeleteContext, and implies the other three. A quota line caps a
// tenant's stored contexts and their KV + index bytes (0 or absent = no cap). Plain data: no gRPC.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace squeezeserve::server {

enum Scope : uint32_t {
  kScopeRead = 1,
  kScopeGenerate = 2,
  kScopeIngest = 4,
  kScopeAdmin = 8,
};
inline constexpr uint32_t kAllScopes = kScopeRead | kScopeGenerate | kScopeIngest | kScopeAdmin;

// "read", "generate", ... for messages.
const char* ScopeName(Scope scope);

struct Principal {
  std::string tenant;  // "" = the default tenant (its contexts sit at the store's top level)
  uint32_t scopes = kAllScopes;
  // admin implies every other scope.
  bool Has(Scope scope) const { return (scopes & (scope | kScopeAdmin)) != 0; }
  // PERMISSION_DENIED naming the scope `what` needs, or OK.
  absl::Status Require(Scope scope, std::string_view what) const;
};

struct TenantQuota {
  int64_t max_contexts = 0;  // 0 = no cap
  uint64_t max_bytes = 0;    // KV + index bytes of the tenant's stored contexts; 0 = no cap
};

struct TokenEntry {
  std::string token;
  Principal principal;
};

struct TokenFile {
  std::vector<TokenEntry> tokens;
  std::map<std::string, TenantQuota> quotas;  // by tenant ("" = default)
};

// 1-64 characters of [A-Za-z0-9_-]; "default" names the default tenant ("").
bool IsValidTenantName(std::string_view name);

// Parses the file's text; INVALID_ARGUMENT naming the line on the first problem, or when it holds no
// token (the server then refuses to start).
absl::StatusOr<TokenFile> ParseTokenFile(std::string_view text);
absl::StatusOr<TokenFile> ReadTokenFile(const std::string& path);

}  // namespace squeezeserve::server
