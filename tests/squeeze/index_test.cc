#include "engine/squeeze/index_builder.h"

#include <gtest/gtest.h>

#include "engine/squeeze/tensor_util.h"
#include "tests/squeeze/synthetic.h"

namespace squeezeserve::squeeze {
namespace {

IndexOptions Options(int levels) {
  IndexOptions o;
  o.levels = levels;
  o.observation_window = 100;
  o.centroid_fraction = 0.05f;
  o.coarse_centroid_fraction = 0.01f;
  return o;
}

// Checks every invariant of docs/index_layout.md that holds for both levels.
void ExpectValidIndex(const LayerIndex& idx, const at::Tensor& keys, const at::Tensor& values, int64_t W) {
  const int64_t H = keys.size(0), S = keys.size(1), N = S - W, K = idx.num_clusters();
  ASSERT_EQ(idx.num_clustered(), N);
  ASSERT_EQ(idx.window(), W);
  EXPECT_TRUE(at::equal(idx.window_keys, keys.narrow(1, N, W)));
  EXPECT_TRUE(at::equal(idx.window_values, values.narrow(1, N, W)));
  ASSERT_EQ(idx.cluster_offsets.sizes(), (std::vector<int64_t>{H, K + 1}));
  EXPECT_EQ(idx.cluster_offsets.scalar_type(), at::kInt);
  EXPECT_EQ(idx.perm.scalar_type(), at::kInt);
  // Offsets: start at 0, monotone, end at N.
  const at::Tensor sizes = FineSizes(idx);
  EXPECT_TRUE((idx.cluster_offsets.select(1, 0) == 0).all().item<bool>());
  EXPECT_TRUE((idx.cluster_offsets.select(1, K) == N).all().item<bool>());
  EXPECT_TRUE((sizes >= 0).all().item<bool>());
  // Every token exactly once: perm sorted is 0..N-1.
  const at::Tensor perm = idx.perm.to(at::kLong);
  EXPECT_TRUE(at::equal(std::get<0>(perm.sort(-1)), at::arange(N, at::kLong).expand({H, N})));
  // Sorted rows are the original rows permuted.
  EXPECT_TRUE(at::equal(idx.keys, keys.narrow(1, 0, N).gather(1, perm.unsqueeze(-1).expand({H, N, keys.size(2)}))));
  EXPECT_TRUE(
      at::equal(idx.values, values.narrow(1, 0, N).gather(1, perm.unsqueeze(-1).expand({H, N, values.size(2)}))));
  // Centroid j is the mean of the raw keys in its segment; non-empty ⇒ non-zero, empty ⇒ zero.
  for (int64_t h = 0; h < H; ++h) {
    const at::Tensor label = at::repeat_interleave(at::arange(K, at::kLong), sizes[h]);  // cluster of each row
    const at::Tensor onehot = at::one_hot(label, K).to(at::kFloat);
    const at::Tensor means = onehot.t().matmul(idx.keys[h].to(at::kFloat)) / sizes[h].clamp_min(1).unsqueeze(-1);
    EXPECT_TRUE(at::allclose(idx.centroids[h], means, 1e-4, 1e-4)) << "head " << h;
  }
  const at::Tensor norm = idx.centroids.norm(2, {-1});
  EXPECT_TRUE((norm.masked_select(sizes > 0) > 0).all().item<bool>());
  EXPECT_TRUE((norm.masked_select(sizes == 0) == 0).all().item<bool>());
}

// CompactMask: the order of a stable descending sort of the 0/1 mask (true entries ascending, then
// the false ones ascending), cut at the largest count; valid and count from the mask.
TEST(TensorUtil, CompactMaskIsAStableSortOfTheMask) {
  at::manual_seed(7);
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{3, 1, 50}, {2, 4, 7}, {5, 1}, {2, 3, 0}}) {
    for (const double p : {0.0, 0.1, 0.5, 1.0}) {
      const at::Tensor mask = at::rand(shape) < p;
      const Compacted got = CompactMask(mask);
      const at::Tensor count = mask.sum(-1);
      const int64_t cmax = mask.size(-1) == 0 ? 0 : count.max().item<int64_t>();
      const at::Tensor order = std::get<1>(at::sort(mask.to(at::kInt), /*stable=*/true, /*dim=*/-1, /*descending=*/true));
      EXPECT_TRUE(at::equal(got.index, order.narrow(-1, 0, cmax))) << p;
      EXPECT_TRUE(at::equal(got.count, count)) << p;
      EXPECT_TRUE(at::equal(got.valid, at::arange(cmax, at::kLong) < count.unsqueeze(-1))) << p;
    }
  }
}

// GatherRows: rows[h, m] = x[h, index[h, m]], for contiguous and strided x.
TEST(TensorUtil, GatherRowsTakesEachHeadsRows) {
  at::manual_seed(8);
  const at::Tensor x = at::randn({3, 40, 8});
  const at::Tensor index = at::randint(40, {3, 25}, at::kLong);
  const at::Tensor want = x.gather(1, index.unsqueeze(-1).expand({3, 25, 8}));
  EXPECT_TRUE(at::equal(GatherRows(x, index), want));
  const at::Tensor strided = x.transpose(0, 1).contiguous().transpose(0, 1);  // same values, not contiguous
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_TRUE(at::equal(GatherRows(strided, index), want));
  // The first 40 rows of longer heads (a context's clustered rows before its window).
  const at::Tensor longer = at::cat({x, at::randn({3, 9, 8})}, 1).narrow(1, 0, 40);
  ASSERT_FALSE(longer.is_contiguous());
  EXPECT_TRUE(at::equal(GatherRows(longer, index), want));
  // One head at an offset into its storage.
  const at::Tensor offset = at::cat({at::randn({1, 40, 8}), x}, 0).narrow(0, 1, 3);
  EXPECT_TRUE(at::equal(GatherRows(offset, index), want));
  for (int64_t h = 0; h < 3; ++h) {
    for (int64_t m = 0; m < 25; ++m) EXPECT_TRUE(at::equal(GatherRows(x, index)[h][m], x[h][index[h][m].item<int64_t>()]));
  }
}

TEST(IndexBuilder, OneLevelInvariants) {
  const at::Tensor keys = synth::PlantedClusters(2, 700, 16, 9, 0.7, 3.0, 1).points;
  const at::Tensor values = synth::Randn({2, 700, 16}, synth::Rng(2));
  auto idx = BuildLayerIndex(keys, values, Options(1));
  ASSERT_TRUE(idx.ok()) << idx.status();
  EXPECT_EQ(idx->num_clusters(), 30);  // round(0.05 · 600)
  ExpectValidIndex(*idx, keys, values, 100);
}

TEST(IndexBuilder, TwoLevelInvariants) {
  const at::Tensor keys = synth::PlantedClusters(3, 1100, 16, 12, 0.7, 3.0, 3).points;
  const at::Tensor values = synth::Randn({3, 1100, 8}, synth::Rng(4));
  int fine_calls = 0, coarse_calls = 0;
  auto idx = BuildLayerIndex(keys, values, Options(2), [&](std::string_view stage, int, double) {
    (stage == "fine" ? fine_calls : coarse_calls)++;
  });
  ASSERT_TRUE(idx.ok()) << idx.status();
  EXPECT_GT(fine_calls, 0);
  EXPECT_GT(coarse_calls, 0);
  const int64_t H = 3, K = idx->num_clusters(), Kc = idx->num_coarse_clusters();
  EXPECT_EQ(K, 50);
  EXPECT_EQ(Kc, 10);
  ExpectValidIndex(*idx, keys, values, 100);
  // Coarse offsets partition the fine ids 0..K: children contiguous, each fine in one coarse.
  EXPECT_TRUE((idx->coarse_offsets.select(1, 0) == 0).all().item<bool>());
  EXPECT_TRUE((idx->coarse_offsets.select(1, Kc) == K).all().item<bool>());
  EXPECT_TRUE((SizesFromOffsets(idx->coarse_offsets) >= 0).all().item<bool>());
  const at::Tensor parent = CoarseParent(*idx);  // [H, K], non-decreasing = contiguous children
  EXPECT_TRUE((parent.narrow(1, 1, K - 1) >= parent.narrow(1, 0, K - 1)).all().item<bool>());
  EXPECT_EQ(CoarseSizes(*idx).sum().item<int64_t>(), H * 1000);
  // Coarse centroid = unweighted mean of its non-empty member fine centroids.
  const at::Tensor fine_nonempty = (FineSizes(*idx) > 0).to(at::kFloat);  // [H, K]
  const at::Tensor member = at::one_hot(parent, Kc).to(at::kFloat) * fine_nonempty.unsqueeze(-1);  // [H, K, Kc]
  const at::Tensor means = at::bmm(member.transpose(1, 2), idx->centroids) / member.sum(1).clamp_min(1).unsqueeze(-1);
  EXPECT_TRUE(at::allclose(idx->coarse_centroids, means, 1e-4, 1e-4));
  const at::Tensor coarse_norm = idx->coarse_centroids.norm(2, {-1});
  EXPECT_TRUE((coarse_norm.masked_select(CoarseSizes(*idx) > 0) > 0).all().item<bool>());

  // Mean values: of each fine cluster's rows, and of all rows under each coarse cluster.
  const at::Tensor row_cluster = SegmentOfPosition(idx->cluster_offsets, idx->num_clustered());  // [H, N]
  const at::Tensor in_fine = at::one_hot(row_cluster, K).to(at::kFloat);                          // [H, N, K]
  const at::Tensor fine_means = at::bmm(in_fine.transpose(1, 2), idx->values) / in_fine.sum(1).clamp_min(1).unsqueeze(-1);
  EXPECT_TRUE(at::allclose(idx->cluster_values, fine_means, 1e-4, 1e-5));
  const at::Tensor in_coarse = at::one_hot(parent.gather(1, row_cluster), Kc).to(at::kFloat);     // [H, N, Kc]
  const at::Tensor coarse_means =
      at::bmm(in_coarse.transpose(1, 2), idx->values) / in_coarse.sum(1).clamp_min(1).unsqueeze(-1);
  EXPECT_TRUE(at::allclose(idx->coarse_values, coarse_means, 1e-4, 1e-5));
}

TEST(IndexBuilder, ContextNoLongerThanWindowIsAllWindow) {
  const at::Tensor keys = synth::Randn({2, 80, 8}, synth::Rng(5));
  auto idx = BuildLayerIndex(keys, keys * 2, Options(2));
  ASSERT_TRUE(idx.ok()) << idx.status();
  EXPECT_EQ(idx->num_clustered(), 0);
  EXPECT_EQ(idx->num_clusters(), 0);
  EXPECT_EQ(idx->window(), 80);
  EXPECT_TRUE(at::equal(idx->window_keys, keys));
}

TEST(IndexBuilder, TinyContextGetsOneCluster) {
  const at::Tensor keys = synth::Randn({2, 103, 8}, synth::Rng(6));
  auto idx = BuildLayerIndex(keys, keys, Options(2));
  ASSERT_TRUE(idx.ok()) << idx.status();
  EXPECT_EQ(idx->num_clusters(), 1);
  EXPECT_EQ(idx->num_coarse_clusters(), 1);
  ExpectValidIndex(*idx, keys, keys, 100);
}

TEST(IndexBuilder, RejectsBadOptions) {
  const at::Tensor keys = synth::Randn({1, 300, 8}, synth::Rng(7));
  IndexOptions o = Options(3);
  EXPECT_EQ(BuildLayerIndex(keys, keys, o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options(1);
  o.centroid_fraction = 0;
  EXPECT_EQ(BuildLayerIndex(keys, keys, o).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildLayerIndex(keys, keys.narrow(1, 0, 10), Options(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace squeezeserve::squeeze
