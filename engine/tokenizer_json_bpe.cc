#include "engine/tokenizer_json_bpe.h"

#include <cstdio>
#include <queue>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer_utf8.h"

namespace squeezeserve {
namespace {

using nlohmann::json;

absl::Status ModelError(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.", what));
}

std::string OptionalString(const json& model, const char* key) {
  auto it = model.find(key);
  return it != model.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool OptionalBool(const json& model, const char* key) {
  auto it = model.find(key);
  return it != model.end() && it->is_boolean() && it->get<bool>();
}

}  // namespace

absl::StatusOr<BpeModel> BpeModel::FromJson(const json& model) {
  BpeModel bpe;
  auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object()) return ModelError("vocab: missing or not an object");
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer()) return ModelError(absl::StrCat("vocab[\"", it.key(), "\"]: not an integer"));
    const auto id = it.value().get<int32_t>();
    bpe.vocab_[it.key()] = id;
    bpe.id_to_token_[id] = it.key();
    bpe.max_id_ = std::max(bpe.max_id_, id);
  }
  bpe.continuing_subword_prefix_ = OptionalString(model, "continuing_subword_prefix");
  bpe.end_of_word_suffix_ = OptionalString(model, "end_of_word_suffix");
  bpe.byte_fallback_ = OptionalBool(model, "byte_fallback");
  bpe.fuse_unk_ = OptionalBool(model, "fuse_unk");
  bpe.ignore_merges_ = OptionalBool(model, "ignore_merges");
  if (auto dropout = model.find("dropout"); dropout != model.end() && dropout->is_number() && dropout->get<double>() > 0) {
    return ModelError("dropout: BPE dropout (a training option) is not supported");
  }
  if (const std::string unk = OptionalString(model, "unk_token"); !unk.empty()) {
    if (auto it = bpe.vocab_.find(unk); it != bpe.vocab_.end()) bpe.unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = bpe.vocab_.find(name);
    bpe.byte_ids_[b] = it == bpe.vocab_.end() ? -1 : it->second;
  }
  auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array()) return ModelError("merges: missing or not an array");
  const size_t prefix_length = bpe.continuing_subword_prefix_.size();
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const json& merge = (*merges)[rank];
    std::string a, b;
    if (merge.is_string()) {  // the older "a b" form
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return ModelError(absl::StrCat("merges[", rank, "]: \"", line, "\" is not two tokens"));
      }
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      a = merge[0].get<std::string>();
      b = merge[1].get<std::string>();
    } else {
      return ModelError(absl::StrCat("merges[", rank, "]: not a pair of tokens"));
    }
    auto ia = bpe.vocab_.find(a), ib = bpe.vocab_.find(b);
    const std::string merged = a + (prefix_length > 0 && b.size() >= prefix_length ? b.substr(prefix_length) : b);
    auto im = bpe.vocab_.find(merged);
    if (ia == bpe.vocab_.end() || ib == bpe.vocab_.end() || im == bpe.vocab_.end()) {
      return ModelError(absl::StrCat("merges[", rank, "]: a token of \"", a, "\" + \"", b, "\" is not in the vocab"));
    }
    bpe.merges_[PairKey(ia->second, ib->second)] = {static_cast<int32_t>(rank), im->second};
  }
  return bpe;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(absl::string_view(token.data(), token.size()));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  auto it = id_to_token_.find(id);
  return it == id_to_token_.end() ? nullptr : &it->second;
}

void BpeModel::Tokenize(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(absl::string_view(piece.data(), piece.size())); it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  // One symbol per character (or per byte through byte fallback, or one per run of unknowns).
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  auto add = [&symbols](int32_t id) {
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  };
  bool pending_unk = false;
  std::string key;
  for (size_t i = 0; i < piece.size();) {
    const size_t begin = i;
    const int length = utf8::CharLength(static_cast<unsigned char>(piece[i]));
    i = std::min(piece.size(), i + length);
    key.assign(piece.substr(begin, i - begin));
    if (begin > 0 && !continuing_subword_prefix_.empty()) key = continuing_subword_prefix_ + key;
    if (i == piece.size() && !end_of_word_suffix_.empty()) key += end_of_word_suffix_;
    if (auto it = vocab_.find(key); it != vocab_.end()) {
      if (pending_unk) add(*unk_id_);
      pending_unk = false;
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : key) all = all && byte_ids_[c] >= 0;
      if (all) {
        // HF does not flush a pending unknown here: the byte pieces come before it.
        for (unsigned char c : key) add(byte_ids_[c]);
        continue;
      }
    }
    if (unk_id_.has_value()) {
      if (pending_unk && !fuse_unk_) add(*unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) add(*unk_id_);
  if (symbols.empty()) return;
  symbols.back().next = -1;
  MergeAll(symbols);
  for (const Symbol& s : symbols) {
    if (s.alive) ids.push_back(s.id);
  }
}

void BpeModel::MergeAll(std::vector<Symbol>& symbols) const {
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const {  // priority_queue pops the largest: invert
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  auto find = [this](int32_t a, int32_t b) -> const MergeTarget* {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const MergeTarget* m = find(symbols[i].id, symbols[i + 1].id)) {
      queue.push({m->rank, static_cast<int>(i), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const MergeTarget* m = find(left.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale: the pair changed since
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeTarget* p = find(symbols[left.prev].id, left.id)) queue.push({p->rank, left.prev, p->new_id});
    }
    if (left.next >= 0) {
      if (const MergeTarget* n = find(left.id, symbols[left.next].id)) queue.push({n->rank, top.pos, n->new_id});
    }
  }
}

}  // namespace squeezeserve
