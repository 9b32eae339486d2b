// The split regexes of tokenizer.json (Oniguruma syntax in HF tokenizers) on PCRE2. Plain C++.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace squeezeserve {

class TokenizerRegex {
 public:
  // Compiles `pattern` for UTF-8 subjects with Unicode properties. Oniguruma's \s and \S (Unicode
  // White_Space, which includes U+0085) are rewritten to explicit classes: PCRE2's \s differs there.
  static absl::StatusOr<std::unique_ptr<TokenizerRegex>> Compile(std::string_view pattern);
  ~TokenizerRegex();
  TokenizerRegex(const TokenizerRegex&) = delete;
  TokenizerRegex& operator=(const TokenizerRegex&) = delete;

  // Non-overlapping matches, left to right, as byte ranges [begin, end) of `subject` (valid UTF-8).
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view subject) const;
  // Whether the whole of `subject` is matched by an anchored match at 0 (used for ^\s* style checks).
  bool MatchesAt(std::string_view subject, size_t offset, size_t* end) const;

 private:
  explicit TokenizerRegex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8
};

// Oniguruma's \s as the contents of a character class.
extern const char kWhiteSpaceClass[];

}  // namespace squeezeserve
