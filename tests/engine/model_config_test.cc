#include "engine/model_config.h"

#include <cmath>

#include <gtest/gtest.h>

namespace squeezeserve {
namespace {

constexpr char kLlamaBase[] = R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100,
  "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2)";

std::string Config(const std::string& extra) { return std::string(kLlamaBase) + (extra.empty() ? "" : ", ") + extra + "}"; }

TEST(ModelConfigTest, LlamaDefaults) {
  auto config = ParseModelConfig(Config(""));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "LlamaForCausalLM");
  EXPECT_EQ(config->num_kv_heads, 8);  // MHA when num_key_value_heads is absent
  EXPECT_EQ(config->head_dim, 8);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_FALSE(config->qkv_bias);
  EXPECT_FALSE(config->o_bias);
  EXPECT_EQ(config->rope.type, "default");
  EXPECT_DOUBLE_EQ(config->rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(config->rms_norm_eps, 1e-5);
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_EQ(config->eos_token_ids, std::vector<int32_t>({2}));
}

TEST(ModelConfigTest, GqaExplicitHeadDimTiedAndBias) {
  auto config = ParseModelConfig(Config(
      R"("num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": true, "attention_bias": true)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_kv_heads, 2);
  EXPECT_EQ(config->queries_per_kv_head(), 4);
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_TRUE(config->o_bias);
}

TEST(ModelConfigTest, Qwen2AlwaysHasQkvBiasButNoOutputBias) {
  auto config = ParseModelConfig(R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 1,
    "vocab_size": 50, "max_position_embeddings": 128, "eos_token_id": [7, 8], "rope_theta": 1000000.0})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_FALSE(config->o_bias);
  EXPECT_EQ(config->num_kv_heads, 1);  // MQA
  EXPECT_EQ(config->eos_token_ids, std::vector<int32_t>({7, 8}));
  EXPECT_EQ(config->bos_token_id, -1);
  EXPECT_DOUBLE_EQ(config->rope.theta, 1e6);
}

TEST(ModelConfigTest, ClassicLlama3RopeScaling) {
  auto config = ParseModelConfig(Config(R"("rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
      "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope.type, "llama3");
  EXPECT_DOUBLE_EQ(config->rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(config->rope.factor, 8.0);
  EXPECT_EQ(config->rope.original_max_position_embeddings, 8192);
}

TEST(ModelConfigTest, TransformersFiveRopeParameters) {
  auto config = ParseModelConfig(Config(R"("rope_parameters": {"rope_type": "linear", "rope_theta": 20000.0,
      "factor": 2.0})"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope.type, "linear");
  EXPECT_DOUBLE_EQ(config->rope.theta, 20000.0);
  EXPECT_DOUBLE_EQ(config->rope.factor, 2.0);

  auto plain = ParseModelConfig(Config(R"("rope_parameters": {"rope_type": "default", "rope_theta": 1234.0})"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->rope.type, "default");
  EXPECT_DOUBLE_EQ(plain->rope.theta, 1234.0);
}

TEST(ModelConfigTest, LegacyTypeKeyIsAccepted) {
  auto config = ParseModelConfig(Config(R"("rope_scaling": {"type": "linear", "factor": 4.0})"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope.type, "linear");
}

TEST(ModelConfigTest, Errors) {
  auto expect_invalid = [](const std::string& json, const std::string& fragment) {
    auto config = ParseModelConfig(json);
    ASSERT_FALSE(config.ok()) << json;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(config.status().message()).find(fragment), std::string::npos) << config.status();
  };
  expect_invalid("not json", "not a JSON object");
  expect_invalid(R"({"architectures": ["GPT2LMHeadModel"], "hidden_size": 8})", "GPT2LMHeadModel");
  expect_invalid(Config(R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0})"), "yarn");
  expect_invalid(Config(R"("rope_scaling": {"rope_type": "dynamic", "factor": 4.0})"), "dynamic");
  expect_invalid(Config(R"("num_key_value_heads": 3)"), "multiple");
  expect_invalid(Config(R"("hidden_size": "big")"), "hidden_size");
  expect_invalid(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64})", "intermediate_size");
  expect_invalid(Config(R"("rope_scaling": {"rope_type": "linear"})"), "factor");
}

TEST(RopeTest, DefaultLinearAndLlama3Frequencies) {
  RopeConfig rope;
  rope.theta = 10000;
  auto base = RopeInverseFrequencies(rope, 8);
  ASSERT_EQ(base.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(base[i], 1.0 / std::pow(10000.0, 2.0 * i / 8), 1e-7);

  rope.type = "linear";
  rope.factor = 4;
  auto linear = RopeInverseFrequencies(rope, 8);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(linear[i], base[i] / 4, 1e-7);

  // llama3 with a short original context so the three bands are all exercised at head_dim 16.
  rope = RopeConfig{"llama3", 10000.0, 8.0, 1.0, 4.0, 64};
  auto base16 = RopeInverseFrequencies(RopeConfig{"default", 10000.0}, 16);
  auto scaled = RopeInverseFrequencies(rope, 16);
  const double low_wavelen = 64.0, high_wavelen = 16.0;
  int low = 0, mid = 0, high = 0;
  for (size_t i = 0; i < scaled.size(); ++i) {
    const double wavelen = 2 * M_PI / base16[i];
    if (wavelen < high_wavelen) {
      EXPECT_NEAR(scaled[i], base16[i], 1e-7);  // high frequencies untouched
      ++high;
    } else if (wavelen > low_wavelen) {
      EXPECT_NEAR(scaled[i], base16[i] / 8, 1e-7);  // low frequencies slowed by the factor
      ++low;
    } else {
      const double smooth = (64.0 / wavelen - 1.0) / 3.0;
      EXPECT_NEAR(scaled[i], (1 - smooth) * base16[i] / 8 + smooth * base16[i], 1e-6);
      ++mid;
    }
  }
  EXPECT_GT(low, 0);
  EXPECT_GT(mid, 0);
  EXPECT_GT(high, 0);
}

// Sliding-window attention is not implemented: sequences are limited to the window, where it equals
// full attention (exact outputs, longer requests refused instead of silently different).
TEST(ModelConfigTest, SlidingWindowLimitsPositionsToTheWindow) {
  const std::string mistral = R"({
    "architectures": ["MistralForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100,
    "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "sliding_window": 128})";
  auto windowed = ParseModelConfig(mistral);
  ASSERT_TRUE(windowed.ok()) << windowed.status();
  EXPECT_EQ(windowed->sliding_window, 128);
  EXPECT_EQ(windowed->max_position_embeddings, 128);
  std::string no_window = mistral;
  no_window.replace(no_window.find("128}"), 4, "null}");
  auto full = ParseModelConfig(no_window);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->max_position_embeddings, 512);
  // Qwen2 applies its window only with use_sliding_window.
  std::string qwen = mistral;
  qwen.replace(qwen.find("MistralForCausalLM"), 18, "Qwen2ForCausalLM");
  auto off = ParseModelConfig(qwen);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->max_position_embeddings, 512);
  qwen.replace(qwen.find("\"sliding_window\""), 0, "\"use_sliding_window\": true, ");
  auto on = ParseModelConfig(qwen);
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_EQ(on->max_position_embeddings, 128);
}

}  // namespace
}  // namespace squeezeserve
