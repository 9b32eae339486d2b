// The GPU path of squeezed generation: the CUDA kernels of kernels/ (select_clusters,
// sparse_decode_attention, sparse_prefill_attention; contract in kernels/squeeze_types.h) run the
// Squeezed lookup AND the attention over the stored context and the request's own tokens in one
// pass per layer, instead of the libtorch reference (squeezed_lookup.h + attention.h). libtorch;
// internal to engine/. The CUDA calls and c10/cuda headers live in kernel_attention.cc only, under
// SQUEEZESERVE_CUDA_KERNELS (the CPU build compiles the rest and never takes this path).
//
// Data: the context's clustered part (cluster-sorted bf16 KV, bf16 centroids, int32 offsets) is
// read where the StoredContext holds it (KernelContextViews, built once per context). The kernels'
// dense part must be one buffer per KV head — the context window, then the request's own tokens —
// so a kernel generation's KV buffers are [H_kv, W + capacity, D] with the window copied in front
// once; its KvCache holds views of rows [W, W + capacity), so the model (and the libtorch fallback)
// writes and reads them unchanged.
//
// Batch: the decode steps of a forward (StepBatch: several sequences, possibly on different
// contexts) run as one sparse_decode_attention launch; their selections as one select_clusters
// launch per distinct (hierarchical, thresholds) — the kernel takes one τ per launch. A query
// prefill runs alone (batch 1: the prefill kernels take one query length per launch).
//
// Pruned-cluster estimate (AttentionOptions::estimate_pruned, docs/index_layout.md): the kernels
// attend the selected clusters and the dense part and return their log-sum-exp; the context's other
// non-empty fine clusters are then added as one key each (centroid logit + log size, mean value) by
// a few batched libtorch ops per layer (sequences on one context together) and merged by LSE — the
// libtorch path's result. One-level lookups only: hierarchical estimating generations run on libtorch.
// Read-ahead (AttentionOptions::read_ahead, squeeze/read_ahead.h) is not in the kernels yet: such
// generations run on libtorch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/llama_model.h"
#include "engine/model_config.h"
#include "engine/squeezed_lookup.h"
#include "engine/stored_context.h"

namespace squeezeserve {

class KernelAttention;

// One squeezed generation on the kernel path. Owned by the generation; the model reads it through
// ForwardArgs::kernel.
struct KernelSequence {
  KernelAttention* runner = nullptr;
  std::shared_ptr<const StoredContext> context;
  bool hierarchical = false;
  bool estimate_pruned = false;  // one-level only (see above)
  LookupThresholds thresholds;
  SqueezedLookup* stats = nullptr;  // receives the per-layer statistics (nullable)
  // Per layer [H_kv, W + capacity, D]: the context window, then the generation's own tokens.
  std::vector<at::Tensor> dense_keys, dense_values;
  int64_t window = 0;
  bool prefill = false;  // this step is the query prefill (prefill thresholds, one selection)
};

// Which backend serves squeezed attention, decided once per engine from
// EngineOptions::attention_backend ("auto", "torch", "kernels"): true = kernels. `reason` says why
// (for the log). InvalidArgument for an unknown value; FailedPrecondition when "kernels" is asked
// and cannot be had (CPU device, a build without the kernels, head_dim not 64/128, group not
// 1/2/4/8, KV not bf16).
absl::StatusOr<bool> ChooseKernelBackend(const std::string& backend, const ModelConfig& config, at::Device device,
                                         at::ScalarType dtype, std::string* reason);

class KernelAttention {
 public:
  // Whether this build has the CUDA kernels (SQUEEZESERVE_CUDA_KERNELS).
  static bool Compiled();

  KernelAttention(const ModelConfig& config, at::Device device);

  // Whether generations on `context` can use the kernels (it has kernel views).
  static bool SupportsContext(const StoredContext& context) { return !context.kernel_views().empty(); }

  // The generation's own KV for `capacity` tokens, with the context window copied in front
  // (see above); fills seq->dense_keys/dense_values/window and seq->runner.
  KvCache NewCache(const StoredContext& context, int64_t capacity, KernelSequence* seq);

  // Whether a step of `num_tokens` tokens of `seq` runs on the kernels; otherwise the model takes
  // the libtorch path for it (the prefill selection takes at most 16384 query rows × group).
  bool Accepts(const KernelSequence& seq, int64_t num_tokens) const;

  // Attention of the accepted `members` of `batch` (their K/V already written to their caches at
  // [cache->length, + num_tokens)) for layer `layer`: q_all [H, N, D] are the stacked post-RoPE
  // queries (sequence b at columns [offsets[b], + n_b)). Sets (*outputs)[b] = [n_b, H·D] in the
  // model dtype for each member. Throws std::runtime_error when a kernel fails.
  void Run(int64_t layer, const at::Tensor& q_all, const std::vector<const ForwardArgs*>& batch,
           const std::vector<int64_t>& offsets, const std::vector<size_t>& members, std::vector<at::Tensor>* outputs);

  // Before a forward: forgets the statistics of an earlier forward that failed midway.
  void BeginForward() { pending_.clear(); }
  // After a forward: hands the selections' statistics of every Run to the sequences' lookups (one
  // host copy for the whole forward). No-op when nothing ran.
  void FinishForward();

 private:
  struct PendingStats {
    // device int32 [3, B·H_kv]: selected rows, centroids scored, pruned clusters estimated
    at::Tensor counts;
    std::vector<KernelSequence*> seqs;
  };
  void RunDecode(int64_t layer, const at::Tensor& q_all, const std::vector<const ForwardArgs*>& batch,
                 const std::vector<int64_t>& offsets, std::vector<size_t> members, std::vector<at::Tensor>* outputs);
  void RunPrefill(int64_t layer, const at::Tensor& q_all, const ForwardArgs& args, int64_t offset,
                  at::Tensor* output);

  int64_t num_q_heads_, num_kv_heads_, head_dim_;
  at::Device device_;
  std::vector<PendingStats> pending_;
};

}  // namespace squeezeserve
