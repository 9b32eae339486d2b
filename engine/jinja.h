// A Jinja2 subset interpreter for chat templates (tokenizer_config.json "chat_template"): what the
// Llama-3.x, Qwen2/2.5 (ChatML) and Mistral / Llama-2 templates use, rendered as HF transformers does
// (trim_blocks, lstrip_blocks, loop controls, tojson with Python's json.dumps layout, raise_exception,
// namespace, strftime_now). Plain C++.
//
// Supported: text, {{ }}, {% %}, {# #} with '-' whitespace control; if / elif / else, for (tuple
// targets, an `if` filter, else, loop.*, break / continue), set (names and namespace attributes),
// generation blocks; literals, arithmetic, comparison, `in`, `is` tests, filters, slices, string and
// dict methods, conditional expressions. Anything else (macros, call blocks, includes, set blocks) is
// refused at Parse with the construct named.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {

namespace jinja {
struct Node;
}

class JinjaTemplate {
 public:
  // FailedPrecondition naming the construct and line when the template uses what is not supported.
  static absl::StatusOr<std::unique_ptr<JinjaTemplate>> Parse(std::string_view source);
  ~JinjaTemplate();

  // Renders with `variables` (a JSON object) as the template's globals. raise_exception(message) in
  // the template gives InvalidArgument(message); a type error (e.g. a string plus a number) gives
  // InvalidArgument naming it.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& variables) const;

 private:
  JinjaTemplate() = default;
  std::shared_ptr<jinja::Node> root_;
};

}  // namespace squeezeserve
