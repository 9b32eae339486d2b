// The libtorch implementation of the attention seam (attention_backend.h): every device, every
// model shape. Dense sequences attend to a stored prefix (the context's KV, every row, no mask);
// squeezed ones to the Squeezed lookup's selection (squeezed_lookup.h); both merge it by
// log-sum-exp with causal attention over their own tokens (attention.h: libtorch's fused kernels
// on a GPU, the blocked reference on the CPU). One sequence after another, per layer, except that
// dense sequences on one stored prefix attend to it in one call (their rows stacked: the prefix
// is unmasked, so the rows of several sequences are rows of one query), as the kernels' bundles do
// (docs/attention.md "Questions on one document").
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "engine/attention_backend.h"
#include "engine/llama_model.h"
#include "engine/squeezed_lookup.h"

namespace squeezeserve {

// Read-only KV attended without mask, per layer [H_kv, P, D] (views of a stored context's KV).
struct KvPrefix {
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> values;
};

class TorchAttention : public AttentionBackend {
 public:
  const char* name() const override { return "torch"; }

  // EngineOptions::shared_context_decode: false = every sequence attends to its prefix alone.
  void set_shared_prefix(bool shared) { shared_prefix_ = shared; }

  // A sequence attending densely to `prefix` (empty vectors: no stored part) and to its own tokens
  // in `own` (length 0).
  std::unique_ptr<SequenceAttention> NewDense(KvPrefix prefix, KvCache own);
  // A sequence attending through the Squeezed lookup to its context, and to its own tokens.
  std::unique_ptr<SequenceAttention> NewSqueezed(SqueezedLookup lookup, KvCache own);

  void Plan(const std::vector<SequenceStep>& steps) override { steps_ = steps; }
  std::vector<at::Tensor> Attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v) override;
  void Finish() override;
  void Abandon() override { steps_.clear(); }

 private:
  std::vector<SequenceStep> steps_;
  bool shared_prefix_ = true;
};

}  // namespace squeezeserve
