// Model-level tests on tiny random checkpoints written by the test itself: attention merging,
// chunked prefill, ingest + generate vs one whole-sequence run, concurrent generations, bad inputs.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "engine/attention.h"
#include "engine/engine.h"
#include "engine/llama_model.h"
#include "engine/torch_attention.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"
#include "engine/sample_logits.h"
#include "engine/sampler.h"
#include "engine/stored_context.h"
#include "tests/engine/tiny_checkpoint.h"

namespace squeezeserve {
namespace {

using testing::MakeTempDir;
using testing::TinyModelSpec;
using testing::WriteTinyCheckpoint;

// ---------------------------------------------------------------------------------------------
// Attention parts and their log-sum-exp merge.

// Plain softmax attention with GQA and an explicit mask, as a reference.
at::Tensor NaiveAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t causal_offset) {
  const int64_t group = q.size(0) / k.size(0);
  const at::Tensor kr = k.repeat_interleave(group, 0), vr = v.repeat_interleave(group, 0);
  at::Tensor scores = at::matmul(q, kr.transpose(1, 2)) / std::sqrt(static_cast<double>(q.size(2)));
  if (causal_offset >= 0) {
    const at::Tensor qi = at::arange(q.size(1)).unsqueeze(1) + causal_offset;
    const at::Tensor kj = at::arange(k.size(1)).unsqueeze(0);
    scores.masked_fill_(kj > qi, -std::numeric_limits<float>::infinity());
  }
  return at::matmul(at::softmax(scores, -1), vr);
}

TEST(AttentionTest, BlockedCausalGqaMatchesNaive) {
  at::manual_seed(0);
  const at::Tensor q = at::randn({4, 5, 8}), k = at::randn({2, 9, 8}), v = at::randn({2, 9, 8});
  for (int64_t block : {1, 3, 4, 1024}) {
    AttentionPart causal = AttendWithLse(q, k, v, /*causal_offset=*/4, block);
    EXPECT_TRUE(at::allclose(causal.out, NaiveAttention(q, k, v, 4), 1e-5, 1e-5)) << block;
    AttentionPart full = AttendWithLse(q, k, v, /*causal_offset=*/-1, block);
    EXPECT_TRUE(at::allclose(full.out, NaiveAttention(q, k, v, -1), 1e-5, 1e-5)) << block;
    const at::Tensor expected_lse =
        at::logsumexp(at::matmul(q, k.repeat_interleave(2, 0).transpose(1, 2)) / std::sqrt(8.0), -1);
    EXPECT_TRUE(at::allclose(full.lse, expected_lse, 1e-5, 1e-5)) << block;
  }
}

// The batch's attention rows: a view where they lie end to end in one buffer (no copy), else a
// concatenation; the same values either way.
TEST(JoinRowsTest, ConsecutiveRowsOfOneBufferAreAViewElseACopy) {
  const at::Tensor base = at::arange(24, at::kFloat).view({6, 4});
  const at::Tensor joined = JoinRows({base.narrow(0, 0, 2), base.narrow(0, 2, 1), base.narrow(0, 3, 3)});
  EXPECT_EQ(joined.data_ptr(), base.data_ptr());
  EXPECT_TRUE(at::equal(joined, base));
  const at::Tensor tail = JoinRows({base.narrow(0, 4, 1), base.narrow(0, 5, 1)});
  EXPECT_EQ(tail.data_ptr(), base.narrow(0, 4, 1).data_ptr());
  EXPECT_TRUE(at::equal(tail, base.narrow(0, 4, 2)));
  // Out of order, a gap, or separate buffers: copies.
  for (const std::vector<at::Tensor>& parts :
       {std::vector<at::Tensor>{base.narrow(0, 2, 2), base.narrow(0, 0, 2)},
        std::vector<at::Tensor>{base.narrow(0, 0, 2), base.narrow(0, 3, 2)},
        std::vector<at::Tensor>{base.narrow(0, 0, 2), base.narrow(0, 2, 2).clone()}}) {
    const at::Tensor copy = JoinRows(parts);
    EXPECT_FALSE(copy.is_alias_of(base));
    EXPECT_TRUE(at::equal(copy, at::cat(parts, 0)));
  }
}

TEST(AttentionTest, MergingPartsEqualsAttendingTheUnion) {
  at::manual_seed(1);
  const at::Tensor q = at::randn({6, 3, 16}), k = at::randn({3, 20, 16}), v = at::randn({3, 20, 16});
  // Keys [0, 12) as an unmasked prefix, keys [12, 20) as the queries' own causal sequence (the 3
  // queries are its last 3 rows): equal to causal attention over all 20 with offset 17.
  AttentionPart prefix = AttendWithLse(q, k.narrow(1, 0, 12), v.narrow(1, 0, 12), -1);
  AttentionPart own = AttendWithLse(q, k.narrow(1, 12, 8), v.narrow(1, 12, 8), /*causal_offset=*/5);
  AttentionPart merged = MergeLse(prefix, own);
  EXPECT_TRUE(at::allclose(merged.out, NaiveAttention(q, k, v, 17), 1e-5, 1e-5));
  // An empty part is neutral.
  AttentionPart empty = AttendWithLse(q, k.narrow(1, 0, 0), v.narrow(1, 0, 0), -1);
  EXPECT_TRUE(at::all(at::isinf(empty.lse)).item<bool>());
  EXPECT_TRUE(at::allclose(MergeLse(empty, prefix).out, prefix.out, 1e-6, 1e-6));
}

// ---------------------------------------------------------------------------------------------
// Engine-level helpers.

std::unique_ptr<Engine> LoadEngine(const std::string& dir, int chunk = 512, int query_chunk = 0) {
  EngineOptions options;
  options.model_dir = dir;
  options.prefill_chunk_tokens = chunk;
  options.query_prefill_chunk_tokens = query_chunk;
  auto engine = Engine::Load(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

// These tests cover the dense path (tests/engine/squeezed_test.cc the Squeezed one).
AttentionOptions DenseAttention() {
  AttentionOptions attention;
  attention.mode = AttentionMode::kDense;
  return attention;
}

std::vector<int32_t> Tokens(int64_t count, int64_t vocab, int32_t salt) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < count; ++i) ids.push_back(static_cast<int32_t>((i * 37 + salt * 11 + 3) % vocab));
  return ids;
}

struct Output {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  FinishReason finish = FinishReason::kNone;
};

Output Generate(Engine& engine, std::shared_ptr<const Context> context, std::vector<int32_t> query,
                SamplingOptions sampling) {
  Output out;
  auto generation = engine.StartGeneration(std::move(context), std::move(query), sampling, DenseAttention());
  EXPECT_TRUE(generation.ok()) << generation.status();
  if (!generation.ok()) return out;
  while (out.finish == FinishReason::kNone) {
    auto step = (*generation)->Next();
    EXPECT_TRUE(step.ok()) << step.status();
    if (!step.ok()) break;
    out.tokens.push_back(step->token);
    out.logprobs.push_back(step->logprob);
    out.finish = step->finish;
  }
  return out;
}

std::shared_ptr<const Context> IngestOrDie(Engine& engine, std::vector<int32_t> tokens, int window = 100) {
  IndexOptions index;
  index.observation_window = window;
  index.dense_only = true;  // keeps the KV in token order for the comparisons below
  auto context = engine.Ingest("ctx", std::move(tokens), index, nullptr, nullptr);
  EXPECT_TRUE(context.ok()) << context.status();
  return context.ok() ? *context : nullptr;
}

SamplingOptions Greedy(int max_new_tokens) {
  SamplingOptions s;
  s.max_new_tokens = max_new_tokens;
  s.ignore_eos = true;
  return s;
}

void ExpectSameOutputs(const Output& a, const Output& b, float tolerance) {
  EXPECT_EQ(a.tokens, b.tokens);
  ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
  for (size_t i = 0; i < a.logprobs.size(); ++i) EXPECT_NEAR(a.logprobs[i], b.logprobs[i], tolerance) << i;
}

// The checkpoint in `dir` as a bare LlamaModel on the CPU in float32 (no engine around it).
absl::StatusOr<std::unique_ptr<LlamaModel>> LoadCpuModel(const std::string& dir) {
  std::ifstream in(dir + "/config.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto config = ParseModelConfig(text);
  EXPECT_TRUE(config.ok()) << config.status();
  auto weights = SafetensorsCheckpoint::Open(dir);
  EXPECT_TRUE(weights.ok()) << weights.status();
  auto model = LlamaModel::Create(*config, **weights, at::Device(at::kCPU), at::kFloat);
  EXPECT_TRUE(model.ok()) << model.status();
  return model;
}

// The same model run on context + query as one sequence, without the context/request split:
// one prefill of everything into a single cache, then greedy decode.
Output WholeSequenceGreedy(const std::string& dir, const std::vector<int32_t>& sequence, int steps) {
  c10::InferenceMode guard;
  auto model = LoadCpuModel(dir);
  TorchAttention backend;
  auto own = backend.NewDense(KvPrefix{}, (*model)->NewCache(static_cast<int64_t>(sequence.size()) + steps));
  Output out;
  ForwardArgs args;
  args.token_ids = sequence.data();
  args.num_tokens = static_cast<int64_t>(sequence.size());
  args.attention = own.get();
  args.query_prefill = true;
  at::Tensor logits = (*model)->Forward(args);
  for (int i = 0; i < steps; ++i) {
    const auto span = absl::MakeConstSpan(logits.data_ptr<float>(), logits.numel());
    int32_t token = static_cast<int32_t>(logits.argmax().item<int64_t>());
    out.tokens.push_back(token);
    out.logprobs.push_back(LogSoftmaxAt(span, token));
    ForwardArgs step;
    step.token_ids = &token;
    step.num_tokens = 1;
    step.start_position = own->length();
    step.attention = own.get();
    logits = (*model)->Forward(step);
  }
  return out;
}

// Teacher-forced log p(sequence[i] | sequence[0..i)) for i in [from, size): the sequence fed one
// token at a time through one cache, each step's last-token logits scoring the next token (no
// context/request split, no every-token logits).
std::vector<float> TeacherForcedLogprobs(const std::string& dir, const std::vector<int32_t>& sequence, size_t from) {
  c10::InferenceMode guard;
  auto model = LoadCpuModel(dir);
  TorchAttention backend;
  auto own = backend.NewDense(KvPrefix{}, (*model)->NewCache(static_cast<int64_t>(sequence.size())));
  std::vector<float> out;
  for (size_t i = 0; i + 1 < sequence.size(); ++i) {
    ForwardArgs step;
    step.token_ids = &sequence[i];
    step.num_tokens = 1;
    step.start_position = static_cast<int64_t>(i);
    step.attention = own.get();
    const at::Tensor logits = (*model)->Forward(step);
    if (i + 1 >= from) {
      out.push_back(LogSoftmaxAt(absl::MakeConstSpan(logits.data_ptr<float>(), logits.numel()), sequence[i + 1]));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Architectures: the equivalences must hold for each.

struct Variant {
  std::string name;
  TinyModelSpec spec;
};

std::vector<Variant> Variants() {
  std::vector<Variant> variants;
  variants.push_back({"llama_gqa", TinyModelSpec{}});
  TinyModelSpec mha;
  mha.num_kv_heads = 4;
  mha.attention_bias = true;
  variants.push_back({"llama_mha_bias", mha});
  TinyModelSpec llama3;
  llama3.tie_word_embeddings = true;
  llama3.head_dim = 16;  // explicit head_dim != hidden / heads
  llama3.rope_json = R"("rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64})";
  variants.push_back({"llama_gqa_llama3rope_tied", llama3});
  TinyModelSpec qwen;
  qwen.architecture = "Qwen2ForCausalLM";
  qwen.rope_json = R"("rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0})";
  variants.push_back({"qwen2_bias", qwen});
  TinyModelSpec mistral;
  mistral.architecture = "MistralForCausalLM";
  mistral.num_kv_heads = 1;
  mistral.bf16_weights = true;
  mistral.rope_json = R"("rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})";
  variants.push_back({"mistral_mqa_linear_bf16", mistral});
  return variants;
}

// Keeps gtest from dumping the struct's bytes into every test name.
void PrintTo(const Variant& variant, std::ostream* os) { *os << variant.name; }

class ModelVariantTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("tiny-" + GetParam().name);
    WriteTinyCheckpoint(dir_, GetParam().spec);
  }
  std::string dir_;
};

TEST_P(ModelVariantTest, ChunkedPrefillMatchesOneChunk) {
  auto small = LoadEngine(dir_, /*chunk=*/7);
  auto large = LoadEngine(dir_, /*chunk=*/512);
  ASSERT_TRUE(small && large);
  const auto context_tokens = Tokens(45, GetParam().spec.vocab_size, 1);
  auto a = std::dynamic_pointer_cast<const StoredContext>(IngestOrDie(*small, context_tokens, /*window=*/10));
  auto b = std::dynamic_pointer_cast<const StoredContext>(IngestOrDie(*large, context_tokens, /*window=*/10));
  ASSERT_TRUE(a && b);
  for (size_t l = 0; l < a->keys().size(); ++l) {
    EXPECT_TRUE(at::allclose(a->keys()[l], b->keys()[l], 1e-4, 1e-4)) << "layer " << l;
    EXPECT_TRUE(at::allclose(a->values()[l], b->values()[l], 1e-4, 1e-4)) << "layer " << l;
    ASSERT_EQ(a->window_queries()[l].size(1), 10);
    EXPECT_TRUE(at::allclose(a->window_queries()[l], b->window_queries()[l], 1e-4, 1e-4)) << "layer " << l;
  }
  const auto query = Tokens(6, GetParam().spec.vocab_size, 2);
  ExpectSameOutputs(Generate(*small, a, query, Greedy(8)), Generate(*large, b, query, Greedy(8)), 1e-4);
}

TEST_P(ModelVariantTest, IngestThenGenerateEqualsOneSequence) {
  auto engine = LoadEngine(dir_, /*chunk=*/5);
  ASSERT_TRUE(engine);
  const auto context_tokens = Tokens(23, GetParam().spec.vocab_size, 3);
  const auto query = Tokens(4, GetParam().spec.vocab_size, 4);
  auto context = IngestOrDie(*engine, context_tokens);
  ASSERT_TRUE(context);
  Output split = Generate(*engine, context, query, Greedy(10));
  EXPECT_EQ(split.finish, FinishReason::kLength);

  std::vector<int32_t> sequence = context_tokens;
  sequence.insert(sequence.end(), query.begin(), query.end());
  ExpectSameOutputs(split, WholeSequenceGreedy(dir_, sequence, 10), 1e-4);
}

TEST_P(ModelVariantTest, InterleavedGenerationsMatchSoloRuns) {
  auto engine = LoadEngine(dir_, 16);
  ASSERT_TRUE(engine);
  auto context = IngestOrDie(*engine, Tokens(30, GetParam().spec.vocab_size, 5));
  ASSERT_TRUE(context);
  const auto query_a = Tokens(3, GetParam().spec.vocab_size, 6);
  const auto query_b = Tokens(5, GetParam().spec.vocab_size, 7);
  SamplingOptions sampled = Greedy(7);
  sampled.temperature = 0.8f;
  sampled.top_p = 0.95f;
  sampled.seed = 99;
  const Output solo_a = Generate(*engine, context, query_a, Greedy(7));
  const Output solo_b = Generate(*engine, context, query_b, sampled);

  auto gen_a = engine->StartGeneration(context, query_a, Greedy(7), DenseAttention());
  auto gen_b = engine->StartGeneration(context, query_b, sampled, DenseAttention());
  ASSERT_TRUE(gen_a.ok() && gen_b.ok());
  Output a, b;
  for (int i = 0; i < 7; ++i) {
    for (auto [gen, out] : {std::pair{gen_a->get(), &a}, std::pair{gen_b->get(), &b}}) {
      auto step = gen->Next();
      ASSERT_TRUE(step.ok()) << step.status();
      out->tokens.push_back(step->token);
      out->logprobs.push_back(step->logprob);
    }
  }
  ExpectSameOutputs(a, solo_a, 1e-6);
  ExpectSameOutputs(b, solo_b, 1e-6);
  EXPECT_EQ((*gen_b)->stats().prompt_tokens, 5);
  EXPECT_EQ((*gen_b)->stats().cached_tokens, 30);
  EXPECT_EQ((*gen_b)->stats().completion_tokens, 7);
}

// SamplingOptions::prompt_logprobs: the query's teacher-forced log-probs equal a whole-sequence
// forward of context + query, for a dense-only context, an indexed one read densely (cluster-sorted
// KV) and squeezed with every cluster kept; one at a time and in a batch beside a plain generation;
// and asking for them changes nothing else.
TEST_P(ModelVariantTest, PromptLogprobsEqualWholeSequenceForward) {
  auto engine = LoadEngine(dir_, /*chunk=*/16);
  ASSERT_TRUE(engine);
  const int64_t vocab = GetParam().spec.vocab_size;
  const auto context_tokens = Tokens(40, vocab, 8);
  const auto query = Tokens(7, vocab, 9);
  std::vector<int32_t> sequence = context_tokens;
  sequence.insert(sequence.end(), query.begin(), query.end());
  const std::vector<float> reference = TeacherForcedLogprobs(dir_, sequence, context_tokens.size());
  ASSERT_EQ(reference.size(), query.size());

  auto dense_only = IngestOrDie(*engine, context_tokens, /*window=*/10);
  IndexOptions index;
  index.observation_window = 10;
  index.levels = 1;
  index.sparsity_levels = {0.0f, 0.9f};
  auto indexed = engine->Ingest("indexed", context_tokens, index, nullptr, nullptr);
  ASSERT_TRUE(indexed.ok()) << indexed.status();
  ASSERT_TRUE((*indexed)->summary().has_index);
  AttentionOptions keep_all;
  keep_all.mode = AttentionMode::kSqueezed;
  keep_all.sparsity = 0.0f;
  AttentionOptions pruned = keep_all;
  pruned.sparsity = 0.9f;

  SamplingOptions plain = Greedy(3);
  SamplingOptions scored = plain;
  scored.prompt_logprobs = true;
  const std::vector<std::pair<std::shared_ptr<const Context>, AttentionOptions>> cases = {
      {dense_only, DenseAttention()}, {*indexed, DenseAttention()}, {*indexed, keep_all}};
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto& [context, attention] = cases[c];
    auto with = engine->StartGeneration(context, query, scored, attention);
    auto without = engine->StartGeneration(context, query, plain, attention);
    ASSERT_TRUE(with.ok() && without.ok()) << with.status() << without.status();
    for (int i = 0; i < 3; ++i) {
      auto a = (*with)->Next();
      auto b = (*without)->Next();
      ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
      EXPECT_EQ(a->token, b->token) << "case " << c << " step " << i;
      EXPECT_NEAR(a->logprob, b->logprob, 1e-5) << "case " << c << " step " << i;
    }
    const std::vector<float>& got = (*with)->stats().prompt_logprobs;
    ASSERT_EQ(got.size(), query.size()) << "case " << c;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], reference[i], 1e-4) << "case " << c << " token " << i;
    EXPECT_TRUE((*without)->stats().prompt_logprobs.empty());
  }

  // Batched (one forward for both) beside a plain generation, and squeezed with pruning.
  auto with = engine->StartGeneration(dense_only, query, scored, DenseAttention());
  auto other = engine->StartGeneration(dense_only, Tokens(3, vocab, 10), plain, DenseAttention());
  auto sparse = engine->StartGeneration(*indexed, query, scored, pruned);
  ASSERT_TRUE(with.ok() && other.ok() && sparse.ok());
  std::vector<Generation*> batch = {with->get(), other->get(), sparse->get()};
  std::vector<absl::StatusOr<TokenStep>> steps;
  engine->StepBatch(batch, &steps);
  for (const auto& step : steps) ASSERT_TRUE(step.ok()) << step.status();
  const std::vector<float>& got = (*with)->stats().prompt_logprobs;
  ASSERT_EQ(got.size(), query.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], reference[i], 1e-4) << "batched token " << i;
  EXPECT_TRUE((*other)->stats().prompt_logprobs.empty());
  const std::vector<float>& squeezed = (*sparse)->stats().prompt_logprobs;
  ASSERT_EQ(squeezed.size(), query.size());
  EXPECT_NEAR(squeezed[0], reference[0], 1e-4);  // conditioned on the context alone: computed densely
  for (float lp : squeezed) EXPECT_TRUE(std::isfinite(lp) && lp <= 0) << lp;
}

// EngineOptions::query_prefill_chunk_tokens: a 7-token query fed 3 tokens per step takes two
// prefill_only steps (no token, no text) and samples its first token on the third, with the same
// tokens, log-probs and prompt log-probs as the whole query in one step; alone and in a batch.
TEST_P(ModelVariantTest, ChunkedQueryPrefillEqualsOneStep) {
  auto whole = LoadEngine(dir_, /*chunk=*/16);
  auto chunked = LoadEngine(dir_, /*chunk=*/16, /*query_chunk=*/3);
  ASSERT_TRUE(whole && chunked);
  const int64_t vocab = GetParam().spec.vocab_size;
  const auto context_tokens = Tokens(40, vocab, 8);
  const auto query = Tokens(7, vocab, 9);
  auto context_a = IngestOrDie(*whole, context_tokens, /*window=*/10);
  auto context_b = IngestOrDie(*chunked, context_tokens, /*window=*/10);
  SamplingOptions sampling = Greedy(4);
  sampling.prompt_logprobs = true;
  auto reference = whole->StartGeneration(context_a, query, sampling, DenseAttention());
  auto alone = chunked->StartGeneration(context_b, query, sampling, DenseAttention());
  auto batched = chunked->StartGeneration(context_b, query, sampling, DenseAttention());
  auto neighbour = chunked->StartGeneration(context_b, Tokens(2, vocab, 5), Greedy(8), DenseAttention());
  ASSERT_TRUE(reference.ok() && alone.ok() && batched.ok() && neighbour.ok());
  EXPECT_EQ((*alone)->next_step_tokens(), 3);
  for (int expected_chunk : {3, 1}) {  // after the first chunk: 3 more, then the last 1
    auto step = (*alone)->Next();
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_TRUE(step->prefill_only);
    EXPECT_EQ(step->token, -1);
    EXPECT_TRUE(step->text_delta.empty());
    EXPECT_EQ((*alone)->next_step_tokens(), expected_chunk);
  }
  // The batch: the neighbour decodes while the long query is fed chunk by chunk.
  std::vector<Generation*> batch = {batched->get(), neighbour->get()};
  std::vector<absl::StatusOr<TokenStep>> steps;
  for (int i = 0; i < 2; ++i) {
    chunked->StepBatch(batch, &steps);
    ASSERT_TRUE(steps[0].ok() && steps[1].ok()) << steps[0].status() << steps[1].status();
    EXPECT_TRUE(steps[0]->prefill_only);
    EXPECT_FALSE(steps[1]->prefill_only);
  }
  for (int i = 0; i < 4; ++i) {
    auto want = (*reference)->Next();
    auto got = (*alone)->Next();
    chunked->StepBatch(batch, &steps);
    ASSERT_TRUE(want.ok() && got.ok() && steps[0].ok()) << got.status() << steps[0].status();
    EXPECT_FALSE(got->prefill_only);
    EXPECT_EQ(got->token, want->token) << "step " << i;
    EXPECT_NEAR(got->logprob, want->logprob, 1e-5) << "step " << i;
    EXPECT_EQ(steps[0]->token, want->token) << "batched step " << i;
    EXPECT_NEAR(steps[0]->logprob, want->logprob, 1e-5) << "batched step " << i;
  }
  const std::vector<float>& expected = (*reference)->stats().prompt_logprobs;
  ASSERT_EQ(expected.size(), query.size());
  for (const auto* generation : {alone->get(), batched->get()}) {
    const std::vector<float>& got = generation->stats().prompt_logprobs;
    ASSERT_EQ(got.size(), query.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-4) << "token " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, ModelVariantTest, ::testing::ValuesIn(Variants()),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------------
// Engine behaviour on one model.

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("tiny-engine") + "/my-model";
    WriteTinyCheckpoint(dir_, spec_);
    engine_ = LoadEngine(dir_);
    ASSERT_TRUE(engine_);
  }
  TinyModelSpec spec_;
  std::string dir_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, ModelInfoAndFingerprint) {
  const ModelInfo& info = engine_->model_info();
  EXPECT_EQ(info.name, "my-model");
  EXPECT_EQ(info.architecture, "LlamaForCausalLM");
  EXPECT_EQ(info.num_kv_heads, 2);
  EXPECT_EQ(info.head_dim, 8);
  EXPECT_EQ(info.device, "cpu");
  EXPECT_EQ(info.dtype, "float32");
  EXPECT_FALSE(info.has_tokenizer);
  EXPECT_EQ(info.eos_token_id, 2);
  EXPECT_EQ(info.fingerprint.size(), 64u);
  EXPECT_EQ(LoadEngine(dir_)->model_info().fingerprint, info.fingerprint);  // stable

  TinyModelSpec other = spec_;
  other.max_position_embeddings = 300;  // config change → new fingerprint
  const std::string other_dir = MakeTempDir("tiny-other");
  WriteTinyCheckpoint(other_dir, other);
  EXPECT_NE(LoadEngine(other_dir)->model_info().fingerprint, info.fingerprint);

  auto encoded = engine_->Encode("hello", true);
  EXPECT_EQ(encoded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine_->Decode({1, 2, 3}), "");
}

TEST_F(EngineTest, IngestReportsProgressAndSummary) {
  EngineOptions options;
  options.model_dir = dir_;
  options.prefill_chunk_tokens = 10;
  auto engine = Engine::Load(options);
  ASSERT_TRUE(engine.ok());
  std::vector<IngestProgress> reports;
  IndexOptions index;
  index.dense_only = true;
  auto context = (*engine)->Ingest("doc-1", Tokens(25, spec_.vocab_size, 1), index,
                                   [&](const IngestProgress& p) { reports.push_back(p); }, [] { return false; });
  ASSERT_TRUE(context.ok()) << context.status();
  // One report per unit of work: 3 blocks of 10 tokens through the embedding, then through each of
  // the 3 passes of both layers.
  ASSERT_EQ(reports.size(), 3u * (1 + 3 * 2));
  for (size_t i = 0; i < reports.size(); ++i) {
    EXPECT_EQ(reports[i].stage, "prefill");
    EXPECT_EQ(reports[i].tokens_total, 25);
    if (i > 0) EXPECT_GT(reports[i].fraction, reports[i - 1].fraction);
  }
  EXPECT_EQ(reports.back().tokens_done, 25);
  EXPECT_FLOAT_EQ(reports.back().fraction, 1.0f);
  const ContextSummary& summary = (*context)->summary();
  EXPECT_EQ(summary.id, "doc-1");
  EXPECT_EQ(summary.num_tokens, 25);
  EXPECT_FALSE(summary.has_index);
  EXPECT_EQ(summary.kv_bytes, 2u * 2 /*layers*/ * 2 /*kv heads*/ * 25 * 8 /*head dim*/ * 4 /*fp32*/);
  EXPECT_EQ((*context)->tokens().size(), 25u);

  int polls = 0;
  auto cancelled = (*engine)->Ingest("doc-2", Tokens(25, spec_.vocab_size, 1), index, nullptr,
                                     [&] { return ++polls > 1; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
}

TEST_F(EngineTest, FinishesOnEosUnlessIgnored) {
  auto context = IngestOrDie(*engine_, Tokens(12, spec_.vocab_size, 2));
  const auto query = Tokens(3, spec_.vocab_size, 3);
  const Output free_run = Generate(*engine_, context, query, Greedy(6));
  ASSERT_EQ(free_run.tokens.size(), 6u);

  // Same weights, with the third greedy token declared as (a second) EOS.
  TinyModelSpec with_eos = spec_;
  with_eos.eos_token_ids = {free_run.tokens[2]};
  const std::string eos_dir = MakeTempDir("tiny-eos");
  WriteTinyCheckpoint(eos_dir, with_eos);
  auto eos_engine = LoadEngine(eos_dir);
  auto eos_context = IngestOrDie(*eos_engine, Tokens(12, spec_.vocab_size, 2));
  SamplingOptions stop_at_eos = Greedy(6);
  stop_at_eos.ignore_eos = false;
  const Output stopped = Generate(*eos_engine, eos_context, query, stop_at_eos);
  const size_t first_eos = std::find(free_run.tokens.begin(), free_run.tokens.end(), free_run.tokens[2]) -
                           free_run.tokens.begin();
  EXPECT_EQ(stopped.tokens.size(), first_eos + 1);
  EXPECT_EQ(stopped.finish, FinishReason::kEos);
  ExpectSameOutputs(Generate(*eos_engine, eos_context, query, Greedy(6)), free_run, 1e-6);

  auto generation = engine_->StartGeneration(context, query, Greedy(1), DenseAttention());
  ASSERT_TRUE(generation.ok());
  auto step = (*generation)->Next();
  ASSERT_TRUE(step.ok());
  EXPECT_EQ(step->finish, FinishReason::kLength);
  EXPECT_EQ((*generation)->Next().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineTest, BadInputsNameTheField) {
  auto context = IngestOrDie(*engine_, Tokens(20, spec_.vocab_size, 1));
  auto expect_invalid = [&](std::vector<int32_t> query, SamplingOptions sampling, const std::string& fragment) {
    auto generation = engine_->StartGeneration(context, std::move(query), sampling, DenseAttention());
    ASSERT_FALSE(generation.ok()) << fragment;
    EXPECT_EQ(generation.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(generation.status().message()).find(fragment), std::string::npos) << generation.status();
  };
  expect_invalid({1, 2, 3, 96}, Greedy(4), "prompt.tokens[3]: id 96 is outside the vocabulary [0, 96)");
  expect_invalid({-1}, Greedy(4), "prompt.tokens[0]");
  expect_invalid({}, Greedy(4), "prompt");
  expect_invalid({1}, Greedy(0), "sampling.max_new_tokens");
  expect_invalid({1, 2}, Greedy(235), "max_position_embeddings");
  SamplingOptions s = Greedy(4);
  s.temperature = -1;
  expect_invalid({1}, s, "sampling.temperature");
  s = Greedy(4);
  s.top_p = 0;
  expect_invalid({1}, s, "sampling.top_p");
  s.top_p = 1.5f;
  expect_invalid({1}, s, "sampling.top_p");
  s = Greedy(4);
  s.top_k = -2;
  expect_invalid({1}, s, "sampling.top_k");
  s = Greedy(4);
  s.stop = {"x"};
  expect_invalid({1}, s, "sampling.stop");  // no tokenizer
  EXPECT_TRUE(engine_->StartGeneration(context, {1, 2}, Greedy(234), DenseAttention()).ok());  // exactly fits

  auto bad_ingest = engine_->Ingest("x", {0, 500}, IndexOptions{}, nullptr, nullptr);
  EXPECT_EQ(bad_ingest.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad_ingest.status().message()).find("content.tokens[1]"), std::string::npos);
  EXPECT_EQ(engine_->Ingest("x", {}, IndexOptions{}, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->Ingest("x", Tokens(257, spec_.vocab_size, 1), IndexOptions{}, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EngineLoadTest, ClearErrors) {
  EngineOptions options;
  options.model_dir = MakeTempDir("empty-model");
  EXPECT_FALSE(Engine::Load(options).ok());  // no config.json

  TinyModelSpec spec;
  const std::string dir = MakeTempDir("load-errors");
  WriteTinyCheckpoint(dir, spec);
  options.model_dir = dir;
  options.device = "tpu";
  EXPECT_EQ(Engine::Load(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.device = "cuda:0";
  auto cuda = Engine::Load(options);
  if (!at::hasCUDA()) {
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  } else {
    ASSERT_TRUE(cuda.ok()) << cuda.status();
    EXPECT_EQ((*cuda)->model_info().dtype, "bfloat16");
  }

  options.device = "cpu";
  std::ofstream(dir + "/config.json") << R"({"architectures": ["GPTNeoXForCausalLM"]})";
  auto unsupported = Engine::Load(options);
  EXPECT_EQ(unsupported.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(unsupported.status().message()).find("GPTNeoXForCausalLM"), std::string::npos);

  std::ofstream(dir + "/tokenizer.model") << "not a sentencepiece model";
  TinyModelSpec fine;
  WriteTinyCheckpoint(dir, fine);
  EXPECT_EQ(Engine::Load(options).status().code(), absl::StatusCode::kInvalidArgument);
}


// ---------------------------------------------------------------------------------------------
// Sampling where the logits live (SampleLogits) against the host sampler on the same rows.

TEST(SampleLogitsTest, SameTokensAsTheHostSamplerOnEveryDevice) {
  c10::InferenceMode inference_mode;
  std::vector<at::Device> devices = {at::Device(at::kCPU)};
  if (at::hasCUDA()) devices.emplace_back(at::kCUDA, 0);
  const std::vector<SamplerOptions> options = {
      {0.f, 1.f, 0, 1},   {0.7f, 1.f, 0, 2}, {1.f, 0.9f, 0, 3},
      {0.5f, 1.f, 20, 4}, {5.f, 1.f, 1, 5},  {1.3f, 0.6f, 50, 6},
  };
  at::manual_seed(17);
  for (const int64_t vocab : {7, 1000, 128256}) {
    // bf16-valued logits, as the model's lm_head gives: ties are common; the row's maximum is tied
    // on purpose (the lower id must win).
    at::Tensor row = (at::randn({vocab}) * 3).to(at::kBFloat16).to(at::kFloat);
    const float top = row.max().item<float>() + 1.f;
    row[vocab / 2] = top;
    row[vocab - 1] = top;
    const std::vector<float> host(row.data_ptr<float>(), row.data_ptr<float>() + vocab);
    for (const at::Device& device : devices) {
      const at::Tensor on_device = row.to(device);
      for (const SamplerOptions& o : options) {
        Sampler reference(o), reduced(o);
        for (int draw = 0; draw < 20; ++draw) {
          const SampledToken want = reference.Sample(host);
          const SampledToken got = SampleLogits(reduced, on_device);
          ASSERT_EQ(got.token, want.token) << "vocab " << vocab << " on " << device << ", temperature "
                                           << o.temperature << " top_p " << o.top_p << " top_k " << o.top_k
                                           << ", draw " << draw;
          EXPECT_NEAR(got.logprob, want.logprob, 1e-5);
        }
        if (reference.greedy()) EXPECT_EQ(reference.Sample(host).token, vocab / 2);  // the first maximum
      }
    }
  }
}

TEST(SampleLogitsTest, GreedyRowsOfABatchInOneReduction) {
  c10::InferenceMode inference_mode;
  std::vector<at::Device> devices = {at::Device(at::kCPU)};
  if (at::hasCUDA()) devices.emplace_back(at::kCUDA, 0);
  at::manual_seed(5);
  const at::Tensor batch = (at::randn({3, 50000}) * 2).to(at::kBFloat16).to(at::kFloat);
  for (const at::Device& device : devices) {
    // Rows of one tensor and a row of its own, as the graphs and the eager batch hand them over.
    const at::Tensor on_device = batch.to(device);
    const std::vector<SampledToken> got =
        SampleGreedyRows({on_device[0], on_device[1], on_device[2].clone()});
    ASSERT_EQ(got.size(), 3u);
    for (int64_t r = 0; r < 3; ++r) {
      const at::Tensor row = batch[r].contiguous();
      Sampler greedy(SamplerOptions{});
      const SampledToken want = greedy.Sample(absl::MakeConstSpan(row.data_ptr<float>(), row.numel()));
      EXPECT_EQ(got[r].token, want.token) << "row " << r << " on " << device;
      EXPECT_NEAR(got[r].logprob, want.logprob, 1e-5);
    }
  }
}

// The decode graph's split of SampleGreedyRows: the reduction on the device, the tokens on the host.
TEST(SampleLogitsTest, GreedyRowsInTwoHalvesAsInOne) {
  c10::InferenceMode inference_mode;
  std::vector<at::Device> devices = {at::Device(at::kCPU)};
  if (at::hasCUDA()) devices.emplace_back(at::kCUDA, 0);
  at::manual_seed(9);
  at::Tensor batch = (at::randn({3, 1000}) * 2).to(at::kBFloat16).to(at::kFloat);
  // Row 0: its maximum tied at ids 300 and 700 (the lower id must win); row 1: masked entries.
  const float top = batch.max().item<float>() + 1.f;
  batch[0][700] = top;
  batch[0][300] = top;
  batch[1].narrow(0, 0, 500).fill_(-INFINITY);
  for (const at::Device& device : devices) {
    const at::Tensor on_device = batch.to(device);
    const std::vector<SampledToken> halves = GreedyTokens(ReduceGreedyRows(on_device).to(at::kCPU));
    const std::vector<SampledToken> whole = SampleGreedyRows({on_device[0], on_device[1], on_device[2]});
    ASSERT_EQ(halves.size(), 3u);
    ASSERT_EQ(whole.size(), 3u);
    for (int64_t r = 0; r < 3; ++r) {
      EXPECT_EQ(halves[r].token, whole[r].token) << "row " << r << " on " << device;
      EXPECT_EQ(halves[r].logprob, whole[r].logprob) << "row " << r << " on " << device;  // the same bits
      const at::Tensor row = batch[r].contiguous();
      Sampler greedy(SamplerOptions{});
      const SampledToken want = greedy.Sample(absl::MakeConstSpan(row.data_ptr<float>(), row.numel()));
      EXPECT_EQ(halves[r].token, want.token) << "row " << r << " on " << device;
      EXPECT_NEAR(halves[r].logprob, want.logprob, 1e-5);
    }
    EXPECT_EQ(halves[0].token, 300);
    EXPECT_GE(halves[1].token, 500);
    EXPECT_TRUE(std::isfinite(halves[1].logprob));
  }
}
}  // namespace
}  // namespace squeezeserve
