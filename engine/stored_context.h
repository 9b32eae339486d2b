// The engine-side representation of an ingested context (libtorch; internal to engine/): the
// fixed-context KV of every layer, the Squeezed index over it when one was built, and the
// post-RoPE queries of its observation window (the calibration queries). Immutable once built.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "engine/engine.h"
#include "engine/squeeze/index_builder.h"
#include "kernels/squeeze_types.h"

namespace squeezeserve {

// What the CUDA kernels (kernels/, docs/index_layout.md) read of a context: per layer a
// SequenceLayerBf16 whose clustered part points into the stored bf16 KV (rows [0, N) of each
// head, head stride S·D) and at bf16 copies of the centroids; its dense_* fields are left unset
// (the window is copied into each generation's own KV, kernel_attention.h). Built once per context
// (ingest or load) when the KV is bf16 on CUDA and the context has an index; empty otherwise.
struct KernelContextViews {
  std::vector<kernels::SequenceLayerBf16> layers;
  std::vector<at::Tensor> storage;  // the bf16 centroids and int32 offsets the views point at
  int64_t window = 0;               // W: rows [N, S) of the stored KV
  bool empty() const { return layers.empty(); }
};

// Builds the views (kernel_attention.cc). On CUDA bf16 it also rounds the index's fp32 centroids
// to bf16 values, so that the libtorch path scores exactly the vectors the kernels score (layout
// doc: centroids are bf16 on the GPU, rounded once from the fp32 mean).
KernelContextViews BuildKernelContextViews(const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                                           std::vector<squeeze::LayerIndex>& index);

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
        index_(std::move(index)),
        kernel_views_(BuildKernelContextViews(keys_, values_, index_)) {}

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
  // Device views for the CUDA kernels; empty on CPU, without index, or when the KV is not bf16.
  const KernelContextViews& kernel_views() const { return kernel_views_; }

 private:
  ContextSummary summary_;
  std::vector<int32_t> tokens_;
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
  std::vector<at::Tensor> window_queries_;
  std::vector<squeeze::LayerIndex> index_;
  KernelContextViews kernel_views_;
};

}  // namespace squeezeserve
