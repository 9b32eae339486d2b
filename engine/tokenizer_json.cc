#include "engine/tokenizer_json.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer_regex.h"
#include "engine/tokenizer_utf8.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {
namespace {

using nlohmann::json;

bool IsWhiteSpaceAt(std::string_view text, size_t i, size_t* next) {
  size_t j = i;
  const char32_t c = utf8::Next(text, j);
  const bool ws = (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
                  (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
                  c == 0x3000;
  *next = j;
  return ws;
}

// Start of the run of white space that ends text[..end].
size_t WhiteSpaceRunBefore(std::string_view text, size_t end) {
  size_t begin = end;
  while (begin > 0) {
    size_t start = begin - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t next;
    if (!IsWhiteSpaceAt(text, start, &next)) break;
    begin = start;
  }
  return begin;
}

// End of the run of white space that starts at text[begin].
size_t WhiteSpaceRunAfter(std::string_view text, size_t begin) {
  size_t end = begin;
  while (end < text.size()) {
    size_t next;
    if (!IsWhiteSpaceAt(text, end, &next)) break;
    end = next;
  }
  return end;
}

}  // namespace

HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromJson(std::string_view tokenizer_json) {
  json doc = json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return absl::InvalidArgumentError("tokenizer.json: not a JSON object");
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer());
  try {
    const json& model = doc.value("model", json());
    if (!model.is_object()) return absl::InvalidArgumentError("tokenizer.json: model: missing");
    const std::string model_type = model.value("type", std::string("BPE"));
    if (model_type != "BPE") {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: model.type \"", model_type, "\" is not supported (only BPE)"));
    }
    auto bpe = BpeModel::FromJson(model);
    if (!bpe.ok()) return bpe.status();
    tok->model_ = std::make_unique<BpeModel>(std::move(*bpe));
    auto normalizer = ParseNormalizer(doc.value("normalizer", json()), "normalizer");
    if (!normalizer.ok()) return normalizer.status();
    tok->normalizer_ = std::move(*normalizer);
    auto pre_tokenizer = ParsePreTokenizer(doc.value("pre_tokenizer", json()), "pre_tokenizer");
    if (!pre_tokenizer.ok()) return pre_tokenizer.status();
    tok->pre_tokenizer_ = std::move(*pre_tokenizer);
    auto post_processor = ParsePostProcessor(doc.value("post_processor", json()), "post_processor");
    if (!post_processor.ok()) return post_processor.status();
    tok->post_processor_ = std::move(*post_processor);
    auto decoder = ParseDecoder(doc.value("decoder", json()), "decoder");
    if (!decoder.ok()) return decoder.status();
    tok->decoder_ = std::move(*decoder);

    tok->vocab_size_ = tok->model_->max_id() + 1;
    const json& added = doc.value("added_tokens", json::array());
    tok->added_.reserve(added.size());
    for (size_t i = 0; i < added.size(); ++i) {
      const json& a = added[i];
      AddedToken t;
      t.id = a.at("id").get<int32_t>();
      t.content = a.at("content").get<std::string>();
      if (t.content.empty()) continue;
      t.special = a.value("special", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.single_word = a.value("single_word", false);
      t.normalized = a.value("normalized", !t.special);
      t.original = t.content;
      // A normalized token is matched (and, as HF tokenizers 0.23 does, decoded) in normalized form;
      // skip_special_tokens compares the decoded form with the original, so such a token is never
      // skipped (HF's behaviour, kept for equivalence).
      if (t.normalized && tok->normalizer_) t.content = tok->normalizer_->Normalize(t.content);
      tok->vocab_size_ = std::max<int64_t>(tok->vocab_size_, t.id + 1);
      tok->added_.push_back(std::move(t));
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
  for (const AddedToken& t : tok->added_) {
    tok->added_by_id_[t.id] = &t;
    tok->added_by_content_[t.content] = t.id;
    if (t.special) {
      tok->special_contents_.insert(t.original);
      tok->special_ids_.insert(t.id);
    }
    Matcher& m = t.normalized ? tok->normalized_matcher_ : tok->raw_matcher_;
    m.by_first_byte[static_cast<unsigned char>(t.content[0])].push_back(&t);
  }
  for (Matcher* m : {&tok->raw_matcher_, &tok->normalized_matcher_}) {
    for (auto& [byte, list] : m->by_first_byte) {
      std::stable_sort(list.begin(), list.end(),
                       [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });
    }
  }
  auto word_start = TokenizerRegex::Compile("\\w");
  if (!word_start.ok()) return word_start.status();
  tok->word_start_ = std::move(*word_start);
  return tok;
}

std::vector<HfTokenizer::Piece> HfTokenizer::SplitOnAdded(const std::string& text, bool at_start,
                                                          const Matcher& matcher) const {
  std::vector<Piece> pieces;
  size_t last = 0;  // end of the previous added token
  auto is_word_char_at = [this, &text](size_t at) { return word_start_->MatchesAt(text, at, nullptr); };
  auto ends_with_word = [&](size_t end) {
    if (end == 0) return false;
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    return is_word_char_at(start);
  };
  if (!matcher.empty()) {
    for (size_t i = 0; i < text.size();) {
      const AddedToken* found = nullptr;
      if (auto it = matcher.by_first_byte.find(static_cast<unsigned char>(text[i])); it != matcher.by_first_byte.end()) {
        for (const AddedToken* t : it->second) {
          if (text.compare(i, t->content.size(), t->content) == 0) {
            found = t;
            break;
          }
        }
      }
      if (found == nullptr) {
        i += utf8::CharLength(static_cast<unsigned char>(text[i]));
        continue;
      }
      size_t begin = i, end = i + found->content.size();
      // The search goes on after the match itself, not after the white space that lstrip/rstrip
      // take: a token inside that white space is still found (as HF's find_matches does).
      i = end;
      if (found->single_word) {
        const bool start_ok = begin == 0 || !ends_with_word(begin);
        const bool stop_ok = end == text.size() || !is_word_char_at(end);
        if (!start_ok || !stop_ok) continue;
      }
      if (found->lstrip) begin = std::max(WhiteSpaceRunBefore(text, begin), last);
      if (found->rstrip) end = WhiteSpaceRunAfter(text, end);
      if (begin > last) pieces.push_back({-1, text.substr(last, begin - last), at_start && last == 0});
      pieces.push_back({found->id, std::string(), false});
      last = end;
    }
  }
  if (last < text.size()) pieces.push_back({-1, text.substr(last), at_start && last == 0});
  return pieces;
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view raw_text, bool add_special_tokens) const {
  const std::string text = utf8::Lossy(raw_text);
  std::vector<int32_t> ids;
  std::vector<PreToken> pre;
  for (Piece& piece : SplitOnAdded(text, /*at_start=*/true, raw_matcher_)) {
    if (piece.added_id >= 0) {
      ids.push_back(piece.added_id);
      continue;
    }
    std::string normalized = normalizer_ ? normalizer_->Normalize(std::move(piece.text)) : std::move(piece.text);
    for (Piece& part : SplitOnAdded(normalized, piece.at_start, normalized_matcher_)) {
      if (part.added_id >= 0) {
        ids.push_back(part.added_id);
        continue;
      }
      pre.clear();
      pre.push_back({std::move(part.text), part.at_start});
      if (pre_tokenizer_) pre_tokenizer_->PreTokenize(pre);
      for (const PreToken& word : pre) model_->Tokenize(word.text, ids);
    }
  }
  if (add_special_tokens && post_processor_) ids = post_processor_->Process(std::move(ids));
  return ids;
}

const std::string* HfTokenizer::IdToToken(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return &it->second->content;
  return model_->IdToToken(id);
}

std::string HfTokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = IdToToken(id);
    if (token == nullptr) continue;
    if (skip_special_tokens && special_contents_.contains(*token)) continue;
    tokens.push_back(*token);
  }
  if (!decoder_) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) absl::StrAppend(&joined, i > 0 ? " " : "", tokens[i]);
    return joined;
  }
  std::string out;
  for (const std::string& piece : decoder_->DecodeChain(std::move(tokens))) out += piece;
  return out;
}

std::optional<int32_t> HfTokenizer::TokenToId(std::string_view token) const {
  if (auto it = added_by_content_.find(absl::string_view(token.data(), token.size())); it != added_by_content_.end()) return it->second;
  return model_->TokenToId(token);
}

}  // namespace squeezeserve
