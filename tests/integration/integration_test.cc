// The real squeezeserve binary on 127.0.0.1 (port 0) with the reference checkpoint, driven over the
// wire by a C++ gRPC client and by the real squeezectl. One server serves the whole suite; the last
// check is that SIGTERM drains it and it exits 0.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "health.grpc.pb.h"
#include "squeezeserve/v1/squeezeserve.grpc.pb.h"
#include "tests/integration/subprocess.h"

namespace squeezeserve::testing {
namespace {

namespace pb = ::squeezeserve::v1;

// Limits the server runs with; the tests go just past them.
constexpr int kMaxNewTokens = 2048;
constexpr int kMaxContextTokens = 4096;
constexpr int kMaxQueryTokens = 256;
constexpr int kMaxConcurrentStreams = 10;
constexpr int kVocab = 1000;  // the reference checkpoint

std::string g_address;  // HOST:PORT of the server under test

class ServerEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    std::optional<std::string> address = server_.Start(
        {SQUEEZESERVE_BIN, "--model", REFERENCE_MODEL_DIR, "--listen", "127.0.0.1:0", "--threads", "1",
         absl::StrCat("--max_new_tokens=", kMaxNewTokens), absl::StrCat("--max_context_tokens=", kMaxContextTokens),
         absl::StrCat("--max_query_tokens=", kMaxQueryTokens),
         absl::StrCat("--max_concurrent_streams=", kMaxConcurrentStreams),
         "--max_queued_requests=0",  // overload is refused at once here; the wait queue has its own tests
         "--grace_period_s=5",
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

std::shared_ptr<grpc::Channel> Channel() {
  static auto* channel = new std::shared_ptr<grpc::Channel>(
      grpc::CreateChannel(g_address, grpc::InsecureChannelCredentials()));
  return *channel;
}
std::unique_ptr<pb::Squeezeserve::Stub> Stub() { return pb::Squeezeserve::NewStub(Channel()); }

void SetTimeout(grpc::ClientContext* context, std::chrono::milliseconds timeout) {
  context->set_deadline(std::chrono::system_clock::now() + timeout);
}

// Health of the whole server ("") or of one service.
grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(Channel());
  grpc::ClientContext context;
  SetTimeout(&context, std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  return status.ok() ? response.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
}

// Health turns SERVING once the model has loaded; everything else waits for that.
void WaitUntilServing() {
  static bool serving = false;
  for (int i = 0; i < 600 && !serving; ++i) {
    serving = Health("") == grpc::health::v1::HealthCheckResponse::SERVING;
    if (!serving) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(serving) << "the server never became SERVING";
}

// A deterministic context of `n` in-vocabulary token ids.
std::vector<int32_t> ContextTokens(int n, int salt = 0) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(3 + (i * 37 + salt * 101 + 11) % (kVocab - 3));
  return ids;
}

struct IngestResult {
  grpc::Status status;
  std::vector<pb::IngestContextProgress> messages;
  pb::ContextInfo context() const { return messages.empty() ? pb::ContextInfo() : messages.back().context(); }
};

// Streams `requests` as one IngestContext call.
IngestResult Ingest(const std::vector<pb::IngestContextRequest>& requests) {
  auto stub = Stub();
  grpc::ClientContext context;
  SetTimeout(&context, std::chrono::seconds(120));
  auto stream = stub->IngestContext(&context);
  for (const auto& request : requests) {
    if (!stream->Write(request)) break;
  }
  stream->WritesDone();
  IngestResult result;
  pb::IngestContextProgress progress;
  while (stream->Read(&progress)) result.messages.push_back(progress);
  result.status = stream->Finish();
  return result;
}

// The token ids split over `chunks` messages; the first carries `id` and the index options.
std::vector<pb::IngestContextRequest> TokenRequests(const std::vector<int32_t>& ids, const std::string& id = "",
                                                    int chunks = 3, bool dense_only = false) {
  std::vector<pb::IngestContextRequest> requests;
  size_t per_chunk = (ids.size() + chunks - 1) / chunks;
  for (size_t begin = 0; begin < ids.size(); begin += per_chunk) {
    pb::IngestContextRequest request;
    auto* out = request.mutable_tokens()->mutable_ids();
    out->Add(ids.begin() + begin, ids.begin() + std::min(ids.size(), begin + per_chunk));
    requests.push_back(request);
  }
  if (requests.empty()) requests.emplace_back();
  requests[0].set_context_id(id);
  requests[0].mutable_index()->set_dense_only(dense_only);
  return requests;
}

struct GenerateResult {
  grpc::Status status;
  std::vector<pb::GenerateResponse> messages;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::string text;
  const pb::GenerateResponse& last() const { return messages.back(); }
};

GenerateResult Generate(const pb::GenerateRequest& request,
                        std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  auto stub = Stub();
  grpc::ClientContext context;
  SetTimeout(&context, timeout);
  auto stream = stub->Generate(&context, request);
  GenerateResult result;
  pb::GenerateResponse response;
  while (stream->Read(&response)) {
    result.messages.push_back(response);
    result.tokens.insert(result.tokens.end(), response.token_ids().begin(), response.token_ids().end());
    result.logprobs.insert(result.logprobs.end(), response.logprobs().begin(), response.logprobs().end());
    result.text += response.text();
  }
  result.status = stream->Finish();
  return result;
}

pb::GenerateRequest TokenQuery(const std::string& context_id, std::vector<int32_t> query, int max_new_tokens) {
  pb::GenerateRequest request;
  request.set_context_id(context_id);
  request.mutable_tokens()->mutable_ids()->Add(query.begin(), query.end());
  request.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  request.mutable_sampling()->set_ignore_eos(true);
  return request;
}

// The shared context most tests generate against (ingested once).
const std::string& SharedContext() {
  static std::string* id = [] {
    IngestResult result = Ingest(TokenRequests(ContextTokens(400), "shared-doc"));
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    return new std::string(result.context().context_id());
  }();
  return *id;
}

class IntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override { WaitUntilServing(); }
};

TEST_F(IntegrationTest, HealthIsServingForTheServerAndTheService) {
  EXPECT_EQ(Health(""), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(Health("squeezeserve.v1.Squeezeserve"), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(IntegrationTest, ServerInfoDescribesModelAndLimits) {
  auto stub = Stub();
  grpc::ClientContext context;
  pb::ServerInfo info;
  ASSERT_TRUE(stub->GetServerInfo(&context, pb::GetServerInfoRequest(), &info).ok());
  EXPECT_EQ(info.model().vocab_size(), static_cast<uint32_t>(kVocab));
  EXPECT_FALSE(info.model().fingerprint().empty());
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_FALSE(info.dtype().empty());
  EXPECT_EQ(info.limits().max_new_tokens(), static_cast<uint32_t>(kMaxNewTokens));
  EXPECT_EQ(info.limits().max_context_tokens(), static_cast<uint64_t>(kMaxContextTokens));
  EXPECT_EQ(info.modes_size(), 2);
  EXPECT_EQ(info.default_mode(), pb::AttentionOptions::SQUEEZED);
}

TEST_F(IntegrationTest, IngestStreamsProgressThenTheContext) {
  IngestResult result = Ingest(TokenRequests(ContextTokens(300, 1), "progress-doc"));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_GE(result.messages.size(), 2u) << "progress messages before the final one";
  for (size_t i = 0; i + 1 < result.messages.size(); ++i) {
    EXPECT_FALSE(result.messages[i].has_context()) << "only the last message carries the context";
    EXPECT_LE(result.messages[i].fraction(), 1.0f);
    if (i > 0) EXPECT_GE(result.messages[i].fraction(), result.messages[i - 1].fraction()) << "never backwards";
  }
  const pb::IngestContextProgress& last = result.messages.back();
  EXPECT_EQ(last.stage(), "done");
  EXPECT_FLOAT_EQ(last.fraction(), 1.0f);
  EXPECT_EQ(last.context().context_id(), "progress-doc");
  EXPECT_EQ(last.context().num_tokens(), 300u);
  EXPECT_FALSE(last.context().model_fingerprint().empty());
}

TEST_F(IntegrationTest, ContentAddressIsIdempotent) {
  std::vector<int32_t> tokens = ContextTokens(250, 2);
  IngestResult first = Ingest(TokenRequests(tokens, "", 2));
  IngestResult second = Ingest(TokenRequests(tokens, "", 5));  // other chunking, same content
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_EQ(first.context().context_id().size(), 64u) << "hex SHA-256";
  EXPECT_EQ(first.context().context_id(), second.context().context_id());
  IngestResult other = Ingest(TokenRequests(ContextTokens(250, 3)));
  ASSERT_TRUE(other.status.ok());
  EXPECT_NE(other.context().context_id(), first.context().context_id());
}

TEST_F(IntegrationTest, TextIngestAddsBosUnlessAsked) {
  auto text_request = [](bool no_bos) {
    pb::IngestContextRequest request;
    request.set_text("The quick brown fox jumps over the lazy dog. ");
    request.set_no_bos(no_bos);
    pb::IngestContextRequest more;
    more.set_text("It was the best of times, it was the worst of times.");
    return std::vector<pb::IngestContextRequest>{request, more};
  };
  IngestResult with_bos = Ingest(text_request(false));
  IngestResult without_bos = Ingest(text_request(true));
  ASSERT_TRUE(with_bos.status.ok()) << with_bos.status.error_message();
  ASSERT_TRUE(without_bos.status.ok()) << without_bos.status.error_message();
  EXPECT_GT(without_bos.context().num_tokens(), 5u);
  EXPECT_EQ(with_bos.context().num_tokens(), without_bos.context().num_tokens() + 1);
}

TEST_F(IntegrationTest, GenerateStreamsOneMessagePerTokenWithUsageOnTheLast) {
  GenerateResult result = Generate(TokenQuery(SharedContext(), {5, 6, 7, 8, 9}, 8));
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.messages.size(), 8u);
  for (const auto& message : result.messages) EXPECT_EQ(message.token_ids_size(), 1);
  for (size_t i = 0; i + 1 < result.messages.size(); ++i) {
    EXPECT_EQ(result.messages[i].finish_reason(), pb::FINISH_REASON_UNSPECIFIED);
  }
  const pb::GenerateResponse& last = result.last();
  EXPECT_EQ(last.finish_reason(), pb::LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 5u) << "the query only";
  EXPECT_EQ(last.usage().cached_tokens(), 400u) << "the context, served from its KV cache";
  EXPECT_EQ(last.usage().completion_tokens(), 8u);
  EXPECT_GT(last.usage().time_to_first_token_ms(), 0);
  EXPECT_TRUE(last.has_stats());
  EXPECT_TRUE(result.logprobs.empty()) << "no logprobs unless asked";
}

// attention.pruned over the wire: unset = the server default (ESTIMATED), DROPPED on request; the
// stats say which ran, and the two read different amounts of KV (the estimate reads mean values).
TEST_F(IntegrationTest, PrunedClustersEstimatedByDefaultOrDroppedOnRequest) {
  pb::GenerateRequest request = TokenQuery(SharedContext(), {5, 6, 7}, 4);
  request.mutable_attention()->set_mode(pb::AttentionOptions::SQUEEZED);
  request.mutable_attention()->set_sparsity(0.9f);
  GenerateResult by_default = Generate(request);
  ASSERT_TRUE(by_default.status.ok()) << by_default.status.error_message();
  EXPECT_EQ(by_default.last().stats().pruned(), pb::AttentionOptions::ESTIMATED);
  request.mutable_attention()->set_pruned(pb::AttentionOptions::DROPPED);
  GenerateResult dropped = Generate(request);
  ASSERT_TRUE(dropped.status.ok()) << dropped.status.error_message();
  EXPECT_EQ(dropped.last().stats().pruned(), pb::AttentionOptions::DROPPED);
  EXPECT_GT(by_default.last().stats().kv_fraction_loaded(), dropped.last().stats().kv_fraction_loaded());
  request.mutable_attention()->set_pruned(static_cast<pb::AttentionOptions::Pruned>(9));
  GenerateResult bad = Generate(request);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.status.error_message().find("attention.pruned"), std::string::npos) << bad.status.error_message();
}

TEST_F(IntegrationTest, ReadAheadOnByDefaultOrOffOnRequest) {
  pb::GenerateRequest request = TokenQuery(SharedContext(), {5, 6, 7}, 4);
  request.mutable_attention()->set_mode(pb::AttentionOptions::SQUEEZED);
  request.mutable_attention()->set_sparsity(0.9f);
  GenerateResult by_default = Generate(request);
  ASSERT_TRUE(by_default.status.ok()) << by_default.status.error_message();
  EXPECT_EQ(by_default.last().stats().read_ahead(), pb::AttentionOptions::READ_AHEAD_ON);
  request.mutable_attention()->set_read_ahead(pb::AttentionOptions::READ_AHEAD_OFF);
  GenerateResult off = Generate(request);
  ASSERT_TRUE(off.status.ok()) << off.status.error_message();
  EXPECT_EQ(off.last().stats().read_ahead(), pb::AttentionOptions::READ_AHEAD_OFF);
  request.mutable_attention()->set_read_ahead(static_cast<pb::AttentionOptions::ReadAhead>(9));
  GenerateResult bad = Generate(request);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.status.error_message().find("attention.read_ahead"), std::string::npos) << bad.status.error_message();
}

TEST_F(IntegrationTest, LogprobsWhenAsked) {
  pb::GenerateRequest request = TokenQuery(SharedContext(), {10, 11}, 6);
  request.set_include_logprobs(true);
  GenerateResult result = Generate(request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.logprobs.size(), result.tokens.size());
  for (float logprob : result.logprobs) EXPECT_LE(logprob, 1e-4f);
}

// include_prompt_logprobs: the last message carries one teacher-forced log-prob per prompt token, in
// every attention configuration a client may ask for (never INVALID_ARGUMENT), for token and text
// prompts; no other message carries them, and they are absent unless asked.
TEST_F(IntegrationTest, PromptLogprobsWhenAsked) {
  const std::vector<int32_t> prompt = {7, 8, 9, 10, 11, 12};
  std::vector<pb::AttentionOptions> configs;
  pb::AttentionOptions dense;
  dense.set_mode(pb::AttentionOptions::DENSE);
  configs.push_back(dense);
  for (bool hierarchical : {false, true}) {
    for (float sparsity : {0.5f, 0.7f, 0.8f, 0.9f}) {
      pb::AttentionOptions squeezed;
      squeezed.set_mode(pb::AttentionOptions::SQUEEZED);
      squeezed.set_sparsity(sparsity);
      squeezed.set_hierarchical(hierarchical);
      configs.push_back(squeezed);
    }
  }
  std::vector<float> first_entries;
  for (const pb::AttentionOptions& attention : configs) {
    pb::GenerateRequest request = TokenQuery(SharedContext(), prompt, 1);
    *request.mutable_attention() = attention;
    request.set_include_prompt_logprobs(true);
    GenerateResult result = Generate(request);
    ASSERT_TRUE(result.status.ok()) << attention.ShortDebugString() << ": " << result.status.error_message();
    ASSERT_EQ(result.last().prompt_logprobs_size(), static_cast<int>(prompt.size())) << attention.ShortDebugString();
    for (float logprob : result.last().prompt_logprobs()) {
      EXPECT_TRUE(std::isfinite(logprob) && logprob <= 1e-4f) << logprob;
    }
    for (size_t i = 0; i + 1 < result.messages.size(); ++i) EXPECT_EQ(result.messages[i].prompt_logprobs_size(), 0);
    first_entries.push_back(result.last().prompt_logprobs(0));
  }
  // Entry 0 is conditioned on the context alone: the same in every configuration.
  for (float entry : first_entries) EXPECT_NEAR(entry, first_entries[0], 1e-4);

  pb::GenerateRequest text = TokenQuery(SharedContext(), {}, 2);
  text.set_text("What happened next?");
  text.set_include_prompt_logprobs(true);
  GenerateResult by_text = Generate(text);
  ASSERT_TRUE(by_text.status.ok()) << by_text.status.error_message();
  EXPECT_EQ(static_cast<uint32_t>(by_text.last().prompt_logprobs_size()), by_text.last().usage().prompt_tokens());

  GenerateResult unasked = Generate(TokenQuery(SharedContext(), prompt, 1));
  ASSERT_TRUE(unasked.status.ok());
  EXPECT_EQ(unasked.last().prompt_logprobs_size(), 0);
}

TEST_F(IntegrationTest, TextPromptIsAccepted) {
  pb::GenerateRequest request;
  request.set_context_id(SharedContext());
  request.set_text("What happened next?");
  request.mutable_sampling()->set_max_new_tokens(4);
  request.mutable_sampling()->set_ignore_eos(true);
  GenerateResult result = Generate(request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.tokens.size(), 4u);
  EXPECT_GT(result.last().usage().prompt_tokens(), 0u);
}

TEST_F(IntegrationTest, GreedyIsDeterministic) {
  pb::GenerateRequest request = TokenQuery(SharedContext(), {42, 43, 44}, 16);
  GenerateResult first = Generate(request);
  GenerateResult second = Generate(request);
  ASSERT_TRUE(first.status.ok() && second.status.ok());
  EXPECT_EQ(first.tokens.size(), 16u);
  EXPECT_EQ(first.tokens, second.tokens);
  EXPECT_EQ(first.text, second.text);
}

TEST_F(IntegrationTest, SeededSamplingIsDeterministic) {
  pb::GenerateRequest request = TokenQuery(SharedContext(), {42, 43, 44}, 16);
  request.mutable_sampling()->set_temperature(1.0f);
  request.mutable_sampling()->set_top_p(0.95f);
  request.mutable_sampling()->set_seed(1234);
  GenerateResult first = Generate(request);
  GenerateResult second = Generate(request);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_TRUE(second.status.ok());
  EXPECT_EQ(first.tokens, second.tokens);
}

TEST_F(IntegrationTest, StopStringEndsTheStreamAndIsCut) {
  GenerateResult free_run = Generate(TokenQuery(SharedContext(), {100, 200, 300}, 24));
  ASSERT_TRUE(free_run.status.ok());
  const std::string& text = free_run.text;
  // A stop string that first occurs in the middle of the free-running text.
  std::string stop;
  size_t at = std::string::npos;
  for (size_t i = 1; i + 2 <= text.size() && stop.empty(); ++i) {
    std::string candidate = text.substr(i, 2);
    if (text.find(candidate) == i && candidate.find_first_not_of(" \n") != std::string::npos) {
      stop = candidate;
      at = i;
    }
  }
  if (stop.empty()) GTEST_SKIP() << "the model's text has no usable stop string: \"" << text << "\"";
  pb::GenerateRequest request = TokenQuery(SharedContext(), {100, 200, 300}, 24);
  request.mutable_sampling()->add_stop(stop);
  GenerateResult stopped = Generate(request);
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
  EXPECT_EQ(stopped.last().finish_reason(), pb::STOP);
  EXPECT_EQ(stopped.text, text.substr(0, at)) << "stop string \"" << stop << "\"";
}

// The status of one call, and the field named in its message.
void ExpectStatus(const grpc::Status& status, grpc::StatusCode code, const std::string& field) {
  EXPECT_EQ(status.error_code(), code) << status.error_message();
  EXPECT_NE(status.error_message().find(field), std::string::npos)
      << "\"" << status.error_message() << "\" should name " << field;
}

TEST_F(IntegrationTest, BadGenerateRequestsAreRefusedNamingTheField) {
  const std::string& id = SharedContext();
  ExpectStatus(Generate(TokenQuery("no-such-context", {1}, 4)).status, grpc::StatusCode::NOT_FOUND, "context_id");
  ExpectStatus(Generate(TokenQuery("bad/id", {1}, 4)).status, grpc::StatusCode::INVALID_ARGUMENT, "context_id");
  ExpectStatus(Generate(TokenQuery(id, {}, 4)).status, grpc::StatusCode::INVALID_ARGUMENT, "prompt");
  ExpectStatus(Generate(TokenQuery(id, {1, kVocab}, 4)).status, grpc::StatusCode::INVALID_ARGUMENT, "tokens.ids[1]");
  ExpectStatus(Generate(TokenQuery(id, {-5}, 4)).status, grpc::StatusCode::INVALID_ARGUMENT, "tokens.ids[0]");
  ExpectStatus(Generate(TokenQuery(id, ContextTokens(kMaxQueryTokens + 1), 4)).status,
               grpc::StatusCode::INVALID_ARGUMENT, "prompt");
  ExpectStatus(Generate(TokenQuery(id, {1}, kMaxNewTokens + 1)).status, grpc::StatusCode::INVALID_ARGUMENT,
               "sampling.max_new_tokens");
  pb::GenerateRequest request = TokenQuery(id, {1}, 4);
  request.mutable_sampling()->set_temperature(-1);
  ExpectStatus(Generate(request).status, grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature");
  request = TokenQuery(id, {1}, 4);
  request.mutable_sampling()->set_top_p(1.5f);
  ExpectStatus(Generate(request).status, grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p");
  request = TokenQuery(id, {1}, 4);
  request.mutable_attention()->set_sparsity(2.0f);
  ExpectStatus(Generate(request).status, grpc::StatusCode::INVALID_ARGUMENT, "attention.sparsity");
  pb::GenerateRequest no_prompt;
  no_prompt.set_context_id(id);
  ExpectStatus(Generate(no_prompt).status, grpc::StatusCode::INVALID_ARGUMENT, "prompt");
}

TEST_F(IntegrationTest, SqueezedOnADenseOnlyContextIsAFailedPrecondition) {
  IngestResult dense = Ingest(TokenRequests(ContextTokens(200, 4), "dense-only-doc", 1, /*dense_only=*/true));
  ASSERT_TRUE(dense.status.ok()) << dense.status.error_message();
  EXPECT_FALSE(dense.context().indexed());
  // The server default (squeezed) falls back to dense...
  GenerateResult fallback = Generate(TokenQuery("dense-only-doc", {1, 2}, 3));
  ASSERT_TRUE(fallback.status.ok()) << fallback.status.error_message();
  EXPECT_EQ(fallback.last().stats().mode(), pb::AttentionOptions::DENSE);
  // ...an explicit SQUEEZED does not.
  pb::GenerateRequest request = TokenQuery("dense-only-doc", {1, 2}, 3);
  request.mutable_attention()->set_mode(pb::AttentionOptions::SQUEEZED);
  ExpectStatus(Generate(request).status, grpc::StatusCode::FAILED_PRECONDITION, "attention.mode");
}

TEST_F(IntegrationTest, BadIngestRequestsAreRefusedNamingTheField) {
  ExpectStatus(Ingest({pb::IngestContextRequest()}).status, grpc::StatusCode::INVALID_ARGUMENT, "content");
  ExpectStatus(Ingest({}).status, grpc::StatusCode::INVALID_ARGUMENT, "content");
  ExpectStatus(Ingest(TokenRequests({1, 2, kVocab})).status, grpc::StatusCode::INVALID_ARGUMENT, "tokens.ids[2]");
  ExpectStatus(Ingest(TokenRequests(ContextTokens(kMaxContextTokens + 1))).status,
               grpc::StatusCode::INVALID_ARGUMENT, "max_context_tokens");
  ExpectStatus(Ingest(TokenRequests({1, 2}, "../escape")).status, grpc::StatusCode::INVALID_ARGUMENT, "context_id");
  std::vector<pb::IngestContextRequest> mixed = TokenRequests({1, 2, 3}, "", 1);
  mixed.emplace_back().set_text("text after tokens");
  ExpectStatus(Ingest(mixed).status, grpc::StatusCode::INVALID_ARGUMENT, "content");
  std::vector<pb::IngestContextRequest> bad_index = TokenRequests({1, 2, 3});
  bad_index[0].mutable_index()->set_centroid_fraction(0.9f);
  ExpectStatus(Ingest(bad_index).status, grpc::StatusCode::INVALID_ARGUMENT, "index.centroid_fraction");
}

TEST_F(IntegrationTest, ClientCancelMidStreamLeavesTheServerServing) {
  auto stub = Stub();
  grpc::ClientContext context;
  auto stream = stub->Generate(&context, TokenQuery(SharedContext(), {1, 2, 3}, kMaxNewTokens));
  pb::GenerateResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_TRUE(stream->Read(&response));
  context.TryCancel();
  while (stream->Read(&response)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  GenerateResult after = Generate(TokenQuery(SharedContext(), {1, 2, 3}, 4));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens.size(), 4u);
}

TEST_F(IntegrationTest, ShortDeadlineOnALongGenerationIsDeadlineExceeded) {
  GenerateResult result =
      Generate(TokenQuery(SharedContext(), {1, 2, 3}, kMaxNewTokens), std::chrono::milliseconds(50));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << result.status.error_message();
  EXPECT_LT(result.tokens.size(), static_cast<size_t>(kMaxNewTokens));
  GenerateResult after = Generate(TokenQuery(SharedContext(), {1, 2, 3}, 4));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

TEST_F(IntegrationTest, EightConcurrentStreamsMatchTheSoloGreedyOutput) {
  pb::GenerateRequest request = TokenQuery(SharedContext(), {7, 77, 777}, 12);
  GenerateResult solo = Generate(request);
  ASSERT_TRUE(solo.status.ok()) << solo.status.error_message();
  std::vector<GenerateResult> results(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back([&, i] { results[i] = Generate(request); });
  for (std::thread& thread : threads) thread.join();
  for (const GenerateResult& result : results) {
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.tokens, solo.tokens);
  }
}

TEST_F(IntegrationTest, OverloadIsResourceExhaustedWithARetryHint) {
  // Fill every worker with a long generation, then one more.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>>> streams;
  auto stub = Stub();
  pb::GenerateResponse response;
  for (int i = 0; i < kMaxConcurrentStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub->Generate(contexts.back().get(), TokenQuery(SharedContext(), {1, 2}, kMaxNewTokens)));
    ASSERT_TRUE(streams.back()->Read(&response)) << "stream " << i << " should be admitted";
  }
  grpc::ClientContext extra_context;
  auto extra = stub->Generate(&extra_context, TokenQuery(SharedContext(), {1, 2}, 4));
  while (extra->Read(&response)) {
  }
  grpc::Status status = extra->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  const auto& trailers = extra_context.GetServerTrailingMetadata();
  EXPECT_NE(trailers.find("grpc-retry-pushback-ms"), trailers.end());
  for (auto& context : contexts) context->TryCancel();
  for (auto& stream : streams) {
    while (stream->Read(&response)) {
    }
    stream->Finish();
  }
  // The cancelled streams give their workers back (each within one decode step).
  bool admitted = false;
  for (int attempt = 0; attempt < 200 && !admitted; ++attempt) {
    GenerateResult probe = Generate(TokenQuery(SharedContext(), {1, 2}, 1));
    admitted = probe.status.ok();
    if (!admitted) {
      ASSERT_EQ(probe.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << probe.status.error_message();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  EXPECT_TRUE(admitted) << "the workers of cancelled streams were never freed";
}

TEST_F(IntegrationTest, DeleteThenGenerateIsNotFound) {
  IngestResult ingest = Ingest(TokenRequests(ContextTokens(150, 5), "to-delete"));
  ASSERT_TRUE(ingest.status.ok()) << ingest.status.error_message();
  auto stub = Stub();
  {
    grpc::ClientContext context;
    pb::GetContextRequest request;
    request.set_context_id("to-delete");
    pb::ContextInfo info;
    ASSERT_TRUE(stub->GetContext(&context, request, &info).ok());
    EXPECT_EQ(info.num_tokens(), 150u);
  }
  {
    grpc::ClientContext context;
    pb::ListContextsResponse list;
    ASSERT_TRUE(stub->ListContexts(&context, pb::ListContextsRequest(), &list).ok());
    EXPECT_TRUE(std::any_of(list.contexts().begin(), list.contexts().end(),
                            [](const pb::ContextInfo& info) { return info.context_id() == "to-delete"; }));
  }
  pb::DeleteContextRequest request;
  request.set_context_id("to-delete");
  {
    grpc::ClientContext context;
    pb::DeleteContextResponse response;
    ASSERT_TRUE(stub->DeleteContext(&context, request, &response).ok());
    EXPECT_TRUE(response.deleted());
  }
  ExpectStatus(Generate(TokenQuery("to-delete", {1}, 2)).status, grpc::StatusCode::NOT_FOUND, "context_id");
  grpc::ClientContext again;
  pb::DeleteContextResponse response;
  EXPECT_EQ(stub->DeleteContext(&again, request, &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

// squeezectl, run as a subprocess against the same server.
CommandResult Ctl(std::vector<std::string> args, const std::string& input = "") {
  args.insert(args.begin(), {SQUEEZECTL_BIN, "--server", g_address});
  return RunCommand(args, input);
}

TEST_F(IntegrationTest, SqueezectlRoundTripAndExitCodes) {
  CommandResult info = Ctl({"info"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("vocab_size: 1000"), std::string::npos) << info.out;

  std::vector<std::string> ids;
  for (int32_t id : ContextTokens(220, 6)) ids.push_back(std::to_string(id));
  CommandResult ingest = Ctl({"ingest", "--json", "--id", "ctl-doc", "--tokens", absl::StrJoin(ids, ",")});
  ASSERT_EQ(ingest.exit_code, 0) << ingest.err;
  nlohmann::json context = nlohmann::json::parse(ingest.out);
  EXPECT_EQ(context["context_id"], "ctl-doc");
  EXPECT_EQ(context["num_tokens"], "220");  // proto3 JSON writes uint64 as a string
  EXPECT_NE(ingest.err.find("progress: stage="), std::string::npos) << "plain progress lines off a TTY";

  CommandResult text_ingest = Ctl({"ingest", "--id", "ctl-text"}, "Once upon a time, there was a context.");
  EXPECT_EQ(text_ingest.exit_code, 0) << text_ingest.err;
  EXPECT_NE(text_ingest.out.find("context_id: ctl-text"), std::string::npos) << text_ingest.out;

  CommandResult generate = Ctl({"generate", "--json", "--context", "ctl-doc", "--tokens", "5,6,7",
                                "--max_new_tokens", "6", "--ignore_eos", "--logprobs"});
  ASSERT_EQ(generate.exit_code, 0) << generate.err;
  nlohmann::json answer = nlohmann::json::parse(generate.out);
  EXPECT_EQ(answer["token_ids"].size(), 6u);
  EXPECT_EQ(answer["logprobs"].size(), 6u);
  EXPECT_EQ(answer["finish_reason"], "LENGTH");
  EXPECT_EQ(answer["usage"]["prompt_tokens"], 3);
  // The same query over the C++ client gives the same greedy tokens.
  GenerateResult direct = Generate(TokenQuery("ctl-doc", {5, 6, 7}, 6));
  ASSERT_TRUE(direct.status.ok());
  EXPECT_EQ(answer["token_ids"].get<std::vector<int32_t>>(), direct.tokens);

  CommandResult text = Ctl({"generate", "--context", "ctl-doc", "--prompt", "Hello", "--max_new_tokens", "4"});
  EXPECT_EQ(text.exit_code, 0) << text.err;

  CommandResult list = Ctl({"list"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_NE(list.out.find("ctl-doc"), std::string::npos);

  EXPECT_EQ(Ctl({"get", "ctl-doc"}).exit_code, 0);
  EXPECT_EQ(Ctl({"delete", "ctl-doc"}).exit_code, 0);
  // Exit code = 10 + gRPC code.
  EXPECT_EQ(Ctl({"get", "ctl-doc"}).exit_code, 10 + static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(Ctl({"generate", "--context", "ctl-doc", "--tokens", "1"}).exit_code,
            10 + static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(Ctl({"generate", "--context", "ctl-text", "--tokens", "1", "--top_p", "1.5"}).exit_code,
            10 + static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(Ctl({"generate", "--context", "ctl-text", "--tokens", "1", "--ignore_eos", "--max_new_tokens",
                 std::to_string(kMaxNewTokens), "--timeout", "0.05"})
                .exit_code,
            10 + static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED));
  EXPECT_EQ(Ctl({"ingest", "--tokens", ""}, "").exit_code, 10 + static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  // Usage errors exit 1.
  EXPECT_EQ(Ctl({}).exit_code, 1);
  EXPECT_EQ(Ctl({"frobnicate"}).exit_code, 1);
  EXPECT_EQ(Ctl({"generate", "--context", "ctl-text"}).exit_code, 1) << "no prompt";
  EXPECT_EQ(Ctl({"help", "generate"}).exit_code, 0);
}

}  // namespace
}  // namespace squeezeserve::testing
