// scripts/sentencepiece_to_tokenizer_json.py: the converted tokenizer.json of a sentencepiece BPE
// model, read by the C++ tokenizer.json code, gives the ids sentencepiece itself gives. The shipped
// models/small (the quickstart's model) carries both files; the engine uses tokenizer.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/tokenizer.h"

namespace squeezeserve {
namespace {

namespace fs = std::filesystem;

std::string Read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::vector<std::string> Samples(const fs::path& document) {
  std::vector<std::string> samples = {"Hello world", "The pass key is 90577.", "def f(x):\n    return x  # done",
                                      "  two leading spaces", "tabs\tand\nnewlines\n\n", "ünïcödé 中文 😀",
                                      "a  b   c    d", "1234567890", "x=1;y=22;z=333", ""};
  std::istringstream lines(Read(document));
  std::string line, paragraph;
  while (std::getline(lines, line)) {
    samples.push_back(line);
    paragraph += line + "\n";
    if (paragraph.size() > 400) {
      samples.push_back(paragraph);
      paragraph.clear();
    }
  }
  return samples;
}

// `collapses_spaces`: the model removes extra whitespace (remove_extra_whitespaces), which the HF form
// does not do (as with HF's own conversions): texts where that matters are left out.
void ExpectSameIds(const fs::path& model_dir, const fs::path& document, bool collapses_spaces, int* compared) {
  auto spm = Tokenizer::Load((model_dir / "tokenizer.model").string());
  ASSERT_TRUE(spm.ok()) << spm.status();
  auto hf = Tokenizer::FromHfJson(Read(model_dir / "tokenizer.json"));
  ASSERT_TRUE(hf.ok()) << hf.status();
  int differences = 0;
  for (const std::string& text : Samples(document)) {
    if (collapses_spaces && (text.find("  ") != std::string::npos || (!text.empty() && (text.front() == ' ' || text.back() == ' ')))) {
      continue;
    }
    ++*compared;
    const std::vector<int32_t> want = (*spm)->Encode(text, false, 1);
    const std::vector<int32_t> got = (*hf)->Encode(text, false, 1);
    if (got != want && ++differences <= 5) ADD_FAILURE() << model_dir << ": ids differ for " << text;
    if (got == want && !want.empty()) {
      EXPECT_EQ((*hf)->Decode(got.data(), got.size()), (*spm)->Decode(want.data(), want.size())) << text;
    }
  }
  EXPECT_EQ(differences, 0);
}

TEST(SentencePieceConversionTest, ShippedTokenizerJsonEqualsSentencePiece) {
  const fs::path root(SQUEEZESERVE_SOURCE_DIR);
  int compared = 0;
  ExpectSameIds(root / "models" / "small", root / "models" / "small" / "demo_document.txt", false, &compared);
  EXPECT_GT(compared, 150);
  ExpectSameIds(root / "models" / "tokenizer", root / "models" / "small" / "demo_document.txt", true, &compared);
  EXPECT_GT(compared, 250);
}

}  // namespace
}  // namespace squeezeserve
