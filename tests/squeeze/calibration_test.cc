#include "engine/squeeze/calibration.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/squeeze/scoring.h"
#include "engine/squeeze/sparse_attention.h"
#include "tests/squeeze/synthetic.h"

namespace squeezeserve::squeeze {
namespace {

constexpr int64_t kHkv = 2, kHq = 4, kD = 32, kS = 2100, kW = 100;

// Keys with structure (planted directions, varied norms) and queries from a fixed per-head
// distribution (a mean direction plus noise), so held-out queries come from the same distribution
// as the window queries.
struct Layer {
  at::Tensor keys, values;
  at::Tensor query_mean;  // [H_q, 1, D]
  double query_noise = 1;  // std of a query around the mean: larger = single queries more spread
};
Layer MakeLayer(uint64_t seed, double key_scale = 3.0) {
  Layer l;
  l.keys = synth::PlantedClusters(kHkv, kS, kD, 40, 0.6, key_scale, seed).points;
  l.values = synth::Randn({kHkv, kS, kD}, synth::Rng(seed + 100));
  l.query_mean = 1.5 * synth::Randn({kHq, 1, kD}, synth::Rng(seed + 200));
  return l;
}
at::Tensor DrawQueries(const Layer& l, int64_t T, uint64_t seed) {
  return l.query_mean + l.query_noise * synth::Randn({kHq, T, kD}, synth::Rng(seed));
}

IndexOptions Options(int levels) {
  IndexOptions o;
  o.levels = levels;
  o.observation_window = kW;
  return o;
}

TEST(Calibration, ThresholdsStayFiniteWithHugeLogits) {
  const Layer l = MakeLayer(1, /*key_scale=*/3000.0);  // logits ~1000× larger than usual
  auto idx = BuildLayerIndex(l.keys, l.values, Options(2));
  ASSERT_TRUE(idx.ok());
  const at::Tensor window_q = DrawQueries(l, kW, 2);
  // The authors' unshifted exp overflows here (their thresholds became NaN).
  const at::Tensor z = at::matmul(window_q.narrow(0, 0, 1), idx->centroids[0].t()) / std::sqrt(double{kD});
  ASSERT_TRUE(at::isinf(z.exp()).any().item<bool>()) << "test data must overflow an unshifted exp";

  Calibrator cal(CalibrationOptions{});
  ASSERT_TRUE(cal.AddLayer(*idx, window_q).ok());
  auto result = cal.Finish();
  ASSERT_TRUE(result.ok()) << result.status();
  for (const CalibratedLevel& level : result->levels_info) {
    EXPECT_TRUE(std::isfinite(level.prefill.global.one_level));
    EXPECT_TRUE(std::isfinite(level.prefill.global.coarse));
    EXPECT_TRUE(std::isfinite(level.prefill.global.fine));
    EXPECT_GT(level.prefill.kept_one_level, 0.0f) << "something must survive at " << level.sparsity;
  }
}

// Kept fraction, pooled over layers and heads, when each layer is queried with held-out queries
// (one selection for the W queries, as in prefill).
// per_token: one selection per held-out query (decode), the kept fraction averaged over them.
// per_head: [L, 3, H] per-head thresholds (CalibratedLevel::per_head), replacing `t` when defined.
double HeldOutKeptFraction(const std::vector<LayerIndex>& indexes, const std::vector<Layer>& layers,
                           const Thresholds& t, bool hierarchical, bool per_token = false,
                           const at::Tensor& per_head = {}) {
  double kept = 0, total = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    SelectionOptions so;
    so.thresholds = t;
    if (per_head.defined()) so.head_thresholds = per_head[static_cast<int64_t>(i)];
    so.hierarchical = hierarchical;
    so.per_token = per_token;
    const ClusterSelection sel = SelectClusters(indexes[i], DrawQueries(layers[i], kW, 1000 + i), so);
    kept += sel.kept_keys.sum().item<double>();  // [H_kv, T'] summed: T' selections
    total += static_cast<double>(sel.kept_keys.size(1) * indexes[i].num_heads() * indexes[i].num_clustered());
  }
  return kept / total;
}

// Three calibrated layers (2-level indexes) and the calibration result.
struct Calibrated {
  std::vector<Layer> layers;
  std::vector<LayerIndex> indexes;
  CalibrationResult result;
};
Calibrated CalibrateThreeLayers(const CalibrationOptions& options = {}, double query_noise = 1) {
  Calibrated c;
  Calibrator cal(options);
  for (uint64_t l = 0; l < 3; ++l) {
    c.layers.push_back(MakeLayer(10 + l));
    c.layers.back().query_noise = query_noise;
    auto idx = BuildLayerIndex(c.layers.back().keys, c.layers.back().values, Options(2));
    EXPECT_TRUE(idx.ok());
    EXPECT_TRUE(cal.AddLayer(*idx, DrawQueries(c.layers.back(), kW, 50 + l)).ok());
    c.indexes.push_back(*std::move(idx));
  }
  auto result = cal.Finish();
  EXPECT_TRUE(result.ok()) << result.status();
  if (result.ok()) c.result = *std::move(result);
  return c;
}

TEST(Calibration, HeldOutQueriesHitTheAskedSparsity) {
  const Calibrated c = CalibrateThreeLayers();
  const std::vector<LayerIndex>& indexes = c.indexes;
  const std::vector<Layer>& layers = c.layers;
  const CalibrationResult* result = &c.result;
  ASSERT_EQ(result->levels_info.size(), 4u);
  float previous = 2;
  for (const CalibratedLevel& level : result->levels_info) {
    const double target = 1.0 - level.sparsity;
    EXPECT_NEAR(level.prefill.kept_one_level, target, 0.03) << "calibration set, " << level.sparsity;
    EXPECT_NEAR(HeldOutKeptFraction(indexes, layers, level.prefill.global, false), target, 0.03)
        << "one level, sparsity " << level.sparsity;
    EXPECT_LE(level.prefill.kept_hierarchical, target + 1e-6);
    // Hierarchical: the coarse filter adds its own spread on held-out queries.
    EXPECT_NEAR(HeldOutKeptFraction(indexes, layers, level.prefill.global, true), target, 0.04)
        << "hierarchical, sparsity " << level.sparsity;
    EXPECT_LT(level.prefill.kept_one_level, previous);
    previous = level.prefill.kept_one_level;
  }
  const std::vector<SparsityLevelInfo> summary = result->Summary();
  ASSERT_EQ(summary.size(), 4u);
  EXPECT_EQ(summary[3].thresholds.size(), 2u);  // coarse, fine
  EXPECT_EQ(summary[3].decode_thresholds.size(), 2u);
}

// Decode selects per token: single held-out queries with the decode thresholds must keep
// 1 − sparsity of the keys on average, where the prefill thresholds (calibrated on the W-query
// mean) keep far more. Queries spread twice as wide as the mean's scale, as a real model's are.
TEST(Calibration, HeldOutSingleQueriesHitTheAskedSparsityWithDecodeThresholds) {
  const Calibrated c = CalibrateThreeLayers({}, /*query_noise=*/3);
  ASSERT_EQ(c.result.levels_info.size(), 4u);
  for (const CalibratedLevel& level : c.result.levels_info) {
    const double target = 1.0 - level.sparsity;
    EXPECT_NEAR(level.decode.kept_one_level, target, 0.03) << "calibration set, " << level.sparsity;
    EXPECT_LE(level.decode.kept_hierarchical, target + 1e-6);
    EXPECT_NEAR(HeldOutKeptFraction(c.indexes, c.layers, level.decode.global, false, /*per_token=*/true), target, 0.03)
        << "one level, sparsity " << level.sparsity;
    EXPECT_NEAR(HeldOutKeptFraction(c.indexes, c.layers, level.decode.global, true, /*per_token=*/true), target, 0.03)
        << "hierarchical, sparsity " << level.sparsity;
  }
  // The problem the decode set solves, on this data: per token, the prefill τ misses 90% (0.18).
  const CalibratedLevel& l90 = c.result.levels_info[3];
  const double prefill_tau_per_token = HeldOutKeptFraction(c.indexes, c.layers, l90.prefill.global, false, true);
  std::printf("90%%: per-token kept with prefill tau %.3f, with decode tau %.3f\n", prefill_tau_per_token,
              HeldOutKeptFraction(c.indexes, c.layers, l90.decode.global, false, true));
  EXPECT_GT(prefill_tau_per_token, 0.1 + 0.05);  // misses the ±3 points the decode τ meets
  const std::vector<SparsityLevelInfo> summary = c.result.Summary();
  EXPECT_EQ(summary[3].decode_thresholds[0], l90.decode.global.coarse);
  EXPECT_EQ(summary[3].decode_one_level_threshold, l90.decode.global.one_level);
}

// With a tiny score budget the decode calibration subsamples the window queries (one per layer,
// a different one in each layer) and must still land near the level on held-out queries.
TEST(Calibration, DecodeSubsamplingWithinBudgetStaysNearTheLevel) {
  CalibrationOptions o;
  o.decode_scores_per_layer = 1;  // W' = 1 query per layer
  const Calibrated sub = CalibrateThreeLayers(o);
  const Calibrated full = CalibrateThreeLayers();
  ASSERT_EQ(sub.result.levels_info.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const CalibratedLevel& level = sub.result.levels_info[i];
    // Prefill thresholds do not depend on the decode budget.
    EXPECT_EQ(level.prefill.global.one_level, full.result.levels_info[i].prefill.global.one_level);
    EXPECT_NE(level.decode.global.one_level, full.result.levels_info[i].decode.global.one_level);
    // 3 queries in all: looser than the ±3 points of the full window.
    EXPECT_NEAR(HeldOutKeptFraction(sub.indexes, sub.layers, level.decode.global, false, true), 1.0 - level.sparsity, 0.08)
        << "sparsity " << level.sparsity;
  }
}

// Two layers with very different key scales: one global τ keeps most of one layer's keys and
// starves the other's heads. The per-head floor gives every head at least share × (1 − sparsity)
// of its keys and still keeps 1 − sparsity in total.
struct TwoScales {
  std::vector<Layer> layers;
  std::vector<LayerIndex> indexes;
  std::vector<at::Tensor> window_q;
};
TwoScales MakeTwoScales() {
  TwoScales t;
  for (uint64_t l = 0; l < 2; ++l) {
    t.layers.push_back(MakeLayer(20 + l, l == 0 ? 1.0 : 6.0));
    auto idx = BuildLayerIndex(t.layers.back().keys, t.layers.back().values, Options(2));
    EXPECT_TRUE(idx.ok());
    t.indexes.push_back(*std::move(idx));
    t.window_q.push_back(DrawQueries(t.layers[l], kW, 60 + l));
  }
  return t;
}
CalibratedLevel CalibrateAt80(const TwoScales& t, float share) {
  CalibrationOptions o;
  o.sparsity_levels = {0.8f};
  o.head_floor_share = share;
  Calibrator cal(o);
  for (size_t l = 0; l < 2; ++l) EXPECT_TRUE(cal.AddLayer(t.indexes[l], t.window_q[l]).ok());
  auto result = cal.Finish();
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? result->levels_info[0] : CalibratedLevel{};
}
// Kept fraction of each (layer, KV head) on the calibration (window) queries, one prefill selection.
std::vector<double> KeptPerHead(const TwoScales& t, const at::Tensor& per_head, bool hierarchical) {
  std::vector<double> kept;
  for (size_t l = 0; l < 2; ++l) {
    SelectionOptions so;
    so.hierarchical = hierarchical;
    so.head_thresholds = per_head[static_cast<int64_t>(l)];
    const ClusterSelection sel = SelectClusters(t.indexes[l], t.window_q[l], so);
    for (int64_t h = 0; h < kHkv; ++h) kept.push_back(sel.kept_keys[h][0].item<double>() / (kS - kW));
  }
  return kept;
}

TEST(Calibration, HeadFloorKeepsEveryHeadItsShareAndTheTotalAtTheLevel) {
  const TwoScales t = MakeTwoScales();
  const CalibratedLevel global_only = CalibrateAt80(t, 0.0f);
  const std::vector<double> starved = KeptPerHead(t, global_only.prefill.per_head, false);
  EXPECT_LT(*std::min_element(starved.begin(), starved.end()), 0.5 * 0.2)
      << "test data must starve a head under one global τ";
  for (float share : {0.5f, 1.0f}) {
    const CalibratedLevel level = CalibrateAt80(t, share);
    for (bool hierarchical : {false, true}) {
      const std::vector<double> kept = KeptPerHead(t, level.prefill.per_head, hierarchical);
      double total = 0;
      for (size_t i = 0; i < kept.size(); ++i) {
        EXPECT_GE(kept[i], share * 0.2 - 0.02) << "share " << share << ", head " << i << ", hier " << hierarchical;
        total += kept[i] / static_cast<double>(kept.size());
      }
      EXPECT_NEAR(total, 0.2, 0.03) << "share " << share << ", hier " << hierarchical;
      EXPECT_NEAR(hierarchical ? level.prefill.kept_hierarchical : level.prefill.kept_one_level, total, 0.02);
    }
    // Per-head thresholds never exceed the global one, and the floor raises the global one (at
    // share 0.5 it may add too few keys to move the quantile; at 1 it must).
    EXPECT_TRUE((level.prefill.per_head.select(1, kOneLevel) <= level.prefill.global.one_level).all().item<bool>());
    EXPECT_GE(level.prefill.global.one_level, global_only.prefill.global.one_level);
    if (share == 1.0f) EXPECT_GT(level.prefill.global.one_level, global_only.prefill.global.one_level);
    // Decode: single held-out queries keep 1 − sparsity on average with the decode set.
    EXPECT_NEAR(HeldOutKeptFraction(t.indexes, t.layers, {}, false, true, level.decode.per_head), 0.2, 0.04);
  }
}

// share = 0 is the authors' rule: every head's threshold is the global one.
TEST(Calibration, ZeroHeadFloorIsOneGlobalThreshold) {
  const TwoScales t = MakeTwoScales();
  const CalibratedLevel level = CalibrateAt80(t, 0.0f);
  ASSERT_EQ(level.prefill.per_head.sizes(), (std::vector<int64_t>{2, 3, kHkv}));
  EXPECT_TRUE((level.prefill.per_head.select(1, kOneLevel) == level.prefill.global.one_level).all().item<bool>());
  EXPECT_TRUE((level.prefill.per_head.select(1, kCoarse) == level.prefill.global.coarse).all().item<bool>());
  EXPECT_TRUE((level.decode.per_head.select(1, kFine) == level.decode.global.fine).all().item<bool>());
}

TEST(Calibration, RejectsBadInput) {
  Calibrator empty(CalibrationOptions{});
  EXPECT_EQ(empty.Finish().status().code(), absl::StatusCode::kFailedPrecondition);
  CalibrationOptions o;
  o.sparsity_levels = {1.0f};
  Calibrator cal(o);
  const Layer l = MakeLayer(30);
  auto idx = BuildLayerIndex(l.keys, l.values, Options(1));
  ASSERT_TRUE(idx.ok());
  ASSERT_TRUE(cal.AddLayer(*idx, DrawQueries(l, kW, 1)).ok());
  EXPECT_EQ(cal.Finish().status().code(), absl::StatusCode::kInvalidArgument);
  CalibrationOptions bad_floor;
  bad_floor.head_floor_share = 1.5f;
  Calibrator floor_cal(bad_floor);
  ASSERT_TRUE(floor_cal.AddLayer(*idx, DrawQueries(l, kW, 1)).ok());
  EXPECT_EQ(floor_cal.Finish().status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace squeezeserve::squeeze
