#include "engine/tokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer_utf8.h"

namespace squeezeserve {

const char kWhiteSpaceClass[] =
    "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

namespace {

// Rewrites \s / \S outside and \s inside character classes; everything else is passed through.
absl::StatusOr<std::string> RewriteWhiteSpace(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      if (e == 's') {
        absl::StrAppend(&out, in_class ? kWhiteSpaceClass : absl::StrCat("[", kWhiteSpaceClass, "]"));
      } else if (e == 'S') {
        if (in_class) return absl::InvalidArgumentError("\\S inside a character class is not supported");
        absl::StrAppend(&out, "[^", kWhiteSpaceClass, "]");
      } else {
        out += c;
        out += e;
      }
      ++i;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenizerRegex>> TokenizerRegex::Compile(std::string_view pattern) {
  auto rewritten = RewriteWhiteSpace(pattern);
  if (!rewritten.ok()) return absl::InvalidArgumentError(absl::StrCat("regex ", std::string(pattern), ": ", rewritten.status().message()));
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten->data()), rewritten->size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(
        absl::StrCat("regex ", std::string(pattern), ": ", reinterpret_cast<const char*>(message), " at offset ", offset));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: the interpreter is the fallback
  return std::unique_ptr<TokenizerRegex>(new TokenizerRegex(code));
}

TokenizerRegex::~TokenizerRegex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> TokenizerRegex::FindAll(std::string_view subject) const {
  std::vector<std::pair<size_t, size_t>> matches;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  size_t start = 0;
  while (start <= subject.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start,
                               PCRE2_NO_UTF_CHECK, data, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t begin = ovector[0], end = ovector[1];
    if (end == begin) {  // an empty match: not a piece; step over one character
      if (begin >= subject.size()) break;
      start = begin + utf8::CharLength(static_cast<unsigned char>(subject[begin]));
      continue;
    }
    matches.emplace_back(begin, end);
    start = end;
  }
  pcre2_match_data_free(data);
  return matches;
}

bool TokenizerRegex::MatchesAt(std::string_view subject, size_t offset, size_t* end) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), offset,
                             PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, data, nullptr);
  if (rc >= 0 && end != nullptr) *end = pcre2_get_ovector_pointer(data)[1];
  pcre2_match_data_free(data);
  return rc >= 0;
}

}  // namespace squeezeserve
