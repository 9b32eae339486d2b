#include "server/auth.h"

#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>

#include "server/request_id.h"

namespace squeezeserve::server {
namespace {

std::vector<TokenEntry> Tokens(std::initializer_list<const char*> tokens) {
  std::vector<TokenEntry> out;
  for (const char* token : tokens) out.push_back(TokenEntry{token, Principal()});
  return out;
}

TEST(TokenAuthenticator, AcceptsOnlyKnownBearerTokens) {
  TokenAuthenticator auth(Tokens({"alpha-token", "beta"}));
  EXPECT_TRUE(auth.enabled());
  EXPECT_TRUE(auth.CheckAuthorization("Bearer alpha-token").ok());
  EXPECT_TRUE(auth.CheckAuthorization("bearer beta").ok()) << "the scheme is case-insensitive";
  for (const char* bad : {"", "Bearer", "Bearer ", "Bearer alpha", "Bearer alpha-token-x", "Basic alpha-token",
                          "alpha-token", "Bearer gamma"}) {
    absl::Status status = auth.CheckAuthorization(bad).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << bad;
  }
}

TEST(TokenAuthenticator, MetadataNeedsExactlyOneAuthorizationHeader) {
  TokenAuthenticator auth(Tokens({"t"}));
  std::multimap<grpc::string_ref, grpc::string_ref> metadata;
  EXPECT_EQ(auth.Check(metadata).status().code(), absl::StatusCode::kUnauthenticated);
  metadata.emplace("authorization", "Bearer t");
  EXPECT_TRUE(auth.Check(metadata).ok());
  metadata.emplace("authorization", "Bearer t");
  EXPECT_EQ(auth.Check(metadata).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(TokenAuthenticator, NoTokensMeansOffAsTheDefaultTenantWithEveryScope) {
  TokenAuthenticator auth({});
  EXPECT_FALSE(auth.enabled());
  absl::StatusOr<Principal> principal = auth.CheckAuthorization("");
  ASSERT_TRUE(principal.ok());
  EXPECT_EQ(principal->tenant, "");
  EXPECT_EQ(principal->scopes, kAllScopes);
}

TEST(TokenAuthenticator, EachTokenMapsToItsTenantAndScopes) {
  absl::StatusOr<TokenFile> file = ParseTokenFile(
      "reader-a tenant=acme scopes=read\n"
      "writer-a tenant=acme scopes=ingest,generate\n"
      "boss-b tenant=globex scopes=admin\n"
      "legacy\n");
  ASSERT_TRUE(file.ok()) << file.status();
  TokenAuthenticator auth(file->tokens);
  absl::StatusOr<Principal> reader = auth.CheckAuthorization("Bearer reader-a");
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(reader->tenant, "acme");
  EXPECT_TRUE(reader->Has(kScopeRead));
  EXPECT_FALSE(reader->Has(kScopeGenerate));
  absl::Status denied = reader->Require(kScopeIngest, "IngestContext");
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(denied.message().find("'ingest'"), std::string::npos) << denied;
  absl::StatusOr<Principal> writer = auth.CheckAuthorization("Bearer writer-a");
  ASSERT_TRUE(writer.ok());
  EXPECT_TRUE(writer->Has(kScopeIngest) && writer->Has(kScopeGenerate));
  EXPECT_FALSE(writer->Has(kScopeAdmin)) << "deleting needs admin";
  absl::StatusOr<Principal> boss = auth.CheckAuthorization("Bearer boss-b");
  ASSERT_TRUE(boss.ok());
  EXPECT_EQ(boss->tenant, "globex");
  for (Scope scope : {kScopeRead, kScopeGenerate, kScopeIngest, kScopeAdmin}) EXPECT_TRUE(boss->Has(scope));
  absl::StatusOr<Principal> legacy = auth.CheckAuthorization("Bearer legacy");
  ASSERT_TRUE(legacy.ok());
  EXPECT_EQ(legacy->tenant, "") << "a bare token is the default tenant";
  EXPECT_EQ(legacy->scopes, kAllScopes);
}

TEST(ParseTokenFile, ReadsQuotasAndNamesTheLineOfEachMistake) {
  absl::StatusOr<TokenFile> file =
      ParseTokenFile("# comment\nt1 tenant=acme\nquota acme contexts=3 bytes=1000\nquota default contexts=9\n");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->quotas.at("acme").max_contexts, 3);
  EXPECT_EQ(file->quotas.at("acme").max_bytes, 1000u);
  EXPECT_EQ(file->quotas.at("").max_contexts, 9) << "'default' names the default tenant";
  for (const auto& [text, line] : std::vector<std::pair<std::string, std::string>>{
           {"t1 tenant=a/b\n", "line 1"},
           {"t1\nt2 scopes=read,fly\n", "line 2"},
           {"t1\nt1\n", "line 2"},
           {"t1 color=blue\n", "line 1"},
           {"t1\n\nquota acme contexts=-1\n", "line 3"},
           {"quota acme contexts=1\n", "no tokens"}}) {
    absl::StatusOr<TokenFile> bad = ParseTokenFile(text);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(bad.status().message().find(line), std::string::npos) << text << " -> " << bad.status();
  }
}

TEST(ReadTokenFile, SkipsCommentsAndBlankLinesAndRefusesEmptyFiles) {
  const std::string path = ::testing::TempDir() + "/tokens.txt";
  {
    std::ofstream out(path);
    out << "# ops team\n  first \n\nsecond\r\n";
  }
  auto tokens = ReadTokenFile(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->tokens.size(), 2u);
  EXPECT_EQ(tokens->tokens[0].token, "first");
  EXPECT_EQ(tokens->tokens[1].token, "second");
  {
    std::ofstream out(path);
    out << "# nothing\n";
  }
  EXPECT_FALSE(ReadTokenFile(path).ok());
  EXPECT_FALSE(ReadTokenFile(path + ".missing").ok());
  std::remove(path.c_str());
}

TEST(RequestId, KeepsSaneIdsAndRejectsLogInjection) {
  EXPECT_EQ(SanitizeRequestId("abc-123"), "abc-123");
  EXPECT_EQ(SanitizeRequestId("abc\n[fake log]"), "");
  EXPECT_EQ(SanitizeRequestId("has space"), "");
  EXPECT_EQ(SanitizeRequestId(std::string(129, 'a')), "");
  const std::string a = NewRequestId(), b = NewRequestId();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace squeezeserve::server
