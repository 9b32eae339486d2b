#include "engine/text_stream.h"

#include <map>

#include <gtest/gtest.h>

namespace squeezeserve {
namespace {

// A toy byte-level "tokenizer": each id maps to a byte string; decoding concatenates and, like
// sentencepiece, shows U+FFFD for a trailing incomplete UTF-8 sequence.
std::string ToyDecode(const std::map<int32_t, std::string>& vocab, const std::vector<int32_t>& ids) {
  std::string text;
  for (int32_t id : ids) text += vocab.at(id);
  if (EndsWithIncompleteUtf8(text)) {
    while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
    if (!text.empty() && (static_cast<unsigned char>(text.back()) & 0x80)) text.pop_back();
    text += "\xEF\xBF\xBD";
  }
  return text;
}

std::string Collect(TextStream& stream, const std::vector<int32_t>& ids, bool* stopped = nullptr) {
  std::string out;
  for (int32_t id : ids) {
    TextStream::Delta delta = stream.Push(id);
    out += delta.text;
    if (delta.stopped) {
      if (stopped) *stopped = true;
      return out;
    }
  }
  return out + stream.Flush();
}

const std::map<int32_t, std::string> kVocab = {
    {0, "Hello"}, {1, " wor"}, {2, "ld"}, {3, "\xE2\x82"}, {4, "\xAC"},  // € split across tokens
    {5, "!"},     {6, "EN"},   {7, "D"},  {8, " "},        {9, "\xF0\x9F"}, {10, "\x98\x80"}};  // 😀 split

TextStream MakeStream(std::vector<std::string> stops = {}) {
  return TextStream([](const std::vector<int32_t>& ids) { return ToyDecode(kVocab, ids); }, std::move(stops));
}

TEST(Utf8Test, DetectsIncompleteSequences) {
  EXPECT_FALSE(EndsWithIncompleteUtf8("abc"));
  EXPECT_FALSE(EndsWithIncompleteUtf8("\xE2\x82\xAC"));
  EXPECT_TRUE(EndsWithIncompleteUtf8("a\xE2\x82"));
  EXPECT_TRUE(EndsWithIncompleteUtf8("a\xF0"));
  EXPECT_TRUE(EndsWithIncompleteUtf8("x\xEF\xBF\xBD"));
  EXPECT_FALSE(EndsWithIncompleteUtf8(""));
}

TEST(TextStreamTest, HoldsBackSplitCharacters) {
  TextStream stream = MakeStream();
  EXPECT_EQ(stream.Push(0).text, "Hello");
  EXPECT_EQ(stream.Push(8).text, " ");
  EXPECT_EQ(stream.Push(3).text, "");  // first two bytes of €
  EXPECT_EQ(stream.Push(4).text, "\xE2\x82\xAC");
  EXPECT_EQ(stream.Push(9).text, "");
  EXPECT_EQ(stream.Push(10).text, "\xF0\x9F\x98\x80");
  EXPECT_EQ(stream.Flush(), "");
}

TEST(TextStreamTest, ConcatenationEqualsFullDecode) {
  const std::vector<int32_t> ids = {0, 1, 2, 8, 3, 4, 5, 9, 10, 8, 0};
  TextStream stream = MakeStream();
  EXPECT_EQ(Collect(stream, ids), ToyDecode(kVocab, ids));
}

TEST(TextStreamTest, StopStringAcrossTokenBoundaries) {
  TextStream stream = MakeStream({"END"});
  EXPECT_EQ(stream.Push(0).text, "Hello");
  EXPECT_EQ(stream.Push(5).text, "!");
  TextStream::Delta held = stream.Push(6);  // "EN" could start "END": held back
  EXPECT_EQ(held.text, "");
  EXPECT_FALSE(held.stopped);
  TextStream::Delta done = stream.Push(7);
  EXPECT_TRUE(done.stopped);
  EXPECT_EQ(done.text, "");
  EXPECT_EQ(stream.Flush(), "");
}

TEST(TextStreamTest, TextBeforeStopIsKeptAndHeldPrefixFlushed) {
  bool stopped = false;
  TextStream a = MakeStream({"world"});
  EXPECT_EQ(Collect(a, {0, 1, 2, 5}, &stopped), "Hello ");
  EXPECT_TRUE(stopped);

  // "EN" never completes "END": released when the next text rules it out, and on flush.
  TextStream b = MakeStream({"END"});
  stopped = false;
  EXPECT_EQ(Collect(b, {6, 5, 6}, &stopped), "EN!EN");
  EXPECT_FALSE(stopped);
}

TEST(TextStreamTest, EarliestOfSeveralStopStringsWins) {
  TextStream stream = MakeStream({"ld!", "wor"});
  bool stopped = false;
  EXPECT_EQ(Collect(stream, {0, 1, 2, 5}, &stopped), "Hello ");
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace squeezeserve
