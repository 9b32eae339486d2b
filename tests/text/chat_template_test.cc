// Chat templates against HF transformers' apply_chat_template: tests/data/hf_recorded/chat.json holds
// the Llama-3 / 3.1, Qwen2 / 2.5, Llama-2 and Mistral v0.1 / v0.3 templates rendered by transformers
// on varied message lists, tools and flags (scripts/gpu/record_hf_cases.py). Every rendering must be
// identical; where transformers refused (raise_exception), the C++ side must refuse with its message.
#include "engine/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace squeezeserve {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

const fs::path kChat = fs::path(SQUEEZESERVE_SOURCE_DIR) / "tests" / "data" / "hf_recorded" / "chat.json";

const std::map<std::string, std::pair<std::string, std::string>> kSpecials = {
    {"llama3", {"<|begin_of_text|>", "<|eot_id|>"}},
    {"qwen2", {"", "<|im_end|>"}},
    {"llama2", {"<s>", "</s>"}},
    {"mistral", {"<s>", "</s>"}}};

TEST(ChatTemplateTest, RendersAsTransformersDoes) {
  if (!fs::exists(kChat)) GTEST_SKIP() << kChat << " not recorded yet (scripts/gpu/record_hf_cases.py)";
  std::ifstream in(kChat);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const Json record = Json::parse(buffer.str());
  int rendered = 0, refused = 0, failed = 0;
  for (const Json& c : record["cases"]) {
    const std::string name = c["template"].get<std::string>();
    const auto& [bos, eos] = kSpecials.at(c["family"].get<std::string>());
    ChatTemplateInfo info{record["templates"][name].get<std::string>(), bos, eos};
    auto chat = ChatTemplate::Create(info);
    ASSERT_TRUE(chat.ok()) << name << ": " << chat.status();
    auto got = (*chat)->Render(c["messages"], c.value("tools", Json()), c["add_generation_prompt"].get<bool>(),
                               c["kwargs"]);
    if (c.contains("error")) {
      ++refused;
      const std::string want = c["error"].get<std::string>();
      if (got.ok() || got.status().message().find(want) == std::string::npos) {
        if (++failed <= 5) {
          ADD_FAILURE() << name << ": transformers refused with \"" << want << "\", got "
                        << (got.ok() ? Json(*got).dump() : got.status().ToString()) << "\n" << c["messages"].dump();
        }
      }
      continue;
    }
    ++rendered;
    const std::string want = c["rendered"].get<std::string>();
    if (!got.ok() || *got != want) {
      if (++failed <= 5) {
        ADD_FAILURE() << name << " (add_generation_prompt " << c["add_generation_prompt"] << "): got "
                      << (got.ok() ? Json(*got).dump() : got.status().ToString()) << "\nwant " << Json(want).dump()
                      << "\nmessages " << c["messages"].dump();
      }
    }
  }
  EXPECT_EQ(failed, 0) << failed << " of " << rendered + refused << " cases differ from transformers";
  EXPECT_GE(rendered, 400);
  std::cout << rendered << " renderings and " << refused << " refusals checked, " << failed << " differences\n";
}

TEST(ChatTemplateTest, WhatItCannotRenderIsRefusedByName) {
  auto chat = ChatTemplate::Create({"{% macro m() %}x{% endmacro %}{{ m() }}", "", ""});
  ASSERT_FALSE(chat.ok());
  EXPECT_EQ(chat.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(chat.status().message().find("macro"), std::string::npos) << chat.status();
  auto none = ChatTemplate::Create({"", "", ""});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no chat template"), std::string::npos);
}

TEST(ChatTemplateTest, WhitespaceControlAndScopesFollowJinja) {
  const std::string source =
      "{%- set ns = namespace(n=0) %}\n"
      "{%- for m in messages if m.role != 'skip' %}\n"
      "    {%- set ns.n = ns.n + 1 %}\n"
      "    {%- set local = 'x' %}\n"
      "{{ loop.index }}:{{ m['content'] | trim }}{% if not loop.last %},{% endif %}\n"
      "{%- endfor %}\n"
      "[{{ ns.n }}{{ local }}]{{ messages | map(attribute='role') | join('/') }} {{ 7 // 2 }} {{ -7 % 3 }} "
      "{{ 'abc'[::-1] }} {{ {'a': [1, 2.5, none, true]} | tojson }} {{ 1.0 }} {{ 'x' ~ 1 }}\n";
  auto chat = ChatTemplate::Create({source, "", ""});
  ASSERT_TRUE(chat.ok()) << chat.status();
  Json messages = Json::array({Json{{"role", "user"}, {"content", " a "}}, Json{{"role", "skip"}, {"content", "b"}},
                               Json{{"role", "assistant"}, {"content", "c"}}});
  auto got = (*chat)->Render(messages, nullptr, false);
  ASSERT_TRUE(got.ok()) << got.status();
  // What jinja2 3.1 renders with transformers' settings (trim_blocks eats the newline after each %}).
  EXPECT_EQ(*got, "1:a,2:c[2]user/skip/assistant 3 2 cba {\"a\": [1, 2.5, null, true]} 1.0 x1");
}

}  // namespace
}  // namespace squeezeserve
