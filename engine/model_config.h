// The model hyper-parameters the engine needs, parsed from a Hugging Face config.json.
// Plain C++ (no libtorch) so that it can be tested and reused anywhere.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace squeezeserve {

// Rotary position embedding: how the inverse frequencies are derived (HF `rope_type`).
struct RopeConfig {
  std::string type = "default";  // "default", "linear" or "llama3"
  double theta = 10000.0;
  double factor = 1.0;                     // linear, llama3
  double low_freq_factor = 1.0;            // llama3
  double high_freq_factor = 4.0;           // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM", "MistralForCausalLM" or "Qwen2ForCausalLM"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_kv_heads = 0;  // == num_attention_heads for MHA, fewer for GQA/MQA
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // bias on q_proj, k_proj, v_proj
  bool o_bias = false;    // bias on o_proj (Llama's attention_bias only)
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;  // every id that ends a generation; the first is "the" eos
  // 0 = none. Not applied: max_position_embeddings is lowered to it (engine/model_config.cc).
  int64_t sliding_window = 0;
  RopeConfig rope;

  int64_t queries_per_kv_head() const { return num_attention_heads / num_kv_heads; }
};

// Parses the text of a config.json. InvalidArgument on an unsupported architecture or rope type, a
// missing or inconsistent field.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text);

// Inverse frequencies of the rotary embedding, head_dim / 2 values, computed as HF does (float32).
std::vector<float> RopeInverseFrequencies(const RopeConfig& rope, int64_t head_dim);

}  // namespace squeezeserve
