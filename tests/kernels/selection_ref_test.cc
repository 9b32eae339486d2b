// The CPU selection reference against per-key brute-force definitions (docs/index_layout.md).
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "tests/kernels/brute_force.h"

namespace squeezeserve::kernels::testing {
namespace {

AttentionShape shape_for(const SyntheticSpec& spec, int group, int lq) {
  AttentionShape s;
  s.batch = 1;
  s.num_kv_heads = spec.num_kv_heads;
  s.num_q_heads = spec.num_kv_heads * group;
  s.head_dim = spec.head_dim;
  s.query_len = lq;
  return s;
}

// Expected kept set; clusters whose score lies within rounding of tau are "either" (-1).
std::vector<int> expected_keep(const std::vector<double>& score, double tau) {
  std::vector<int> keep(score.size());
  for (size_t c = 0; c < score.size(); ++c) {
    if (score[c] < 0) keep[c] = 0;  // empty
    else if (std::abs(score[c] - tau) <= 1e-4 * std::abs(tau)) keep[c] = -1;
    else keep[c] = score[c] > tau;
  }
  return keep;
}

void expect_selection(const std::vector<int>& got, const std::vector<int>& keep, const char* what) {
  std::vector<bool> in(keep.size(), false);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_GE(got[i], 0);
    ASSERT_LT(got[i], static_cast<int>(keep.size()));
    if (i > 0) EXPECT_LT(got[i - 1], got[i]) << what << ": ids must ascend";
    in[got[i]] = true;
  }
  for (size_t c = 0; c < keep.size(); ++c) {
    if (keep[c] >= 0) EXPECT_EQ(static_cast<int>(in[c]), keep[c]) << what << " cluster " << c;
  }
}

class FlatSelection : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(FlatSelection, MatchesPerKeyDefinition) {
  const auto [group, lq] = GetParam();
  SyntheticSpec spec;
  spec.num_kv_heads = 2;
  spec.head_dim = 32;
  spec.num_rows = 300;
  spec.num_clusters = 24;
  spec.empty_fraction = 0.2f;
  spec.seed = 11 + group * 7 + lq;
  const SyntheticLayer L = make_synthetic_layer(spec);
  const AttentionShape shape = shape_for(spec, group, lq);
  const std::vector<float> q = random_normal(int64_t{lq} * shape.num_q_heads * spec.head_dim, spec.seed + 1);

  std::vector<std::vector<double>> scores;
  for (int h = 0; h < spec.num_kv_heads; ++h) {
    const int k = spec.num_clusters;
    scores.push_back(per_key_scores(L, q.data(), lq, shape.num_q_heads, h, k, fine_cluster_of_rows(L, h),
                                    [&](int c) { return &L.centroids[(static_cast<size_t>(h) * k + c) * spec.head_dim]; },
                                    nullptr, nullptr));
  }
  const double tau = key_quantile(scores[0], fine_cluster_of_rows(L, 0), 0.7);

  SelectionBuffers buf(spec.num_kv_heads, spec.num_clusters);
  const SequenceLayerF32 view = L.view();
  select_clusters_ref(shape, &view, q.data(), {static_cast<float>(tau), 0.f, false}, buf.sel);

  for (int h = 0; h < spec.num_kv_heads; ++h) {
    const std::vector<int> keep = expected_keep(scores[h], tau);
    expect_selection(buf.selected(h), keep, "flat");
    EXPECT_EQ(buf.comparisons[h], spec.num_clusters);
    // Row bookkeeping: row_start is the running sum of the selected sizes, rows their total.
    int running = 0;
    for (int i = 0; i < buf.counts[h]; ++i) {
      EXPECT_EQ(buf.row_start[h * buf.sel.capacity + i], running);
      const int id = buf.ids[h * buf.sel.capacity + i];
      running += L.offsets[h * (spec.num_clusters + 1) + id + 1] - L.offsets[h * (spec.num_clusters + 1) + id];
    }
    EXPECT_EQ(buf.rows[h], running);
  }
  // The threshold was placed among the scores, so the test is not vacuous.
  EXPECT_GT(buf.counts[0], 0);
  EXPECT_LT(buf.counts[0], spec.num_clusters);
}

INSTANTIATE_TEST_SUITE_P(GroupsAndBlocks, FlatSelection,
                         ::testing::Values(std::make_tuple(1, 1), std::make_tuple(4, 1), std::make_tuple(8, 1),
                                           std::make_tuple(1, 6), std::make_tuple(4, 5)));

class HierarchicalSelection : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(HierarchicalSelection, EqualsFlatRestrictedToKeptCoarseChildren) {
  const auto [group, lq] = GetParam();
  SyntheticSpec spec;
  spec.num_kv_heads = 2;
  spec.head_dim = 32;
  spec.num_rows = 400;
  spec.num_clusters = 40;
  spec.num_coarse = 7;
  spec.empty_fraction = 0.15f;
  spec.seed = 101 + group + 13 * lq;
  const SyntheticLayer L = make_synthetic_layer(spec);
  const AttentionShape shape = shape_for(spec, group, lq);
  const std::vector<float> q = random_normal(int64_t{lq} * shape.num_q_heads * spec.head_dim, spec.seed + 5);
  const int k = spec.num_clusters, kc = spec.num_coarse, d = spec.head_dim;

  struct PerHead { std::vector<double> coarse, fine; std::vector<int> fine_rows; };
  std::vector<PerHead> heads(spec.num_kv_heads);
  for (int h = 0; h < spec.num_kv_heads; ++h) {
    const int32_t* coff = &L.coarse_offsets[h * (kc + 1)];
    std::vector<int> fine_rows = fine_cluster_of_rows(L, h), coarse_rows(fine_rows.size());
    for (size_t r = 0; r < fine_rows.size(); ++r)
      coarse_rows[r] = static_cast<int>(std::upper_bound(coff, coff + kc + 1, fine_rows[r]) - coff) - 1;
    std::vector<double> den;
    heads[h].coarse = per_key_scores(L, q.data(), lq, shape.num_q_heads, h, kc, coarse_rows,
                                     [&](int c) { return &L.coarse_centroids[(static_cast<size_t>(h) * kc + c) * d]; },
                                     nullptr, &den);
    // Flat fine scores over ALL fine clusters, but with the coarse level's denominator.
    heads[h].fine = per_key_scores(L, q.data(), lq, shape.num_q_heads, h, k, fine_rows,
                                   [&](int c) { return &L.centroids[(static_cast<size_t>(h) * k + c) * d]; },
                                   &den, nullptr);
    heads[h].fine_rows = fine_rows;
  }
  const double tau_c = [&] {
    std::vector<double> s(heads[0].coarse);
    std::sort(s.begin(), s.end());
    return 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);  // between two scores: keeps about half
  }();
  const double tau_f = key_quantile(heads[0].fine, heads[0].fine_rows, 0.5);

  SelectionBuffers buf(spec.num_kv_heads, k);
  const SequenceLayerF32 view = L.view();
  select_clusters_ref(shape, &view, q.data(), {static_cast<float>(tau_f), static_cast<float>(tau_c), true}, buf.sel);

  for (int h = 0; h < spec.num_kv_heads; ++h) {
    const int32_t* coff = &L.coarse_offsets[h * (kc + 1)];
    const std::vector<int> coarse_keep = expected_keep(heads[h].coarse, tau_c);
    std::vector<int> keep = expected_keep(heads[h].fine, tau_f);
    int comparisons = kc, kept_coarse = 0;
    bool ambiguous = false;
    for (int c = 0; c < kc; ++c) {
      ambiguous |= coarse_keep[c] < 0;
      kept_coarse += coarse_keep[c] == 1;
      if (coarse_keep[c] == 1) comparisons += coff[c + 1] - coff[c];
      if (coarse_keep[c] == 0)
        for (int j = coff[c]; j < coff[c + 1]; ++j) keep[j] = 0;  // never scored, never selected
    }
    ASSERT_FALSE(ambiguous) << "pick another seed: a coarse score sits on tau";
    expect_selection(buf.selected(h), keep, "hierarchical");
    EXPECT_EQ(buf.comparisons[h], comparisons);
    if (h == 0) {
      EXPECT_GT(kept_coarse, 0);
      EXPECT_LT(kept_coarse, kc);
      EXPECT_LT(buf.comparisons[h], kc + k) << "expansion must touch fewer fine centroids than flat";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(GroupsAndBlocks, HierarchicalSelection,
                         ::testing::Values(std::make_tuple(1, 1), std::make_tuple(4, 1), std::make_tuple(4, 3)));

// A key aligned with the query, alone in its cluster, passes a threshold calibrated to keep 10% of keys.
TEST(Selection, PlantedNeedleIsAlwaysSelectedAt90Percent) {
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    for (int lq : {1, 4}) {
      SyntheticSpec spec;
      spec.num_kv_heads = 1;
      spec.head_dim = 64;
      spec.num_rows = 2000;
      spec.num_clusters = 100;
      spec.seed = seed;
      SyntheticLayer L = make_synthetic_layer(spec);
      const int group = 4, d = spec.head_dim, needle_cluster = 37, needle_head = static_cast<int>(seed % group);
      const AttentionShape shape = shape_for(spec, group, lq);
      const std::vector<float> q = random_normal(int64_t{lq} * group * d, seed + 77);
      // Shrink cluster 37 to one row (its other rows join cluster 38) and make that row the needle.
      int32_t* off = L.offsets.data();
      off[needle_cluster + 1] = off[needle_cluster] + 1;
      const float* qv = &q[needle_head * d];  // token 0 of the block
      double norm = 0;
      for (int i = 0; i < d; ++i) norm += qv[i] * qv[i];
      for (int i = 0; i < d; ++i) L.keys[off[needle_cluster] * d + i] = static_cast<float>(8.0 * qv[i] / std::sqrt(norm));
      L.recompute_centroids();

      const std::vector<int> rows = fine_cluster_of_rows(L, 0);
      const std::vector<double> score = per_key_scores(
          L, q.data(), lq, group, 0, spec.num_clusters, rows,
          [&](int c) { return &L.centroids[static_cast<size_t>(c) * d]; }, nullptr, nullptr);
      const double tau = key_quantile(score, rows, 0.9);
      SelectionBuffers buf(1, spec.num_clusters);
      const SequenceLayerF32 view = L.view();
      select_clusters_ref(shape, &view, q.data(), {static_cast<float>(tau), 0.f, false}, buf.sel);
      const std::vector<int> got = buf.selected(0);
      EXPECT_TRUE(std::find(got.begin(), got.end(), needle_cluster) != got.end()) << "seed " << seed << " lq " << lq;
      EXPECT_LT(buf.rows[0], spec.num_rows / 2) << "the 90% threshold must prune";
    }
  }
}

// Even a threshold everything passes selects no empty cluster, at either level.
TEST(Selection, EmptyClustersAreNeverSelected) {
  for (bool hierarchical : {false, true}) {
    SyntheticSpec spec;
    spec.num_kv_heads = 3;
    spec.head_dim = 16;
    spec.num_rows = 60;
    spec.num_clusters = 30;
    spec.num_coarse = hierarchical ? 5 : 0;
    spec.empty_fraction = 0.5f;
    spec.seed = 5;
    const SyntheticLayer L = make_synthetic_layer(spec);
    const AttentionShape shape = shape_for(spec, 2, 1);
    const std::vector<float> q = random_normal(shape.num_q_heads * spec.head_dim, 9);
    SelectionBuffers buf(spec.num_kv_heads, spec.num_clusters);
    const SequenceLayerF32 view = L.view();
    select_clusters_ref(shape, &view, q.data(), {-1.f, -1.f, hierarchical}, buf.sel);
    for (int h = 0; h < spec.num_kv_heads; ++h) {
      const int32_t* off = &L.offsets[h * (spec.num_clusters + 1)];
      std::vector<int> non_empty;
      for (int j = 0; j < spec.num_clusters; ++j)
        if (off[j + 1] > off[j]) non_empty.push_back(j);
      EXPECT_EQ(buf.selected(h), non_empty) << "hierarchical=" << hierarchical;
      EXPECT_EQ(buf.rows[h], spec.num_rows);
    }
  }
}

}  // namespace
}  // namespace squeezeserve::kernels::testing
