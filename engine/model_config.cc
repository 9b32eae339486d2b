#include "engine/model_config.h"

#include <cmath>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {
namespace {

using nlohmann::json;

absl::Status ConfigError(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", message));
}

// Reads an integer field; `fallback` when absent or null, an error when present with another type.
absl::StatusOr<int64_t> IntField(const json& j, const char* name, int64_t fallback) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return ConfigError(absl::StrCat(name, " must be an integer"));
  return it->get<int64_t>();
}

absl::StatusOr<double> NumberField(const json& j, const char* name, double fallback) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return ConfigError(absl::StrCat(name, " must be a number"));
  return it->get<double>();
}

absl::StatusOr<bool> BoolField(const json& j, const char* name, bool fallback) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return ConfigError(absl::StrCat(name, " must be a boolean"));
  return it->get<bool>();
}

#define ASSIGN_OR_RETURN_CONFIG(lhs, expr) \
  do {                                     \
    auto _value = (expr);                  \
    if (!_value.ok()) return _value.status(); \
    lhs = *_value;                         \
  } while (0)

// Fills `rope` from either the classic form (top-level rope_theta + optional rope_scaling) or the
// transformers-5 form (rope_parameters holding rope_type, rope_theta and the scaling fields).
absl::Status ParseRope(const json& config, RopeConfig& rope) {
  ASSIGN_OR_RETURN_CONFIG(rope.theta, NumberField(config, "rope_theta", 10000.0));
  const json* scaling = nullptr;
  const char* scaling_name = "rope_scaling";
  if (auto it = config.find("rope_parameters"); it != config.end() && !it->is_null()) {
    scaling = &*it;
    scaling_name = "rope_parameters";
  } else if (auto it2 = config.find("rope_scaling"); it2 != config.end() && !it2->is_null()) {
    scaling = &*it2;
  }
  if (scaling == nullptr) return absl::OkStatus();
  if (!scaling->is_object()) return ConfigError(absl::StrCat(scaling_name, " must be an object"));

  ASSIGN_OR_RETURN_CONFIG(rope.theta, NumberField(*scaling, "rope_theta", rope.theta));
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (auto it = scaling->find(key); it != scaling->end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type != "default" && type != "linear" && type != "llama3") {
    return ConfigError(absl::StrCat(scaling_name, ".rope_type \"", type,
                                    "\" is not supported (supported: default, linear, llama3)"));
  }
  rope.type = type;
  if (type == "default") return absl::OkStatus();
  ASSIGN_OR_RETURN_CONFIG(rope.factor, NumberField(*scaling, "factor", 0.0));
  if (!(rope.factor > 0)) return ConfigError(absl::StrCat(scaling_name, ".factor must be > 0"));
  if (type == "llama3") {
    ASSIGN_OR_RETURN_CONFIG(rope.low_freq_factor, NumberField(*scaling, "low_freq_factor", 1.0));
    ASSIGN_OR_RETURN_CONFIG(rope.high_freq_factor, NumberField(*scaling, "high_freq_factor", 4.0));
    ASSIGN_OR_RETURN_CONFIG(rope.original_max_position_embeddings,
                            IntField(*scaling, "original_max_position_embeddings", 8192));
    if (!(rope.high_freq_factor > rope.low_freq_factor) || rope.low_freq_factor <= 0 ||
        rope.original_max_position_embeddings <= 0) {
      return ConfigError(absl::StrCat(scaling_name,
                                      ": llama3 needs 0 < low_freq_factor < high_freq_factor and "
                                      "original_max_position_embeddings > 0"));
    }
  }
  return absl::OkStatus();
}

// eos_token_id may be one integer or a list of them.
absl::Status ParseEos(const json& config, std::vector<int32_t>& eos) {
  auto it = config.find("eos_token_id");
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number_integer()) {
    eos.push_back(it->get<int32_t>());
    return absl::OkStatus();
  }
  if (it->is_array()) {
    for (const json& id : *it) {
      if (!id.is_number_integer()) return ConfigError("eos_token_id entries must be integers");
      eos.push_back(id.get<int32_t>());
    }
    return absl::OkStatus();
  }
  return ConfigError("eos_token_id must be an integer or a list of integers");
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text) {
  json config = json::parse(json_text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) return ConfigError("not a JSON object");

  ModelConfig c;
  auto archs = config.find("architectures");
  if (archs == config.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return ConfigError("architectures must be a non-empty list of names");
  }
  c.architecture = (*archs)[0].get<std::string>();
  static const std::set<std::string> kSupported = {"LlamaForCausalLM", "MistralForCausalLM",
                                                   "Qwen2ForCausalLM"};
  if (kSupported.count(c.architecture) == 0) {
    return ConfigError(absl::StrCat("architecture ", c.architecture,
                                    " is not supported (supported: LlamaForCausalLM, "
                                    "MistralForCausalLM, Qwen2ForCausalLM)"));
  }

  ASSIGN_OR_RETURN_CONFIG(c.hidden_size, IntField(config, "hidden_size", 0));
  ASSIGN_OR_RETURN_CONFIG(c.intermediate_size, IntField(config, "intermediate_size", 0));
  ASSIGN_OR_RETURN_CONFIG(c.num_layers, IntField(config, "num_hidden_layers", 0));
  ASSIGN_OR_RETURN_CONFIG(c.num_attention_heads, IntField(config, "num_attention_heads", 0));
  ASSIGN_OR_RETURN_CONFIG(c.num_kv_heads, IntField(config, "num_key_value_heads", c.num_attention_heads));
  ASSIGN_OR_RETURN_CONFIG(c.vocab_size, IntField(config, "vocab_size", 0));
  ASSIGN_OR_RETURN_CONFIG(c.max_position_embeddings, IntField(config, "max_position_embeddings", 0));
  ASSIGN_OR_RETURN_CONFIG(c.rms_norm_eps, NumberField(config, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN_CONFIG(c.tie_word_embeddings, BoolField(config, "tie_word_embeddings", false));
  int64_t bos = -1;
  ASSIGN_OR_RETURN_CONFIG(bos, IntField(config, "bos_token_id", -1));
  c.bos_token_id = static_cast<int32_t>(bos);
  if (auto status = ParseEos(config, c.eos_token_ids); !status.ok()) return status;

  for (auto [name, value] : {std::pair<const char*, int64_t>{"hidden_size", c.hidden_size},
                             {"intermediate_size", c.intermediate_size},
                             {"num_hidden_layers", c.num_layers},
                             {"num_attention_heads", c.num_attention_heads},
                             {"num_key_value_heads", c.num_kv_heads},
                             {"vocab_size", c.vocab_size},
                             {"max_position_embeddings", c.max_position_embeddings}}) {
    if (value <= 0) return ConfigError(absl::StrCat(name, " must be a positive integer"));
  }
  if (c.num_attention_heads % c.num_kv_heads != 0) {
    return ConfigError(absl::StrCat("num_attention_heads (", c.num_attention_heads,
                                    ") must be a multiple of num_key_value_heads (", c.num_kv_heads, ")"));
  }
  // An explicit head_dim overrides hidden_size / heads (e.g. Qwen3-style or custom checkpoints).
  int64_t default_head_dim = c.hidden_size / c.num_attention_heads;
  ASSIGN_OR_RETURN_CONFIG(c.head_dim, IntField(config, "head_dim", default_head_dim));
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) return ConfigError("head_dim must be a positive even integer");

  if (c.architecture == "Qwen2ForCausalLM") {
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
  } else if (c.architecture == "LlamaForCausalLM") {
    bool attention_bias = false;
    ASSIGN_OR_RETURN_CONFIG(attention_bias, BoolField(config, "attention_bias", false));
    c.qkv_bias = c.o_bias = attention_bias;
  }
  bool use_sliding_window = c.architecture == "MistralForCausalLM";
  if (c.architecture == "Qwen2ForCausalLM") {
    ASSIGN_OR_RETURN_CONFIG(use_sliding_window, BoolField(config, "use_sliding_window", false));
  }
  if (use_sliding_window) ASSIGN_OR_RETURN_CONFIG(c.sliding_window, IntField(config, "sliding_window", 0));
  // Sliding-window attention is not implemented. Up to the window every token sees every earlier one,
  // which is what the engine computes, so sequences are limited to the window: exact outputs, and
  // longer requests get INVALID_ARGUMENT instead of silently different attention.
  if (c.sliding_window > 0 && c.sliding_window < c.max_position_embeddings) {
    c.max_position_embeddings = c.sliding_window;
  }

  if (auto status = ParseRope(config, c.rope); !status.ok()) return status;
  if (!(c.rope.theta > 0)) return ConfigError("rope_theta must be > 0");
  return c;
}

std::vector<float> RopeInverseFrequencies(const RopeConfig& rope, int64_t head_dim) {
  std::vector<float> inv_freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    // HF: 1 / base ** (arange(0, dim, 2).float() / dim), in float32.
    float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(rope.theta), exponent);
  }
  if (rope.type == "linear") {
    for (float& f : inv_freq) f = static_cast<float>(f / rope.factor);
  } else if (rope.type == "llama3") {
    // Long wavelengths are slowed down by `factor`, short ones are kept, and the band between the
    // two wavelength limits is interpolated smoothly (HF _compute_llama3_parameters).
    const double old_len = static_cast<double>(rope.original_max_position_embeddings);
    const double low_freq_wavelen = old_len / rope.low_freq_factor;
    const double high_freq_wavelen = old_len / rope.high_freq_factor;
    for (float& f : inv_freq) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_freq_wavelen) {
        f = static_cast<float>(f / rope.factor);
      } else if (wavelen >= high_freq_wavelen) {
        double smooth = (old_len / wavelen - rope.low_freq_factor) /
                        (rope.high_freq_factor - rope.low_freq_factor);
        f = static_cast<float>((1 - smooth) * f / rope.factor + smooth * f);
      }
    }
  }
  return inv_freq;
}

}  // namespace squeezeserve
