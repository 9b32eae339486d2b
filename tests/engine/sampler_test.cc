#include "engine/sampler.h"

#include <cmath>
#include <map>
#include <vector>

#include <gtest/gtest.h>

namespace squeezeserve {
namespace {

const std::vector<float> kLogits = {0.1f, 2.0f, -1.0f, 1.5f, 2.0f, 0.5f};

TEST(SamplerTest, GreedyPicksTheFirstMaximumAndRawLogprob) {
  Sampler sampler(SamplerOptions{});
  SampledToken t = sampler.Sample(kLogits);
  EXPECT_EQ(t.token, 1);  // tie between ids 1 and 4 goes to the lower id
  double total = 0;
  for (float x : kLogits) total += std::exp(x);
  EXPECT_NEAR(t.logprob, 2.0 - std::log(total), 1e-6);
}

TEST(SamplerTest, TopKOneEqualsGreedyAtAnyTemperature) {
  Sampler sampler(SamplerOptions{/*temperature=*/5.0f, /*top_p=*/1.0f, /*top_k=*/1, /*seed=*/3});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sampler.Sample(kLogits).token, 1);
}

TEST(SamplerTest, LogprobIsOfRawLogitsEvenWhenSampling) {
  Sampler sampler(SamplerOptions{0.3f, 0.9f, 3, 11});
  for (int i = 0; i < 10; ++i) {
    SampledToken t = sampler.Sample(kLogits);
    EXPECT_NEAR(t.logprob, LogSoftmaxAt(kLogits, t.token), 1e-7);
  }
}

TEST(SamplerTest, SameSeedSameSamplesDifferentSeedDiffers) {
  auto draw = [](uint64_t seed) {
    Sampler sampler(SamplerOptions{1.0f, 1.0f, 0, seed});
    std::vector<int32_t> tokens;
    for (int i = 0; i < 64; ++i) tokens.push_back(sampler.Sample(kLogits).token);
    return tokens;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(SamplerTest, TopKAndTopPRestrictTheSupport) {
  Sampler top_k(SamplerOptions{1.0f, 1.0f, 3, 7});
  Sampler top_p(SamplerOptions{1.0f, 0.5f, 0, 7});
  for (int i = 0; i < 500; ++i) {
    int32_t k = top_k.Sample(kLogits).token;
    EXPECT_TRUE(k == 1 || k == 4 || k == 3) << k;
    // Probabilities of ids 1 and 4 are ~0.31 each: the nucleus at 0.5 holds exactly these two.
    int32_t p = top_p.Sample(kLogits).token;
    EXPECT_TRUE(p == 1 || p == 4) << p;
  }
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler sampler(SamplerOptions{1.0f, 1.0f, 0, 123});
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[sampler.Sample(logits).token];
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.02);

  // A low temperature sharpens towards the most likely token.
  Sampler cold(SamplerOptions{0.1f, 1.0f, 0, 123});
  int top = 0;
  for (int i = 0; i < 1000; ++i) top += cold.Sample(logits).token == 0;
  EXPECT_GT(top, 950);
}

}  // namespace
}  // namespace squeezeserve
