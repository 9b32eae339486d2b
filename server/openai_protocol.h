// The OpenAI API's request and response bodies (/v1/completions, /v1/chat/completions, /v1/models),
// as JSON, without any server state: parsing into a request the server can run, and the response,
// stream-chunk and error shapes that the official clients read. Unit-tested directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "nlohmann/json.hpp"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezeserve::server {

namespace pb = ::squeezeserve::v1;

struct OpenAiRequest {
  bool chat = false;
  std::string model;                 // empty when the client left it out
  nlohmann::ordered_json messages;   // chat: [{"role", "content"}] with content flattened to text
  nlohmann::ordered_json tools;      // chat: passed to the chat template (null when absent)
  std::string prompt_text;           // completions: a text prompt ...
  std::vector<int32_t> prompt_ids;   // ... or token ids
  bool prompt_is_ids = false;
  pb::SamplingParams sampling;       // max_tokens, temperature, top_p, seed, stop (+ ignore_eos, top_k extensions)
  bool stream = false;
  bool include_usage = false;        // stream_options.include_usage
  bool logprobs = false;             // completions: logprobs != null; chat: logprobs: true
  // squeezeserve extensions: the stored context the prompt continues, and its attention options.
  std::string context_id;
  pb::AttentionOptions attention;
};

// InvalidArgument "<param>: <why>" (param as OpenAI names it) for what the API rejects or the server
// does not support (n > 1, echo, penalties, logit_bias, best_of).
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(const std::string& body, bool chat);

// One generated token as the response builders see it.
struct OpenAiToken {
  std::string text;  // the token alone, decoded (for logprobs)
  float logprob = 0;
};

struct OpenAiUsage {
  int64_t prompt_tokens = 0;   // the prompt, and the stored context's tokens when there is one
  int64_t cached_tokens = 0;   // of which served from the stored context
  int64_t completion_tokens = 0;
};

// "stop" (EOS, a stop string) or "length".
const char* OpenAiFinishReason(FinishReason reason);

nlohmann::ordered_json UsageJson(const OpenAiUsage& usage);
// A whole (non-streamed) response.
nlohmann::ordered_json CompletionResponse(const OpenAiRequest& request, const std::string& id, int64_t created,
                                          const std::string& model, const std::string& text,
                                          const std::vector<OpenAiToken>& tokens, FinishReason finish,
                                          const OpenAiUsage& usage);
// One streamed chunk: text (a delta, possibly empty), its tokens, and the finish reason on the last.
// `first` (chat) adds the assistant role to the delta.
nlohmann::ordered_json StreamChunk(const OpenAiRequest& request, const std::string& id, int64_t created,
                                   const std::string& model, const std::string& text,
                                   const std::vector<OpenAiToken>& tokens, std::optional<FinishReason> finish,
                                   bool first);
// The final usage-only chunk of stream_options.include_usage.
nlohmann::ordered_json UsageChunk(const OpenAiRequest& request, const std::string& id, int64_t created,
                                  const std::string& model, const OpenAiUsage& usage);
nlohmann::ordered_json ModelsResponse(const std::string& model, int64_t created, int64_t max_model_len);

// {"error": {"message", "type", "param", "code"}} and its HTTP status for an absl status: the param is
// the field a message starts with ("temperature: ..."); the type follows the code.
struct OpenAiError {
  int http_status = 500;
  nlohmann::ordered_json body;
};
OpenAiError ToOpenAiError(const absl::Status& status);

}  // namespace squeezeserve::server
