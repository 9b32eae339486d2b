#include "engine/chat_template.h"

#include "absl/strings/str_cat.h"

namespace squeezeserve {

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(const ChatTemplateInfo& info) {
  if (info.chat_template.empty()) {
    return absl::FailedPreconditionError(
        "the model has no chat template (tokenizer_config.json chat_template); send a prompt instead of messages");
  }
  auto compiled = JinjaTemplate::Parse(info.chat_template);
  if (!compiled.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the model's chat template cannot be rendered here: ", compiled.status().message()));
  }
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(*compiled), info));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages,
                                                 const nlohmann::ordered_json& tools, bool add_generation_prompt,
                                                 const nlohmann::ordered_json& extra) const {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages: must be a list");
  nlohmann::ordered_json variables = {{"messages", messages},
                                      {"tools", tools},
                                      {"documents", nullptr},
                                      {"add_generation_prompt", add_generation_prompt}};
  if (!info_.bos_token.empty()) variables["bos_token"] = info_.bos_token;
  if (!info_.eos_token.empty()) variables["eos_token"] = info_.eos_token;
  for (auto it = extra.begin(); it != extra.end(); ++it) variables[it.key()] = it.value();
  return compiled_->Render(variables);
}

}  // namespace squeezeserve
