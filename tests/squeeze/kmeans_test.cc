#include "engine/squeeze/kmeans.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/squeeze/synthetic.h"

namespace squeezeserve::squeeze {
namespace {

using synth::PlantedClusters;

// A perfect recovery is a bijection between planted and found clusters: the pair (planted, found)
// takes exactly P distinct values per head, and P clusters are found.
void ExpectRecovers(const at::Tensor& planted, const at::Tensor& labels, int64_t P) {
  const at::Tensor pair = planted * P + labels;
  for (int64_t h = 0; h < labels.size(0); ++h) {
    EXPECT_EQ(std::get<0>(at::_unique(pair[h])).numel(), P) << "head " << h;
    EXPECT_EQ(std::get<0>(at::_unique(labels[h])).numel(), P) << "head " << h;
  }
}

// Sizes count the labels and centroids are the means of the raw points of each label.
void ExpectSizesAndRawMeans(const KMeansResult& r, const at::Tensor& points, int64_t K) {
  const at::Tensor onehot = at::one_hot(r.labels, K).to(at::kFloat);  // [H, N, K]
  const at::Tensor counts = onehot.sum(1);
  EXPECT_TRUE(at::equal(counts.to(at::kLong), r.sizes));
  const at::Tensor means = at::bmm(onehot.transpose(1, 2), points) / counts.clamp_min(1).unsqueeze(-1);
  EXPECT_TRUE(at::allclose(r.centroids, means, 1e-4, 1e-4));
}

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
  ExpectRecovers(data.planted, KMeans(data.points, o).labels, P);
}

TEST(KMeans, CentroidsAreMeansOfRawPointsAndSizesCount) {
  const at::Tensor x = PlantedClusters(2, 300, 8, 5, 0.5, 10.0, 9).points;
  KMeansOptions o;
  o.num_clusters = 7;
  const KMeansResult r = KMeans(x, o);
  ExpectSizesAndRawMeans(r, x, 7);
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

// Many points per cluster: seeding and Lloyd run on a sample (2048 of 16384 points here), then every
// point is assigned once. The planted clusters are still found, and labels, sizes and raw means
// describe all the points, not the sample.
TEST(KMeans, SampledLloydStillRecoversPlantedClustersOverEveryPoint) {
  const int64_t H = 2, N = 16384, P = 24;
  const auto data = PlantedClusters(H, N, 32, P, 0.05, 3.0, 13);
  KMeansOptions o;
  o.num_clusters = P;
  const KMeansResult r = KMeans(data.points, o);
  ExpectRecovers(data.planted, r.labels, P);
  EXPECT_TRUE(at::equal(r.sizes.sum(-1), at::full({H}, N, at::kLong)));
  ExpectSizesAndRawMeans(r, data.points, P);
}

// Squared distances of every point to every centroid, in float64 on the CPU: the ground truth.
at::Tensor ExactDistances(const at::Tensor& x, const at::Tensor& c) {
  const at::Tensor xd = x.to(at::kCPU).to(at::kDouble), cd = c.to(at::kCPU).to(at::kDouble);
  return (xd.unsqueeze(2) - cd.unsqueeze(1)).pow(2).sum(-1);  // [H, N, K]
}

TEST(KMeans, NearestCentroidsIsTheExactArgminOnTheCpu) {
  const at::Tensor x = synth::Randn({3, 257, 24}, synth::Rng(21));
  const at::Tensor c = synth::Randn({3, 19, 24}, synth::Rng(22));
  const at::Tensor labels = NearestCentroids(x, c);
  EXPECT_TRUE(at::equal(labels, ExactDistances(x, c).argmin(-1)));
}

// On a GPU (fused kernel for head dims 64 and 128, bf16 libtorch scores otherwise): every label the
// exact argmin disagrees with must be a near-tie, within what bf16 inputs can tell apart.
TEST(KMeans, NearestCentroidsOnTheGpuPicksTheNearestUpToBf16Ties) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (int64_t d : {64, 128, 32}) {
    at::Tensor x = synth::Randn({8, 3001, d}, synth::Rng(23 + d));
    x = x / x.norm(2, {-1}, true);
    const at::Tensor c = x.narrow(1, 0, 301) + 0.05 * synth::Randn({8, 301, d}, synth::Rng(24 + d));
    const at::Tensor labels = NearestCentroids(x.to(at::kCUDA), c.to(at::kCUDA)).to(at::kCPU);
    ASSERT_EQ(labels.sizes(), (std::vector<int64_t>{8, 3001}));
    ASSERT_TRUE(((labels >= 0) & (labels < 301)).all().item<bool>()) << "d " << d;
    const at::Tensor dist = ExactDistances(x, c);
    const at::Tensor chosen = dist.gather(2, labels.unsqueeze(-1)).squeeze(-1);
    const at::Tensor best = std::get<0>(dist.min(-1));
    const double worst = (chosen - best).max().item<double>();
    EXPECT_LE(worst, 2e-2) << "d " << d << ": a label far from the nearest centroid";
    EXPECT_GT((labels == dist.argmin(-1)).to(at::kDouble).mean().item<double>(), 0.97) << "d " << d;
  }
}

// The whole k-means on a GPU lands as well as on the CPU (same seeding draws, bf16/fused scores).
TEST(KMeans, GpuObjectiveMatchesTheCpuObjective) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Tensor x = PlantedClusters(4, 4000, 128, 40, 0.6, 4.0, 31).points;
  KMeansOptions o;
  o.num_clusters = 200;
  o.seed = 5;
  const KMeansResult cpu = KMeans(x, o), gpu = KMeans(x.to(at::kCUDA), o);
  const double a = cpu.final_objective.sum().item<double>(), b = gpu.final_objective.to(at::kCPU).sum().item<double>();
  EXPECT_LT(std::abs(a - b), 0.02 * a) << "cpu " << a << " gpu " << b;
  EXPECT_EQ(gpu.sizes.to(at::kCPU).sum().item<int64_t>(), 4 * 4000);
}

}  // namespace
}  // namespace squeezeserve::squeeze
