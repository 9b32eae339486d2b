// The store as clients and replicas see it, through real servers: an acknowledged delete holds on a
// second replica sharing the store (within --store_revalidate_ms), a replacement is seen there too, a
// full disk answers RESOURCE_EXHAUSTED without server paths and leaves the server serving, and a
// draining server answers health checks NOT_SERVING (not errors) while its streams finish.
#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "tests/integration/test_server.h"

namespace squeezeserve::testing {
namespace {

namespace fs = std::filesystem;

class StoreDir {
 public:
  StoreDir() {
    path_ = fs::temp_directory_path() / ("squeezeserve-consistency-" + std::to_string(getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
  }
  ~StoreDir() { fs::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

uint64_t NumTokens(TestServer& server, const std::string& id, grpc::StatusCode* code) {
  auto context = CallContext(10);
  pb::GetContextRequest request;
  request.set_context_id(id);
  pb::ContextInfo info;
  *code = server.Stub()->GetContext(context.get(), request, &info).error_code();
  return info.num_tokens();
}

TEST(StoreConsistencyTest, ReplicasSharingAStoreHonourEachOthersDeletesAndReplacements) {
  StoreDir store;
  TestServer a({"--store", store.str(), "--store_revalidate_ms=200"});
  TestServer b({"--store", store.str(), "--store_revalidate_ms=200"});
  auto stub_a = a.Stub(), stub_b = b.Stub();
  ASSERT_TRUE(IngestTokens(*stub_a, "doc", ContextTokens(64)).ok());
  ASSERT_TRUE(GenerateTokens(*stub_b, "doc", 4).status.ok());  // now resident in b
  auto context = CallContext(10);
  pb::DeleteContextRequest request;
  request.set_context_id("doc");
  pb::DeleteContextResponse response;
  ASSERT_TRUE(stub_a->DeleteContext(context.get(), request, &response).ok());
  ASSERT_TRUE(response.deleted());
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_EQ(GenerateTokens(*stub_b, "doc", 4).status.error_code(), grpc::StatusCode::NOT_FOUND)
      << "the other replica still serves a deleted context";
  grpc::StatusCode code;
  NumTokens(b, "doc", &code);
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);

  ASSERT_TRUE(IngestTokens(*stub_a, "doc", ContextTokens(64)).ok());
  EXPECT_EQ(NumTokens(b, "doc", &code), 64u);
  ASSERT_TRUE(IngestTokens(*stub_a, "doc", ContextTokens(80, 1)).ok());  // replaced on a
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_EQ(NumTokens(b, "doc", &code), 80u) << "the other replica serves a replaced version";
  EXPECT_TRUE(GenerateTokens(*stub_b, "doc", 4).status.ok());
}

TEST(StoreConsistencyTest, AFullDiskIsResourceExhaustedWithoutServerPaths) {
  StoreDir store;
  // Files of at most 200 KB: a 32-token context fits, a 3000-token one does not (EFBIG, as ENOSPC).
  TestServer server({"--store", store.str()}, {"/usr/bin/prlimit", "--fsize=200000"});
  auto stub = server.Stub();
  ASSERT_TRUE(IngestTokens(*stub, "small", ContextTokens(32)).ok());
  grpc::Status big = IngestTokens(*stub, "big", ContextTokens(3000));
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.error_message();
  EXPECT_FALSE(absl::StrContains(big.error_message(), store.str())) << big.error_message();
  EXPECT_FALSE(absl::StrContains(big.error_message(), "/")) << big.error_message();
  grpc::StatusCode code;
  NumTokens(server, "big", &code);
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(GenerateTokens(*stub, "small", 4).status.ok()) << "the server keeps serving";
  std::vector<std::string> entries;
  for (const auto& entry : fs::directory_iterator(store.str())) entries.push_back(entry.path().filename());
  EXPECT_EQ(entries, std::vector<std::string>{"small"}) << "a failed write must leave nothing behind";
}

TEST(StoreConsistencyTest, HealthAnswersNotServingWhileDraining) {
  TestServer server({"--grace_period_s=30"});
  auto stub = server.Stub();
  ASSERT_TRUE(IngestTokens(*stub, "doc", ContextTokens(64)).ok());
  GenerateResult long_stream;
  std::atomic<bool> done{false};
  std::thread generating([&] {
    long_stream = GenerateTokens(*stub, "doc", 3000, "", 120);
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  server.BeginStop();
  int not_serving = 0, errors = 0;
  grpc::StatusCode refused = grpc::StatusCode::OK;
  for (int i = 0; !done.load(); ++i) {
    const int health = HealthOf(server.channel());
    if (done.load()) break;  // the server may close its port once the stream ended
    not_serving += health == 1;
    errors += health == -1;
    if (i == 2) refused = GenerateTokens(*stub, "doc", 2).status.error_code();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  generating.join();
  EXPECT_TRUE(long_stream.status.ok()) << "a running stream finishes during the drain: "
                                       << long_stream.status.error_message();
  EXPECT_EQ(long_stream.tokens.size(), 3000u);
  EXPECT_GT(not_serving, 0) << "health never said NOT_SERVING during the drain";
  EXPECT_EQ(errors, 0) << "health calls failed during the drain instead of answering NOT_SERVING";
  EXPECT_EQ(refused, grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(server.Stop(), 0);
}

}  // namespace
}  // namespace squeezeserve::testing
