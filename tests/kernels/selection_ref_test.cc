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

// Groups 3, 6 and 7 too (the shipped small model has 3, Qwen2-7B 7).
INSTANTIATE_TEST_SUITE_P(GroupsAndBlocks, FlatSelection,
                         ::testing::Values(std::make_tuple(1, 1), std::make_tuple(4, 1), std::make_tuple(8, 1),
                                           std::make_tuple(1, 6), std::make_tuple(4, 5), std::make_tuple(3, 1),
                                           std::make_tuple(3, 4), std::make_tuple(6, 1), std::make_tuple(7, 3)));

// (group, query_len, per_head): per_head gives every KV head its own (tau_coarse, tau_fine) through
// SequenceLayer::tau_coarse / tau_fine and makes the launch-wide ones NaN (nothing would pass them).
class HierarchicalSelection : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(HierarchicalSelection, EqualsFlatRestrictedToKeptCoarseChildren) {
  const auto [group, lq, per_head] = GetParam();
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
  // Thresholds from head 0 for every head, or (per_head) from each head's own scores, with a
  // different fine quantile per head.
  std::vector<float> tau_c(spec.num_kv_heads), tau_f(spec.num_kv_heads);
  for (int h = 0; h < spec.num_kv_heads; ++h) {
    const PerHead& from = heads[per_head ? h : 0];
    std::vector<double> s(from.coarse);
    std::sort(s.begin(), s.end());
    // Between two scores: keeps about half.
    tau_c[h] = static_cast<float>(0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]));
    tau_f[h] = static_cast<float>(key_quantile(from.fine, from.fine_rows, per_head ? 0.3 + 0.4 * h : 0.5));
  }

  SelectionBuffers buf(spec.num_kv_heads, k);
  SequenceLayerF32 view = L.view();
  SelectionParams params{tau_f[0], tau_c[0], true};
  if (per_head) {
    view.tau_fine = tau_f.data();
    view.tau_coarse = tau_c.data();
    params.tau_fine = params.tau_coarse = std::nanf("");
  }
  select_clusters_ref(shape, &view, q.data(), params, buf.sel);

  for (int h = 0; h < spec.num_kv_heads; ++h) {
    const int32_t* coff = &L.coarse_offsets[h * (kc + 1)];
    const std::vector<int> coarse_keep = expected_keep(heads[h].coarse, tau_c[h]);
    std::vector<int> keep = expected_keep(heads[h].fine, tau_f[h]);
    int comparisons = kc, kept_coarse = 0;
    bool ambiguous = false;
    for (int c = 0; c < kc; ++c) {
      ambiguous |= coarse_keep[c] < 0;
      kept_coarse += coarse_keep[c] == 1;
      // Scored: the non-empty children of a kept coarse cluster (engine/squeeze's centroid_comparisons).
      for (int j = coff[c]; coarse_keep[c] == 1 && j < coff[c + 1]; ++j) comparisons += heads[h].fine[j] >= 0;
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
                         ::testing::Values(std::make_tuple(1, 1, false), std::make_tuple(4, 1, false),
                                           std::make_tuple(4, 3, false), std::make_tuple(1, 1, true),
                                           std::make_tuple(4, 3, true), std::make_tuple(3, 1, false),
                                           std::make_tuple(7, 2, true)));

// Per-head thresholds (SequenceLayer::tau_fine) replace the launch-wide one head by head: head 0
// keeps every non-empty cluster, head 1 none, heads 2 and 3 their own 30% / 80% key quantiles. The
// batch's second sequence sets none and keeps the launch-wide threshold for every head.
TEST(Selection, PerHeadThresholdsReplaceTheLaunchWideOne) {
  for (int lq : {1, 3}) {
    SyntheticSpec spec;
    spec.num_kv_heads = 4;
    spec.head_dim = 32;
    spec.num_rows = 400;
    spec.num_clusters = 30;
    spec.empty_fraction = 0.1f;
    spec.seed = 71 + lq;
    const SyntheticLayer L = make_synthetic_layer(spec);
    AttentionShape shape = shape_for(spec, 2, lq);
    shape.batch = 2;
    const int k = spec.num_clusters, hkv = spec.num_kv_heads, d = spec.head_dim;
    const int64_t q_per_seq = int64_t{lq} * shape.num_q_heads * d;
    const std::vector<float> q = random_normal(2 * q_per_seq, spec.seed + 3);

    std::vector<std::vector<double>> scores;  // [b * hkv + h]
    for (int b = 0; b < 2; ++b)
      for (int h = 0; h < hkv; ++h)
        scores.push_back(per_key_scores(L, q.data() + b * q_per_seq, lq, shape.num_q_heads, h, k,
                                        fine_cluster_of_rows(L, h),
                                        [&](int c) { return &L.centroids[(static_cast<size_t>(h) * k + c) * d]; },
                                        nullptr, nullptr));
    const std::vector<float> tau = {-1.f, 2.f,  // p-hat <= 1 with the level's own denominator
                                    static_cast<float>(key_quantile(scores[2], fine_cluster_of_rows(L, 2), 0.3)),
                                    static_cast<float>(key_quantile(scores[3], fine_cluster_of_rows(L, 3), 0.8))};
    const float launch_wide = static_cast<float>(key_quantile(scores[hkv], fine_cluster_of_rows(L, 0), 0.5));

    SequenceLayerF32 views[2] = {L.view(), L.view()};
    views[0].tau_fine = tau.data();
    SelectionBuffers buf(2 * hkv, k);
    select_clusters_ref(shape, views, q.data(), {launch_wide, 0.f, false}, buf.sel);

    for (int b = 0; b < 2; ++b)
      for (int h = 0; h < hkv; ++h) {
        const std::vector<int> keep = expected_keep(scores[b * hkv + h], b == 0 ? tau[h] : launch_wide);
        expect_selection(buf.selected(b * hkv + h), keep, b == 0 ? "per-head tau" : "launch-wide tau");
      }
    const int32_t* off0 = &L.offsets[0];
    int non_empty = 0;
    for (int j = 0; j < k; ++j) non_empty += off0[j + 1] > off0[j];
    EXPECT_EQ(buf.counts[0], non_empty) << "keep-all head";
    EXPECT_EQ(buf.rows[0], spec.num_rows);
    EXPECT_EQ(buf.counts[1], 0) << "keep-nothing head";
    EXPECT_EQ(buf.rows[1], 0);
    EXPECT_GT(buf.counts[3], 0) << "the quantile heads must keep some and prune some";
    EXPECT_GT(buf.counts[2], buf.counts[3]);
    EXPECT_LT(buf.counts[2], k);
    EXPECT_GT(buf.counts[hkv], 0) << "second sequence: launch-wide tau";
    EXPECT_LT(buf.counts[hkv], k);
  }
}

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

// log p-hat is capped at kMaxLogScore (docs/index_layout.md "Constants"): a fine centroid scored over
// the coarse denominator can sit e^100 above it. Coarse cluster 0's children are +A u and -A u, so
// its centroid (their mean) is 0 and the coarse denominator stays small while the child +A u has
// s q.c = 100: its score is e^40 (2.4e17), not inf, so a threshold of 1e30 prunes it and 1e17 keeps it.
TEST(Selection, LogScoreIsCappedOverTheCoarseDenominator) {
  SyntheticSpec spec;
  spec.num_kv_heads = 1;
  spec.head_dim = 16;
  spec.num_rows = 40;
  spec.num_clusters = 4;
  spec.num_coarse = 2;
  spec.seed = 3;
  SyntheticLayer L = make_synthetic_layer(spec);
  const int d = spec.head_dim;
  L.offsets = {0, 10, 20, 30, 40};
  L.coarse_offsets = {0, 2, 4};
  std::vector<float> u(d, 0.f);
  u[0] = 1.f;
  const float a = 100.f;  // s q.(a u) = 100 with q = sqrt(d) u, s = 1/sqrt(d)
  for (int r = 0; r < spec.num_rows; ++r)
    for (int i = 0; i < d; ++i) {
      float& k = L.keys[static_cast<size_t>(r) * d + i];
      if (r < 10) k = a * u[i];
      else if (r < 20) k = -a * u[i];
      else k = 0.01f * k;
    }
  L.recompute_centroids();
  std::vector<float> q(d, 0.f);
  q[0] = std::sqrt(static_cast<float>(d));
  const AttentionShape shape = shape_for(spec, 1, 1);
  const SequenceLayerF32 view = L.view();
  for (const float tau : {1e30f, 1e17f}) {
    SelectionBuffers buf(1, spec.num_clusters);
    select_clusters_ref(shape, &view, q.data(), {tau, -1.f, true}, buf.sel);
    const std::vector<int> got = buf.selected(0);
    const bool kept = std::find(got.begin(), got.end(), 0) != got.end();
    EXPECT_EQ(kept, tau < 1e18f) << "tau " << tau;
  }
}

}  // namespace
}  // namespace squeezeserve::kernels::testing
