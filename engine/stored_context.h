// The engine-side representation of an ingested context (libtorch; internal to engine/): the
// fixed-context KV of every layer, the Squeezed index over it when one was built, and the
// post-RoPE queries of its observation window (the calibration queries). Immutable once built.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "engine/engine.h"
#include "engine/squeeze/index_builder.h"

namespace squeezeserve {

class StoredContext : public Context {
 public:
  StoredContext(ContextSummary summary, std::vector<int32_t> tokens, std::vector<at::Tensor> keys,
                std::vector<at::Tensor> values, std::vector<at::Tensor> window_queries,
                std::vector<squeeze::LayerIndex> index)
      : summary_(std::move(summary)),
        tokens_(std::move(tokens)),
        keys_(std::move(keys)),
        values_(std::move(values)),
        window_queries_(std::move(window_queries)),
        index_(std::move(index)) {}

  const ContextSummary& summary() const override { return summary_; }
  const std::vector<int32_t>& tokens() const override { return tokens_; }

  // Per layer [H_kv, S, D]. Without an index: original token order. With one: rows [0, N) are the
  // clustered tokens sorted by cluster, rows [N, S) the observation window in original order. Dense
  // attention over either is the same, because every context key precedes every query.
  const std::vector<at::Tensor>& keys() const { return keys_; }
  const std::vector<at::Tensor>& values() const { return values_; }
  // Per layer [H, W, D]: post-RoPE queries of the last W = min(observation_window, S) tokens
  // (undefined tensors when W = 0).
  const std::vector<at::Tensor>& window_queries() const { return window_queries_; }
  // One per layer when summary().has_index, else empty. Their keys/values/window tensors are views
  // of keys()/values() (the KV is stored once).
  const std::vector<squeeze::LayerIndex>& index() const { return index_; }

 private:
  ContextSummary summary_;
  std::vector<int32_t> tokens_;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
  std::vector<at::Tensor> window_queries_;
  std::vector<squeeze::LayerIndex> index_;
};

}  // namespace squeezeserve
