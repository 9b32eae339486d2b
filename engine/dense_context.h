// The engine-side representation of an ingested context (libtorch; internal to engine/): the
// fixed-context KV of every layer and the post-RoPE queries of its last tokens, which the Squeezed
// index builder uses for calibration. Immutable once Ingest returns it.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "engine/engine.h"

namespace squeezeserve {

class DenseContext : public Context {
 public:
  DenseContext(ContextSummary summary, std::vector<int32_t> tokens, std::vector<at::Tensor> keys,
               std::vector<at::Tensor> values, std::vector<at::Tensor> window_queries)
      : summary_(std::move(summary)),
        tokens_(std::move(tokens)),
        keys_(std::move(keys)),
        values_(std::move(values)),
        window_queries_(std::move(window_queries)) {}

  const ContextSummary& summary() const override { return summary_; }
  const std::vector<int32_t>& tokens() const override { return tokens_; }

  // Per layer [H_kv, S, D], in original token order.
  const std::vector<at::Tensor>& keys() const { return keys_; }
  const std::vector<at::Tensor>& values() const { return values_; }
  // Per layer [H, W, D]: post-RoPE queries of the last W = min(observation_window, S) tokens
  // (undefined tensors when W = 0).
  const std::vector<at::Tensor>& window_queries() const { return window_queries_; }

 private:
  ContextSummary summary_;
  std::vector<int32_t> tokens_;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
  std::vector<at::Tensor> window_queries_;
};

}  // namespace squeezeserve
