#include "server/prompt_text.h"

#include "absl/strings/str_cat.h"
#include "engine/chat_template.h"
#include "server/validation.h"

namespace squeezeserve::server {

nlohmann::ordered_json ToJson(const pb::ChatMessages& chat) {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const pb::ChatMessage& m : chat.messages()) messages.push_back({{"role", m.role()}, {"content", m.content()}});
  return messages;
}

absl::StatusOr<std::string> RenderChat(const Engine& engine, const nlohmann::ordered_json& messages,
                                       const nlohmann::ordered_json& tools, bool add_generation_prompt) {
  if (!messages.is_array() || messages.empty()) return absl::InvalidArgumentError("messages: must not be empty");
  // Parsing a template takes well under a millisecond: no cache to keep in step with the engine.
  auto chat = ChatTemplate::Create(engine.model_info().chat);
  if (!chat.ok()) return chat.status();
  return (*chat)->Render(messages, tools, add_generation_prompt);
}

absl::StatusOr<std::vector<int32_t>> EncodeRendered(const Engine& engine, const std::string& text) {
  const ModelInfo& model = engine.model_info();
  if (model.tokenizer_source != "tokenizer.model") return engine.Encode(text, /*add_bos=*/false);
  // sentencepiece reads "<s>" as three characters: the template's BOS / EOS strings become their ids.
  std::vector<std::pair<std::string, int32_t>> specials;
  if (!model.chat.bos_token.empty() && model.bos_token_id >= 0) specials.emplace_back(model.chat.bos_token, model.bos_token_id);
  if (!model.chat.eos_token.empty() && model.eos_token_id >= 0) specials.emplace_back(model.chat.eos_token, model.eos_token_id);
  std::vector<int32_t> ids;
  size_t last = 0;
  while (last < text.size()) {
    size_t at = std::string::npos;
    const std::pair<std::string, int32_t>* found = nullptr;
    for (const auto& special : specials) {
      const size_t pos = text.find(special.first, last);
      if (pos < at) {
        at = pos;
        found = &special;
      }
    }
    const std::string piece = text.substr(last, at == std::string::npos ? std::string::npos : at - last);
    if (!piece.empty()) {
      absl::StatusOr<std::vector<int32_t>> encoded = engine.Encode(piece, /*add_bos=*/false);
      if (!encoded.ok()) return encoded.status();
      ids.insert(ids.end(), encoded->begin(), encoded->end());
    }
    if (found == nullptr) break;
    ids.push_back(found->second);
    last = at + found->first.size();
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> EncodeChat(const Engine& engine, const nlohmann::ordered_json& messages,
                                                bool add_generation_prompt, std::string* rendered) {
  return EncodeChat(engine, messages, nullptr, add_generation_prompt, rendered);
}

absl::StatusOr<std::vector<int32_t>> EncodeChat(const Engine& engine, const nlohmann::ordered_json& messages,
                                                const nlohmann::ordered_json& tools, bool add_generation_prompt,
                                                std::string* rendered) {
  absl::StatusOr<std::string> text = RenderChat(engine, messages, tools, add_generation_prompt);
  if (!text.ok()) return text.status();
  if (rendered != nullptr) *rendered = *text;
  return EncodeRendered(engine, *text);
}

absl::Status Tokenize(const Engine& engine, const pb::TokenizeRequest& request, pb::TokenizeResponse* response) {
  absl::StatusOr<std::vector<int32_t>> ids;
  switch (request.input_case()) {
    case pb::TokenizeRequest::kText:
      ids = engine.Encode(request.text(), request.add_special_tokens());
      break;
    case pb::TokenizeRequest::kMessages: {
      std::string rendered;
      ids = EncodeChat(engine, ToJson(request.messages()), !request.messages().no_generation_prompt(), &rendered);
      response->set_prompt(rendered);
      break;
    }
    case pb::TokenizeRequest::INPUT_NOT_SET:
      return absl::InvalidArgumentError("input: set text or messages");
  }
  if (!ids.ok()) return ids.status();
  response->mutable_ids()->Add(ids->begin(), ids->end());
  return absl::OkStatus();
}

absl::Status Detokenize(const Engine& engine, const pb::DetokenizeRequest& request, pb::DetokenizeResponse* response) {
  const auto& ids = request.ids();
  absl::Status valid =
      ValidateTokenIds(absl::MakeConstSpan(ids.data(), ids.size()), engine.model_info().vocab_size, "ids");
  if (!valid.ok()) return valid;
  if (!engine.model_info().has_tokenizer) {
    return absl::FailedPreconditionError("the model has no tokenizer (tokenizer.json or tokenizer.model)");
  }
  response->set_text(engine.DecodeTokens(absl::MakeConstSpan(ids.data(), ids.size()), request.skip_special_tokens()));
  return absl::OkStatus();
}

}  // namespace squeezeserve::server
