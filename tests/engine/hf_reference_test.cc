// The engine against Hugging Face transformers: for every checkpoint under models/reference/ and the
// shipped small trained model models/small (made on the GPU machine with transformers, see
// reference.json), ingest the first `split` prompt tokens as the context, generate greedily with the
// rest as the query, and expect HF's tokens and log-probs within 1e-3; the same for a prompt-only
// generation (no stored context) over the whole prompt.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/engine.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {
namespace {

namespace fs = std::filesystem;

constexpr double kLogprobTolerance = 1e-3;

TEST(HfReferenceTest, MatchesTransformersGreedyOutputs) {
  const fs::path root = fs::path(SQUEEZESERVE_SOURCE_DIR) / "models" / "reference";
  std::vector<fs::path> checkpoints;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (entry.is_directory() && fs::exists(entry.path() / "reference.json")) checkpoints.push_back(entry.path());
  }
  std::sort(checkpoints.begin(), checkpoints.end());
  // The shipped small trained model (models/small, issue 7) is checked the same way.
  const fs::path small_model = fs::path(SQUEEZESERVE_SOURCE_DIR) / "models" / "small";
  EXPECT_TRUE(fs::exists(small_model / "reference.json")) << "models/small has no reference.json";
  if (fs::exists(small_model / "reference.json")) checkpoints.push_back(small_model);
  ASSERT_FALSE(checkpoints.empty()) << "no reference checkpoints (with reference.json) under " << root;

  for (const fs::path& dir : checkpoints) {
    SCOPED_TRACE(dir.filename().string());
    std::ifstream in(dir / "reference.json");
    const nlohmann::json reference = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(reference.is_object()) << "reference.json is not a JSON object";
    const auto prompt = reference.at("prompt_ids").get<std::vector<int32_t>>();
    const auto split = reference.at("split").get<size_t>();
    const auto expected_ids = reference.at("generated_ids").get<std::vector<int32_t>>();
    const auto expected_logprobs = reference.at("logprobs").get<std::vector<double>>();
    ASSERT_LT(split, prompt.size());
    ASSERT_EQ(expected_ids.size(), expected_logprobs.size());

    EngineOptions options;
    options.model_dir = dir.string();
    options.prefill_chunk_tokens = 64;
    auto engine = Engine::Load(options);
    ASSERT_TRUE(engine.ok()) << engine.status();

    IndexOptions index;
    index.dense_only = true;
    auto context = (*engine)->Ingest("reference", std::vector<int32_t>(prompt.begin(), prompt.begin() + split),
                                     index, nullptr, nullptr);
    ASSERT_TRUE(context.ok()) << context.status();

    SamplingOptions sampling;
    sampling.max_new_tokens = static_cast<int>(expected_ids.size());
    sampling.temperature = 0;
    sampling.ignore_eos = true;
    AttentionOptions attention;
    attention.mode = AttentionMode::kDense;
    auto generation = (*engine)->StartGeneration(
        *context, std::vector<int32_t>(prompt.begin() + split, prompt.end()), sampling, attention);
    ASSERT_TRUE(generation.ok()) << generation.status();

    std::string streamed_text;
    for (size_t i = 0; i < expected_ids.size(); ++i) {
      auto step = (*generation)->Next();
      ASSERT_TRUE(step.ok()) << step.status();
      EXPECT_EQ(step->token, expected_ids[i]) << "token " << i;
      EXPECT_NEAR(step->logprob, expected_logprobs[i], kLogprobTolerance) << "token " << i;
      streamed_text += step->text_delta;
      if (step->token != expected_ids[i]) break;  // later steps would diverge anyway
    }

    // A prompt-only generation (no stored context) over the whole prompt is the same computation.
    auto prompt_only = (*engine)->StartGeneration(nullptr, prompt, sampling, attention);
    ASSERT_TRUE(prompt_only.ok()) << prompt_only.status();
    for (size_t i = 0; i < expected_ids.size(); ++i) {
      auto step = (*prompt_only)->Next();
      ASSERT_TRUE(step.ok()) << step.status();
      EXPECT_EQ(step->token, expected_ids[i]) << "prompt-only token " << i;
      EXPECT_NEAR(step->logprob, expected_logprobs[i], kLogprobTolerance) << "prompt-only token " << i;
      if (step->token != expected_ids[i]) break;
    }
    EXPECT_EQ((*prompt_only)->stats().cached_tokens, 0);

    // The real tokenizer: the streamed pieces add up to the decode of the whole continuation, and
    // plain text survives a round trip.
    if ((*engine)->model_info().has_tokenizer) {
      EXPECT_EQ(streamed_text, (*engine)->Decode(expected_ids));
      const std::string text = "the quick brown fox jumps over the lazy dog";
      auto ids = (*engine)->Encode(text, /*add_bos=*/true);
      ASSERT_TRUE(ids.ok()) << ids.status();
      ASSERT_FALSE(ids->empty());
      EXPECT_EQ(ids->front(), (*engine)->model_info().bos_token_id);
      EXPECT_EQ((*engine)->Decode(*ids), text);

      // A stop string taken from the middle of the continuation: the output ends right before it.
      const std::string full = (*engine)->Decode(expected_ids);
      size_t at = full.size() / 2;
      while (at + 3 < full.size() && !(std::isalpha(static_cast<unsigned char>(full[at])) &&
                                       std::isalpha(static_cast<unsigned char>(full[at + 1])))) {
        ++at;
      }
      if (at + 3 < full.size()) {
        const std::string stop = full.substr(at, 3);
        SamplingOptions with_stop = sampling;
        with_stop.stop = {stop};
        auto stopped = (*engine)->StartGeneration(
            *context, std::vector<int32_t>(prompt.begin() + split, prompt.end()), with_stop, attention);
        ASSERT_TRUE(stopped.ok()) << stopped.status();
        std::string text_before_stop;
        FinishReason finish = FinishReason::kNone;
        while (finish == FinishReason::kNone) {
          auto step = (*stopped)->Next();
          ASSERT_TRUE(step.ok()) << step.status();
          text_before_stop += step->text_delta;
          finish = step->finish;
        }
        EXPECT_EQ(finish, FinishReason::kStop) << "stop string \"" << stop << "\"";
        EXPECT_EQ(text_before_stop, full.substr(0, full.find(stop)));
      }
    }
  }
}

}  // namespace
}  // namespace squeezeserve
