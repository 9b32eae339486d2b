// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE", ...}): vocab, ranked merges,
// byte fallback (<0xNN> pieces), unknown-token fusing and ignore_merges, applied exactly as HF
// tokenizers does (merges by rank, leftmost first, from a priority queue). Plain C++.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object. InvalidArgument naming the field when malformed.
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized piece.
  void Tokenize(std::string_view piece, std::vector<int32_t>& ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  const std::string* IdToToken(int32_t id) const;  // nullptr when unknown
  int64_t size() const { return static_cast<int64_t>(id_to_token_.size()); }
  int32_t max_id() const { return max_id_; }

 private:
  struct Symbol {
    int32_t id;
    int prev, next;
    bool alive;
  };
  struct MergeTarget {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void MergeAll(std::vector<Symbol>& symbols) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<int32_t, std::string> id_to_token_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // <0xNN> ids, -1 where absent
  int32_t max_id_ = -1;
};

}  // namespace squeezeserve
