// Picks the next token from a row of logits: greedy, temperature, top-k, top-p, seeded.
// Plain C++ on float spans, deterministic: the same seed gives the same samples on every machine
// (the random stream is a std::mt19937_64, mapped to [0, 1) by hand). Sample() on a host row is the
// rules' reference; the engine makes the same draw where the logits live (sample_logits.h, held
// to Sample() by SampleLogitsTest) and takes only the options and the uniform numbers from here.
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

  // The first maximum is the token (temperature 0, or top_k 1).
  bool greedy() const { return options_.temperature <= 0 || options_.top_k == 1; }
  // How many of a row's `vocab` logits a sampled draw considers: top_k, or all of them.
  int64_t candidates(int64_t vocab) const;

  // `logits` must be non-empty. Ties go to the lowest token id.
  SampledToken Sample(absl::Span<const float> logits);

  // The draw's uniform number in [0, 1): 53 random bits, identical across standard libraries.
  // One per sampled draw; also for a draw made elsewhere (SampleLogits on the device).
  double NextUniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }
  const SamplerOptions& options() const { return options_; }

 private:
  int32_t SampleFiltered(absl::Span<const float> logits);

  SamplerOptions options_;
  std::mt19937_64 rng_;
};

// log_softmax(logits)[token], in double precision.
float LogSoftmaxAt(absl::Span<const float> logits, int32_t token);

}  // namespace squeezeserve
