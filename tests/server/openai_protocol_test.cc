// The OpenAI request / response shapes (server/openai_protocol.h), without a server.
#include "server/openai_protocol.h"

#include <gtest/gtest.h>

namespace squeezeserve::server {
namespace {

using Json = nlohmann::ordered_json;

TEST(OpenAiProtocolTest, CompletionDefaultsFollowTheApi) {
  auto r = ParseOpenAiRequest(R"({"model": "m", "prompt": "hi"})", false);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt_text, "hi");
  EXPECT_EQ(r->sampling.max_new_tokens(), 16u);    // the API's default for completions
  EXPECT_FLOAT_EQ(r->sampling.temperature(), 1.f);  // sampling unless asked otherwise
  EXPECT_FALSE(r->stream);
  auto ids = ParseOpenAiRequest(R"({"prompt": [[5, 6, 7]], "max_tokens": 3, "stop": "x", "seed": 4})", false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_TRUE(ids->prompt_is_ids);
  EXPECT_EQ(ids->prompt_ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(ids->sampling.stop_size(), 1);
  EXPECT_EQ(ids->sampling.seed(), 4u);
}

TEST(OpenAiProtocolTest, ChatFlattensTextPartsAndKeepsToolFields) {
  auto r = ParseOpenAiRequest(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
      {"type": "text", "text": "b"}]}, {"role": "assistant", "content": null, "tool_calls": []}],
      "max_completion_tokens": 5, "logprobs": true, "stream": true, "stream_options": {"include_usage": true},
      "context_id": "doc", "attention": {"mode": "squeezed", "sparsity": 0.9}})",
                              true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->messages[0]["content"], "ab");
  EXPECT_TRUE(r->messages[1].contains("tool_calls"));
  EXPECT_EQ(r->sampling.max_new_tokens(), 5u);
  EXPECT_TRUE(r->logprobs && r->stream && r->include_usage);
  EXPECT_EQ(r->context_id, "doc");
  EXPECT_EQ(r->attention.mode(), pb::AttentionOptions::SQUEEZED);
}

TEST(OpenAiProtocolTest, RejectionsNameTheParameter) {
  for (const auto& [body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"({"prompt": "x", "temperature": 2.5})", "temperature"},
           {R"({"prompt": "x", "top_p": 0})", "top_p"},
           {R"({"prompt": "x", "n": 3})", "n"},
           {R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
           {R"({"prompt": "x", "presence_penalty": 0.5})", "presence_penalty"},
           {R"({"prompt": "x", "logit_bias": {"1": 2}})", "logit_bias"},
           {R"({"prompt": ""})", "prompt"},
           {R"({"prompt": "x", "attention": {"mode": "fast"}})", "attention.mode"}}) {
    auto r = ParseOpenAiRequest(body, false);
    ASSERT_FALSE(r.ok()) << body;
    const OpenAiError e = ToOpenAiError(r.status());
    EXPECT_EQ(e.http_status, 400) << body;
    EXPECT_EQ(e.body["error"]["param"], param) << body;
    EXPECT_EQ(e.body["error"]["type"], "invalid_request_error");
  }
  EXPECT_FALSE(ParseOpenAiRequest(R"({"messages": []})", true).ok());
  EXPECT_FALSE(ParseOpenAiRequest("not json", true).ok());
}

TEST(OpenAiProtocolTest, ErrorCodesMapToHttp) {
  EXPECT_EQ(ToOpenAiError(absl::UnauthenticatedError("no token")).http_status, 401);
  EXPECT_EQ(ToOpenAiError(absl::ResourceExhaustedError("busy")).http_status, 429);
  EXPECT_EQ(ToOpenAiError(absl::NotFoundError("context_id: no context")).http_status, 404);
  EXPECT_EQ(ToOpenAiError(absl::UnavailableError("loading")).http_status, 503);
  EXPECT_EQ(ToOpenAiError(absl::UnauthenticatedError("no token")).body["error"]["type"], "authentication_error");
}

TEST(OpenAiProtocolTest, ResponsesHaveTheClientsShapes) {
  OpenAiRequest chat;
  chat.chat = true;
  chat.logprobs = true;
  OpenAiUsage usage{10, 4, 2};
  Json r = CompletionResponse(chat, "id", 1, "m", "ok", {{"o", -0.5f}, {"k", -0.25f}}, FinishReason::kEos, usage);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["content"], "ok");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["choices"][0]["logprobs"]["content"].size(), 2u);
  EXPECT_EQ(r["usage"]["total_tokens"], 12);
  EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
  Json first = StreamChunk(chat, "id", 1, "m", "", {}, std::nullopt, true);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  OpenAiRequest completion;
  Json last = StreamChunk(completion, "id", 1, "m", "", {}, FinishReason::kLength, false);
  EXPECT_EQ(last["object"], "text_completion");
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
}

}  // namespace
}  // namespace squeezeserve::server
