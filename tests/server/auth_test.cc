#include "server/auth.h"

#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>

#include "server/request_id.h"

namespace squeezeserve::server {
namespace {

TEST(TokenAuthenticator, AcceptsOnlyKnownBearerTokens) {
  TokenAuthenticator auth({"alpha-token", "beta"});
  EXPECT_TRUE(auth.enabled());
  EXPECT_TRUE(auth.CheckAuthorization("Bearer alpha-token").ok());
  EXPECT_TRUE(auth.CheckAuthorization("bearer beta").ok()) << "the scheme is case-insensitive";
  for (const char* bad : {"", "Bearer", "Bearer ", "Bearer alpha", "Bearer alpha-token-x", "Basic alpha-token",
                          "alpha-token", "Bearer gamma"}) {
    absl::Status status = auth.CheckAuthorization(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << bad;
  }
}

TEST(TokenAuthenticator, MetadataNeedsExactlyOneAuthorizationHeader) {
  TokenAuthenticator auth({"t"});
  std::multimap<grpc::string_ref, grpc::string_ref> metadata;
  EXPECT_EQ(auth.Check(metadata).code(), absl::StatusCode::kUnauthenticated);
  metadata.emplace("authorization", "Bearer t");
  EXPECT_TRUE(auth.Check(metadata).ok());
  metadata.emplace("authorization", "Bearer t");
  EXPECT_EQ(auth.Check(metadata).code(), absl::StatusCode::kUnauthenticated);
}

TEST(TokenAuthenticator, NoTokensMeansOff) {
  TokenAuthenticator auth({});
  EXPECT_FALSE(auth.enabled());
  EXPECT_TRUE(auth.CheckAuthorization("").ok());
}

TEST(ReadTokenFile, SkipsCommentsAndBlankLinesAndRefusesEmptyFiles) {
  const std::string path = ::testing::TempDir() + "/tokens.txt";
  {
    std::ofstream out(path);
    out << "# ops team\n  first \n\nsecond\r\n";
  }
  auto tokens = ReadTokenFile(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, (std::vector<std::string>{"first", "second"}));
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
