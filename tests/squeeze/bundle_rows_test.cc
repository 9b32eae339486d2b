// bench/squeeze_accuracy's BundleReadRows: what a shared-context bundle of questions reads (each
// selected cluster's rows once) against its members one by one.
#include <gtest/gtest.h>

#include "bench/squeeze_accuracy/accuracy_metrics.h"

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

}  // namespace
}  // namespace squeezeserve::bench
