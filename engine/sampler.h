// Picks the next token from a row of logits: greedy, temperature, top-k, top-p, seeded.
// Plain C++ on a float span so that it is device independent and deterministic: the same seed gives
// the same samples on every machine (the random stream is a std::mt19937_64, mapped to [0, 1) by hand).
#pragma once

#include <cstdint>
#include <random>

#include "absl/types/span.h"

namespace squeezeserve {

struct SamplerOptions {
  float temperature = 0;  // 0 = greedy
  float top_p = 1;        // (0, 1]; 1 = disabled
  int top_k = 0;          // 0 = disabled
  uint64_t seed = 0;
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0;  // log-softmax of the raw (unscaled, unfiltered) logits at `token`
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);

  // `logits` must be non-empty. Ties go to the lowest token id.
  SampledToken Sample(absl::Span<const float> logits);

 private:
  int32_t SampleFiltered(absl::Span<const float> logits);

  SamplerOptions options_;
  std::mt19937_64 rng_;
};

// log_softmax(logits)[token], in double precision.
float LogSoftmaxAt(absl::Span<const float> logits, int32_t token);

}  // namespace squeezeserve
