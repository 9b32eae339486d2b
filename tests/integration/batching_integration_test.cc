// Continuous batching through the real binary (--scheduler=batching): 64 concurrent greedy streams
// over 4 contexts (dense and squeezed, 200-500 tokens) produce exactly what the same requests
// produce one at a time; cancelling half of 16 streams mid-generation ends them CANCELLED, the
// others still match, and every slot is freed (the server again takes max_concurrent_streams
// streams at once with no wait queue).
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "squeezeserve/v1/squeezeserve.grpc.pb.h"
#include "tests/integration/subprocess.h"

namespace squeezeserve::testing {
namespace {

namespace pb = ::squeezeserve::v1;

constexpr int kSlots = 64;     // --max_concurrent_streams; no wait queue
constexpr int kVocab = 1000;   // the reference checkpoint
constexpr int kNewTokens = 16;

std::string g_address;

class ServerEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    std::optional<std::string> address = server_.Start(
        {SQUEEZESERVE_BIN, "--model", REFERENCE_MODEL_DIR, "--listen", "127.0.0.1:0", "--scheduler=batching",
         absl::StrCat("--max_concurrent_streams=", kSlots), "--max_queued_requests=0", "--grace_period_s=5",
         "--log_level=warn"},
        /*timeout_s=*/60);
    ASSERT_TRUE(address.has_value()) << "squeezeserve did not print its listening line";
    g_address = *address;
  }
  void TearDown() override { EXPECT_EQ(server_.Stop(/*timeout_s=*/60), 0) << "SIGTERM should drain and exit 0"; }

 private:
  ServerProcess server_;
};

const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new ServerEnvironment);

std::unique_ptr<pb::Squeezeserve::Stub> Stub() {
  static auto* channel =
      new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(g_address, grpc::InsecureChannelCredentials()));
  return pb::Squeezeserve::NewStub(*channel);
}

std::vector<int32_t> Tokens(int n, int salt) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(3 + (i * 37 + salt * 101 + 11) % (kVocab - 3));
  return ids;
}

// Ingests `n` tokens (waiting for the model to load); returns the context id.
std::string IngestContext(int n, int salt, bool dense_only) {
  for (int attempt = 0; attempt < 600; ++attempt) {
    auto stub = Stub();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    auto stream = stub->IngestContext(&context);
    pb::IngestContextRequest request;
    const std::vector<int32_t> ids = Tokens(n, salt);
    request.mutable_tokens()->mutable_ids()->Add(ids.begin(), ids.end());
    request.mutable_index()->set_dense_only(dense_only);
    stream->Write(request);
    stream->WritesDone();
    pb::IngestContextProgress progress, last;
    while (stream->Read(&progress)) last = progress;
    grpc::Status status = stream->Finish();
    if (status.ok()) return last.context().context_id();
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) {
      ADD_FAILURE() << "ingest: " << status.error_message();
      return "";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the model is still loading
  }
  ADD_FAILURE() << "the model never loaded";
  return "";
}

struct Result {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
};

// One Generate call. `cancel_after` > 0: the client cancels once it has read that many tokens.
// A RESOURCE_EXHAUSTED refusal is retried: a slot is freed just after its stream's last message.
Result Generate(const pb::GenerateRequest& request, int cancel_after = 0) {
  for (int attempt = 0;; ++attempt) {
    auto stub = Stub();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    auto stream = stub->Generate(&context, request);
    Result result;
    pb::GenerateResponse response;
    bool cancelled = false;
    while (stream->Read(&response)) {
      result.tokens.insert(result.tokens.end(), response.token_ids().begin(), response.token_ids().end());
      result.logprobs.insert(result.logprobs.end(), response.logprobs().begin(), response.logprobs().end());
      if (cancel_after > 0 && !cancelled && static_cast<int>(result.tokens.size()) >= cancel_after) {
        context.TryCancel();
        cancelled = true;
      }
    }
    result.status = stream->Finish();
    if (result.status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED || attempt >= 200) return result;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

pb::GenerateRequest Query(const std::string& context_id, int i, bool squeezed, int max_new_tokens) {
  pb::GenerateRequest request;
  request.set_context_id(context_id);
  const std::vector<int32_t> query = Tokens(1 + (i * 7) % 23, 50 + i);  // 1 to 23 tokens
  request.mutable_tokens()->mutable_ids()->Add(query.begin(), query.end());
  request.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  request.mutable_sampling()->set_ignore_eos(true);
  request.set_include_logprobs(true);
  request.mutable_attention()->set_mode(squeezed ? pb::AttentionOptions::SQUEEZED : pb::AttentionOptions::DENSE);
  if (squeezed) request.mutable_attention()->set_sparsity(i % 2 == 0 ? 0.7f : 0.9f);
  return request;
}

// 4 contexts: two with a Squeezed index, two dense-only, 200 to 500 tokens.
struct Contexts {
  std::string ids[4];
  bool squeezed[4] = {true, false, true, false};
};
const Contexts& TheContexts() {
  static Contexts* contexts = [] {
    auto* c = new Contexts;
    const int lengths[4] = {500, 200, 333, 417};
    for (int k = 0; k < 4; ++k) c->ids[k] = IngestContext(lengths[k], k, !c->squeezed[k]);
    return c;
  }();
  return *contexts;
}

std::vector<pb::GenerateRequest> Requests(int n, int max_new_tokens) {
  const Contexts& c = TheContexts();
  std::vector<pb::GenerateRequest> requests;
  for (int i = 0; i < n; ++i) requests.push_back(Query(c.ids[i % 4], i, c.squeezed[i % 4], max_new_tokens));
  return requests;
}

void ExpectSame(const Result& batched, const Result& alone, int i) {
  ASSERT_TRUE(batched.status.ok()) << "stream " << i << ": " << batched.status.error_message();
  EXPECT_EQ(batched.tokens, alone.tokens) << "stream " << i;
  ASSERT_EQ(batched.logprobs.size(), alone.logprobs.size()) << "stream " << i;
  for (size_t t = 0; t < alone.logprobs.size(); ++t) {
    EXPECT_NEAR(batched.logprobs[t], alone.logprobs[t], 1e-4) << "stream " << i << " token " << t;
  }
}

std::vector<Result> OneAtATime(const std::vector<pb::GenerateRequest>& requests) {
  std::vector<Result> results;
  for (const auto& request : requests) {
    results.push_back(Generate(request));
    EXPECT_TRUE(results.back().status.ok()) << results.back().status.error_message();
    EXPECT_EQ(results.back().tokens.size(), static_cast<size_t>(request.sampling().max_new_tokens()));
  }
  return results;
}

TEST(BatchingIntegrationTest, SixtyFourConcurrentStreamsOnFourContextsMatchOneAtATime) {
  const std::vector<pb::GenerateRequest> requests = Requests(64, kNewTokens);
  const std::vector<Result> alone = OneAtATime(requests);
  std::vector<Result> batched(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) threads.emplace_back([&, i] { batched[i] = Generate(requests[i]); });
  for (std::thread& thread : threads) thread.join();
  for (size_t i = 0; i < requests.size(); ++i) ExpectSame(batched[i], alone[i], static_cast<int>(i));
}

TEST(BatchingIntegrationTest, CancellingHalfOfSixteenFreesTheirSlotsAndTheRestMatch) {
  const std::vector<pb::GenerateRequest> requests = Requests(16, kNewTokens);
  const std::vector<Result> alone = OneAtATime(requests);
  std::vector<Result> batched(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] {
      if (i % 2 == 0) {
        batched[i] = Generate(requests[i]);
      } else {
        // Long enough that it is still running when the client cancels after 3 tokens.
        pb::GenerateRequest endless = requests[i];
        endless.mutable_sampling()->set_max_new_tokens(3000);
        batched[i] = Generate(endless, /*cancel_after=*/3);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    if (i % 2 == 0) {
      ExpectSame(batched[i], alone[i], static_cast<int>(i));
    } else {
      EXPECT_EQ(batched[i].status.error_code(), grpc::StatusCode::CANCELLED) << batched[i].status.error_message();
      EXPECT_LT(batched[i].tokens.size(), 3000u);
    }
  }
  // Every slot is free again: kSlots streams at once, no wait queue, all served (a leaked slot
  // would leave one refused for good).
  const std::vector<pb::GenerateRequest> fill = Requests(kSlots, 2);
  std::vector<Result> after(fill.size());
  threads.clear();
  for (size_t i = 0; i < fill.size(); ++i) threads.emplace_back([&, i] { after[i] = Generate(fill[i]); });
  for (std::thread& thread : threads) thread.join();
  for (const Result& result : after) EXPECT_TRUE(result.status.ok()) << result.status.error_message();
}

}  // namespace
}  // namespace squeezeserve::testing
