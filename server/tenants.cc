#include "server/tenants.h"

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace squeezeserve::server {
namespace {

absl::StatusOr<uint32_t> ParseScopes(absl::string_view list) {
  uint32_t scopes = 0;
  for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    bool known = false;
    for (Scope scope : {kScopeRead, kScopeGenerate, kScopeIngest, kScopeAdmin}) {
      if (name == ScopeName(scope)) {
        scopes |= scope;
        known = true;
      }
    }
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown scope '", name, "' (known: read, generate, ingest, admin)"));
    }
  }
  if (scopes == 0) return absl::InvalidArgumentError("scopes= lists no scope");
  return scopes;
}

absl::StatusOr<std::string> ParseTenant(absl::string_view name) {
  if (!IsValidTenantName(std::string_view(name.data(), name.size()))) {
    return absl::InvalidArgumentError(absl::StrCat("tenant '", name, "' is not 1-64 characters of [A-Za-z0-9_-]"));
  }
  return name == "default" ? std::string() : std::string(name);
}

// "contexts=N" / "bytes=N" of a quota line.
absl::Status ParseQuotaField(absl::string_view field, TenantQuota* quota) {
  std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(field, absl::MaxSplits('=', 1));
  if (kv.first == "contexts" && absl::SimpleAtoi(kv.second, &quota->max_contexts) && quota->max_contexts >= 0) {
    return absl::OkStatus();
  }
  if (kv.first == "bytes" && absl::SimpleAtoi(kv.second, &quota->max_bytes)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("'", field, "' is not contexts=N or bytes=N"));
}

}  // namespace

const char* ScopeName(Scope scope) {
  switch (scope) {
    case kScopeRead: return "read";
    case kScopeGenerate: return "generate";
    case kScopeIngest: return "ingest";
    case kScopeAdmin: return "admin";
  }
  return "?";
}

absl::Status Principal::Require(Scope scope, std::string_view what) const {
  if (Has(scope)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat(absl::string_view(what.data(), what.size()), " needs a token with the '", ScopeName(scope),
                   "' scope"));
}

bool IsValidTenantName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

absl::StatusOr<TokenFile> ParseTokenFile(std::string_view text) {
  TokenFile file;
  std::set<std::string> seen;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> words = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    auto at_line = [line_number](const absl::Status& status) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": ", status.message()));
    };
    if (words[0] == "quota") {
      if (words.size() < 2) return at_line(absl::InvalidArgumentError("quota needs a tenant name"));
      absl::StatusOr<std::string> tenant = ParseTenant(words[1]);
      if (!tenant.ok()) return at_line(tenant.status());
      TenantQuota& quota = file.quotas[*tenant];
      for (size_t i = 2; i < words.size(); ++i) {
        if (absl::Status field = ParseQuotaField(words[i], &quota); !field.ok()) return at_line(field);
      }
      continue;
    }
    TokenEntry entry;
    entry.token = std::string(words[0]);
    for (size_t i = 1; i < words.size(); ++i) {
      if (absl::ConsumePrefix(&words[i], "tenant=")) {
        absl::StatusOr<std::string> tenant = ParseTenant(words[i]);
        if (!tenant.ok()) return at_line(tenant.status());
        entry.principal.tenant = *tenant;
      } else if (absl::ConsumePrefix(&words[i], "scopes=")) {
        absl::StatusOr<uint32_t> scopes = ParseScopes(words[i]);
        if (!scopes.ok()) return at_line(scopes.status());
        entry.principal.scopes = *scopes;
      } else {
        return at_line(absl::InvalidArgumentError(absl::StrCat("unknown attribute '", words[i],
                                                               "' (a token line is: TOKEN [tenant=NAME] [scopes=...])")));
      }
    }
    if (!seen.insert(entry.token).second) return at_line(absl::InvalidArgumentError("the token is listed twice"));
    file.tokens.push_back(std::move(entry));
  }
  if (file.tokens.empty()) return absl::InvalidArgumentError("no tokens");
  return file;
}

absl::StatusOr<TokenFile> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--auth_token_file: cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  absl::StatusOr<TokenFile> file = ParseTokenFile(text.str());
  if (!file.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--auth_token_file ", path, ": ", file.status().message()));
  }
  return file;
}

}  // namespace squeezeserve::server
