// Writes small random Llama-family checkpoints (config.json + model.safetensors) for model tests,
// using the engine's own safetensors writer. Plain C++.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace squeezeserve::testing {

struct TinyModelSpec {
  std::string architecture = "LlamaForCausalLM";
  int64_t hidden_size = 32;
  int64_t intermediate_size = 64;
  int64_t num_layers = 2;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 2;
  int64_t head_dim = 0;  // 0 = hidden / heads (not written to config.json)
  int64_t vocab_size = 96;
  int64_t max_position_embeddings = 256;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Llama's attention_bias (q, k, v and o biases)
  std::vector<int32_t> eos_token_ids = {2};
  // Raw JSON spliced into config.json, e.g. "\"rope_theta\": 500000.0, \"rope_scaling\": {...}".
  std::string rope_json = "\"rope_theta\": 10000.0";
  uint32_t seed = 1;
  bool bf16_weights = false;  // store the weights as BF16 instead of F32
};

// Creates `dir` (and parents) and writes the checkpoint; aborts the test binary on I/O failure.
void WriteTinyCheckpoint(const std::string& dir, const TinyModelSpec& spec);

// A fresh directory under the system temp dir, unique per call.
std::string MakeTempDir(const std::string& prefix);

}  // namespace squeezeserve::testing
