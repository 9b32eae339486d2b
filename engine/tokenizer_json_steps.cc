#include "engine/tokenizer_json_steps.h"

#include <utf8proc.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer_regex.h"
#include "engine/tokenizer_utf8.h"

namespace squeezeserve {
namespace {

using nlohmann::json;

absl::Status Unsupported(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", where, ": ", what));
}

std::string Type(const json& spec) {
  auto it = spec.find("type");
  return it != spec.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string String(const json& spec, const char* key, std::string fallback = "") {
  auto it = spec.find(key);
  return it != spec.end() && it->is_string() ? it->get<std::string>() : fallback;
}

bool Bool(const json& spec, const char* key, bool fallback) {
  auto it = spec.find(key);
  return it != spec.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

// A split / replace pattern: {"String": "..."} (a literal) or {"Regex": "..."}.
class Pattern {
 public:
  static absl::StatusOr<Pattern> Parse(const json& spec, const std::string& where) {
    Pattern p;
    if (!spec.is_object()) return Unsupported(where, "pattern is not an object");
    if (auto it = spec.find("String"); it != spec.end() && it->is_string()) {
      p.literal_ = it->get<std::string>();
      return p;
    }
    if (auto it = spec.find("Regex"); it != spec.end() && it->is_string()) {
      auto regex = TokenizerRegex::Compile(it->get<std::string>());
      if (!regex.ok()) return Unsupported(where, std::string(regex.status().message()));
      p.regex_ = std::shared_ptr<TokenizerRegex>(std::move(*regex));
      return p;
    }
    return Unsupported(where, "pattern needs String or Regex");
  }

  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const {
    if (regex_) return regex_->FindAll(text);
    std::vector<std::pair<size_t, size_t>> out;
    if (literal_.empty()) return out;
    for (size_t at = text.find(literal_); at != std::string_view::npos; at = text.find(literal_, at + literal_.size())) {
      out.emplace_back(at, at + literal_.size());
    }
    return out;
  }

 private:
  std::string literal_;
  std::shared_ptr<TokenizerRegex> regex_;
};

std::string ReplaceAll(const std::string& text, const Pattern& pattern, const std::string& content) {
  std::string out;
  size_t last = 0;
  for (const auto& [begin, end] : pattern.FindAll(text)) {
    out.append(text, last, begin - last);
    out += content;
    last = end;
  }
  out.append(text, last, std::string::npos);
  return out;
}

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<Behavior> ParseBehavior(const json& spec, const std::string& where) {
  const std::string name = String(spec, "behavior");
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return Unsupported(where, absl::StrCat("behavior \"", name, "\" is not supported"));
}

// HF's NormalizedString::split: the matches and the gaps between them, combined per `behavior`.
std::vector<std::string> SplitText(const std::string& text, const std::vector<std::pair<size_t, size_t>>& matches,
                                   Behavior behavior, bool invert) {
  struct Span {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Span> spans;
  size_t last = 0;
  for (const auto& [begin, end] : matches) {
    if (begin > last) spans.push_back({last, begin, invert});
    spans.push_back({begin, end, !invert});
    last = end;
  }
  if (last < text.size() || spans.empty()) spans.push_back({last, text.size(), invert});

  std::vector<Span> kept;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kIsolated:
      kept = spans;
      break;
    case Behavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) kept.push_back(s);
      }
      break;
    case Behavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !kept.empty()) kept.back().end = s.end;
        else kept.push_back(s);
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !kept.empty()) kept.back().end = s.end;
        else kept.push_back(s);
        previous_match = s.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) kept.back().begin = it->begin;
        else kept.push_back(*it);
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  std::vector<std::string> out;
  for (const Span& s : kept) {
    if (s.end > s.begin) out.push_back(text.substr(s.begin, s.end - s.begin));
  }
  return out;
}

// Applies `split` to every piece; the first part of a piece keeps its at_start.
template <typename SplitFn>
void SplitEach(std::vector<PreToken>& pieces, SplitFn split) {
  std::vector<PreToken> out;
  for (PreToken& piece : pieces) {
    bool first = true;
    for (std::string& part : split(piece.text, piece.at_start)) {
      if (!part.empty()) out.push_back({std::move(part), piece.at_start && first});
      first = false;
    }
  }
  pieces = std::move(out);
}

bool IsWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// ------------------------------------------------------------------------------------------------
// Normalizers

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}
  std::string Normalize(std::string text) const override {
    if (text.empty()) return text;
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                            static_cast<utf8proc_ssize_t>(text.size()), &out,
                                            static_cast<utf8proc_option_t>(options_));
    if (n < 0) return text;  // invalid UTF-8 cannot reach here (inputs are sanitized first)
    std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
    return result;
  }

 private:
  int options_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string Normalize(std::string text) const override {
    for (const auto& step : steps_) text = step->Normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Normalize(std::string text) const override { return text.empty() ? text : prefix_ + text; }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string Normalize(std::string text) const override { return ReplaceAll(text, pattern_, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  std::string Normalize(std::string text) const override {
    std::string out;
    for (size_t i = 0; i < text.size();) utf8::Append(out, utf8proc_tolower(utf8::Next(text, i)));
    return out;
  }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string Normalize(std::string text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t next = begin;
        if (!IsWhiteSpace(utf8::Next(text, next))) break;
        begin = next;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t probe = start;
        if (!IsWhiteSpace(utf8::Next(text, probe))) break;
        end = start;
      }
    }
    return text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

// ------------------------------------------------------------------------------------------------
// Pre-tokenizers

constexpr char kGpt2Pattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::shared_ptr<TokenizerRegex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void PreTokenize(std::vector<PreToken>& pieces) const override {
    SplitEach(pieces, [this](const std::string& text, bool) {
      std::string t = add_prefix_space_ && (text.empty() || text[0] != ' ') ? " " + text : text;
      if (!regex_) return std::vector<std::string>{t};
      return SplitText(t, regex_->FindAll(t), Behavior::kIsolated, false);
    });
    for (PreToken& piece : pieces) {
      std::string mapped;
      mapped.reserve(piece.text.size() * 2);
      for (unsigned char c : piece.text) mapped += ByteToChar(c);
      piece.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::shared_ptr<TokenizerRegex> regex_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<PreToken>& pieces) const override {
    SplitEach(pieces, [this](const std::string& text, bool) {
      return SplitText(text, pattern_.FindAll(text), behavior_, invert_);
    });
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

absl::StatusOr<PrependScheme> ParsePrependScheme(const json& spec, const std::string& where) {
  std::string scheme = String(spec, "prepend_scheme");
  if (scheme.empty()) scheme = Bool(spec, "add_prefix_space", true) ? "always" : "never";
  if (scheme == "always") return PrependScheme::kAlways;
  if (scheme == "first") return PrependScheme::kFirst;
  if (scheme == "never") return PrependScheme::kNever;
  return Unsupported(where, absl::StrCat("prepend_scheme \"", scheme, "\" is not supported"));
}

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void PreTokenize(std::vector<PreToken>& pieces) const override {
    SplitEach(pieces, [this](const std::string& text, bool at_start) {
      std::string t = absl::StrReplaceAll(text, {{" ", replacement_}});
      const bool starts = t.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && at_start))) {
        t = replacement_ + t;
      }
      if (!split_) return std::vector<std::string>{t};
      std::vector<std::pair<size_t, size_t>> matches;
      for (size_t at = t.find(replacement_); at != std::string::npos; at = t.find(replacement_, at + replacement_.size())) {
        matches.emplace_back(at, at + replacement_.size());
      }
      return SplitText(t, matches, Behavior::kMergedWithNext, false);
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void PreTokenize(std::vector<PreToken>& pieces) const override {
    for (const auto& step : steps_) step->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// ------------------------------------------------------------------------------------------------
// Decoders

class ByteLevelDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      std::string mapped;
      bool all = true;
      for (size_t i = 0; i < token.size() && all;) {
        const char32_t c = utf8::Next(token, i);
        const int b = CharToByte(c);
        if (b < 0) all = false;
        else mapped += static_cast<char>(b);
      }
      bytes += all ? mapped : token;  // a token outside the byte map (an added token) stays as it is
    }
    return {utf8::Lossy(bytes)};
  }

 private:
  static int CharToByte(char32_t c) {
    static const auto* table = [] {
      auto* t = new std::vector<int>(324, -1);
      for (int b = 0; b < 256; ++b) {
        const std::string& s = ByteToChar(static_cast<unsigned char>(b));
        size_t i = 0;
        (*t)[utf8::Next(s, i)] = b;
      }
      return t;
    }();
    return c < table->size() ? (*table)[c] : -1;
  }
};

class ByteFallbackDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8::IsValid(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& token : tokens) {
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') {
        char* end = nullptr;
        const std::string hex = token.substr(3, 2);
        const long value = std::strtol(hex.c_str(), &end, 16);
        if (end == hex.c_str() + 2) {
          pending += static_cast<char>(value);
          continue;
        }
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    return out;
  }
};

class FuseDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    std::string joined;
    for (const std::string& t : tokens) joined += t;
    return {joined};
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, int start, int stop) : content_(content), start_(start), stop_(stop) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (std::string& token : tokens) {
      std::vector<char32_t> chars;
      for (size_t i = 0; i < token.size();) chars.push_back(utf8::Next(token, i));
      size_t begin = 0, end = chars.size();
      for (int i = 0; i < start_ && begin < chars.size() && chars[begin] == content_; ++i) ++begin;
      for (int i = 0; i < stop_ && end > begin && chars[end - 1] == content_; ++i) --end;
      std::string out;
      for (size_t i = begin; i < end; ++i) utf8::Append(out, chars[i]);
      token = std::move(out);
    }
    return tokens;
  }

 private:
  char32_t content_;
  int start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (std::string& token : tokens) token = ReplaceAll(token, pattern_, content_);
    return tokens;
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme) : replacement_(std::move(replacement)), scheme_(scheme) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      // The first token loses every replacement character (HF strips them all, not just a leading one).
      const bool drop = i == 0 && scheme_ != PrependScheme::kNever;
      tokens[i] = absl::StrReplaceAll(tokens[i], {{replacement_, drop ? "" : " "}});
    }
    return tokens;
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (const auto& step : steps_) tokens = step->DecodeChain(std::move(tokens));
    return tokens;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// ------------------------------------------------------------------------------------------------
// Post-processors

class IdentityProcessor : public PostProcessor {
 public:
  std::vector<int32_t> Process(std::vector<int32_t> ids) const override { return ids; }
};

// Special ids before and after the sequence (TemplateProcessing's single template, Roberta, Bert).
class WrapProcessor : public PostProcessor {
 public:
  WrapProcessor(std::vector<int32_t> before, std::vector<int32_t> after) : before_(std::move(before)), after_(std::move(after)) {}
  std::vector<int32_t> Process(std::vector<int32_t> ids) const override {
    std::vector<int32_t> out = before_;
    out.insert(out.end(), ids.begin(), ids.end());
    out.insert(out.end(), after_.begin(), after_.end());
    return out;
  }

 private:
  std::vector<int32_t> before_, after_;
};

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  std::vector<int32_t> Process(std::vector<int32_t> ids) const override {
    for (const auto& step : steps_) ids = step->Process(std::move(ids));
    return ids;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

absl::StatusOr<std::unique_ptr<PostProcessor>> ParseTemplate(const json& spec, const std::string& where) {
  auto single = spec.find("single");
  if (single == spec.end() || !single->is_array()) return Unsupported(where, "single: missing");
  auto specials = spec.find("special_tokens");
  std::vector<int32_t> before, after;
  bool seen_sequence = false;
  for (const json& item : *single) {
    if (item.contains("Sequence")) {
      if (String(item["Sequence"], "id") != "A") return Unsupported(where, "single: only sequence A is supported");
      seen_sequence = true;
      continue;
    }
    if (!item.contains("SpecialToken")) return Unsupported(where, "single: an item is neither Sequence nor SpecialToken");
    const std::string name = String(item["SpecialToken"], "id");
    if (specials == spec.end() || !specials->contains(name)) {
      return Unsupported(where, absl::StrCat("special token \"", name, "\" is not in special_tokens"));
    }
    const json& ids = (*specials)[name]["ids"];
    if (!ids.is_array()) return Unsupported(where, absl::StrCat("special_tokens[\"", name, "\"].ids: not an array"));
    for (const json& id : ids) (seen_sequence ? after : before).push_back(id.get<int32_t>());
  }
  return std::unique_ptr<PostProcessor>(new WrapProcessor(std::move(before), std::move(after)));
}

template <typename T, typename ParseFn>
absl::StatusOr<std::vector<std::unique_ptr<T>>> ParseList(const json& spec, const char* key, const std::string& where,
                                                          ParseFn parse) {
  auto list = spec.find(key);
  if (list == spec.end() || !list->is_array()) return Unsupported(where, absl::StrCat(key, ": missing"));
  std::vector<std::unique_ptr<T>> steps;
  for (size_t i = 0; i < list->size(); ++i) {
    auto step = parse((*list)[i], absl::StrCat(where, ".", key, "[", i, "]"));
    if (!step.ok()) return step.status();
    if (*step) steps.push_back(std::move(*step));
  }
  return steps;
}

}  // namespace

const std::string& ByteToChar(unsigned char byte) {
  static const auto* table = [] {
    auto* t = new std::vector<std::string>(256);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      utf8::Append((*t)[b], printable ? static_cast<char32_t>(b) : static_cast<char32_t>(next++));
    }
    return t;
  }();
  return (*table)[byte];
}

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const json& spec, const std::string& where) {
  if (spec.is_null()) return std::unique_ptr<Normalizer>();
  const std::string type = Type(spec);
  if (type == "NFC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (type == "NFD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE));
  if (type == "NFKC") {
    return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "NFKD") {
    return std::unique_ptr<Normalizer>(new UnicodeNormalizer(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "Sequence") {
    auto steps = ParseList<Normalizer>(spec, "normalizers", where, ParseNormalizer);
    if (!steps.ok()) return steps.status();
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(*steps)));
  }
  if (type == "Prepend") return std::unique_ptr<Normalizer>(new PrependNormalizer(String(spec, "prepend")));
  if (type == "Replace") {
    auto pattern = Pattern::Parse(spec.value("pattern", json()), where);
    if (!pattern.ok()) return pattern.status();
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(*pattern), String(spec, "content")));
  }
  if (type == "Lowercase") return std::unique_ptr<Normalizer>(new LowercaseNormalizer());
  if (type == "Strip") {
    return std::unique_ptr<Normalizer>(new StripNormalizer(Bool(spec, "strip_left", false), Bool(spec, "strip_right", false)));
  }
  return Unsupported(where, absl::StrCat("normalizer type \"", type, "\" is not supported"));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const json& spec, const std::string& where) {
  if (spec.is_null()) return std::unique_ptr<PreTokenizer>();
  const std::string type = Type(spec);
  if (type == "ByteLevel") {
    std::shared_ptr<TokenizerRegex> regex;
    if (Bool(spec, "use_regex", true)) {
      auto compiled = TokenizerRegex::Compile(kGpt2Pattern);
      if (!compiled.ok()) return compiled.status();
      regex = std::move(*compiled);
    }
    return std::unique_ptr<PreTokenizer>(new ByteLevelPreTokenizer(Bool(spec, "add_prefix_space", false), regex));
  }
  if (type == "Split") {
    auto pattern = Pattern::Parse(spec.value("pattern", json()), where);
    if (!pattern.ok()) return pattern.status();
    auto behavior = ParseBehavior(spec, where);
    if (!behavior.ok()) return behavior.status();
    return std::unique_ptr<PreTokenizer>(new SplitPreTokenizer(std::move(*pattern), *behavior, Bool(spec, "invert", false)));
  }
  if (type == "Metaspace") {
    auto scheme = ParsePrependScheme(spec, where);
    if (!scheme.ok()) return scheme.status();
    return std::unique_ptr<PreTokenizer>(
        new MetaspacePreTokenizer(String(spec, "replacement", "\xE2\x96\x81"), *scheme, Bool(spec, "split", true)));
  }
  if (type == "Digits") {
    auto pattern = Pattern::Parse(json{{"Regex", "\\p{N}"}}, where);
    if (!pattern.ok()) return pattern.status();
    const bool individual = Bool(spec, "individual_digits", false);
    return std::unique_ptr<PreTokenizer>(
        new SplitPreTokenizer(std::move(*pattern), individual ? Behavior::kIsolated : Behavior::kContiguous, false));
  }
  if (type == "Sequence") {
    auto steps = ParseList<PreTokenizer>(spec, "pretokenizers", where, ParsePreTokenizer);
    if (!steps.ok()) return steps.status();
    return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(*steps)));
  }
  return Unsupported(where, absl::StrCat("pre_tokenizer type \"", type, "\" is not supported"));
}

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const json& spec, const std::string& where) {
  if (spec.is_null()) return std::unique_ptr<Decoder>();
  const std::string type = Type(spec);
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Strip") {
    const std::string content = String(spec, "content", " ");
    size_t i = 0;
    const char32_t c = content.empty() ? U' ' : utf8::Next(content, i);
    return std::unique_ptr<Decoder>(new StripDecoder(c, spec.value("start", 0), spec.value("stop", 0)));
  }
  if (type == "Replace") {
    auto pattern = Pattern::Parse(spec.value("pattern", json()), where);
    if (!pattern.ok()) return pattern.status();
    return std::unique_ptr<Decoder>(new ReplaceDecoder(std::move(*pattern), String(spec, "content")));
  }
  if (type == "Metaspace") {
    auto scheme = ParsePrependScheme(spec, where);
    if (!scheme.ok()) return scheme.status();
    return std::unique_ptr<Decoder>(new MetaspaceDecoder(String(spec, "replacement", "\xE2\x96\x81"), *scheme));
  }
  if (type == "Sequence") {
    auto steps = ParseList<Decoder>(spec, "decoders", where, ParseDecoder);
    if (!steps.ok()) return steps.status();
    return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(*steps)));
  }
  return Unsupported(where, absl::StrCat("decoder type \"", type, "\" is not supported"));
}

absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const json& spec, const std::string& where) {
  if (spec.is_null()) return std::unique_ptr<PostProcessor>();
  const std::string type = Type(spec);
  if (type == "ByteLevel") return std::unique_ptr<PostProcessor>(new IdentityProcessor());
  if (type == "TemplateProcessing") return ParseTemplate(spec, where);
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    const json& cls = spec.value("cls", json());
    const json& sep = spec.value("sep", json());
    if (!cls.is_array() || cls.size() != 2 || !sep.is_array() || sep.size() != 2) return Unsupported(where, "cls/sep");
    return std::unique_ptr<PostProcessor>(new WrapProcessor({cls[1].get<int32_t>()}, {sep[1].get<int32_t>()}));
  }
  if (type == "Sequence") {
    auto steps = ParseList<PostProcessor>(spec, "processors", where, ParsePostProcessor);
    if (!steps.ok()) return steps.status();
    return std::unique_ptr<PostProcessor>(new SequenceProcessor(std::move(*steps)));
  }
  return Unsupported(where, absl::StrCat("post_processor type \"", type, "\" is not supported"));
}

}  // namespace squeezeserve
