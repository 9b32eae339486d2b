// bench/squeeze_accuracy's bundle metrics: what a shared-context bundle of questions reads (each
// selected cluster's rows once) against its members one by one, and a member's error over a
// selection.
#include <gtest/gtest.h>

#include "bench/squeeze_accuracy/accuracy_metrics.h"
#include "tests/squeeze/synthetic.h"

namespace squeezeserve::bench {
namespace {

TEST(BundleReadRows, UnionCountsEachClusterOnceAndMembersEachTheirOwn) {
  // One KV head, clusters of 2, 3 and 4 rows, two tokens.
  const at::Tensor offsets = at::tensor({0, 2, 5, 9}, at::kInt).view({1, 4});
  at::Tensor a = at::zeros({1, 2, 3}, at::kBool), b = at::zeros({1, 2, 3}, at::kBool);
  a[0][0][0] = true, a[0][0][1] = true, a[0][1][2] = true;  // token 0: clusters 0, 1; token 1: cluster 2
  b[0][0][1] = true, b[0][1][2] = true;                     // token 0: cluster 1; token 1: cluster 2
  const BundleRows rows = BundleReadRows({a, b}, offsets);
  EXPECT_DOUBLE_EQ(rows.union_rows, (2 + 3) + 4);
  EXPECT_DOUBLE_EQ(rows.member_rows, (2 + 3 + 4) + (3 + 4));
  EXPECT_DOUBLE_EQ(BundleReadRows({a}, offsets).union_rows, 9);
  EXPECT_DOUBLE_EQ(BundleReadRows({}, offsets).member_rows, 0);
}

TEST(DroppedPrunedErrors, ZeroOverEveryClusterAndNoLessOverASubset) {
  const at::Tensor keys = squeeze::synth::PlantedClusters(2, 700, 16, 8, 0.8, 3.0, 1).points;
  const at::Tensor values = squeeze::synth::Randn({2, 700, 16}, squeeze::synth::Rng(2));
  IndexOptions options;
  options.levels = 1;
  options.observation_window = 64;
  auto index = squeeze::BuildLayerIndex(keys, values, options);
  ASSERT_TRUE(index.ok());
  const at::Tensor q = squeeze::synth::Randn({4, 3, 16}, squeeze::synth::Rng(3));  // GQA 2, 3 tokens
  const int64_t K = index->cluster_offsets.size(1) - 1;
  const at::Tensor every = at::ones({2, 1, K}, at::kBool);
  at::Tensor half = every.clone();
  half.narrow(2, 0, K / 2).fill_(false);
  const at::Tensor fewer = half.clone();
  fewer.narrow(2, K / 2, K / 4).fill_(false);
  const std::vector<double> errors = DroppedPrunedErrors(*index, q, {every, half, fewer});
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_LT(errors[0], 1e-6);
  const double e_half = errors[1], e_fewer = errors[2];
  EXPECT_GT(e_half, 1e-3);
  EXPECT_GT(e_fewer, e_half);  // nested selections: dropping more moves further from dense
}

}  // namespace
}  // namespace squeezeserve::bench
