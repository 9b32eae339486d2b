// HfTokenizer on small hand-written tokenizer.json files whose outputs follow from HF's rules by hand.
// (The equivalence with HF itself on real-size tokenizers is hf_tokenizer_equivalence_test.cc.)
#include "engine/tokenizer_json.h"

#include <gtest/gtest.h>

#include "engine/tokenizer_utf8.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {
namespace {

using nlohmann::json;

// A byte-level BPE with the GPT-2 pre-tokenizer: "Ġ" is the byte-level form of a space.
json ByteLevelJson() {
  json vocab = json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b) vocab[ByteToChar(static_cast<unsigned char>(b))] = id++;
  for (const char* t : {"he", "ll", "hell", "hello", "Ġw", "Ġwo", "Ġwor", "Ġworld", "or", "ld"}) vocab[t] = id++;
  return json{
      {"version", "1.0"},
      {"added_tokens", json::array({json{{"id", 300}, {"content", "<|end|>"}, {"special", true}, {"normalized", false},
                                         {"lstrip", false}, {"rstrip", false}, {"single_word", false}},
                                    json{{"id", 301}, {"content", "<|pad|>"}, {"special", true}, {"normalized", false},
                                         {"lstrip", true}, {"rstrip", true}, {"single_word", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}, {"trim_offsets", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab},
                 {"merges", json::array({json::array({"h", "e"}), "l l", json::array({"he", "ll"}),
                                         json::array({"hell", "o"}), json::array({"Ġ", "w"}), json::array({"Ġw", "o"}),
                                         json::array({"Ġwo", "r"}), json::array({"o", "r"}), json::array({"l", "d"}),
                                         json::array({"Ġwor", "ld"})})}}}};
}

std::unique_ptr<HfTokenizer> Load(const json& doc) {
  auto tok = HfTokenizer::FromJson(doc.dump());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(HfTokenizerTest, ByteLevelBpeMergesByRankAndMapsBytes) {
  auto tok = Load(ByteLevelJson());
  ASSERT_NE(tok, nullptr);
  const int32_t hello = *tok->TokenToId("hello"), world = *tok->TokenToId("Ġworld");
  EXPECT_EQ(tok->Encode("hello world", false), (std::vector<int32_t>{hello, world}));
  // "or" outranks nothing in "Ġwor": the merges go Ġ+w, Ġw+o, Ġwo+r in rank order, not o+r.
  EXPECT_EQ(tok->Encode(" wor", false), (std::vector<int32_t>{*tok->TokenToId("Ġwor")}));
  // A byte of a multi-byte character is a byte-level token of its own.
  const std::vector<int32_t> e_acute = tok->Encode("\xC3\xA9", false);
  ASSERT_EQ(e_acute.size(), 2u);
  EXPECT_EQ(tok->Decode(e_acute, false), "\xC3\xA9");
  EXPECT_EQ(tok->Decode({e_acute[0]}, false), "\xEF\xBF\xBD");  // half a character: U+FFFD
  EXPECT_EQ(tok->Decode(tok->Encode("hello world", false), false), "hello world");
}

TEST(HfTokenizerTest, AddedTokensSplitFirstAndStripWhereAsked) {
  auto tok = Load(ByteLevelJson());
  ASSERT_NE(tok, nullptr);
  const int32_t hello = *tok->TokenToId("hello");
  EXPECT_EQ(tok->Encode("hello<|end|>hello", false), (std::vector<int32_t>{hello, 300, hello}));
  // <|pad|> has lstrip and rstrip: it swallows the spaces around it.
  EXPECT_EQ(tok->Encode("hello  <|pad|>  hello", false), (std::vector<int32_t>{hello, 301, hello}));
  // A broken special token is text.
  EXPECT_GT(tok->Encode("<|end", false).size(), 1u);
  EXPECT_EQ(tok->Decode({hello, 300, hello}, false), "hello<|end|>hello");
  EXPECT_EQ(tok->Decode({hello, 300, hello}, true), "hellohello");
  EXPECT_EQ(tok->Decode({hello, 99999, hello}, false), "hellohello");  // unknown ids are skipped
  EXPECT_TRUE(tok->IsSpecial(300));
  EXPECT_EQ(tok->vocab_size(), 302);
}

TEST(HfTokenizerTest, GptTwoRegexKeepsSpacesWithTheFollowingWord) {
  auto tok = Load(ByteLevelJson());
  ASSERT_NE(tok, nullptr);
  // "  world": the regex gives " " (a space not followed by non-space) then " world".
  const std::vector<int32_t> ids = tok->Encode("  world", false);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], *tok->TokenToId("Ġ"));
  EXPECT_EQ(ids[1], *tok->TokenToId("Ġworld"));
}

// The sentencepiece-style form (Llama-2 tokenizer.json): ▁ for spaces, byte fallback, a BOS template.
json SentencePieceJson(bool metaspace) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"\xE2\x96\x81", "h", "i", "\xE2\x96\x81h", "\xE2\x96\x81hi"}) vocab[t] = id++;
  json doc = {
      {"added_tokens", json::array({json{{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                                    json{{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}})},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", json::array({json{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                  json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"unk_token", "<unk>"}, {"byte_fallback", true}, {"fuse_unk", true},
                 {"merges", json::array({json::array({"\xE2\x96\x81", "h"}), json::array({"\xE2\x96\x81h", "i"})})}}}};
  const json strip_decoder = json::array({json{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
                                          json{{"type", "ByteFallback"}}, json{{"type", "Fuse"}},
                                          json{{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}});
  if (metaspace) {
    doc["normalizer"] = nullptr;
    doc["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", false}};
    doc["decoder"] = {{"type", "Sequence"},
                      {"decoders", json::array({json{{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", false}},
                                                json{{"type", "ByteFallback"}}, json{{"type", "Fuse"}}})}};
  } else {
    doc["normalizer"] = {{"type", "Sequence"},
                         {"normalizers", json::array({json{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                                                      json{{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}})}};
    doc["pre_tokenizer"] = nullptr;
    doc["decoder"] = {{"type", "Sequence"}, {"decoders", strip_decoder}};
  }
  return doc;
}

TEST(HfTokenizerTest, SentencePieceStyleUsesByteFallbackAndTheBosTemplate) {
  for (bool metaspace : {false, true}) {
    SCOPED_TRACE(metaspace ? "Metaspace pre-tokenizer" : "Prepend/Replace normalizer");
    auto tok = Load(SentencePieceJson(metaspace));
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->Encode("hi hi", false), (std::vector<int32_t>{263, 263}));
    EXPECT_EQ(tok->Encode("hi", true), (std::vector<int32_t>{1, 263}));
    // "é" is not in the vocab: its two UTF-8 bytes through byte fallback.
    EXPECT_EQ(tok->Encode("hi\xC3\xA9", false), (std::vector<int32_t>{263, 3 + 0xC3, 3 + 0xA9}));
    EXPECT_EQ(tok->Decode(tok->Encode("hi hi\xC3\xA9", false), false), "hi hi\xC3\xA9");
    // An incomplete byte sequence decodes to one U+FFFD per byte (HF's ByteFallback decoder).
    EXPECT_EQ(tok->Decode({263, 3 + 0xE4, 3 + 0xB8}, false), "hi\xEF\xBF\xBD\xEF\xBF\xBD");
    EXPECT_EQ(tok->Decode({1, 263, 2}, true), "hi");
  }
}

TEST(HfTokenizerTest, PrependSchemeFirstPrependsOnlyAtTheStartOfTheText) {
  auto tok = Load(SentencePieceJson(/*metaspace=*/true));
  ASSERT_NE(tok, nullptr);
  // After <s> the text does not start the input: no ▁ is prepended, so "hi" is h + i.
  EXPECT_EQ(tok->Encode("<s>hi", false), (std::vector<int32_t>{1, 260, 261}));
  auto legacy = Load(SentencePieceJson(/*metaspace=*/false));
  ASSERT_NE(legacy, nullptr);
  // The legacy normalizer prepends ▁ to every piece between added tokens.
  EXPECT_EQ(legacy->Encode("<s>hi", false), (std::vector<int32_t>{1, 263}));
}

TEST(HfTokenizerTest, RefusesWhatItCannotFollowNamingTheField) {
  json doc = ByteLevelJson();
  doc["model"]["type"] = "Unigram";
  auto tok = HfTokenizer::FromJson(doc.dump());
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("model.type"), std::string::npos) << tok.status();
  doc = ByteLevelJson();
  doc["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  tok = HfTokenizer::FromJson(doc.dump());
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("pre_tokenizer"), std::string::npos) << tok.status();
  EXPECT_FALSE(HfTokenizer::FromJson("{not json").ok());
}

TEST(Utf8Test, LossyReplacesMaximalInvalidSubsequencesLikeRust) {
  EXPECT_EQ(utf8::Lossy("a\xE4\xB8" "b"), "a\xEF\xBF\xBD" "b");             // truncated 3-byte: one U+FFFD
  EXPECT_EQ(utf8::Lossy("\xF0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");             // F0 80: 80 cannot follow F0
  EXPECT_EQ(utf8::Lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(utf8::Lossy("\xC3\xA9\xFF"), "\xC3\xA9\xEF\xBF\xBD");
  EXPECT_TRUE(utf8::IsValid("\xF0\x9F\x98\x80"));
}

}  // namespace
}  // namespace squeezeserve
