// Tenants through the real server (--auth_token_file with tenant=, scopes= and quota lines): each
// tenant sees only its own contexts (another's is NOT_FOUND, never listed), a token lacks what its
// scopes do not grant (PERMISSION_DENIED naming the scope), quotas cap contexts per tenant
// (RESOURCE_EXHAUSTED), and content addresses differ per tenant.
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "tests/integration/test_server.h"

namespace squeezeserve::testing {
namespace {

std::string TokenFile() {
  const std::string path = ::testing::TempDir() + "/tenant-tokens-" + std::to_string(getpid());
  std::ofstream out(path);
  out << "# two tenants and the default one\n"
         "acme-rw tenant=acme scopes=read,generate,ingest\n"
         "acme-admin tenant=acme scopes=admin\n"
         "acme-reader tenant=acme scopes=read\n"
         "globex-all tenant=globex\n"
         "legacy\n"
         "quota acme contexts=2\n";
  return path;
}

class TenantsTest : public ::testing::Test {
 protected:
  TenantsTest() : server_({"--auth_token_file", TokenFile()}) {}

  std::vector<std::string> Listed(const std::string& token) {
    auto context = CallContext(10, token);
    pb::ListContextsResponse response;
    grpc::Status status = server_.Stub()->ListContexts(context.get(), pb::ListContextsRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<std::string> ids;
    for (const pb::ContextInfo& info : response.contexts()) ids.push_back(info.context_id());
    return ids;
  }

  grpc::StatusCode GetCode(const std::string& id, const std::string& token) {
    auto context = CallContext(10, token);
    pb::GetContextRequest request;
    request.set_context_id(id);
    pb::ContextInfo info;
    return server_.Stub()->GetContext(context.get(), request, &info).error_code();
  }

  grpc::Status Delete(const std::string& id, const std::string& token) {
    auto context = CallContext(10, token);
    pb::DeleteContextRequest request;
    request.set_context_id(id);
    pb::DeleteContextResponse response;
    return server_.Stub()->DeleteContext(context.get(), request, &response);
  }

  TestServer server_;
};

TEST_F(TenantsTest, AnotherTenantsContextIsNotFoundAndNeverListed) {
  auto stub = server_.Stub();
  ASSERT_TRUE(IngestTokens(*stub, "manual", ContextTokens(64), "acme-rw").ok());
  ASSERT_TRUE(IngestTokens(*stub, "manual", ContextTokens(96, 1), "legacy").ok()) << "same id, default tenant";
  EXPECT_EQ(Listed("acme-reader"), std::vector<std::string>{"manual"});
  EXPECT_TRUE(Listed("globex-all").empty());
  EXPECT_EQ(GetCode("manual", "globex-all"), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GenerateTokens(*stub, "manual", 4, "globex-all").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Delete("manual", "globex-all").error_code(), grpc::StatusCode::NOT_FOUND);
  // Each tenant generates from its own version of "manual".
  auto context = CallContext(10, "acme-reader");
  pb::GetContextRequest request;
  request.set_context_id("manual");
  pb::ContextInfo acme, legacy;
  ASSERT_TRUE(server_.Stub()->GetContext(context.get(), request, &acme).ok());
  auto other = CallContext(10, "legacy");
  ASSERT_TRUE(server_.Stub()->GetContext(other.get(), request, &legacy).ok());
  EXPECT_EQ(acme.num_tokens(), 64u);
  EXPECT_EQ(legacy.num_tokens(), 96u);
  EXPECT_TRUE(GenerateTokens(*stub, "manual", 4, "acme-rw").status.ok());
}

TEST_F(TenantsTest, ScopesLimitWhatATokenMayDo) {
  auto stub = server_.Stub();
  grpc::Status ingest = IngestTokens(*stub, "doc", ContextTokens(64), "acme-reader");
  EXPECT_EQ(ingest.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(absl::StrContains(ingest.error_message(), "'ingest' scope")) << ingest.error_message();
  ASSERT_TRUE(IngestTokens(*stub, "doc", ContextTokens(64), "acme-rw").ok());
  EXPECT_EQ(GenerateTokens(*stub, "doc", 4, "acme-reader").status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  grpc::Status delete_without_admin = Delete("doc", "acme-rw");
  EXPECT_EQ(delete_without_admin.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(absl::StrContains(delete_without_admin.error_message(), "'admin' scope"));
  EXPECT_EQ(GetCode("doc", "acme-rw"), grpc::StatusCode::OK);
  EXPECT_TRUE(Delete("doc", "acme-admin").ok()) << "admin implies every scope of its tenant";
  EXPECT_EQ(GetCode("doc", "acme-admin"), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetCode("doc", "no-such-token"), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(TenantsTest, QuotasCapATenantsContexts) {
  auto stub = server_.Stub();
  ASSERT_TRUE(IngestTokens(*stub, "a", ContextTokens(32), "acme-rw").ok());
  ASSERT_TRUE(IngestTokens(*stub, "b", ContextTokens(32), "acme-rw").ok());
  grpc::Status third = IngestTokens(*stub, "c", ContextTokens(32), "acme-rw");
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << third.error_message();
  EXPECT_TRUE(absl::StrContains(third.error_message(), "quota")) << third.error_message();
  EXPECT_TRUE(IngestTokens(*stub, "a", ContextTokens(40), "acme-rw").ok()) << "replacing stays within the quota";
  EXPECT_TRUE(IngestTokens(*stub, "c", ContextTokens(32), "globex-all").ok()) << "another tenant's quota";
  ASSERT_TRUE(Delete("b", "acme-admin").ok());
  EXPECT_TRUE(IngestTokens(*stub, "c", ContextTokens(32), "acme-rw").ok()) << "room again after a delete";
}

TEST_F(TenantsTest, ContentAddressesAreSaltedPerTenant) {
  auto stub = server_.Stub();
  pb::ContextInfo acme, globex, again;
  ASSERT_TRUE(IngestTokens(*stub, "", ContextTokens(48), "acme-rw", &acme).ok());
  ASSERT_TRUE(IngestTokens(*stub, "", ContextTokens(48), "globex-all", &globex).ok());
  ASSERT_TRUE(IngestTokens(*stub, "", ContextTokens(48), "acme-rw", &again).ok());
  EXPECT_EQ(acme.context_id().size(), 64u);
  EXPECT_NE(acme.context_id(), globex.context_id()) << "the same document must not have the same id";
  EXPECT_EQ(acme.context_id(), again.context_id()) << "still idempotent within a tenant";
  EXPECT_EQ(GetCode(acme.context_id(), "globex-all"), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace squeezeserve::testing
