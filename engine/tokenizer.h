// Text <-> token ids for a checkpoint: its Hugging Face tokenizer.json (engine/tokenizer_json.h) or
// its sentencepiece tokenizer.model, plus what tokenizer_config.json says (BOS / EOS, chat template).
// Plain C++ (no libtorch).
//
// sentencepiece itself is reached through a small shared module (spm_shim.cc) loaded with dlopen:
// see there for why it cannot be linked into a process that also uses libprotobuf. The module is
// looked up at $SQUEEZESERVE_SPM_MODULE, next to the executable, then at its build-tree path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace squeezeserve {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads `path`, a sentencepiece model file. InvalidArgument when it is not a sentencepiece model,
  // FailedPrecondition when the sentencepiece module cannot be loaded.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  // Parses the text of a tokenizer.json (HfTokenizer::FromJson).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromHfJson(std::string_view tokenizer_json);

  // sentencepiece: prepends `bos_id` when add_bos and bos_id >= 0. tokenizer.json: add_bos means
  // add_special_tokens (its post-processor adds what the family adds, e.g. Llama-3's BOS).
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_bos, int32_t bos_id) const = 0;
  // Ids outside the tokenizer's vocabulary (a model may pad its embedding table) decode to nothing.
  // Special tokens (BOS, EOS, chat markers) are left out unless skip_special_tokens is false
  // (sentencepiece always leaves its control pieces out).
  virtual std::string Decode(const int32_t* ids, size_t count, bool skip_special_tokens) const = 0;
  std::string Decode(const int32_t* ids, size_t count) const { return Decode(ids, count, true); }
  virtual int64_t vocab_size() const = 0;
};

// What tokenizer_config.json says, where the checkpoint has one.
struct TokenizerConfig {
  std::string bos_token, eos_token;  // the token strings ("" when unset)
  std::string chat_template;        // "" when the checkpoint has none
};

struct CheckpointTokenizer {
  std::unique_ptr<Tokenizer> tokenizer;  // null when the directory has no tokenizer
  std::string source;                    // "tokenizer.json", "tokenizer.model" or ""
  TokenizerConfig config;
  // The tokenizer files' bytes, for the model fingerprint ("<file>:<size>:<bytes>" per file).
  std::string fingerprint_input;
};

// The tokenizer of a checkpoint directory: tokenizer.json when present (the hub's Llama-3, Qwen2,
// Mistral checkpoints), else tokenizer.model (sentencepiece); tokenizer_config.json when present.
// Neither is not an error (the model then takes token ids only): `tokenizer` is null.
absl::StatusOr<CheckpointTokenizer> LoadCheckpointTokenizer(const std::string& dir);

}  // namespace squeezeserve
