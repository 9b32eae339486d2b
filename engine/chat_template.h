// A checkpoint's chat template (tokenizer_config.json "chat_template"), rendered the way HF
// transformers' apply_chat_template(tokenize=False) does: the template sees messages, tools (None
// when the request has none), add_generation_prompt, bos_token / eos_token and any extra variables.
// Checked against transformers' own renderings (tests/text/chat_template_test.cc). Plain C++.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/jinja.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {

class ChatTemplate {
 public:
  // FailedPrecondition when the checkpoint has no chat template, or when it uses Jinja this
  // interpreter does not support (the message names the construct).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(const ChatTemplateInfo& info);

  // `messages`: a JSON array of {"role", "content", ...}; `tools`: a JSON array or null; `extra`: an
  // object of further template variables (e.g. date_string). InvalidArgument for what the template
  // refuses (raise_exception: "Conversation roles must alternate ...").
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                     bool add_generation_prompt,
                                     const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

 private:
  ChatTemplate(std::unique_ptr<JinjaTemplate> compiled, ChatTemplateInfo info)
      : compiled_(std::move(compiled)), info_(std::move(info)) {}
  std::unique_ptr<JinjaTemplate> compiled_;
  ChatTemplateInfo info_;
};

}  // namespace squeezeserve
