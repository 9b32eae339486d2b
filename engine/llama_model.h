// The Llama-family decoder (Llama, Mistral, Qwen2) in libtorch: RMSNorm, RoPE (HF rotate_half
// convention), GQA attention, SwiGLU MLP, optional tied embeddings and q/k/v(/o) biases.
//
// Attention reads two KV parts and merges them by log-sum-exp (attention.h):
//   (a) a read-only prefix — the stored fixed context, attended without mask since it all precedes
//       the new tokens; the Squeezed index will replace it by the selected clusters;
//   (b) the sequence's own KV cache, into which the new tokens' K/V are written, attended causally.
// The two are never concatenated (that would copy a long context on every step).
//
// Not applied: Mistral/Qwen2 sliding-window attention (ModelConfig::sliding_window is recorded only),
// so sequences longer than the window differ from HF.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/attention.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"

namespace squeezeserve {

struct KernelSequence;  // kernel_attention.h

// K/V buffers of one sequence: per layer [H_kv, capacity, D]; rows [0, length) are filled.
struct KvCache {
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> values;
  int64_t length = 0;

  int64_t capacity() const { return keys.empty() ? 0 : keys[0].size(1); }
};

// Read-only KV attended without mask, per layer [H_kv, P, D] (may be views of a larger buffer).
struct KvPrefix {
  const std::vector<at::Tensor>* keys = nullptr;
  const std::vector<at::Tensor>* values = nullptr;
};

// Part (a) computed by the caller instead of dense attention over a prefix: receives the layer and
// the post-RoPE queries [H, n, D] of the new tokens, returns their attention over the stored
// context (the Squeezed lookup: selected clusters + window).
using ContextAttentionFn = std::function<AttentionPart(int64_t layer, const at::Tensor& queries)>;

struct ForwardArgs {
  const int32_t* token_ids = nullptr;
  int64_t num_tokens = 0;
  int64_t start_position = 0;  // position id of the first token (RoPE)
  KvPrefix prefix;             // part (a); empty = none
  ContextAttentionFn context_attention;  // part (a) when set (then `prefix` is ignored)
  KvCache* cache = nullptr;    // part (b); the new K/V are written at [length, length + n)
  // When set (a squeezed generation on the GPU kernel path, kernel_attention.h) and the step fits
  // the kernels, parts (a) and (b) are computed together by the CUDA kernels; otherwise as above
  // (context_attention is then set too).
  KernelSequence* kernel = nullptr;
  bool compute_logits = true;  // false at ingest: only the KV is wanted
  // With compute_logits: the logits of every new token [n, vocab] instead of the last one's [vocab]
  // (teacher-forced log-probs of a query).
  bool logits_of_every_token = false;
  // When set, receives per layer the post-RoPE queries [H, n - capture_from, D] of the tokens
  // [capture_from, n) of this call (the calibration queries of the Squeezed index).
  std::vector<at::Tensor>* captured_queries = nullptr;
  int64_t capture_from = 0;
};

struct LlamaModelOptions {
  // RMSNorm and RoPE as one fused CUDA kernel each (kernels/norm_rope.h) instead of ~11 libtorch ops
  // each, with the same bf16 rounding; taken on a bf16 CUDA model in a build with the kernels. At
  // decode, libtorch's per-op dispatch rather than GPU work sets the step time. false = always
  // libtorch (tests compare the two).
  bool fused_norm_rope = true;
};

class LlamaModel {
 public:
  // Converts the checkpoint's weights to `dtype` on `device` (float32 on CPU, bfloat16 on CUDA).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(const ModelConfig& config,
                                                            const SafetensorsCheckpoint& weights,
                                                            at::Device device, at::ScalarType dtype,
                                                            const LlamaModelOptions& options = {});

  // Runs the tokens through the model; cache->length grows by num_tokens. Returns the float32 logits
  // [vocab] of the last token ([n, vocab] with logits_of_every_token), or an undefined tensor when
  // !compute_logits. The caller checks that
  // the cache has room.
  at::Tensor Forward(const ForwardArgs& args) const;

  // Several sequences in one pass (continuous batching): their tokens are stacked so that the
  // token-wise work (embedding, norms, projections, MLP, lm_head) is one matmul over all of them,
  // while attention runs per sequence over its own part (a) and part (b). Each entry is what
  // Forward would do with it alone; returns one logits tensor per entry (undefined when that entry
  // has !compute_logits).
  std::vector<at::Tensor> ForwardBatch(const std::vector<const ForwardArgs*>& batch) const;

  // Empty K/V buffers for `capacity` tokens of every layer.
  KvCache NewCache(int64_t capacity) const;

  const ModelConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  // Whether RmsNorm and ApplyRope run the fused CUDA kernels (LlamaModelOptions::fused_norm_rope).
  bool fused_norm_rope() const { return fused_; }

 private:
  struct Layer {
    at::Tensor input_norm, post_attention_norm;
    at::Tensor q_proj, k_proj, v_proj, o_proj;  // [out, in]
    at::Tensor q_bias, k_bias, v_bias, o_bias;  // undefined when the model has none
    at::Tensor gate_proj, up_proj, down_proj;
  };

  LlamaModel(const ModelConfig& config, at::Device device, at::ScalarType dtype, const LlamaModelOptions& options);
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  // x [n, D·heads] → [heads, n, D] with the rotary embedding applied.
  at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
  // x: the stacked normed tokens [N, hidden] of `batch`, sequence b at rows [offsets[b], +n_b).
  at::Tensor Attention(int64_t layer_index, const Layer& layer, const at::Tensor& x, const at::Tensor& cos,
                       const at::Tensor& sin, const std::vector<const ForwardArgs*>& batch,
                       const std::vector<int64_t>& offsets) const;

  ModelConfig config_;
  at::Device device_;
  at::ScalarType dtype_;
  bool fused_;  // RmsNorm / ApplyRope on the fused kernels, decided once at construction
  at::Tensor inv_freq_;  // float32 [D/2]
  at::Tensor embed_tokens_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
};

}  // namespace squeezeserve
