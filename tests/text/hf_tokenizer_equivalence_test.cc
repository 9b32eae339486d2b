// The C++ tokenizer.json against HF tokenizers itself: tests/data/hf_recorded/<family>.json hold a
// tokenizer trained in each family's configuration and what HF returned for thousands of strings
// (scripts/gpu/record_hf_cases.py, run where HF tokenizers is installed). Every id and every decoded
// string must be identical.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/tokenizer.h"
#include "engine/tokenizer_json.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kRecorded = fs::path(SQUEEZESERVE_SOURCE_DIR) / "tests" / "data" / "hf_recorded";

json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return json::parse(buffer.str());
}

std::string Show(const std::vector<int32_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? "," : "") + std::to_string(ids[i]);
  return out + "]";
}

class HfEquivalenceTest : public testing::TestWithParam<std::string> {};

TEST_P(HfEquivalenceTest, IdsAndTextMatchHfTokenizers) {
  const fs::path path = kRecorded / (GetParam() + ".json");
  if (!fs::exists(path)) GTEST_SKIP() << path << " not recorded yet (scripts/gpu/record_hf_cases.py)";
  const json record = ReadJson(path);
  auto tok = HfTokenizer::FromJson(record["tokenizer"].dump());
  ASSERT_TRUE(tok.ok()) << tok.status();

  int checked = 0, failed = 0;
  auto expect = [&](bool ok, const std::string& what) {
    ++checked;
    if (ok) return;
    if (++failed <= 8) ADD_FAILURE() << GetParam() << ": " << what;
  };
  for (const json& c : record["encode"]) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto want_special = c.value("ids_special", want);
    const auto got = (*tok)->Encode(text, false);
    expect(got == want, "encode " + json(text).dump() + ": got " + Show(got) + " want " + Show(want));
    const auto got_special = (*tok)->Encode(text, true);
    expect(got_special == want_special,
           "encode (special) " + json(text).dump() + ": got " + Show(got_special) + " want " + Show(want_special));
    const std::string decoded = c["decoded"].get<std::string>();
    const std::string got_decoded = (*tok)->Decode(want, false);
    expect(got_decoded == decoded, "decode " + Show(want) + ": got " + json(got_decoded).dump() + " want " + json(decoded).dump());
    const std::string skipped = c.value("decoded_skip", decoded);
    const std::string got_skipped = (*tok)->Decode(want, true);
    expect(got_skipped == skipped, "decode (skip) " + Show(want) + ": got " + json(got_skipped).dump() + " want " + json(skipped).dump());
  }
  for (const json& c : record["decode"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const std::string text = c["text"].get<std::string>();
    const std::string got = (*tok)->Decode(ids, false);
    expect(got == text, "decode " + Show(ids) + ": got " + json(got).dump() + " want " + json(text).dump());
    const std::string skipped = c.value("text_skip", text);
    const std::string got_skipped = (*tok)->Decode(ids, true);
    expect(got_skipped == skipped, "decode (skip) " + Show(ids) + ": got " + json(got_skipped).dump() + " want " + json(skipped).dump());
  }
  EXPECT_EQ(failed, 0) << failed << " of " << checked << " checks differ from HF";
  EXPECT_GE(record["encode"].size(), 2000u);
  std::cout << GetParam() << ": " << checked << " checks, " << record["encode"].size() << " strings, " << failed
            << " differences\n";
}

// The same tokenizer read as a checkpoint directory would be: tokenizer.json + tokenizer_config.json.
TEST_P(HfEquivalenceTest, CheckpointDirectoryGivesTokenizerAndChatTemplate) {
  const fs::path path = kRecorded / (GetParam() + ".json");
  if (!fs::exists(path)) GTEST_SKIP() << path << " not recorded yet (scripts/gpu/record_hf_cases.py)";
  const json record = ReadJson(path);
  const fs::path dir = fs::path(testing::TempDir()) / ("hf_" + GetParam());
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << record["tokenizer"].dump();
  std::ofstream(dir / "tokenizer_config.json") << record["tokenizer_config"].dump();
  auto loaded = LoadCheckpointTokenizer(dir.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_NE(loaded->tokenizer, nullptr);
  EXPECT_EQ(loaded->source, "tokenizer.json");
  const json& config = record["tokenizer_config"];
  EXPECT_EQ(loaded->config.eos_token, config.value("eos_token", ""));
  EXPECT_EQ(loaded->config.chat_template, config.value("chat_template", ""));
  const json& first = record["encode"][0];
  EXPECT_EQ(loaded->tokenizer->Encode(first["text"].get<std::string>(), false, -1), first["ids"].get<std::vector<int32_t>>());
}

INSTANTIATE_TEST_SUITE_P(Families, HfEquivalenceTest, testing::Values("gpt2", "llama3", "qwen2", "llama2", "mistral"));

}  // namespace
}  // namespace squeezeserve
