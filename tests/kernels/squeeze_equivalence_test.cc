// The CPU references of kernels/ against the libtorch lookup of engine/squeeze (what the engine runs
// without the kernels, docs/index_layout.md): on one random layer, the selection with read-ahead's
// forced clusters, the pruned-cluster estimate, the attention output and LSE and read-ahead's top
// keys must agree, one-level and hierarchical, for a decode token and for a prefill block.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "engine/squeeze/index_builder.h"
#include "engine/squeeze/sparse_attention.h"
#include "engine/squeeze/read_ahead.h"
#include "kernels/attention_ref.h"
#include "kernels/read_ahead_ref.h"
#include "kernels/selection_ref.h"
#include "tests/kernels/brute_force.h"

namespace squeezeserve::kernels::testing {
namespace {

at::Tensor FloatTensor(const std::vector<float>& v, at::IntArrayRef shape) {
  return at::from_blob(const_cast<float*>(v.data()), shape, at::kFloat).clone();
}
at::Tensor IntTensor(const std::vector<int32_t>& v, at::IntArrayRef shape) {
  return at::from_blob(const_cast<int32_t*>(v.data()), shape, at::kInt).clone();
}
template <typename T>
std::vector<T> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

// A random layer as both implementations see it: the synthetic layer (kernels' view) and the same
// tensors as a squeeze::LayerIndex, with a random original position per sorted row.
struct Layer {
  SyntheticLayer synthetic;
  squeeze::LayerIndex index;
  int window = 0;
  std::vector<float> cluster_values, coarse_values;
  std::vector<int32_t> perm, cluster_of_position;
};

Layer MakeLayer(int levels, int window, int own_tokens, uint64_t seed) {
  SyntheticSpec spec;
  spec.num_kv_heads = 2;
  spec.head_dim = 32;
  spec.num_rows = 600;
  spec.num_clusters = 40;
  spec.num_coarse = levels == 2 ? 8 : 0;
  spec.dense_len = window + own_tokens;
  spec.empty_fraction = 0.1f;
  spec.seed = seed;
  Layer L{make_synthetic_layer(spec)};
  L.window = window;
  const int64_t H = spec.num_kv_heads, N = spec.num_rows, D = spec.head_dim, K = spec.num_clusters;
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (int h = 0; h < H; ++h) {
    std::vector<int32_t> p(N);
    std::iota(p.begin(), p.end(), 0);
    std::shuffle(p.begin(), p.end(), rng);
    L.perm.insert(L.perm.end(), p.begin(), p.end());
  }
  squeeze::LayerIndex& x = L.index;
  x.levels = levels;
  x.keys = FloatTensor(L.synthetic.keys, {H, N, D});
  x.values = FloatTensor(L.synthetic.values, {H, N, D});
  x.perm = IntTensor(L.perm, {H, N});
  x.centroids = FloatTensor(L.synthetic.centroids, {H, K, D});
  x.cluster_offsets = IntTensor(L.synthetic.offsets, {H, K + 1});
  if (levels == 2) {
    x.coarse_centroids = FloatTensor(L.synthetic.coarse_centroids, {H, spec.num_coarse, D});
    x.coarse_offsets = IntTensor(L.synthetic.coarse_offsets, {H, spec.num_coarse + 1});
  }
  const at::Tensor dense_k = FloatTensor(L.synthetic.dense_keys, {H, spec.dense_len, D});
  const at::Tensor dense_v = FloatTensor(L.synthetic.dense_values, {H, spec.dense_len, D});
  x.window_keys = dense_k.narrow(1, 0, window).contiguous();
  x.window_values = dense_v.narrow(1, 0, window).contiguous();
  squeeze::AddDerivedTensors(&x);
  L.cluster_values = ToVector<float>(x.cluster_values);
  if (levels == 2) L.coarse_values = ToVector<float>(x.coarse_values);
  L.cluster_of_position = ToVector<int32_t>(x.cluster_of_position);
  return L;
}

SequenceLayerF32 KernelView(const Layer& L) {
  SequenceLayerF32 v = L.synthetic.view();
  v.cluster_values = L.cluster_values.data();
  if (!L.coarse_values.empty()) v.coarse_values = L.coarse_values.data();
  v.cluster_of_position = L.cluster_of_position.data();
  v.perm = L.perm.data();
  v.window_len = L.window;
  return v;
}

struct KernelSelection {
  SelectionBuffers buf;
  std::vector<int32_t> estimate_ids, estimated;
  std::vector<float> estimate_logits;
  KernelSelection(int bh, int capacity, int estimate_capacity)
      : buf(bh, capacity), estimate_ids(static_cast<size_t>(bh) * estimate_capacity, -1), estimated(bh, -1),
        estimate_logits(static_cast<size_t>(bh) * estimate_capacity * kMaxGroup, NAN) {  // room for any stride
    buf.sel.estimate_ids = estimate_ids.data();
    buf.sel.estimated = estimated.data();
    buf.sel.estimate_capacity = estimate_capacity;
    buf.sel.estimate_logits = estimate_logits.data();
  }
  std::set<int> estimate(int bh) const {
    const int64_t at = static_cast<int64_t>(bh) * buf.sel.estimate_capacity;
    return {estimate_ids.begin() + at, estimate_ids.begin() + at + estimated[bh]};
  }
};

// Context positions, one per query head, whose clusters the score alone would prune (hierarchical:
// under a pruned coarse cluster, so that the parent's expansion is exercised too); one head reads
// nothing (-1) and one a window position (>= N, never a cluster).
std::vector<int32_t> ReadAheadPositions(const Layer& L, const std::vector<int>& pruned_fine_of_head, int group) {
  const int H = L.synthetic.spec.num_kv_heads, N = L.synthetic.spec.num_rows;
  std::vector<int32_t> positions(static_cast<size_t>(H) * group, -1);
  for (int h = 0; h < H; ++h) {
    const int j = pruned_fine_of_head[h];
    if (j < 0) continue;
    const int32_t* off = &L.synthetic.offsets[static_cast<size_t>(h) * (L.synthetic.spec.num_clusters + 1)];
    positions[h * group] = L.perm[static_cast<size_t>(h) * N + off[j]];  // the cluster's first sorted row
  }
  positions[1] = N + 1;  // head 1 of KV head 0: the window
  return positions;
}

// (levels, query_len, estimate floor)
class Equivalence : public ::testing::TestWithParam<std::tuple<int, int, float>> {};

TEST_P(Equivalence, SelectionEstimateAttentionAndTopKeysMatchTheLibtorchLookup) {
  const auto [levels, lq, floor] = GetParam();
  const int group = 3, window = 6;
  const Layer L = MakeLayer(levels, window, lq, 17 + 5 * levels + lq);
  const SyntheticSpec& spec = L.synthetic.spec;
  const int H = spec.num_kv_heads, Hq = H * group, D = spec.head_dim, K = spec.num_clusters, N = spec.num_rows;
  AttentionShape shape;
  shape.num_kv_heads = H;
  shape.num_q_heads = Hq;
  shape.head_dim = D;
  shape.query_len = lq;
  const std::vector<float> q = random_normal(int64_t{lq} * Hq * D, 91 + levels + lq);  // [Lq][Hq][D]
  const at::Tensor queries = FloatTensor(q, {lq, Hq, D}).transpose(0, 1).contiguous();  // [Hq, Lq, D]

  squeeze::SelectionOptions so;
  so.hierarchical = levels == 2;
  so.per_token = false;  // one selection for the block (prefill); for one token the same as per-token
  so.estimate_pruned = true;
  so.thresholds = {1.5f / N, 1.f / N, 1.5f / N};
  so.estimate_floor = floor;
  SelectionParams params{1.5f / N, 1.f / N, levels == 2};
  SelectionParams every_pruned = params;  // the estimate of every pruned cluster
  params.estimate_floor = floor;

  // First without read-ahead, to find clusters the score prunes.
  SequenceLayerF32 view = KernelView(L);
  const int capacity = K, estimate_capacity = K + spec.num_coarse;
  KernelSelection plain(H, capacity, estimate_capacity);
  select_clusters_ref(shape, &view, q.data(), every_pruned, plain.buf.sel);
  std::vector<int> pruned_fine(H, -1);
  for (int h = 0; h < H; ++h) {
    for (int id : plain.estimate(h)) {
      if (id < K) {
        pruned_fine[h] = id;  // hierarchical: prefer one under a pruned coarse cluster, found below
        if (levels == 1) break;
      } else {
        const int c = id - K;
        const int32_t* coff = &L.synthetic.coarse_offsets[static_cast<size_t>(h) * (spec.num_coarse + 1)];
        const int32_t* off = &L.synthetic.offsets[static_cast<size_t>(h) * (K + 1)];
        for (int j = coff[c]; j < coff[c + 1]; ++j)
          if (off[j + 1] > off[j]) pruned_fine[h] = j;
        break;
      }
    }
    ASSERT_GE(pruned_fine[h], 0) << "head " << h << ": nothing pruned; pick another threshold";
  }
  const std::vector<int32_t> positions = ReadAheadPositions(L, pruned_fine, group);
  view.read_ahead = positions.data();
  std::vector<int64_t> positions64(positions.begin(), positions.end());
  so.read_ahead = true;
  so.read_ahead_positions = at::tensor(positions64, at::kLong);

  // libtorch: the context attention (selected + estimate + window) with its top keys.
  const squeeze::ContextAttention ref = squeeze::SparseContextAttention(L.index, queries, so);

  // kernels' references, on the same selection contract.
  KernelSelection ks(H, capacity, estimate_capacity), all(H, capacity, estimate_capacity);
  select_clusters_ref(shape, &view, q.data(), params, ks.buf.sel);
  select_clusters_ref(shape, &view, q.data(), every_pruned, all.buf.sel);
  int dropped_by_floor = 0;  // pruned clusters the floor leaves out of the estimate (its list is a subset)
  for (int h = 0; h < H; ++h) {
    const std::set<int> with = ks.estimate(h), without = all.estimate(h);
    EXPECT_TRUE(std::includes(without.begin(), without.end(), with.begin(), with.end())) << "head " << h;
    dropped_by_floor += static_cast<int>(without.size() - with.size());
  }
  if (floor > 0) EXPECT_GT(dropped_by_floor, 0) << "the floor must leave some pruned cluster out";
  else EXPECT_EQ(dropped_by_floor, 0);
  const std::vector<int64_t> kept_keys = ToVector<int64_t>(ref.selection.kept_keys);
  const std::vector<int64_t> comparisons = ToVector<int64_t>(ref.selection.centroid_comparisons);
  for (int h = 0; h < H; ++h) {
    std::vector<int> expected;
    const at::Tensor selected = ref.selection.selected[h][0];
    for (int j = 0; j < K; ++j)
      if (selected[j].item<bool>()) expected.push_back(j);
    EXPECT_EQ(ks.buf.selected(h), expected) << "selected clusters, head " << h;
    EXPECT_GT(ks.buf.counts[h], 0);
    EXPECT_TRUE(std::find(expected.begin(), expected.end(), pruned_fine[h]) != expected.end())
        << "the read-ahead cluster of head " << h << " must be selected";
    EXPECT_EQ(ks.buf.rows[h], kept_keys[h]) << "head " << h;
    EXPECT_EQ(ks.buf.comparisons[h], comparisons[h]) << "head " << h;
    // The estimate: libtorch's pruned keys are the entries with a finite logit.
    std::set<int> pruned;
    const at::Tensor logits = ref.selection.pruned_logits[h][0][0];
    const at::Tensor ids = ref.selection.pruned_ids[h][0];
    for (int64_t p = 0; p < ids.size(0); ++p)
      if (std::isfinite(logits[p].item<float>())) pruned.insert(static_cast<int>(ids[p].item<int64_t>()));
    EXPECT_EQ(ks.estimate(h), pruned) << "estimated clusters, head " << h;
    EXPECT_FALSE(pruned.empty());
    // Decode: the estimate's logits per group member (ln n included) are libtorch's.
    for (int64_t p = 0; lq == 1 && p < ids.size(0); ++p) {
      if (!std::isfinite(logits[p].item<float>())) continue;
      const int id = static_cast<int>(ids[p].item<int64_t>());
      const int64_t at = std::find(ks.estimate_ids.begin() + h * estimate_capacity,
                                   ks.estimate_ids.begin() + h * estimate_capacity + ks.estimated[h], id) -
                         ks.estimate_ids.begin();
      for (int j = 0; j < group; ++j)
        EXPECT_NEAR(ks.estimate_logits[at * estimate_logit_stride(group) + j],
                    ref.selection.pruned_logits[h][0][j][p].item<float>(), 1e-4)
            << "head " << h << " cluster " << id << " member " << j;
    }
  }

  // Attention. The kernels' dense part is the window then the block's own tokens (causal); the
  // libtorch context attention is merged with the own tokens' causal attention, as the engine does.
  std::vector<float> out(q.size(), NAN), lse(static_cast<size_t>(lq) * Hq, NAN), share(lse.size(), NAN);
  std::vector<int32_t> position(lse.size(), -7);
  sparse_attention_ref(shape, &view, q.data(), ks.buf.sel, out.data(), lse.data(), {position.data(), share.data()});
  const at::Tensor dense_k = FloatTensor(L.synthetic.dense_keys, {H, spec.dense_len, D});
  const at::Tensor dense_v = FloatTensor(L.synthetic.dense_values, {H, spec.dense_len, D});
  const at::Tensor own_k = dense_k.narrow(1, window, lq).repeat_interleave(group, 0);  // [Hq, Lq, D]
  const at::Tensor own_v = dense_v.narrow(1, window, lq).repeat_interleave(group, 0);
  const at::Tensor causal = at::ones({lq, lq}, at::kBool).triu(1);
  const at::Tensor own_logits =
      (at::matmul(queries, own_k.transpose(1, 2)) / std::sqrt(static_cast<double>(D))).masked_fill(causal, -INFINITY);
  const at::Tensor own_lse = at::logsumexp(own_logits, {-1});
  const at::Tensor own_out = at::matmul(at::softmax(own_logits, -1), own_v);
  const auto [merged, merged_lse] = squeeze::MergeAttention(ref.out, ref.lse, own_out, own_lse);
  const std::vector<float> want_out = ToVector<float>(merged.transpose(0, 1).contiguous());  // [Lq][Hq][D]
  const std::vector<float> want_lse = ToVector<float>(merged_lse.transpose(0, 1).contiguous());
  const std::vector<int64_t> want_position = ToVector<int64_t>(ref.top_position.transpose(0, 1).contiguous());
  const std::vector<float> want_share = ToVector<float>(ref.top_share.transpose(0, 1).contiguous());
  double out_err = 0, lse_err = 0, share_err = 0;
  for (size_t i = 0; i < out.size(); ++i) out_err = std::max(out_err, double(std::abs(out[i] - want_out[i])));
  int located = 0;
  for (size_t i = 0; i < lse.size(); ++i) {
    lse_err = std::max(lse_err, double(std::abs(lse[i] - want_lse[i])));
    share_err = std::max(share_err, double(std::abs(share[i] - want_share[i])));
    EXPECT_EQ(position[i], want_position[i]) << "top position of query row " << i;
    located += position[i] >= 0;
  }
  EXPECT_LE(out_err, 1e-5);
  EXPECT_LE(lse_err, 1e-5);
  EXPECT_LE(share_err, 1e-5);
  EXPECT_EQ(located, static_cast<int>(lse.size())) << "every head has selected rows";
}

INSTANTIATE_TEST_SUITE_P(LevelsAndBlocks, Equivalence,
                         ::testing::Values(std::make_tuple(1, 1, 0.f), std::make_tuple(2, 1, 0.f),
                                           std::make_tuple(1, 5, 0.f), std::make_tuple(2, 4, 0.f),
                                           std::make_tuple(1, 1, 0.8f), std::make_tuple(2, 1, 0.8f),
                                           std::make_tuple(1, 5, 0.8f), std::make_tuple(2, 4, 0.8f)));

// Read-ahead's cursor (read_ahead_ref.h) against engine/squeeze's AdvanceReadAhead: two sequences
// (one without read-ahead), over a chain of decode tokens and prefill blocks whose top keys are
// random — confident or not, none (−1), at the share threshold exactly — so that cursors start,
// advance, age out and restart; each step writes every advanced value and leaves the current cursor
// as it was.
TEST(ReadAheadCursor, AdvancesAsTheLibtorchLookup) {
  const int Hq = 6;
  constexpr int32_t kPoison = 0x7eadbeef;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> pos(-1, 500);
  std::uniform_int_distribution<int> pick(0, 5);
  std::vector<int32_t> next(Hq, -1), age(Hq, 0);
  squeeze::ReadAheadCursor want;  // undefined: as a generation starts
  ReadAheadRule rule;
  rule.min_share = static_cast<float>(squeeze::kReadAheadShare);
  rule.max_age = static_cast<int32_t>(squeeze::kReadAheadMaxAge);
  int live = 0, dropped = 0;
  for (int step = 0; step < 60; ++step) {
    const int T = step % 7 == 3 ? 1 + pick(rng) * 3 : 1;  // mostly decode tokens, some prefill blocks
    // Top keys [batch = 2][T][Hq]: sequence 0 reads ahead, sequence 1 has no cursor (skipped).
    std::vector<int32_t> position(2 * T * Hq);
    std::vector<float> share(2 * T * Hq);
    for (size_t i = 0; i < position.size(); ++i) {
      position[i] = pos(rng);
      const int kind = pick(rng);
      share[i] = kind == 0 ? rule.min_share : kind < 3 ? 0.9f : 0.05f;
      if (step % 11 > 6) share[i] = 0.05f;  // stretches without a copying key: cursors age out
    }
    // Into a poisoned second cursor (as the engine double-buffers), twice: the current one is only
    // read, so running the step again (a CUDA graph's capture) gives the same advanced cursor.
    std::vector<int32_t> next_out(Hq, kPoison), age_out(Hq, kPoison);
    ReadAheadCursor cursors[2], advanced[2];
    cursors[0] = {next.data(), age.data()};
    advanced[0] = {next_out.data(), age_out.data()};
    TopKeys top{position.data(), share.data()};
    advance_read_ahead_ref(2, T, Hq, cursors, advanced, top, rule);
    const std::vector<int32_t> first_next = next_out, first_age = age_out;
    advance_read_ahead_ref(2, T, Hq, cursors, advanced, top, rule);
    ASSERT_EQ(next_out, first_next) << "step " << step;
    ASSERT_EQ(age_out, first_age) << "step " << step;
    next = next_out;  // the advanced cursor becomes current between steps
    age = age_out;

    // libtorch: [Hq, T] int64 / float of sequence 0.
    at::Tensor p = at::empty({Hq, T}, at::kLong), sh = at::empty({Hq, T}, at::kFloat);
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < Hq; ++h) {
        p[h][t] = position[t * Hq + h];
        sh[h][t] = share[t * Hq + h];
      }
    }
    want = squeeze::AdvanceReadAhead(want, p, sh);
    for (int h = 0; h < Hq; ++h) {
      ASSERT_EQ(next[h], want.next_position[h].item<int64_t>()) << "step " << step << " head " << h;
      ASSERT_EQ(age[h], want.age[h].item<int64_t>()) << "step " << step << " head " << h;
      live += next[h] >= 0;
      dropped += next[h] < 0 && want.age[h].item<int64_t>() > rule.max_age;
    }
  }
  EXPECT_GT(live, 20) << "cursors should be live often";
  EXPECT_GT(dropped, 5) << "and age out sometimes";
}

}  // namespace
}  // namespace squeezeserve::kernels::testing
