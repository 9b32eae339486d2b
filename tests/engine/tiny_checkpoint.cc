#include "tests/engine/tiny_checkpoint.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "engine/safetensors.h"
#include "nlohmann/json.hpp"

namespace squeezeserve::testing {
namespace {

void Check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "tiny checkpoint: %s\n", what.c_str());
    std::abort();
  }
}

}  // namespace

std::string MakeTempDir(const std::string& prefix) {
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::temp_directory_path() /
                   (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void WriteTinyCheckpoint(const std::string& dir, const TinyModelSpec& spec) {
  std::filesystem::create_directories(dir);
  const int64_t hidden = spec.hidden_size;
  const int64_t head_dim = spec.head_dim > 0 ? spec.head_dim : hidden / spec.num_heads;
  const int64_t q_out = spec.num_heads * head_dim, kv_out = spec.num_kv_heads * head_dim;

  nlohmann::json config = nlohmann::json::parse("{" + spec.rope_json + "}");
  config["architectures"] = {spec.architecture};
  config["hidden_size"] = hidden;
  config["intermediate_size"] = spec.intermediate_size;
  config["num_hidden_layers"] = spec.num_layers;
  config["num_attention_heads"] = spec.num_heads;
  config["num_key_value_heads"] = spec.num_kv_heads;
  if (spec.head_dim > 0) config["head_dim"] = spec.head_dim;
  config["vocab_size"] = spec.vocab_size;
  config["max_position_embeddings"] = spec.max_position_embeddings;
  config["rms_norm_eps"] = 1e-6;
  config["tie_word_embeddings"] = spec.tie_word_embeddings;
  if (spec.architecture == "LlamaForCausalLM") config["attention_bias"] = spec.attention_bias;
  config["bos_token_id"] = 1;
  config["eos_token_id"] = spec.eos_token_ids;
  std::ofstream(std::filesystem::path(dir) / "config.json") << config.dump(2);

  // Weights with a spread large enough that greedy choices are clear-cut (HF's 0.02 init makes
  // logits nearly uniform and argmax fragile).
  std::mt19937 rng(spec.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::map<std::string, std::vector<float>> storage;  // keeps buffers alive until written
  std::vector<std::pair<std::string, std::vector<int64_t>>> order;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean, float stddev) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    std::vector<float>& values = storage[name];
    values.resize(numel);
    for (float& v : values) v = mean + stddev * normal(rng);
    order.emplace_back(name, std::move(shape));
  };
  const bool qkv_bias = spec.architecture == "Qwen2ForCausalLM" || spec.attention_bias;
  const bool o_bias = spec.architecture == "LlamaForCausalLM" && spec.attention_bias;
  add("model.embed_tokens.weight", {spec.vocab_size, hidden}, 0, 1.0f);
  for (int64_t i = 0; i < spec.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const float in_scale = 1.0f / std::sqrt(static_cast<float>(hidden));
    add(p + "input_layernorm.weight", {hidden}, 1, 0.1f);
    add(p + "post_attention_layernorm.weight", {hidden}, 1, 0.1f);
    add(p + "self_attn.q_proj.weight", {q_out, hidden}, 0, 2 * in_scale);
    add(p + "self_attn.k_proj.weight", {kv_out, hidden}, 0, 2 * in_scale);
    add(p + "self_attn.v_proj.weight", {kv_out, hidden}, 0, in_scale);
    add(p + "self_attn.o_proj.weight", {hidden, q_out}, 0, 1.0f / std::sqrt(static_cast<float>(q_out)));
    if (qkv_bias) {
      add(p + "self_attn.q_proj.bias", {q_out}, 0, 0.5f);
      add(p + "self_attn.k_proj.bias", {kv_out}, 0, 0.5f);
      add(p + "self_attn.v_proj.bias", {kv_out}, 0, 0.5f);
    }
    if (o_bias) add(p + "self_attn.o_proj.bias", {hidden}, 0, 0.5f);
    add(p + "mlp.gate_proj.weight", {spec.intermediate_size, hidden}, 0, in_scale);
    add(p + "mlp.up_proj.weight", {spec.intermediate_size, hidden}, 0, in_scale);
    add(p + "mlp.down_proj.weight", {hidden, spec.intermediate_size}, 0,
        1.0f / std::sqrt(static_cast<float>(spec.intermediate_size)));
  }
  add("model.norm.weight", {hidden}, 1, 0.1f);
  if (!spec.tie_word_embeddings) add("lm_head.weight", {spec.vocab_size, hidden}, 0, 0.5f);

  std::map<std::string, std::vector<uint16_t>> bf16_storage;
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, shape] : order) {
    TensorToWrite t{name, DType::kF32, shape, storage[name].data()};
    if (spec.bf16_weights) {
      std::vector<uint16_t>& bits = bf16_storage[name];
      for (float v : storage[name]) bits.push_back(FloatToBFloat16(v));
      t.dtype = DType::kBF16;
      t.data = bits.data();
    }
    tensors.push_back(t);
  }
  const auto status = WriteSafetensors((std::filesystem::path(dir) / "model.safetensors").string(), tensors);
  Check(status.ok(), std::string(status.message()));
}

}  // namespace squeezeserve::testing
