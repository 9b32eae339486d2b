// Requests the server cannot parse, sent as raw frames the generated client would never produce:
// every one ends its RPC with INVALID_ARGUMENT naming what was wrong, and an IngestContext stream that
// carried one stores nothing (gRPC's typed handlers took such a frame for the client's half-close and
// stored the prefix received so far, or answered UNIMPLEMENTED with no message).
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "tests/integration/test_server.h"

namespace squeezeserve::testing {
namespace {

// An IngestContextRequest carrying `ids` as tokens (and the id and options on the first message).
std::string TokenMessage(const std::string& id, int begin, int count) {
  pb::IngestContextRequest request;
  if (!id.empty()) {
    request.set_context_id(id);
    request.mutable_index()->set_dense_only(true);
  }
  const std::vector<int32_t> tokens = ContextTokens(begin + count);
  for (int i = begin; i < begin + count; ++i) request.mutable_tokens()->add_ids(tokens[i]);
  return Serialized(request);
}

// Field 2 (text) holding bytes that are not UTF-8.
const std::string kBadUtf8Text = std::string("\x12\x03\xc3\x28\x41", 5);
// Field 3 (tokens) holding a TokenIds whose packed ids end in a truncated varint.
const std::string kBadPackedIds = std::string("\x1a\x04\x0a\x02\x05\xff", 6);
// Not protobuf at all: a length-delimited field running past the end.
const std::string kTruncated = std::string("\x0a\x7f\x61\x62", 4);

class MalformedRequestsTest : public ::testing::Test {
 protected:
  // Whether `id` is stored (GetContext OK) — NOT_FOUND is the only other acceptable answer.
  bool Stored(const std::string& id) {
    pb::GetContextRequest request;
    request.set_context_id(id);
    grpc::Status status = RawUnary(server_.channel(), "GetContext", Serialized(request));
    EXPECT_TRUE(status.ok() || status.error_code() == grpc::StatusCode::NOT_FOUND) << status.error_message();
    return status.ok();
  }

  TestServer server_;
};

TEST_F(MalformedRequestsTest, AnUnparseableIngestMessageEndsTheStreamAndStoresNothing) {
  struct Case {
    std::string name, garbage, expect_in_message;
  };
  for (const Case& c : std::vector<Case>{{"bad-utf8", kBadUtf8Text, "text: not valid UTF-8"},
                                         {"bad-packed", kBadPackedIds, "tokens.ids: malformed packed values"},
                                         {"truncated", kTruncated, "malformed protobuf encoding"}}) {
    const std::string id = "garbage-" + c.name;
    // Two good messages (1024 tokens), the garbage, then more good ones: the whole upload is refused.
    grpc::Status status = RawBidi(server_.channel(), "IngestContext",
                                  {TokenMessage(id, 0, 512), TokenMessage("", 512, 512), c.garbage,
                                   TokenMessage("", 1024, 512)});
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name << ": " << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), c.expect_in_message)) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), "stream message 2")) << status.error_message();
    EXPECT_FALSE(Stored(id)) << c.name << ": a refused upload must leave nothing behind";
  }
  // The same upload without the garbage is stored (the test can tell stored from refused).
  ASSERT_TRUE(RawBidi(server_.channel(), "IngestContext", {TokenMessage("clean", 0, 512), TokenMessage("", 512, 512)})
                  .ok());
  EXPECT_TRUE(Stored("clean"));
}

TEST_F(MalformedRequestsTest, AClientThatGoesAwayMidUploadStoresNothing) {
  for (int round = 0; round < 10; ++round) {
    const std::string id = "abandoned-" + std::to_string(round);
    grpc::Status status = RawBidi(server_.channel(), "IngestContext",
                                  {TokenMessage(id, 0, 512), TokenMessage("", 512, 512)}, /*cancel_instead=*/true);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // any wrongly started ingest would finish
  for (int round = 0; round < 10; ++round) EXPECT_FALSE(Stored("abandoned-" + std::to_string(round))) << round;
}

TEST_F(MalformedRequestsTest, UnparseableUnaryAndGenerateRequestsAreInvalidArgumentNamingTheField) {
  // GetContext {context_id: <not UTF-8>}
  const std::string bad_id = std::string("\x0a\x02\xff\xfe", 4);
  for (const char* method : {"GetContext", "DeleteContext"}) {
    grpc::Status status = RawUnary(server_.channel(), method, bad_id);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
    EXPECT_TRUE(absl::StrContains(status.error_message(), "context_id: not valid UTF-8")) << status.error_message();
  }
  grpc::Status list = RawUnary(server_.channel(), "ListContexts", kTruncated);
  EXPECT_EQ(list.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << list.error_message();
  EXPECT_TRUE(absl::StrContains(list.error_message(), "squeezeserve.v1.ListContextsRequest")) << list.error_message();

  // Generate with a nested bad field: sampling.stop (field 4 -> field 6) not UTF-8.
  pb::GenerateRequest good;
  good.set_context_id("x");
  std::string request = Serialized(good) + std::string("\x22\x04\x32\x02\xc0\xaf", 6);
  grpc::Status generate = RawServerStream(server_.channel(), "Generate", request);
  EXPECT_EQ(generate.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << generate.error_message();
  EXPECT_TRUE(absl::StrContains(generate.error_message(), "sampling.stop: not valid UTF-8"))
      << generate.error_message();
  grpc::Status ids = RawServerStream(server_.channel(), "Generate", Serialized(good) + kBadPackedIds);
  EXPECT_EQ(ids.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(ids.error_message(), "tokens.ids: malformed packed values")) << ids.error_message();
}

}  // namespace
}  // namespace squeezeserve::testing
