// One timed request to an OpenAI-compatible /v1/completions endpoint (squeezeserve --openai_listen, or
// another server, e.g. vLLM, measured on the same dataset): streamed (SSE) with
// stream_options.include_usage, so TTFT, ITL and E2EL are timed per text-carrying chunk and the token
// counts come from the server's usage.
#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "client/squeezeload/metrics.h"
#include "client/squeezeload/workload.h"

namespace squeezeload {

struct OpenAiEndpoint {
  std::string base_url;  // "http://HOST:PORT" (the /v1/... paths are appended)
  std::string model;     // the "model" of every request
  std::string api_key;   // sent as a bearer token when set
};

// `prompt` is the whole prompt (the context's text and the question) unless `context_id` is set, in
// which case it is the question and squeezeserve's context_id extension names the stored context.
RequestRecord RunOpenAiCompletion(const OpenAiEndpoint& endpoint, const std::string& prompt,
                                  const std::string& context_id, const RequestSpec& spec, absl::Duration timeout);

// The first model of GET /v1/models (when --openai_model is not given).
std::string FirstOpenAiModel(const OpenAiEndpoint& endpoint, absl::Duration timeout);

}  // namespace squeezeload
