#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace squeezeserve {
namespace {

int32_t ArgMax(absl::Span<const float> logits) {
  // std::max_element returns the first maximum: ties go to the lowest id.
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace

float LogSoftmaxAt(absl::Span<const float> logits, int32_t token) {
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  return static_cast<float>(static_cast<double>(logits[token]) - max - std::log(sum));
}

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {}

int64_t Sampler::candidates(int64_t vocab) const {
  return options_.top_k > 0 ? std::min<int64_t>(options_.top_k, vocab) : vocab;
}

SampledToken Sampler::Sample(absl::Span<const float> logits) {
  SampledToken out;
  out.token = greedy() ? ArgMax(logits) : SampleFiltered(logits);
  out.logprob = LogSoftmaxAt(logits, out.token);
  return out;
}

int32_t Sampler::SampleFiltered(absl::Span<const float> logits) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  // Candidates sorted by logit, highest first (ties: lower id first), cut to top_k.
  int64_t keep = candidates(vocab);
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  auto higher = [&logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), higher);
  order.resize(keep);

  // Softmax of the temperature-scaled logits over the candidates.
  const double inv_t = 1.0 / options_.temperature;
  const double max = logits[order[0]] * inv_t;
  std::vector<double> probs(keep);
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += probs[i] = std::exp(logits[order[i]] * inv_t - max);
  for (double& p : probs) p /= total;

  // Nucleus: the smallest prefix whose mass reaches top_p (always at least one token).
  if (options_.top_p < 1) {
    double mass = 0;
    int64_t cut = 0;
    while (cut < keep && mass < options_.top_p) mass += probs[cut++];
    keep = std::max<int64_t>(cut, 1);
  }
  double kept_mass = 0;
  for (int64_t i = 0; i < keep; ++i) kept_mass += probs[i];

  const double u = NextUniform() * kept_mass;
  double cumulative = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cumulative += probs[i];
    if (u < cumulative) return order[i];
  }
  return order[keep - 1];  // rounding left u just above the last cumulative sum
}

}  // namespace squeezeserve
