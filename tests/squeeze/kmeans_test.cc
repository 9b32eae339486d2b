#include "engine/squeeze/kmeans.h"

#include <gtest/gtest.h>

#include "tests/squeeze/synthetic.h"

namespace squeezeserve::squeeze {
namespace {

using synth::PlantedClusters;

TEST(KMeans, SameSeedGivesIdenticalLabels) {
  const at::Tensor x = PlantedClusters(3, 500, 16, 12, 0.8, 4.0, 1).points;
  KMeansOptions o;
  o.num_clusters = 20;
  o.seed = 7;
  const KMeansResult a = KMeans(x, o), b = KMeans(x, o);
  EXPECT_TRUE(at::equal(a.labels, b.labels));
  EXPECT_TRUE(at::equal(a.centroids, b.centroids));
  o.seed = 8;
  EXPECT_FALSE(at::equal(a.labels, KMeans(x, o).labels)) << "the seed should matter";
}

TEST(KMeans, LloydLowersTheObjectiveOfTheSeeding) {
  const at::Tensor x = synth::Randn({2, 800, 8}, synth::Rng(3));
  KMeansOptions o;
  o.num_clusters = 16;
  int calls = 0;
  o.progress = [&calls](int, double) { ++calls; };
  const KMeansResult r = KMeans(x, o);
  EXPECT_GT(r.iterations, 0);
  EXPECT_EQ(calls, r.iterations);
  EXPECT_TRUE((r.final_objective <= r.seed_objective + 1e-6).all().item<bool>());
  EXPECT_LT(r.final_objective.sum().item<double>(), 0.99 * r.seed_objective.sum().item<double>());
}

TEST(KMeans, RecoversWellSeparatedPlantedClusters) {
  const int64_t H = 2, N = 600, P = 6;
  const auto data = PlantedClusters(H, N, 32, P, 0.05, 3.0, 5);
  KMeansOptions o;
  o.num_clusters = P;
  const KMeansResult r = KMeans(data.points, o);
  // A perfect recovery is a bijection between planted and found clusters: the pair (planted,
  // found) takes exactly P distinct values per head.
  const at::Tensor pair = data.planted * P + r.labels;
  for (int64_t h = 0; h < H; ++h) {
    EXPECT_EQ(std::get<0>(at::_unique(pair[h])).numel(), P) << "head " << h;
    EXPECT_EQ(std::get<0>(at::_unique(r.labels[h])).numel(), P) << "head " << h;
  }
}

TEST(KMeans, CentroidsAreMeansOfRawPointsAndSizesCount) {
  const at::Tensor x = PlantedClusters(2, 300, 8, 5, 0.5, 10.0, 9).points;
  KMeansOptions o;
  o.num_clusters = 7;
  const KMeansResult r = KMeans(x, o);
  const at::Tensor onehot = at::one_hot(r.labels, 7).to(at::kFloat);  // [H, N, K]
  const at::Tensor counts = onehot.sum(1);
  EXPECT_TRUE(at::equal(counts.to(at::kLong), r.sizes));
  const at::Tensor means = at::bmm(onehot.transpose(1, 2), x) / counts.clamp_min(1).unsqueeze(-1);
  EXPECT_TRUE(at::allclose(r.centroids, means, 1e-4, 1e-4));
  // Raw means: the norms are the keys' magnitude (~10), not unit.
  EXPECT_GT(r.centroids.norm(2, {-1}).mean().item<double>(), 3.0);
}

TEST(KMeans, InvalidPointsAndDuplicatesLeaveEmptyClustersAtZero) {
  // 12 points but only 3 distinct ones, and 4 of them invalid: at most 3 clusters can be non-empty.
  at::Tensor base = synth::Randn({1, 3, 4}, synth::Rng(11));
  at::Tensor x = base.repeat({1, 4, 1});
  at::Tensor valid = at::ones({1, 12}, at::kBool);
  valid.narrow(1, 0, 4).fill_(false);
  KMeansOptions o;
  o.num_clusters = 6;
  const KMeansResult r = KMeans(x, o, valid);
  EXPECT_EQ(r.sizes.sum().item<int64_t>(), 8);
  const at::Tensor empty = r.sizes == 0;
  EXPECT_GE(empty.sum().item<int64_t>(), 3);
  EXPECT_TRUE((r.centroids.abs().sum(-1).masked_select(empty) == 0).all().item<bool>());
  EXPECT_TRUE((r.centroids.abs().sum(-1).masked_select(~empty) > 0).all().item<bool>());
}

}  // namespace
}  // namespace squeezeserve::squeeze
