// Squeezed bundles on the CPU: the union of the members' selections (bundle_selections_ref) and
// the masked attention over it (sparse_attention_ref with Selection::member_masks), which must give
// each member exactly the attention over its own selection.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

#include "kernels/attention_ref.h"
#include "kernels/bundle_selection_ref.h"
#include "kernels/synthetic_layer.h"
#include "tests/kernels/brute_force.h"

namespace squeezeserve::kernels::testing {
namespace {

// Each (member, KV head) keeps a random share of the K clusters (some none, some all), ascending.
SelectionBuffers random_selections(int members, int hkv, const std::vector<int32_t>& offsets, int K, uint64_t seed) {
  SelectionBuffers buf(members * hkv, K);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (int b = 0; b < members; ++b)
    for (int h = 0; h < hkv; ++h) {
      const int bh = b * hkv + h;
      const float keep = bh % 5 == 0 ? 0.f : bh % 7 == 3 ? 1.f : u(rng) * 0.6f;
      int count = 0, rows = 0;
      for (int c = 0; c < K; ++c) {
        if (u(rng) >= keep) continue;
        buf.ids[static_cast<size_t>(bh) * K + count] = c;
        buf.row_start[static_cast<size_t>(bh) * K + count] = rows;
        rows += offsets[static_cast<size_t>(h) * (K + 1) + c + 1] - offsets[static_cast<size_t>(h) * (K + 1) + c];
        ++count;
      }
      buf.counts[bh] = count;
      buf.rows[bh] = rows;
    }
  return buf;
}

// Estimate lists for `sel` (each cluster a (member, head) did not select, kept with probability
// 0.7, as the estimate floor drops some; member 1's none at all), ascending, into sel.sel's estimate
// arrays (kept alive in `ids` and `counts`).
void random_estimates(SelectionBuffers& sel, int members, int hkv, int K, uint64_t seed, std::vector<int32_t>* ids,
                      std::vector<int32_t>* counts) {
  ids->assign(static_cast<size_t>(members) * hkv * K, -1);
  counts->assign(static_cast<size_t>(members) * hkv, 0);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (int bh = 0; bh < members * hkv; ++bh) {
    if (bh / hkv == 1) continue;
    const std::vector<int> own = sel.selected(bh);
    for (int c = 0; c < K; ++c) {
      if (std::find(own.begin(), own.end(), c) != own.end() || u(rng) >= 0.7f) continue;
      (*ids)[static_cast<size_t>(bh) * K + (*counts)[bh]++] = c;
    }
  }
  sel.sel.estimate_ids = ids->data();
  sel.sel.estimated = counts->data();
  sel.sel.estimate_capacity = K;
}

struct UnionOut {
  SelectionBuffers buf;
  std::vector<uint32_t> masks, estimate_masks;
  std::vector<float> estimate_log_sizes;
  std::vector<int32_t> estimate_ids, estimated;
  UnionOut(int heads, int capacity)
      : buf(heads, capacity), masks(static_cast<size_t>(heads) * capacity, 0xdeadbeefu),
        estimate_masks(masks.size(), 0xdeadbeefu), estimate_log_sizes(masks.size(), NAN),
        estimate_ids(masks.size(), -1), estimated(heads, -1) {
    buf.sel.estimate_ids = estimate_ids.data();
    buf.sel.estimated = estimated.data();
    buf.sel.estimate_capacity = capacity;
  }
};

TEST(BundleSelectionRef, UnionHoldsEveryMembersClustersWithTheirMasks) {
  SyntheticSpec spec;
  spec.num_kv_heads = 3;
  spec.num_rows = 301;
  spec.num_clusters = 37;
  spec.empty_fraction = 0.2f;
  const SyntheticLayer layer = make_synthetic_layer(spec);
  const int K = spec.num_clusters, hkv = spec.num_kv_heads, members = 7;
  SelectionBuffers sel = random_selections(members, hkv, layer.offsets, K, 5);
  std::vector<int32_t> est_ids, est_counts;
  random_estimates(sel, members, hkv, K, 6, &est_ids, &est_counts);
  // Two bundles: slots 0..3 of members 0..3 and 4, 5, 6 with an unused slot (-1) between.
  const std::vector<int32_t> slots = {0, 1, 2, 3, 4, -1, 5, 6};
  const BundleMembers bundles{slots.data(), 2, 4};
  const SequenceLayerF32 views[2] = {layer.view(), layer.view()};
  UnionOut out(2 * hkv, K);
  bundle_selections_ref(bundles, hkv, views, sel.sel, out.buf.sel, out.masks.data(), out.estimate_masks.data(),
                        out.estimate_log_sizes.data());
  for (int k = 0; k < 2; ++k)
    for (int h = 0; h < hkv; ++h) {
      const int kh = k * hkv + h;
      std::vector<std::pair<int, uint32_t>> want, want_estimate;  // (cluster, mask) by cluster
      for (int c = 0; c < K; ++c) {
        uint32_t mask = 0, estimate_mask = 0;
        for (int m = 0; m < 4; ++m) {
          const int b = slots[k * 4 + m];
          if (b < 0) continue;
          const std::vector<int> own = sel.selected(b * hkv + h);
          if (std::find(own.begin(), own.end(), c) != own.end()) mask |= 1u << m;
          const int32_t* est = &est_ids[static_cast<size_t>(b * hkv + h) * K];
          if (std::find(est, est + est_counts[b * hkv + h], c) != est + est_counts[b * hkv + h]) estimate_mask |= 1u << m;
        }
        if (mask != 0) want.emplace_back(c, mask);
        if (estimate_mask != 0) want_estimate.emplace_back(c, estimate_mask);
      }
      ASSERT_EQ(out.estimated[kh], static_cast<int>(want_estimate.size())) << "bundle " << k << " head " << h;
      const int32_t* off = &layer.offsets[static_cast<size_t>(h) * (K + 1)];
      for (size_t i = 0; i < want_estimate.size(); ++i) {
        const int c = want_estimate[i].first;
        EXPECT_EQ(out.estimate_ids[static_cast<size_t>(kh) * K + i], c);
        EXPECT_EQ(out.estimate_masks[static_cast<size_t>(kh) * K + i], want_estimate[i].second);
        EXPECT_FLOAT_EQ(out.estimate_log_sizes[static_cast<size_t>(kh) * K + i],
                        std::log(static_cast<float>(off[c + 1] - off[c])));
      }
      ASSERT_EQ(out.buf.counts[kh], static_cast<int>(want.size())) << "bundle " << k << " head " << h;
      int rows = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        const size_t at = static_cast<size_t>(kh) * K + i;
        EXPECT_EQ(out.buf.ids[at], want[i].first);
        EXPECT_EQ(out.masks[at], want[i].second);
        EXPECT_EQ(out.buf.row_start[at], rows);
        const int c = want[i].first;
        rows += layer.offsets[static_cast<size_t>(h) * (K + 1) + c + 1] - layer.offsets[static_cast<size_t>(h) * (K + 1) + c];
      }
      EXPECT_EQ(out.buf.rows[kh], rows);
    }
  // The estimate's union without its ln n is refused, as the kernel refuses it.
  EXPECT_THROW(bundle_selections_ref(bundles, hkv, views, sel.sel, out.buf.sel, out.masks.data(),
                                     out.estimate_masks.data(), nullptr),
               std::invalid_argument);
}

// A bundle of S members (group G each) as one sequence of group S x G over the union: each member's
// rows of the output, LSE, top keys and context LSE (TopKeys::context_lse) equal those of its own
// launch bit for bit (the same keys in the same order: the union skips the clusters without its
// bit). With the estimate in the bundle (Selection::estimate_masks), each member's estimated
// clusters too.
class BundledAttention : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(BundledAttention, EachMemberGetsExactlyItsOwnAttention) {
  const auto [group, members, estimate] = GetParam();
  SyntheticSpec spec;
  spec.num_kv_heads = 2;
  spec.head_dim = 64;
  spec.num_rows = 211;
  spec.num_clusters = 23;
  spec.empty_fraction = 0.15f;
  spec.dense_len = 9;
  spec.seed = 17 + group;
  SyntheticLayer layer = make_synthetic_layer(spec);
  layer.add_lookup_data(23, /*window=*/4);
  const int hkv = spec.num_kv_heads, K = spec.num_clusters, d = spec.head_dim;
  SelectionBuffers own = random_selections(members, hkv, layer.offsets, K, 29 + members);
  std::vector<int32_t> est_ids, est_counts;
  if (estimate) random_estimates(own, members, hkv, K, 41 + members, &est_ids, &est_counts);
  // Without the estimate in the bundle (each member's goes beside it): views without the lookup's values.
  SequenceLayerF32 plain = layer.view();
  if (!estimate) {
    plain.cluster_values = nullptr;
    plain.coarse_values = nullptr;
  }

  AttentionShape each;
  each.batch = members;
  each.num_kv_heads = hkv;
  each.num_q_heads = hkv * group;
  each.head_dim = d;
  const std::vector<float> q = random_normal(static_cast<int64_t>(members) * each.num_q_heads * d, 31);
  const std::vector<SequenceLayerF32> views(members, plain);
  const int rows = members * each.num_q_heads;
  std::vector<float> want(static_cast<size_t>(rows) * d), want_lse(rows), want_share(rows), want_ctx(rows);
  std::vector<int32_t> want_pos(rows);
  sparse_attention_ref(each, views.data(), q.data(), own.sel, want.data(), want_lse.data(),
                       TopKeys{want_pos.data(), want_share.data(), want_ctx.data()});

  std::vector<int32_t> slots(members);
  for (int m = 0; m < members; ++m) slots[m] = m;
  UnionOut un(hkv, K);
  bundle_selections_ref(BundleMembers{slots.data(), 1, members}, hkv, &plain, own.sel, un.buf.sel, un.masks.data(),
                        estimate ? un.estimate_masks.data() : nullptr,
                        estimate ? un.estimate_log_sizes.data() : nullptr);
  Selection bundled = un.buf.sel;
  bundled.member_masks = un.masks.data();
  bundled.member_group = group;
  if (estimate) {
    bundled.estimate_masks = un.estimate_masks.data();
    bundled.estimate_log_sizes = un.estimate_log_sizes.data();
  } else {
    bundled.estimate_ids = nullptr;
    bundled.estimated = nullptr;
  }
  AttentionShape shape = each;
  shape.batch = 1;
  shape.num_q_heads = hkv * members * group;
  // Bundle query row (h, slot m, j) is member m's row h * G + j.
  std::vector<float> bq(q.size());
  auto member_row = [&](int h, int m, int j) { return static_cast<size_t>(m) * each.num_q_heads + h * group + j; };
  auto bundle_row = [&](int h, int m, int j) { return static_cast<size_t>(h) * members * group + m * group + j; };
  for (int h = 0; h < hkv; ++h)
    for (int m = 0; m < members; ++m)
      for (int j = 0; j < group; ++j)
        std::copy_n(&q[member_row(h, m, j) * d], d, &bq[bundle_row(h, m, j) * d]);
  std::vector<float> got(q.size(), NAN), got_lse(rows, NAN), got_share(rows, NAN), got_ctx(rows, NAN);
  std::vector<int32_t> got_pos(rows, -7);
  sparse_attention_ref(shape, &plain, bq.data(), bundled, got.data(), got_lse.data(),
                       TopKeys{got_pos.data(), got_share.data(), got_ctx.data()});
  for (int h = 0; h < hkv; ++h)
    for (int m = 0; m < members; ++m)
      for (int j = 0; j < group; ++j) {
        const size_t w = member_row(h, m, j), g = bundle_row(h, m, j);
        for (int x = 0; x < d; ++x) ASSERT_EQ(got[g * d + x], want[w * d + x]) << "member " << m << " head " << h;
        EXPECT_EQ(got_lse[g], want_lse[w]);
        EXPECT_EQ(got_pos[g], want_pos[w]);
        EXPECT_EQ(got_share[g], want_share[w]);
        EXPECT_EQ(got_ctx[g], want_ctx[w]);
      }
}

INSTANTIATE_TEST_SUITE_P(GroupsAndMembers, BundledAttention,
                         ::testing::Values(std::make_tuple(1, 8, false), std::make_tuple(4, 8, false),
                                           std::make_tuple(3, 5, false), std::make_tuple(1, 32, false),
                                           std::make_tuple(1, 8, true), std::make_tuple(4, 4, true),
                                           std::make_tuple(3, 5, true), std::make_tuple(1, 32, true)));

}  // namespace
}  // namespace squeezeserve::kernels::testing
