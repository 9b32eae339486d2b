#include "server/ingest_accumulator.h"

#include <string>

#include <gtest/gtest.h>

namespace squeezeserve::server {
namespace {

namespace pb = ::squeezeserve::v1;

pb::IngestContextRequest Text(const std::string& text) {
  pb::IngestContextRequest request;
  request.set_text(text);
  return request;
}

pb::IngestContextRequest Tokens(std::initializer_list<int32_t> ids) {
  pb::IngestContextRequest request;
  for (int32_t id : ids) request.mutable_tokens()->add_ids(id);
  return request;
}

void ExpectInvalid(const absl::Status& status, const std::string& field) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(std::string(status.message()).find(field), std::string::npos) << status.message();
}

TEST(IngestAccumulator, ConcatenatesTextChunksAndReadsOptionsFromTheFirst) {
  IngestAccumulator accumulator(ServerLimits(), 1000);
  pb::IngestContextRequest first = Text("Hello, ");
  first.set_context_id("doc-1");
  first.set_no_bos(true);
  first.mutable_index()->set_levels(1);
  ASSERT_TRUE(accumulator.Add(first).ok());
  pb::IngestContextRequest second = Text("world");
  second.set_context_id("ignored");
  ASSERT_TRUE(accumulator.Add(second).ok());
  ASSERT_TRUE(accumulator.Finish().ok());
  EXPECT_EQ(accumulator.context_id(), "doc-1");
  EXPECT_FALSE(accumulator.add_bos());
  EXPECT_EQ(accumulator.index().levels, 1);
  EXPECT_TRUE(accumulator.is_text());
  EXPECT_EQ(accumulator.text(), "Hello, world");
}

TEST(IngestAccumulator, ConcatenatesTokenChunks) {
  IngestAccumulator accumulator(ServerLimits(), 1000);
  ASSERT_TRUE(accumulator.Add(Tokens({1, 2})).ok());
  ASSERT_TRUE(accumulator.Add(Tokens({3})).ok());
  ASSERT_TRUE(accumulator.Finish().ok());
  EXPECT_EQ(accumulator.tokens(), (std::vector<int32_t>{1, 2, 3}));
}

TEST(IngestAccumulator, RejectsAnEmptyContext) {
  IngestAccumulator nothing(ServerLimits(), 1000);
  ExpectInvalid(nothing.Finish(), "content");
  IngestAccumulator options_only(ServerLimits(), 1000);
  ASSERT_TRUE(options_only.Add(pb::IngestContextRequest()).ok());
  ExpectInvalid(options_only.Finish(), "content");
}

TEST(IngestAccumulator, RejectsMixedContentKinds) {
  IngestAccumulator accumulator(ServerLimits(), 1000);
  ASSERT_TRUE(accumulator.Add(Text("abc")).ok());
  ExpectInvalid(accumulator.Add(Tokens({1})), "content");
}

TEST(IngestAccumulator, RejectsOutOfVocabularyTokensNamingTheStreamIndex) {
  IngestAccumulator accumulator(ServerLimits(), 1000);
  ASSERT_TRUE(accumulator.Add(Tokens({1, 2})).ok());
  ExpectInvalid(accumulator.Add(Tokens({3, 1000})), "tokens.ids[3]");
}

TEST(IngestAccumulator, EnforcesTheTokenAndByteCapsWhileReceiving) {
  ServerLimits limits;
  limits.max_context_tokens = 3;
  limits.max_context_bytes = 5;
  IngestAccumulator tokens(limits, 1000);
  ASSERT_TRUE(tokens.Add(Tokens({1, 2})).ok());
  ExpectInvalid(tokens.Add(Tokens({3, 4})), "max_context_tokens");
  IngestAccumulator text(limits, 1000);
  ASSERT_TRUE(text.Add(Text("abc")).ok());
  ExpectInvalid(text.Add(Text("def")), "text");
}

TEST(IngestAccumulator, RejectsInvalidIdsAndIndexOptions) {
  IngestAccumulator bad_id(ServerLimits(), 1000);
  pb::IngestContextRequest request = Text("x");
  request.set_context_id("no/slashes");
  ExpectInvalid(bad_id.Add(request), "context_id");

  IngestAccumulator bad_index(ServerLimits(), 1000);
  request = Text("x");
  request.mutable_index()->set_centroid_fraction(0.9f);
  ExpectInvalid(bad_index.Add(request), "index.centroid_fraction");
}

}  // namespace
}  // namespace squeezeserve::server
