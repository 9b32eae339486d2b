// Every bad-input case of the service spine issue, at the validation layer: the status code and the
// field named in the message.
#include "server/validation.h"

#include <cmath>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "server/proto_convert.h"

namespace squeezeserve::server {
namespace {

namespace pb = ::squeezeserve::v1;

// The message names `field` (the contract clients and humans rely on).
void ExpectInvalid(const absl::Status& status, const std::string& field) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(std::string(status.message()).find(field), std::string::npos)
      << "message \"" << status.message() << "\" does not name " << field;
}

TEST(ValidateContextId, AcceptsTheDocumentedAlphabet) {
  EXPECT_TRUE(ValidateContextId("doc-1_v2.txt", "context_id").ok());
  EXPECT_TRUE(ValidateContextId(std::string(128, 'a'), "context_id").ok());
}

TEST(ValidateContextId, RejectsWithTheFieldNamed) {
  ExpectInvalid(ValidateContextId("", "context_id"), "context_id");
  ExpectInvalid(ValidateContextId(std::string(129, 'a'), "context_id"), "context_id");
  ExpectInvalid(ValidateContextId("../etc/passwd", "context_id"), "context_id");
  ExpectInvalid(ValidateContextId(".hidden", "context_id"), "context_id");
  ExpectInvalid(ValidateContextId("has space", "context_id"), "context_id");
  ExpectInvalid(ValidateContextId(std::string("nul\0byte", 8), "context_id"), "context_id");
}

TEST(ValidateTokenIds, NamesTheOffendingIndex) {
  std::vector<int32_t> ids = {0, 5, 999};
  EXPECT_TRUE(ValidateTokenIds(ids, 1000, "tokens.ids").ok());
  ids.push_back(1000);
  ExpectInvalid(ValidateTokenIds(ids, 1000, "tokens.ids"), "tokens.ids[3]");
  std::vector<int32_t> negative = {-1};
  ExpectInvalid(ValidateTokenIds(negative, 1000, "tokens.ids", 40), "tokens.ids[40]");
}

TEST(ToEngineSampling, ZeroMeansDefault) {
  ServerLimits limits;
  limits.default_max_new_tokens = 64;
  absl::StatusOr<SamplingOptions> sampling = ToEngineSampling(pb::SamplingParams(), limits);
  ASSERT_TRUE(sampling.ok()) << sampling.status();
  EXPECT_EQ(sampling->max_new_tokens, 64);
  EXPECT_EQ(sampling->temperature, 0);
  EXPECT_EQ(sampling->top_p, 1);
  EXPECT_EQ(sampling->top_k, 0);
}

TEST(ToEngineSampling, CopiesValidValues) {
  pb::SamplingParams proto;
  proto.set_max_new_tokens(4096);
  proto.set_temperature(0.8f);
  proto.set_top_p(0.9f);
  proto.set_top_k(40);
  proto.set_seed(7);
  proto.add_stop("\n\n");
  proto.set_ignore_eos(true);
  absl::StatusOr<SamplingOptions> sampling = ToEngineSampling(proto, ServerLimits());
  ASSERT_TRUE(sampling.ok()) << sampling.status();
  EXPECT_EQ(sampling->max_new_tokens, 4096);
  EXPECT_FLOAT_EQ(sampling->top_p, 0.9f);
  EXPECT_EQ(sampling->top_k, 40);
  EXPECT_EQ(sampling->seed, 7u);
  EXPECT_EQ(sampling->stop, std::vector<std::string>{"\n\n"});
  EXPECT_TRUE(sampling->ignore_eos);
}

TEST(ToEngineSampling, RejectsMaxNewTokensAboveTheLimit) {
  ServerLimits limits;
  limits.max_new_tokens = 4096;
  pb::SamplingParams proto;
  proto.set_max_new_tokens(4097);
  ExpectInvalid(ToEngineSampling(proto, limits).status(), "sampling.max_new_tokens");
  proto.set_max_new_tokens(std::numeric_limits<uint32_t>::max());
  ExpectInvalid(ToEngineSampling(proto, limits).status(), "sampling.max_new_tokens");
}

TEST(ToEngineSampling, RejectsNegativeOrNonFiniteTemperature) {
  for (float bad : {-0.1f, -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity(),
                    std::nanf("")}) {
    pb::SamplingParams proto;
    proto.set_temperature(bad);
    ExpectInvalid(ToEngineSampling(proto, ServerLimits()).status(), "sampling.temperature");
  }
}

TEST(ToEngineSampling, RejectsTopPOutsideZeroOne) {
  for (float bad : {1.5f, -0.2f, 1.0001f, std::nanf("")}) {
    pb::SamplingParams proto;
    proto.set_top_p(bad);
    absl::Status status = ToEngineSampling(proto, ServerLimits()).status();
    ExpectInvalid(status, "sampling.top_p");
    if (bad == 1.5f) EXPECT_EQ(std::string(status.message()), "sampling.top_p: must be in (0, 1], got 1.5");
  }
  pb::SamplingParams one;
  one.set_top_p(1);
  EXPECT_TRUE(ToEngineSampling(one, ServerLimits()).ok());
}

TEST(ToEngineSampling, RejectsEmptyStopStrings) {
  pb::SamplingParams proto;
  proto.add_stop("ok");
  proto.add_stop("");
  ExpectInvalid(ToEngineSampling(proto, ServerLimits()).status(), "sampling.stop[1]");
}

TEST(ValidatePromptLength, EmptyAndOversized) {
  ServerLimits limits;
  limits.max_query_tokens = 10;
  ExpectInvalid(ValidatePromptLength(0, limits), "prompt");
  ExpectInvalid(ValidatePromptLength(11, limits), "prompt");
  EXPECT_TRUE(ValidatePromptLength(10, limits).ok());
}

TEST(ToEngineIndexOptions, ZeroMeansDefault) {
  absl::StatusOr<IndexOptions> index = ToEngineIndexOptions(pb::IndexOptions());
  ASSERT_TRUE(index.ok()) << index.status();
  IndexOptions defaults;
  EXPECT_EQ(index->centroid_fraction, defaults.centroid_fraction);
  EXPECT_EQ(index->observation_window, defaults.observation_window);
  EXPECT_EQ(index->levels, defaults.levels);
  EXPECT_EQ(index->sparsity_levels, defaults.sparsity_levels);
  EXPECT_EQ(index->head_floor_share, defaults.head_floor_share);
  EXPECT_FALSE(index->dense_only);
}

TEST(ToEngineIndexOptions, HeadFloorShareNegativeMeansNoFloor) {
  pb::IndexOptions proto;
  proto.set_head_floor_share(-1.0f);
  EXPECT_EQ(ToEngineIndexOptions(proto)->head_floor_share, 0.0f);
  proto.set_head_floor_share(0.25f);
  EXPECT_EQ(ToEngineIndexOptions(proto)->head_floor_share, 0.25f);
  proto.set_head_floor_share(1.5f);
  ExpectInvalid(ToEngineIndexOptions(proto).status(), "index.head_floor_share");
  proto.set_head_floor_share(std::nanf(""));
  ExpectInvalid(ToEngineIndexOptions(proto).status(), "index.head_floor_share");
  // The summary's options go back over the wire with "no floor" as -1, not as 0 (= default).
  IndexOptions none;
  none.head_floor_share = 0;
  EXPECT_EQ(ToEngineIndexOptions(ToProto(none))->head_floor_share, 0.0f);
}

TEST(ToEngineIndexOptions, RejectsOutOfRangeFields) {
  pb::IndexOptions proto;
  proto.set_centroid_fraction(0.6f);
  ExpectInvalid(ToEngineIndexOptions(proto).status(), "index.centroid_fraction");
  proto = pb::IndexOptions();
  proto.set_centroid_fraction(-0.1f);
  ExpectInvalid(ToEngineIndexOptions(proto).status(), "index.centroid_fraction");
  proto = pb::IndexOptions();
  proto.set_levels(9);
  ExpectInvalid(ToEngineIndexOptions(proto).status(), "index.levels");
  proto = pb::IndexOptions();
  proto.set_coarse_centroid_fraction(0.2f);  // coarser level larger than the fine one (0.05)
  ExpectInvalid(ToEngineIndexOptions(proto).status(), "index.coarse_centroid_fraction");
  proto = pb::IndexOptions();
  proto.add_sparsity_levels(0.5f);
  proto.add_sparsity_levels(1.0f);
  ExpectInvalid(ToEngineIndexOptions(proto).status(), "index.sparsity_levels[1]");
  proto = pb::IndexOptions();
  proto.add_sparsity_levels(0.7f);
  proto.add_sparsity_levels(0.7f);
  ExpectInvalid(ToEngineIndexOptions(proto).status(), "index.sparsity_levels");
  proto = pb::IndexOptions();
  proto.set_max_iterations(100000);
  ExpectInvalid(ToEngineIndexOptions(proto).status(), "index.max_iterations");
}

TEST(ToEngineIndexOptions, SortsSparsityLevels) {
  pb::IndexOptions proto;
  proto.add_sparsity_levels(0.9f);
  proto.add_sparsity_levels(0.5f);
  absl::StatusOr<IndexOptions> index = ToEngineIndexOptions(proto);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->sparsity_levels, (std::vector<float>{0.5f, 0.9f}));
}

ContextSummary IndexedContext() {
  ContextSummary summary;
  summary.id = "doc";
  summary.has_index = true;
  summary.index.levels = 2;
  for (float level : {0.5f, 0.7f, 0.9f}) summary.sparsity_levels.push_back({level, {0.1f, 0.2f}, 1 - level});
  return summary;
}

TEST(ResolveAttention, UnspecifiedTakesTheServerDefault) {
  ServerDefaults defaults;  // squeezed, 0.9, the accurate lookup (pruned clusters estimated, read-ahead)
  absl::StatusOr<AttentionOptions> attention = ResolveAttention(pb::AttentionOptions(), IndexedContext(), defaults);
  ASSERT_TRUE(attention.ok()) << attention.status();
  EXPECT_EQ(attention->mode, AttentionMode::kSqueezed);
  EXPECT_FLOAT_EQ(attention->sparsity, 0.9f);
  EXPECT_TRUE(attention->estimate_pruned);
  EXPECT_TRUE(attention->read_ahead);
}

// --default_mode auto: squeezed from the engine's break-even context length, dense below it and
// where the index never pays (-1), with a note saying why; an explicit mode is never overridden.
TEST(ResolveAttention, AutoModeServesSqueezedWhereTheIndexPays) {
  ServerDefaults defaults;
  defaults.mode_auto = true;
  ContextSummary context = IndexedContext();
  context.num_tokens = 4096;
  std::string note;
  defaults.squeezed_min_context_tokens = 4096;
  EXPECT_EQ(ResolveAttention(pb::AttentionOptions(), context, defaults, &note)->mode, AttentionMode::kSqueezed);
  EXPECT_EQ(note, "");
  defaults.squeezed_min_context_tokens = 4097;
  EXPECT_EQ(ResolveAttention(pb::AttentionOptions(), context, defaults, &note)->mode, AttentionMode::kDense);
  EXPECT_NE(note.find("4097"), std::string::npos) << note;
  defaults.squeezed_min_context_tokens = -1;
  note.clear();
  EXPECT_EQ(ResolveAttention(pb::AttentionOptions(), context, defaults, &note)->mode, AttentionMode::kDense);
  EXPECT_NE(note.find("does not pay"), std::string::npos) << note;
  pb::AttentionOptions squeezed;
  squeezed.set_mode(pb::AttentionOptions::SQUEEZED);
  note.clear();
  EXPECT_EQ(ResolveAttention(squeezed, context, defaults, &note)->mode, AttentionMode::kSqueezed);
  EXPECT_EQ(note, "");
}

TEST(ResolveAttention, PrunedClustersFollowTheRequestOrTheServerDefault) {
  ServerDefaults defaults;
  EXPECT_TRUE(ResolveAttention(pb::AttentionOptions(), IndexedContext(), defaults)->estimate_pruned);
  defaults.estimate_pruned = false;
  EXPECT_FALSE(ResolveAttention(pb::AttentionOptions(), IndexedContext(), defaults)->estimate_pruned);
  pb::AttentionOptions proto;
  proto.set_pruned(pb::AttentionOptions::ESTIMATED);
  EXPECT_TRUE(ResolveAttention(proto, IndexedContext(), defaults)->estimate_pruned);
  proto.set_pruned(pb::AttentionOptions::DROPPED);
  EXPECT_FALSE(ResolveAttention(proto, IndexedContext(), ServerDefaults())->estimate_pruned);
  proto.set_pruned(static_cast<pb::AttentionOptions::Pruned>(7));
  ExpectInvalid(ResolveAttention(proto, IndexedContext(), defaults).status(), "attention.pruned");
  proto.set_pruned(pb::AttentionOptions::ESTIMATED);  // dense: nothing is pruned
  proto.set_mode(pb::AttentionOptions::DENSE);
  EXPECT_FALSE(ResolveAttention(proto, IndexedContext(), defaults)->estimate_pruned);
}

TEST(ResolveAttention, TheEstimateFloorIsTheServersWhereClustersAreEstimated) {
  ServerDefaults defaults;
  EXPECT_EQ(ResolveAttention(pb::AttentionOptions(), IndexedContext(), defaults)->estimate_floor, 0.0625f);
  defaults.estimate_floor = 0.25f;
  EXPECT_EQ(ResolveAttention(pb::AttentionOptions(), IndexedContext(), defaults)->estimate_floor, 0.25f);
  pb::AttentionOptions proto;
  proto.set_pruned(pb::AttentionOptions::DROPPED);  // nothing estimated: no floor
  EXPECT_EQ(ResolveAttention(proto, IndexedContext(), defaults)->estimate_floor, 0.f);
  proto.set_pruned(pb::AttentionOptions::ESTIMATED);
  proto.set_mode(pb::AttentionOptions::DENSE);
  EXPECT_EQ(ResolveAttention(proto, IndexedContext(), defaults)->estimate_floor, 0.f);
}

TEST(ResolveAttention, ReadAheadFollowsTheRequestOrTheServerDefault) {
  ServerDefaults defaults;
  EXPECT_TRUE(ResolveAttention(pb::AttentionOptions(), IndexedContext(), defaults)->read_ahead);
  defaults.read_ahead = false;
  EXPECT_FALSE(ResolveAttention(pb::AttentionOptions(), IndexedContext(), defaults)->read_ahead);
  pb::AttentionOptions proto;
  proto.set_read_ahead(pb::AttentionOptions::READ_AHEAD_ON);
  EXPECT_TRUE(ResolveAttention(proto, IndexedContext(), defaults)->read_ahead);
  proto.set_read_ahead(pb::AttentionOptions::READ_AHEAD_OFF);
  EXPECT_FALSE(ResolveAttention(proto, IndexedContext(), ServerDefaults())->read_ahead);
  proto.set_read_ahead(static_cast<pb::AttentionOptions::ReadAhead>(5));
  ExpectInvalid(ResolveAttention(proto, IndexedContext(), defaults).status(), "attention.read_ahead");
  proto.set_read_ahead(pb::AttentionOptions::READ_AHEAD_ON);  // dense reads every key anyway
  proto.set_mode(pb::AttentionOptions::DENSE);
  EXPECT_FALSE(ResolveAttention(proto, IndexedContext(), defaults)->read_ahead);
}

TEST(ResolveAttention, DefaultSparsitySnapsToTheNearestCalibratedLevel) {
  ServerDefaults defaults;
  defaults.sparsity = 0.85f;
  ContextSummary context = IndexedContext();
  context.sparsity_levels.erase(context.sparsity_levels.begin() + 1);  // {0.5, 0.9}
  absl::StatusOr<AttentionOptions> attention = ResolveAttention(pb::AttentionOptions(), context, defaults);
  ASSERT_TRUE(attention.ok()) << attention.status();
  EXPECT_FLOAT_EQ(attention->sparsity, 0.9f);
}

TEST(ResolveAttention, SqueezedFallsBackToDenseWithoutAnIndexUnlessExplicit) {
  ContextSummary dense_only;
  dense_only.id = "plain";
  absl::StatusOr<AttentionOptions> attention =
      ResolveAttention(pb::AttentionOptions(), dense_only, ServerDefaults());
  ASSERT_TRUE(attention.ok()) << attention.status();
  EXPECT_EQ(attention->mode, AttentionMode::kDense);

  pb::AttentionOptions explicit_squeezed;
  explicit_squeezed.set_mode(pb::AttentionOptions::SQUEEZED);
  absl::Status status = ResolveAttention(explicit_squeezed, dense_only, ServerDefaults()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(std::string(status.message()).find("attention.mode"), std::string::npos);
}

TEST(ResolveAttention, RejectsAnUncalibratedSparsity) {
  pb::AttentionOptions proto;
  proto.set_mode(pb::AttentionOptions::SQUEEZED);
  proto.set_sparsity(0.8f);
  ExpectInvalid(ResolveAttention(proto, IndexedContext(), ServerDefaults()).status(), "attention.sparsity");
  proto.set_sparsity(1.5f);
  ExpectInvalid(ResolveAttention(proto, IndexedContext(), ServerDefaults()).status(), "attention.sparsity");
  proto.set_sparsity(0.9f);
  absl::StatusOr<AttentionOptions> attention = ResolveAttention(proto, IndexedContext(), ServerDefaults());
  ASSERT_TRUE(attention.ok()) << attention.status();
  EXPECT_FLOAT_EQ(attention->sparsity, 0.9f);
}

TEST(ResolveAttention, DenseIgnoresSparsityAndHierarchy) {
  pb::AttentionOptions proto;
  proto.set_mode(pb::AttentionOptions::DENSE);
  proto.set_sparsity(0.9f);
  proto.set_hierarchical(true);
  absl::StatusOr<AttentionOptions> attention = ResolveAttention(proto, IndexedContext(), ServerDefaults());
  ASSERT_TRUE(attention.ok()) << attention.status();
  EXPECT_EQ(attention->mode, AttentionMode::kDense);
  EXPECT_FALSE(attention->hierarchical);
}

// lookup_levels unset: two levels from --two_level_min_context_tokens on, where the index has them;
// asked for, never overridden; ONE_LEVEL with hierarchical = true is a contradiction.
TEST(ResolveAttention, LookupLevelsFollowTheContextLengthUnlessAskedFor) {
  ServerDefaults defaults;
  defaults.two_level_min_context_tokens = 262144;
  ContextSummary context = IndexedContext();
  context.num_tokens = 262144;
  EXPECT_TRUE(ResolveAttention(pb::AttentionOptions(), context, defaults)->hierarchical);
  context.num_tokens = 262143;
  EXPECT_FALSE(ResolveAttention(pb::AttentionOptions(), context, defaults)->hierarchical);
  pb::AttentionOptions two;
  two.set_lookup_levels(pb::AttentionOptions::TWO_LEVELS);
  EXPECT_TRUE(ResolveAttention(two, context, defaults)->hierarchical);
  context.num_tokens = 524288;
  pb::AttentionOptions one;
  one.set_lookup_levels(pb::AttentionOptions::ONE_LEVEL);
  EXPECT_FALSE(ResolveAttention(one, context, defaults)->hierarchical);
  defaults.two_level_min_context_tokens = -1;  // never by default
  EXPECT_FALSE(ResolveAttention(pb::AttentionOptions(), context, defaults)->hierarchical);
  defaults.two_level_min_context_tokens = 0;
  ContextSummary flat = context;
  flat.index.levels = 1;  // the rule never asks a flat index for two levels
  EXPECT_FALSE(ResolveAttention(pb::AttentionOptions(), flat, defaults)->hierarchical);
  ExpectInvalid(ResolveAttention(two, flat, defaults).status(), "attention.lookup_levels");
  one.set_hierarchical(true);
  ExpectInvalid(ResolveAttention(one, context, defaults).status(), "attention.lookup_levels");
  pb::AttentionOptions unknown;
  unknown.set_lookup_levels(static_cast<pb::AttentionOptions::LookupLevels>(7));
  ExpectInvalid(ResolveAttention(unknown, context, defaults).status(), "attention.lookup_levels");
  pb::AttentionOptions dense;  // dense never looks anything up
  dense.set_mode(pb::AttentionOptions::DENSE);
  EXPECT_FALSE(ResolveAttention(dense, context, defaults)->hierarchical);
}

TEST(ResolveAttention, HierarchicalNeedsTwoLevels) {
  ContextSummary flat = IndexedContext();
  flat.index.levels = 1;
  pb::AttentionOptions proto;
  proto.set_hierarchical(true);
  ExpectInvalid(ResolveAttention(proto, flat, ServerDefaults()).status(), "attention.hierarchical");
  EXPECT_TRUE(ResolveAttention(proto, IndexedContext(), ServerDefaults()).ok());
}

TEST(ResolveAttention, RejectsUnknownModes) {
  pb::AttentionOptions proto;
  proto.set_mode(static_cast<pb::AttentionOptions::Mode>(7));
  ExpectInvalid(ResolveAttention(proto, IndexedContext(), ServerDefaults()).status(), "attention.mode");
}

}  // namespace
}  // namespace squeezeserve::server
