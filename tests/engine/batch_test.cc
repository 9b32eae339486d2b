// Continuous batching in the engine (Engine::StepBatch) on the HF reference checkpoints: stepping
// many generations together — different contexts, dense and squeezed, different query lengths,
// prefills joining while others decode, some finishing early — gives each one exactly what it gets
// stepped alone with Next(): equal greedy tokens, logprobs within 1e-4.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/engine.h"

namespace squeezeserve {
namespace {

namespace fs = std::filesystem;

fs::path ReferenceRoot() { return fs::path(SQUEEZESERVE_SOURCE_DIR) / "models" / "reference"; }

std::vector<fs::path> ModelDirs() {
  std::vector<fs::path> dirs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(ReferenceRoot(), ec)) {
    if (entry.is_directory() && fs::exists(entry.path() / "config.json")) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

std::vector<int32_t> Tokens(int n, int salt, int64_t vocab) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>(3 + (i * 37 + salt * 101 + 11) % (vocab - 3)));
  return ids;
}

struct Request {
  std::shared_ptr<const Context> context;
  std::vector<int32_t> query;
  SamplingOptions sampling;
  AttentionOptions attention;
  int join_step = 0;  // batched run: the step at which this request joins the batch
};

struct Output {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
};

std::unique_ptr<Generation> Start(Engine& engine, const Request& r) {
  auto generation = engine.StartGeneration(r.context, r.query, r.sampling, r.attention);
  EXPECT_TRUE(generation.ok()) << generation.status();
  return generation.ok() ? std::move(*generation) : nullptr;
}

class BatchTest : public ::testing::TestWithParam<fs::path> {};

TEST_P(BatchTest, StepBatchEqualsSteppingEachAlone) {
  EngineOptions options;
  options.model_dir = GetParam().string();
  options.prefill_chunk_tokens = 64;
  auto loaded = Engine::Load(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  Engine& engine = **loaded;
  const int64_t vocab = engine.model_info().vocab_size;

  IndexOptions index;
  index.observation_window = 16;
  index.sparsity_levels = {0.5f, 0.9f};
  auto a = engine.Ingest("a", Tokens(200, 1, vocab), index, nullptr, nullptr);
  auto b = engine.Ingest("b", Tokens(131, 2, vocab), index, nullptr, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());

  std::vector<Request> requests;
  for (int i = 0; i < 8; ++i) {
    Request r;
    r.context = i % 2 == 0 ? *a : *b;
    // 1 to 19 query tokens, and one of 150 (three chunks of 64: steps that sample nothing).
    r.query = Tokens(i == 7 ? 150 : 1 + 3 * i, 10 + i, vocab);
    r.sampling.max_new_tokens = 4 + i % 4;        // some finish before the others
    r.sampling.ignore_eos = true;
    if (i % 3 == 2) {  // sampled beside greedy members (the batch reduces the greedy rows at once)
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = 100 + i;
    }
    r.attention.mode = i % 3 == 0 ? AttentionMode::kDense : AttentionMode::kSqueezed;
    r.attention.sparsity = i % 4 < 2 ? 0.9f : 0.5f;
    r.attention.hierarchical = i % 5 == 1;
    r.join_step = i < 4 ? 0 : i - 2;  // later ones prefill while earlier ones decode
    requests.push_back(r);
  }
  // Questions on one document: two more dense requests on `a` step with request 0, one joining
  // late (libtorch attends to their shared prefix once for all their rows, a query chunk's and
  // decode tokens' alike: engine/torch_attention.h).
  for (int i = 0; i < 2; ++i) {
    Request r;
    r.context = *a;
    r.query = Tokens(5 + 4 * i, 40 + i, vocab);
    r.sampling.max_new_tokens = 6;
    r.sampling.ignore_eos = true;
    r.attention.mode = AttentionMode::kDense;
    r.join_step = i;
    requests.push_back(r);
  }

  std::vector<Output> alone(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    auto generation = Start(engine, requests[i]);
    ASSERT_NE(generation, nullptr);
    while (true) {
      auto step = generation->Next();
      ASSERT_TRUE(step.ok()) << step.status();
      alone[i].tokens.push_back(step->token);
      alone[i].logprobs.push_back(step->logprob);
      if (step->finish != FinishReason::kNone) break;
    }
  }

  std::vector<Output> batched(requests.size());
  std::vector<std::unique_ptr<Generation>> generations(requests.size());
  std::vector<bool> done(requests.size(), false);
  for (int step_index = 0; std::count(done.begin(), done.end(), false) > 0; ++step_index) {
    ASSERT_LT(step_index, 100) << "the batch never drained";
    std::vector<Generation*> batch;
    std::vector<size_t> members;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (done[i] || requests[i].join_step > step_index) continue;
      if (!generations[i]) generations[i] = Start(engine, requests[i]);
      ASSERT_NE(generations[i], nullptr);
      batch.push_back(generations[i].get());
      members.push_back(i);
    }
    std::vector<absl::StatusOr<TokenStep>> results;
    engine.StepBatch(absl::MakeConstSpan(batch), &results);
    ASSERT_EQ(results.size(), batch.size());
    for (size_t m = 0; m < members.size(); ++m) {
      ASSERT_TRUE(results[m].ok()) << results[m].status();
      batched[members[m]].tokens.push_back(results[m]->token);
      batched[members[m]].logprobs.push_back(results[m]->logprob);
      if (results[m]->finish != FinishReason::kNone) done[members[m]] = true;
    }
  }

  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(batched[i].tokens, alone[i].tokens) << "request " << i;
    ASSERT_EQ(batched[i].logprobs.size(), alone[i].logprobs.size());
    for (size_t t = 0; t < alone[i].logprobs.size(); ++t) {
      EXPECT_NEAR(batched[i].logprobs[t], alone[i].logprobs[t], 1e-4) << "request " << i << " token " << t;
    }
  }
}

TEST_P(BatchTest, AFinishedOrRepeatedGenerationFailsAloneAndTheOthersStep) {
  EngineOptions options;
  options.model_dir = GetParam().string();
  auto loaded = Engine::Load(options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  Engine& engine = **loaded;
  IndexOptions index;
  index.dense_only = true;
  auto context = engine.Ingest("c", Tokens(40, 3, engine.model_info().vocab_size), index, nullptr, nullptr);
  ASSERT_TRUE(context.ok()) << context.status();
  Request r;
  r.context = *context;
  r.query = {5, 6, 7};
  r.sampling.max_new_tokens = 1;
  r.sampling.ignore_eos = true;
  r.attention.mode = AttentionMode::kDense;
  auto finished = Start(engine, r);
  ASSERT_TRUE(finished->Next().ok());  // max_new_tokens = 1: finished now
  r.sampling.max_new_tokens = 4;
  auto live = Start(engine, r);
  std::vector<Generation*> batch = {finished.get(), live.get(), live.get()};
  std::vector<absl::StatusOr<TokenStep>> results;
  engine.StepBatch(absl::MakeConstSpan(batch), &results);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(results[1].ok()) << results[1].status();
  EXPECT_EQ(results[2].status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(References, BatchTest, ::testing::ValuesIn(ModelDirs()),
                         [](const ::testing::TestParamInfo<fs::path>& info) {
                           std::string name = info.param.filename().string();
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace squeezeserve
