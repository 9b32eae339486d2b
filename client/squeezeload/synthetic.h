// Synthetic content for contexts and queries: seeded, so a workload is reproducible run to run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace squeezeload {

// `count` token ids drawn uniformly from [first_id, vocab_size). first_id skips the low ids that
// tokenizers reserve for special tokens (pad/bos/eos/unk), so no synthetic token ends a generation.
std::vector<int32_t> SyntheticTokens(int64_t count, int32_t vocab_size, uint64_t seed, int32_t first_id = 4);

// `words` space-separated pseudo-words from a small fixed vocabulary.
std::string SyntheticText(int64_t words, uint64_t seed);

}  // namespace squeezeload
