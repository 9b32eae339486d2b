// A client that stops reading its Generate stream (a tiny HTTP/2 window, no reads) must not hold up
// anyone else: its stream is paused once --max_stream_backlog messages wait for it while the batch
// goes on, and past --stream_stall_timeout_ms it is cancelled and its slot freed. (Before, the batching
// loop waited for the slow client, and every other stream froze for as long as it stayed connected.)
#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/test_server.h"

namespace squeezeserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

// A channel whose client accepts almost nothing it has not read: 256 bytes of stream window, no
// bandwidth probing that would grow it.
std::shared_ptr<grpc::Channel> SlowChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 256);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

pb::GenerateRequest Request(const std::string& id, int max_new_tokens) {
  pb::GenerateRequest request;
  request.set_context_id(id);
  for (int t : {5, 9, 14}) request.mutable_tokens()->add_ids(t);
  request.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  request.mutable_sampling()->set_ignore_eos(true);
  request.mutable_attention()->set_mode(pb::AttentionOptions::DENSE);
  return request;
}

// A stream that is started and never read (until the test says so).
struct SlowReader {
  SlowReader(const std::string& address, const std::string& id)
      : channel(SlowChannel(address)), stub(pb::Squeezeserve::NewStub(channel)), context(CallContext(120)) {
    reader = stub->Generate(context.get(), Request(id, 3000));
  }
  // Reads what is left; the final status.
  grpc::Status Drain(int* tokens) {
    pb::GenerateResponse response;
    while (reader->Read(&response)) *tokens += response.token_ids_size();
    return reader->Finish();
  }
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Squeezeserve::Stub> stub;
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReader<pb::GenerateResponse>> reader;
};

// Generates `n` tokens, reading as they come; the largest gap between token messages.
double MaxGapMs(TestServer& server, const std::string& id, int n, grpc::Status* status) {
  auto stub = server.Stub();
  auto context = CallContext(60);
  auto reader = stub->Generate(context.get(), Request(id, n));
  pb::GenerateResponse response;
  double max_gap = 0;
  Clock::time_point last = Clock::now();
  int tokens = 0;
  while (reader->Read(&response)) {
    if (response.token_ids_size() == 0) continue;
    const Clock::time_point now = Clock::now();
    if (tokens++ > 0) max_gap = std::max(max_gap, std::chrono::duration<double, std::milli>(now - last).count());
    last = now;
  }
  *status = reader->Finish();
  EXPECT_EQ(tokens, n);
  return max_gap;
}

TEST(SlowReaderTest, AStreamNobodyReadsIsPausedWhileTheOthersGoOn) {
  TestServer server({"--max_stream_backlog=8", "--stream_stall_timeout_ms=60000"});
  auto stub = server.Stub();
  ASSERT_TRUE(IngestTokens(*stub, "doc", ContextTokens(256)).ok());
  SlowReader slow(server.address(), "doc");
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // its buffer fills up meanwhile
  for (int round = 0; round < 2; ++round) {
    grpc::Status status;
    const double gap = MaxGapMs(server, "doc", 200, &status);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_LT(gap, 500) << "a healthy stream waited " << gap << " ms for a client that does not read";
  }
  slow.context->TryCancel();
  int tokens = 0;
  EXPECT_EQ(slow.Drain(&tokens).error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(tokens, 3000) << "the slow stream was paused, not run to its end";
}

TEST(SlowReaderTest, AStalledStreamIsCancelledAndItsSlotFreed) {
  // One slot: the second request can only run once the stalled stream gave its slot back.
  TestServer server({"--max_concurrent_streams=1", "--max_queued_requests=4", "--max_stream_backlog=8",
                     "--stream_stall_timeout_ms=1500"});
  auto stub = server.Stub();
  ASSERT_TRUE(IngestTokens(*stub, "doc", ContextTokens(256)).ok());
  SlowReader slow(server.address(), "doc");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const Clock::time_point sent = Clock::now();
  GenerateResult next = GenerateTokens(*stub, "doc", 16, "", /*seconds=*/20);
  const double waited_s = std::chrono::duration<double>(Clock::now() - sent).count();
  EXPECT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_LT(waited_s, 10) << "the slot came free only after " << waited_s << " s";
  int tokens = 0;
  grpc::Status slow_status = slow.Drain(&tokens);
  EXPECT_EQ(slow_status.error_code(), grpc::StatusCode::CANCELLED) << slow_status.error_message();
  EXPECT_LT(tokens, 3000);
}

}  // namespace
}  // namespace squeezeserve::testing
