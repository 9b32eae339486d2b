// A Hugging Face tokenizer.json (BPE model) in C++, matching HF tokenizers' encode and decode: added
// tokens (special or not; lstrip / rstrip / single_word / normalized) split first, then the
// normalizer, the pre-tokenizer and the BPE model on the text between them, then the post-processor
// (with add_special_tokens). Tested against HF's own outputs (tests/engine/hf_tokenizer_equivalence_test.cc).
// Plain C++.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/tokenizer_json_bpe.h"
#include "engine/tokenizer_json_steps.h"

namespace squeezeserve {

class TokenizerRegex;

class HfTokenizer {
 public:
  // Parses the text of a tokenizer.json. InvalidArgument naming the field for what it cannot follow
  // (a model other than BPE, an unknown normalizer / pre-tokenizer / decoder type, malformed JSON).
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromJson(std::string_view tokenizer_json);
  ~HfTokenizer();

  // Invalid UTF-8 in `text` is read as U+FFFD first (HF only ever sees valid strings).
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  // Unknown ids are skipped, as HF does; with skip_special_tokens, so are special added tokens.
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  // One past the largest id of the model and the added tokens.
  int64_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> TokenToId(std::string_view token) const;
  bool IsSpecial(int32_t id) const { return special_ids_.contains(id); }
  bool has_post_processor() const { return post_processor_ != nullptr; }

 private:
  struct AddedToken {
    int32_t id = -1;
    std::string content;   // what is matched and decoded (normalized tokens: their normalized form)
    std::string original;  // as tokenizer.json spells it
    bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
  };
  // Leftmost-longest matcher over one set of added tokens (normalized or not).
  struct Matcher {
    absl::flat_hash_map<unsigned char, std::vector<const AddedToken*>> by_first_byte;  // longest first
    bool empty() const { return by_first_byte.empty(); }
  };
  // A piece of the input: an added token's id, or text still to tokenize.
  struct Piece {
    int32_t added_id = -1;
    std::string text;
    bool at_start = false;
  };
  HfTokenizer() = default;
  std::vector<Piece> SplitOnAdded(const std::string& text, bool at_start, const Matcher& matcher) const;
  const std::string* IdToToken(int32_t id) const;

  std::vector<AddedToken> added_;
  absl::flat_hash_map<int32_t, const AddedToken*> added_by_id_;
  absl::flat_hash_map<std::string, int32_t> added_by_content_;
  absl::flat_hash_set<std::string> special_contents_;
  absl::flat_hash_set<int32_t> special_ids_;
  Matcher raw_matcher_, normalized_matcher_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<TokenizerRegex> word_start_;  // \w (single_word tokens need word boundaries)
  int64_t vocab_size_ = 0;
};

}  // namespace squeezeserve
