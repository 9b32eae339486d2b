// Text <-> token ids through a sentencepiece tokenizer.model. Plain C++ (no libtorch).
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
  // Loads `path` (a sentencepiece model file). InvalidArgument when it is not a sentencepiece model,
  // FailedPrecondition when the sentencepiece module cannot be loaded.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Prepends `bos_id` when add_bos and bos_id >= 0.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos, int32_t bos_id) const;
  // Ids outside the tokenizer's vocabulary (a model may pad its embedding table) decode to nothing.
  std::string Decode(const int32_t* ids, size_t count) const;
  int64_t vocab_size() const { return piece_size_; }

  struct Module;  // the dlopen'ed sentencepiece module's entry points (defined in tokenizer.cc)

 private:
  Tokenizer(const Module* module, void* handle);

  const Module* module_;
  void* handle_;
  int64_t piece_size_;
};

}  // namespace squeezeserve
