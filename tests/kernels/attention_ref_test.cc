// The CPU sparse-attention reference against dense softmax attention computed in double.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <tuple>

#include "kernels/attention_ref.h"
#include "tests/kernels/brute_force.h"

namespace squeezeserve::kernels::testing {
namespace {

struct Problem {
  SyntheticLayer layer;
  AttentionShape shape;
  std::vector<float> q;
};

Problem make_problem(int group, int lq, int dense_extra, uint64_t seed) {
  SyntheticSpec spec;
  spec.num_kv_heads = 2;
  spec.head_dim = 64;
  spec.num_rows = 257;  // odd on purpose
  spec.num_clusters = 19;
  spec.empty_fraction = 0.2f;
  spec.dense_len = lq + dense_extra;  // the block's own tokens are the last lq dense rows
  spec.seed = seed;
  Problem p{make_synthetic_layer(spec), {}, {}};
  p.shape.batch = 1;
  p.shape.num_kv_heads = spec.num_kv_heads;
  p.shape.num_q_heads = spec.num_kv_heads * group;
  p.shape.head_dim = spec.head_dim;
  p.shape.query_len = lq;
  p.q = random_normal(int64_t{lq} * p.shape.num_q_heads * spec.head_dim, seed + 3);
  return p;
}

// Dense attention of query (t, hq) over `context_rows` of the clustered part (in a shuffled order:
// attention over the context must not depend on it) plus the causally visible dense rows.
std::vector<double> brute_force(const Problem& p, int t, int hq, const std::vector<int>& context_rows) {
  const SyntheticLayer& L = p.layer;
  const int d = L.spec.head_dim, h = hq / p.shape.group(), lq = p.shape.query_len;
  std::vector<const float*> k, v;
  std::vector<int> order(context_rows);
  std::shuffle(order.begin(), order.end(), std::mt19937(t * 31 + hq));
  for (int r : order) {
    k.push_back(&L.keys[(static_cast<size_t>(h) * L.spec.num_rows + r) * d]);
    v.push_back(&L.values[(static_cast<size_t>(h) * L.spec.num_rows + r) * d]);
  }
  for (int i = 0; i <= L.spec.dense_len - lq + t; ++i) {
    k.push_back(&L.dense_keys[(static_cast<size_t>(h) * L.spec.dense_len + i) * d]);
    v.push_back(&L.dense_values[(static_cast<size_t>(h) * L.spec.dense_len + i) * d]);
  }
  return dense_attention(&p.q[(static_cast<size_t>(t) * p.shape.num_q_heads + hq) * d], d, k, v);
}

double max_abs_diff(const Problem& p, const std::vector<float>& out,
                    const std::function<std::vector<int>(int h)>& rows_of_head) {
  const int d = p.shape.head_dim;
  double worst = 0;
  for (int t = 0; t < p.shape.query_len; ++t)
    for (int hq = 0; hq < p.shape.num_q_heads; ++hq) {
      const std::vector<double> ref = brute_force(p, t, hq, rows_of_head(hq / p.shape.group()));
      for (int x = 0; x < d; ++x)
        worst = std::max(worst, std::abs(ref[x] - out[(static_cast<size_t>(t) * p.shape.num_q_heads + hq) * d + x]));
    }
  return worst;
}

class SparseAttention : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(SparseAttention, AllClustersSelectedEqualsDenseAttention) {
  const auto [group, lq] = GetParam();
  const Problem p = make_problem(group, lq, 5, 40 + group * 3 + lq);
  SelectionBuffers buf(p.shape.num_kv_heads, p.layer.spec.num_clusters);
  const SequenceLayerF32 view = p.layer.view();
  select_clusters_ref(p.shape, &view, p.q.data(), {-1.f, 0.f, false}, buf.sel);  // everything passes
  std::vector<float> out(p.q.size(), NAN);
  sparse_attention_ref(p.shape, &view, p.q.data(), buf.sel, out.data(), nullptr);
  std::vector<int> all(p.layer.spec.num_rows);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_LE(max_abs_diff(p, out, [&](int) { return all; }), 1e-5);
}

TEST_P(SparseAttention, PartialSelectionEqualsDenseOverSelectedRows) {
  const auto [group, lq] = GetParam();
  const Problem p = make_problem(group, lq, 3, 70 + group * 5 + lq);
  SelectionBuffers buf(p.shape.num_kv_heads, p.layer.spec.num_clusters);
  // A hand-made selection: every third cluster of head h, starting at h.
  const int k = p.layer.spec.num_clusters;
  for (int h = 0; h < p.shape.num_kv_heads; ++h) {
    int count = 0, rows = 0;
    for (int j = h; j < k; j += 3) {
      buf.ids[h * k + count] = j;
      buf.row_start[h * k + count] = rows;
      rows += p.layer.offsets[h * (k + 1) + j + 1] - p.layer.offsets[h * (k + 1) + j];
      ++count;
    }
    buf.counts[h] = count;
    buf.rows[h] = rows;
  }
  const SequenceLayerF32 view = p.layer.view();
  std::vector<float> out(p.q.size(), NAN);
  sparse_attention_ref(p.shape, &view, p.q.data(), buf.sel, out.data(), nullptr);
  EXPECT_LE(max_abs_diff(p, out,
                         [&](int h) {
                           std::vector<int> rows;
                           for (int j = h; j < k; j += 3)
                             for (int r = p.layer.offsets[h * (k + 1) + j]; r < p.layer.offsets[h * (k + 1) + j + 1]; ++r)
                               rows.push_back(r);
                           return rows;
                         }),
            1e-5);
}

TEST_P(SparseAttention, EmptySelectionGivesDensePartOnly) {
  const auto [group, lq] = GetParam();
  const Problem p = make_problem(group, lq, 4, 90 + group + lq);
  SelectionBuffers buf(p.shape.num_kv_heads, p.layer.spec.num_clusters);
  const SequenceLayerF32 view = p.layer.view();
  select_clusters_ref(p.shape, &view, p.q.data(), {2.f, 0.f, false}, buf.sel);  // p-hat <= 1: nothing passes
  for (int h = 0; h < p.shape.num_kv_heads; ++h) ASSERT_EQ(buf.counts[h], 0);
  std::vector<float> out(p.q.size(), NAN);
  std::vector<float> lse(static_cast<size_t>(lq) * p.shape.num_q_heads, NAN);
  sparse_attention_ref(p.shape, &view, p.q.data(), buf.sel, out.data(), lse.data());
  EXPECT_LE(max_abs_diff(p, out, [](int) { return std::vector<int>{}; }), 1e-5);
  for (float x : lse) EXPECT_TRUE(std::isfinite(x));
}

INSTANTIATE_TEST_SUITE_P(DecodeAndPrefill, SparseAttention,
                         ::testing::Values(std::make_tuple(1, 1), std::make_tuple(4, 1), std::make_tuple(8, 1),
                                           std::make_tuple(1, 7), std::make_tuple(4, 5), std::make_tuple(3, 1),
                                           std::make_tuple(6, 4), std::make_tuple(7, 1)));

// The reported LSE is the log of the softmax denominator over exactly the attended logits.
TEST(SparseAttentionLse, MatchesBruteForce) {
  const Problem p = make_problem(2, 3, 2, 123);
  SelectionBuffers buf(p.shape.num_kv_heads, p.layer.spec.num_clusters);
  const SequenceLayerF32 view = p.layer.view();
  select_clusters_ref(p.shape, &view, p.q.data(), {-1.f, 0.f, false}, buf.sel);
  std::vector<float> out(p.q.size()), lse(static_cast<size_t>(3) * p.shape.num_q_heads);
  sparse_attention_ref(p.shape, &view, p.q.data(), buf.sel, out.data(), lse.data());
  const int d = p.shape.head_dim, lq = 3;
  for (int t = 0; t < lq; ++t)
    for (int hq = 0; hq < p.shape.num_q_heads; ++hq) {
      const int h = hq / p.shape.group();
      const float* qv = &p.q[(static_cast<size_t>(t) * p.shape.num_q_heads + hq) * d];
      double den = 0;
      auto add = [&](const float* key) {
        double acc = 0;
        for (int x = 0; x < d; ++x) acc += static_cast<double>(qv[x]) * key[x];
        den += std::exp(acc / std::sqrt(static_cast<double>(d)));
      };
      for (int r = 0; r < p.layer.spec.num_rows; ++r) add(&p.layer.keys[(static_cast<size_t>(h) * p.layer.spec.num_rows + r) * d]);
      for (int i = 0; i <= p.layer.spec.dense_len - lq + t; ++i)
        add(&p.layer.dense_keys[(static_cast<size_t>(h) * p.layer.spec.dense_len + i) * d]);
      EXPECT_NEAR(lse[t * p.shape.num_q_heads + hq], std::log(den), 1e-4);
    }
}

// The pruned-cluster estimate attends each pruned cluster as one key (centroid, logit + log n, mean
// value): when a cluster's keys are all equal that is exact, so attention with the estimate over a
// partial selection equals dense attention over every row.
TEST(SparseAttentionEstimate, ExactForClustersOfRepeatedKeys) {
  for (const int lq : {1, 4}) {
    Problem p = make_problem(3, lq, 4, 300 + lq);
    SyntheticLayer& L = p.layer;
    const int d = L.spec.head_dim, k = L.spec.num_clusters, n = L.spec.num_rows;
    for (int h = 0; h < L.spec.num_kv_heads; ++h)
      for (int j = 0; j < k; ++j)
        for (int r = L.offsets[h * (k + 1) + j]; r < L.offsets[h * (k + 1) + j + 1]; ++r)
          for (int x = 0; x < d; ++x)
            L.keys[(static_cast<size_t>(h) * n + r) * d + x] = L.keys[(static_cast<size_t>(h) * n + L.offsets[h * (k + 1) + j]) * d + x];
    L.recompute_centroids();
    L.add_lookup_data(7, 4);
    const SequenceLayerF32 view = L.view();
    SelectionBuffers buf(p.shape.num_kv_heads, k);
    std::vector<int32_t> estimate_ids(static_cast<size_t>(p.shape.num_kv_heads) * k), estimated(p.shape.num_kv_heads);
    buf.sel.estimate_ids = estimate_ids.data();
    buf.sel.estimated = estimated.data();
    buf.sel.estimate_capacity = k;
    select_clusters_ref(p.shape, &view, p.q.data(), {1.5f / n, 0.f, false}, buf.sel);
    for (int h = 0; h < p.shape.num_kv_heads; ++h) {
      ASSERT_GT(buf.counts[h], 0);
      ASSERT_GT(estimated[h], 0) << "the threshold must prune something";
    }
    std::vector<float> out(p.q.size(), NAN);
    sparse_attention_ref(p.shape, &view, p.q.data(), buf.sel, out.data(), nullptr);
    std::vector<int> all(n);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_LE(max_abs_diff(p, out, [&](int) { return all; }), 1e-5) << "lq " << lq;
    // Without the estimate the pruned clusters are missing: the test can fail.
    buf.sel.estimated = nullptr;
    sparse_attention_ref(p.shape, &view, p.q.data(), buf.sel, out.data(), nullptr);
    EXPECT_GT(max_abs_diff(p, out, [&](int) { return all; }), 1e-3) << "lq " << lq;
  }
}

}  // namespace
}  // namespace squeezeserve::kernels::testing
