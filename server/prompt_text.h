// Text in and out of the model for the RPCs and the OpenAI endpoints: chat messages rendered with the
// checkpoint's chat template, and the Tokenize / Detokenize RPCs. Plain server code over engine.h.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "nlohmann/json.hpp"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezeserve::server {

namespace pb = ::squeezeserve::v1;

// [{"role", "content"}, ...] of the proto messages.
nlohmann::ordered_json ToJson(const pb::ChatMessages& chat);

// The model's chat template over `messages` (and `tools`: a JSON array or null). FailedPrecondition
// when the model has no usable template, InvalidArgument when the template refuses the messages.
absl::StatusOr<std::string> RenderChat(const Engine& engine, const nlohmann::ordered_json& messages,
                                       const nlohmann::ordered_json& tools, bool add_generation_prompt);

// A rendered conversation as token ids: its special tokens are in the text (no BOS added; with a
// sentencepiece tokenizer the template's BOS / EOS strings are mapped to their ids).
absl::StatusOr<std::vector<int32_t>> EncodeChat(const Engine& engine, const nlohmann::ordered_json& messages,
                                                bool add_generation_prompt, std::string* rendered = nullptr);
absl::StatusOr<std::vector<int32_t>> EncodeChat(const Engine& engine, const nlohmann::ordered_json& messages,
                                                const nlohmann::ordered_json& tools, bool add_generation_prompt,
                                                std::string* rendered);

absl::Status Tokenize(const Engine& engine, const pb::TokenizeRequest& request, pb::TokenizeResponse* response);
absl::Status Detokenize(const Engine& engine, const pb::DetokenizeRequest& request, pb::DetokenizeResponse* response);

}  // namespace squeezeserve::server
