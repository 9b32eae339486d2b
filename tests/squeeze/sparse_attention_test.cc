#include "engine/squeeze/sparse_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "engine/squeeze/read_ahead.h"
#include "tests/squeeze/synthetic.h"

namespace squeezeserve::squeeze {
namespace {

SelectionOptions Lookup(bool hierarchical, bool per_token) {
  SelectionOptions so;
  so.hierarchical = hierarchical;
  so.per_token = per_token;
  return so;
}

IndexOptions Options(int levels, int window) {
  IndexOptions o;
  o.levels = levels;
  o.observation_window = window;
  return o;
}

// Every cluster kept (τ = kKeepAll) must be exactly dense attention over the whole context, for
// both lookups, shared and per-token selections, with GQA (4 query heads on 2 KV heads).
TEST(SparseAttention, NothingPrunedEqualsDenseAttention) {
  const at::Tensor keys = synth::PlantedClusters(2, 900, 16, 10, 0.8, 3.0, 1).points;
  const at::Tensor values = synth::Randn({2, 900, 16}, synth::Rng(2));
  auto idx = BuildLayerIndex(keys, values, Options(2, 64));
  ASSERT_TRUE(idx.ok());
  for (int64_t T : {1, 5}) {
    const at::Tensor q = synth::Randn({4, T, 16}, synth::Rng(3 + T));
    const auto [dense_out, dense_lse] = synth::DenseAttention(q, keys, values);
    for (bool hierarchical : {false, true}) {
      for (bool per_token : {false, true}) {
        SelectionOptions so = Lookup(hierarchical, per_token);
        so.estimate_pruned = per_token;  // nothing is pruned: the estimate must add nothing
        const ContextAttention a = SparseContextAttention(*idx, q, so);
        EXPECT_TRUE(at::allclose(a.out, dense_out, 1e-5, 1e-5)) << "T=" << T << " h=" << hierarchical;
        EXPECT_TRUE(at::allclose(a.lse, dense_lse, 1e-5, 1e-5)) << "T=" << T << " h=" << hierarchical;
        EXPECT_EQ(a.selection.kept_keys.sum().item<int64_t>(), a.selection.kept_keys.numel() * 836);
      }
    }
  }
}

TEST(SparseAttention, MergeWithOwnTokensEqualsDenseOverEverything) {
  const at::Tensor keys = synth::Randn({2, 400, 8}, synth::Rng(4));
  const at::Tensor values = synth::Randn({2, 400, 8}, synth::Rng(5));
  auto idx = BuildLayerIndex(keys.narrow(1, 0, 300), values.narrow(1, 0, 300), Options(1, 50));
  ASSERT_TRUE(idx.ok());
  const at::Tensor q = synth::Randn({2, 1, 8}, synth::Rng(6));
  const ContextAttention ctx = SparseContextAttention(*idx, q, SelectionOptions{});
  const auto [own_out, own_lse] = synth::DenseAttention(q, keys.narrow(1, 300, 100), values.narrow(1, 300, 100));
  const auto [out, lse] = MergeAttention(ctx.out, ctx.lse, own_out, own_lse);
  const auto [dense_out, dense_lse] = synth::DenseAttention(q, keys, values);
  EXPECT_TRUE(at::allclose(out, dense_out, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(lse, dense_lse, 1e-5, 1e-5));
}

TEST(SparseAttention, EmptyContextGivesMinusInfLse) {
  const at::Tensor keys = synth::Randn({1, 0, 8}, synth::Rng(7));
  IndexOptions o = Options(1, 0);
  auto idx = BuildLayerIndex(keys, keys, o);
  ASSERT_TRUE(idx.ok());
  const ContextAttention a = SparseContextAttention(*idx, synth::Randn({1, 2, 8}, synth::Rng(8)), {});
  EXPECT_TRUE((a.lse == -std::numeric_limits<float>::infinity()).all().item<bool>());
  EXPECT_TRUE((a.out == 0).all().item<bool>());
}

// The fine cluster holding context position p of KV head h, from the stored permutation and offsets.
int64_t ClusterOfPosition(const LayerIndex& idx, int64_t h, int64_t p) {
  const int64_t row = (idx.perm[h] == p).nonzero().item<int64_t>();
  return (idx.cluster_offsets[h].narrow(0, 1, idx.num_clusters()) <= row).sum().item<int64_t>();
}

TEST(ReadAhead, CursorFollowsEachHeadsLastConcentratedToken) {
  const auto kLong = at::TensorOptions().dtype(at::kLong);
  // A 3-token prefill, 3 query heads: head 0 concentrates at token 1 (position 10), head 1 never
  // (its 0.9 has no position), head 2 at tokens 0 and 2 (positions 5, 20).
  const at::Tensor position = at::tensor({0, 10, 11, -1, 7, 8, 5, 6, 20}, kLong).view({3, 3});
  const at::Tensor share = at::tensor({0.1f, 0.5f, 0.2f, 0.9f, 0.29f, 0.1f, 0.8f, 0.1f, 0.3f}).view({3, 3});
  ReadAheadCursor cursor = AdvanceReadAhead({}, position, share);
  EXPECT_EQ(cursor.next_position[0].item<int64_t>(), 12);  // token 1 read 10; the token after the call reads 12
  EXPECT_EQ(cursor.next_position[1].item<int64_t>(), -1);
  EXPECT_EQ(cursor.next_position[2].item<int64_t>(), 21);
  // Decode steps where no head concentrates: each cursor moves one position per token, and is
  // dropped once its head last concentrated more than kReadAheadMaxAge tokens ago.
  const at::Tensor unsure_position = at::full({3, 1}, 3, kLong), unsure_share = at::full({3, 1}, 0.05f);
  std::vector<int64_t> head0, head2;
  for (int step = 0; step < 4; ++step) {
    cursor = AdvanceReadAhead(cursor, unsure_position, unsure_share);
    head0.push_back(cursor.next_position[0].item<int64_t>());
    head2.push_back(cursor.next_position[2].item<int64_t>());
    EXPECT_EQ(cursor.next_position[1].item<int64_t>(), -1);
  }
  static_assert(kReadAheadMaxAge == 3, "the expectations below assume 3");
  EXPECT_EQ(head0, (std::vector<int64_t>{13, 14, -1, -1}));
  EXPECT_EQ(head2, (std::vector<int64_t>{22, 23, 24, -1}));
  // A head that concentrates again starts a new cursor.
  cursor = AdvanceReadAhead(cursor, at::tensor({3, 40, 3}, kLong).view({3, 1}), at::tensor({0.f, 0.6f, 0.f}).view({3, 1}));
  EXPECT_EQ(cursor.next_position[1].item<int64_t>(), 41);
  EXPECT_EQ(cursor.next_position[0].item<int64_t>(), -1);
}

TEST(ReadAhead, ClustersAtPositionsMarksTheClusterHoldingEachClusteredPosition) {
  const at::Tensor keys = synth::Randn({2, 300, 8}, synth::Rng(40));
  auto idx = BuildLayerIndex(keys, keys, Options(1, 50));  // N = 250 clustered, window [250, 300)
  ASSERT_TRUE(idx.ok());
  // Query heads 0, 1 on KV head 0; 2, 3 on KV head 1 (window and none: nothing to load).
  const at::Tensor marked = ClustersAtPositions(*idx, at::tensor({7, 249, 250, -1}, at::kLong));
  ASSERT_EQ(marked.sizes(), (std::vector<int64_t>{2, idx->num_clusters()}));
  at::Tensor expected = at::zeros_like(marked);
  expected[0][ClusterOfPosition(*idx, 0, 7)] = true;
  expected[0][ClusterOfPosition(*idx, 0, 249)] = true;
  EXPECT_TRUE(at::equal(marked, expected));
}

// With every cluster pruned (τ = +inf), read-ahead still loads exactly the cluster holding the
// asked position — one-level, and hierarchical (its coarse parent expanded) — and nothing without it.
TEST(SparseAttention, ReadAheadLoadsTheClusterOfAPositionWhateverItsScore) {
  const at::Tensor keys = synth::PlantedClusters(2, 600, 16, 8, 0.8, 3.0, 41).points;
  auto idx = BuildLayerIndex(keys, keys, Options(2, 32));
  ASSERT_TRUE(idx.ok());
  const at::Tensor q = synth::Randn({4, 1, 16}, synth::Rng(42));
  const int64_t target = ClusterOfPosition(*idx, 1, 123);
  const int64_t target_size = FineSizes(*idx)[1][target].item<int64_t>();
  for (bool hierarchical : {false, true}) {
    SelectionOptions so = Lookup(hierarchical, /*per_token=*/true);
    const float inf = std::numeric_limits<float>::infinity();
    so.thresholds = Thresholds{inf, inf, inf};
    so.read_ahead_positions = at::tensor({-1, -1, -1, 123}, at::kLong);  // query head 3 is on KV head 1
    so.read_ahead = false;
    EXPECT_EQ(SelectClusters(*idx, q, so).kept_keys.sum().item<int64_t>(), 0) << hierarchical;
    so.read_ahead = true;
    const ClusterSelection sel = SelectClusters(*idx, q, so);
    EXPECT_EQ(sel.selected[0].sum().item<int64_t>(), 0) << hierarchical;
    EXPECT_EQ(sel.selected[1][0].sum().item<int64_t>(), 1) << hierarchical;
    EXPECT_TRUE(sel.selected[1][0][target].item<bool>()) << hierarchical;
    EXPECT_EQ(sel.kept_keys[1][0].item<int64_t>(), target_size) << hierarchical;
    if (hierarchical) {  // the parent's children were scored: more than the coarse level alone
      EXPECT_GT(sel.centroid_comparisons[1][0].item<int64_t>(), idx->num_coarse_clusters());
    }
  }
}

// With every cluster kept, each query head's top key is dense attention's most attended clustered
// position, with its exact share of the context attention (shared and per-token selections, GQA).
TEST(SparseAttention, TopKeyIsDenseAttentionsMostAttendedClusteredKey) {
  const at::Tensor keys = 2.0 * synth::Randn({2, 400, 16}, synth::Rng(43));
  const at::Tensor values = synth::Randn({2, 400, 16}, synth::Rng(44));
  auto idx = BuildLayerIndex(keys, values, Options(1, 40));  // N = 360
  ASSERT_TRUE(idx.ok());
  const at::Tensor q = 2.0 * synth::Randn({4, 3, 16}, synth::Rng(45));
  const at::Tensor logits =
      at::matmul(q, keys.repeat_interleave(2, 0).transpose(1, 2)) / std::sqrt(16.0);  // [4, 3, 400]
  const auto [share, position] = at::softmax(logits, -1).narrow(-1, 0, 360).max(-1);
  for (bool per_token : {false, true}) {
    SelectionOptions so = Lookup(false, per_token);
    so.read_ahead = true;
    const ContextAttention a = SparseContextAttention(*idx, q, so);
    EXPECT_TRUE(at::equal(a.top_position, position)) << per_token;
    EXPECT_TRUE(at::allclose(a.top_share, share, 1e-5, 1e-6)) << per_token;
  }
}

// When every cluster holds one key repeated, a pruned cluster's estimate (its centroid as one key
// weighing its size, its mean value) is exact: the output is dense attention's however much the
// lookup prunes, for both lookups, shared and per-token selections, with GQA. Dropping the pruned
// clusters instead must change the output (the test can fail).
TEST(SparseAttention, PrunedEstimateIsExactForClustersOfRepeatedKeys) {
  constexpr int64_t kH = 2, kDistinct = 40, kRepeats = 20, kD = 16, kW = 10;
  at::Generator gen = synth::Rng(21);
  const at::Tensor distinct = synth::Randn({kH, kDistinct, kD}, gen) * 2.0;
  at::Tensor keys = distinct.repeat_interleave(kRepeats, 1);  // [H, 800, D]
  keys = keys.index_select(1, at::randperm(keys.size(1), gen, at::kLong));
  keys = at::cat({keys, synth::Randn({kH, kW, kD}, gen)}, 1);  // + the window
  const at::Tensor values = synth::Randn({kH, keys.size(1), kD}, gen);
  IndexOptions o = Options(2, kW);
  o.centroid_fraction = 1.0 / kRepeats;  // K = 40: one cluster per distinct key
  o.coarse_centroid_fraction = 8.0 / (kDistinct * kRepeats);
  auto idx = BuildLayerIndex(keys, values, o);
  ASSERT_TRUE(idx.ok()) << idx.status();
  ASSERT_EQ(idx->num_clusters(), kDistinct);
  ASSERT_TRUE((FineSizes(*idx) == kRepeats).all().item<bool>()) << "k-means must find the repeated keys";
  for (int64_t T : {1, 3}) {
    const at::Tensor q = synth::Randn({2 * kH, T, kD}, synth::Rng(22 + T));
    const auto [dense_out, dense_lse] = synth::DenseAttention(q, keys, values);
    for (bool hierarchical : {false, true}) {
      for (bool per_token : {false, true}) {
        SelectionOptions so = Lookup(hierarchical, per_token);
        // Prunes most fine clusters; keeps every coarse one (a coarse cluster's estimate would
        // merge several distinct keys and is not exact).
        so.thresholds = {0.01f, kKeepAll, 0.01f};
        so.estimate_pruned = true;
        const ContextAttention a = SparseContextAttention(*idx, q, so);
        const std::string where = "T=" + std::to_string(T) + " hierarchical=" + std::to_string(hierarchical) +
                                  " per_token=" + std::to_string(per_token);
        EXPECT_LT(a.selection.kept_keys.sum().item<double>(), 0.5 * a.selection.kept_keys.numel() * 800) << where;
        EXPECT_TRUE(at::allclose(a.out, dense_out, 1e-4, 1e-5)) << where;
        EXPECT_TRUE(at::allclose(a.lse, dense_lse, 1e-4, 1e-5)) << where;
        so.estimate_pruned = false;
        const ContextAttention dropped = SparseContextAttention(*idx, q, so);
        EXPECT_FALSE(at::allclose(dropped.out, dense_out, 1e-2, 1e-2)) << where;
        EXPECT_TRUE((dropped.lse < dense_lse).all().item<bool>()) << where;
      }
    }
  }
}

// Planted needles: a few keys strongly aligned with the query, at random positions, among random
// keys. Calibrated on unrelated window queries at 90% pruning, the needle clusters must be kept
// by both lookups, and the hierarchical lookup must compare fewer centroids than K.
class Needles : public ::testing::Test {
 protected:
  static constexpr int64_t kH = 2, kS = 4100, kW = 100, kD = 64, kNeedles = 5;
  void SetUp() override {
    at::Generator gen = synth::Rng(9);
    keys_ = synth::Randn({kH, kS, kD}, gen);
    values_ = synth::Randn({kH, kS, kD}, gen);
    direction_ = synth::Randn({kH, 1, kD}, gen);
    direction_ = direction_ / direction_.norm(2, {-1}, true);
    positions_ = at::randperm(kS - kW, gen, at::kLong).narrow(0, 0, kNeedles);
    for (int64_t i = 0; i < kNeedles; ++i) {  // a test may loop; 5 needles
      const int64_t p = positions_[i].item<int64_t>();
      keys_.select(1, p).copy_(4.0 * std::sqrt(double{kD}) * direction_.squeeze(1) +
                               0.1 * synth::Randn({kH, kD}, gen));
    }
    for (int levels : {1, 2}) {
      auto idx = BuildLayerIndex(keys_, values_, Options(levels, kW));
      ASSERT_TRUE(idx.ok());
      Calibrator cal(CalibrationOptions{});
      ASSERT_TRUE(cal.AddLayer(*idx, synth::Randn({2 * kH, kW, kD}, gen)).ok());
      auto result = cal.Finish();
      ASSERT_TRUE(result.ok());
      thresholds_[levels - 1] = result->levels_info.back().prefill.global;  // 90%
      EXPECT_FLOAT_EQ(result->levels_info.back().sparsity, 0.9f);
      index_[levels - 1] = *std::move(idx);
    }
    // The query looks for the needles (2 query heads per KV head, one of them noise).
    query_ = at::cat({direction_ * std::sqrt(double{kD}), synth::Randn({kH, 1, kD}, gen)}, 1)
                 .reshape({2 * kH, 1, kD});
  }

  // Whether every needle lies in a selected cluster, and the kept fraction.
  void ExpectNeedlesKept(const LayerIndex& idx, const ClusterSelection& sel) {
    const at::Tensor sorted_row = at::argsort(idx.perm.to(at::kLong), /*dim=*/-1, /*descending=*/false);  // original -> sorted row
    const at::Tensor ends = idx.cluster_offsets.narrow(1, 1, idx.num_clusters()).to(at::kLong).contiguous();
    for (int64_t h = 0; h < kH; ++h) {
      const at::Tensor rows = sorted_row[h].index_select(0, positions_).contiguous();
      const at::Tensor cluster = at::searchsorted(ends[h], rows, false, /*right=*/true);
      EXPECT_TRUE(sel.selected[h][0].index_select(0, cluster).all().item<bool>()) << "head " << h;
    }
    const double kept = sel.kept_keys.sum().item<double>() / (kH * (kS - kW));
    EXPECT_LT(kept, 0.5) << "the lookup should still prune";
  }

  at::Tensor keys_, values_, direction_, positions_, query_;
  LayerIndex index_[2];
  Thresholds thresholds_[2];
};

TEST_F(Needles, OneLevelLookupKeepsTheNeedlesAt90Percent) {
  SelectionOptions so;
  so.thresholds = thresholds_[0];
  const ContextAttention a = SparseContextAttention(index_[0], query_, so);
  ExpectNeedlesKept(index_[0], a.selection);
  EXPECT_TRUE((a.selection.centroid_comparisons == index_[0].num_clusters()).all().item<bool>());
}

TEST_F(Needles, HierarchicalLookupKeepsTheNeedlesWithFewerComparisons) {
  SelectionOptions so;
  so.hierarchical = true;
  so.thresholds = thresholds_[1];
  const ContextAttention a = SparseContextAttention(index_[1], query_, so);
  ExpectNeedlesKept(index_[1], a.selection);
  const int64_t K = index_[1].num_clusters();
  EXPECT_TRUE((a.selection.centroid_comparisons < K).all().item<bool>())
      << a.selection.centroid_comparisons << " vs K=" << K;
  EXPECT_TRUE((a.selection.centroid_comparisons > index_[1].num_coarse_clusters()).all().item<bool>());
}

}  // namespace
}  // namespace squeezeserve::squeeze
