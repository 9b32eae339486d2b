#include "client/squeezeload/synthetic.h"

#include <algorithm>
#include <array>
#include <random>

namespace squeezeload {

std::vector<int32_t> SyntheticTokens(int64_t count, int32_t vocab_size, uint64_t seed, int32_t first_id) {
  std::mt19937_64 rng(seed);
  first_id = std::min(first_id, vocab_size - 1);
  std::uniform_int_distribution<int32_t> id(first_id, vocab_size - 1);
  std::vector<int32_t> out(size_t(std::max<int64_t>(count, 0)));
  for (auto& t : out) t = id(rng);
  return out;
}

std::string SyntheticText(int64_t words, uint64_t seed) {
  static constexpr std::array<const char*, 16> kWords = {
      "the", "index", "of", "clusters", "keeps", "attention", "sparse", "while", "every",
      "query", "reads", "only", "a", "few", "keys", "today"};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, kWords.size() - 1);
  std::string out;
  for (int64_t i = 0; i < words; ++i) {
    if (i > 0) out += (i % 17 == 0) ? ". " : " ";
    out += kWords[pick(rng)];
  }
  return out;
}

}  // namespace squeezeload
