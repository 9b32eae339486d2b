// The text steps of a Hugging Face tokenizer.json around its model: normalizers, pre-tokenizers,
// post-processors and decoders of the byte-level (GPT-2, Llama-3, Qwen2) and sentencepiece-style
// (Llama-2, Mistral) families, with the semantics of HF tokenizers. Each is parsed once from its JSON
// object; an unsupported type is an InvalidArgument naming it. Plain C++.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace squeezeserve {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Normalize(std::string text) const = 0;
};

// A piece of text on its way to the model. `at_start`: it begins at offset 0 of the original text
// (Metaspace's prepend_scheme "first" prepends only there).
struct PreToken {
  std::string text;
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and may transform) each piece; empty pieces are dropped.
  virtual void PreTokenize(std::vector<PreToken>& pieces) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of one sequence (encode with add_special_tokens).
  virtual std::vector<int32_t> Process(std::vector<int32_t> ids) const = 0;
};

// `where` names the field for errors, e.g. "normalizer". A JSON null gives a null pointer.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& spec, const std::string& where);
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& spec, const std::string& where);
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& spec, const std::string& where);
absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const nlohmann::json& spec, const std::string& where);

// GPT-2's byte <-> printable character map (ByteLevel pre-tokenizer and decoder).
const std::string& ByteToChar(unsigned char byte);

}  // namespace squeezeserve
