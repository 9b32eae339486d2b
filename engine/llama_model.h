// The Llama-family decoder (Llama, Mistral, Qwen2) in libtorch: RMSNorm, RoPE (HF rotate_half
// convention), GQA attention, SwiGLU MLP, optional tied embeddings and q/k/v(/o) biases. The q/k/v
// projections are one matmul (their weights stacked at load), as are gate and up.
//
// Two ways through it:
//  - Prefill: the ingest of a fixed context, layer by layer over the whole sequence (causal
//    self-attention on libtorch's fused kernels on a GPU), in units of work small enough to
//    interleave with generation steps.
//  - ForwardBatch: the steps of generations (a query prefill or a decode token each), their tokens
//    stacked so that the token-wise work is one matmul, each sequence attending through its
//    SequenceAttention (attention_backend.h). Its three phases (PlanStep, RunLayers, FinishStep)
//    are public so that a decode step can be captured and replayed as a CUDA graph
//    (decode_graphs.h): RunLayers is device work only.
//
// Not applied: Mistral/Qwen2 sliding-window attention (ModelConfig::sliding_window is recorded only),
// so sequences longer than the window differ from HF.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/attention_backend.h"
#include "engine/engine.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"

namespace squeezeserve {

struct ForwardArgs {
  const int32_t* token_ids = nullptr;
  int64_t num_tokens = 0;
  int64_t start_position = 0;  // position id of the first token (RoPE)
  // What the new tokens attend to (the stored context, dense or squeezed) and where their K/V go.
  SequenceAttention* attention = nullptr;
  bool query_prefill = false;  // SequenceStep::query_prefill
  bool compute_logits = true;
  // With compute_logits: the logits of every new token [n, vocab] instead of the last one's [vocab]
  // (teacher-forced log-probs of a query).
  bool logits_of_every_token = false;
  // When set, receives per layer the post-RoPE queries [H, n, D] of this call's tokens (the
  // accuracy bench measures lookups on them).
  std::vector<at::Tensor>* captured_queries = nullptr;
};

// The batch's attention outputs ([n_i, width] each, in batch order) as one [N, width]: a view where
// they already lie end to end in one buffer (the kernel backend hands out its decode rows as views
// of one tensor), else a copy. Why: at::cat is one more kernel a layer, ~3 us of a batch-8 decode
// step's layer (bench/kernels/NOTES.md run 24). Used by LlamaModel::RunLayers.
at::Tensor JoinRows(const std::vector<at::Tensor>& parts);

struct LlamaModelOptions {
  // RMSNorm and RoPE as one fused CUDA kernel each (kernels/norm_rope.h) instead of ~11 libtorch ops
  // each, with the same bf16 rounding; taken on a bf16 CUDA model in a build with the kernels. At
  // decode, libtorch's per-op dispatch rather than GPU work sets the step time. false = always
  // libtorch (tests compare the two).
  bool fused_norm_rope = true;
  // The weight products of steps of at least this many tokens, up to 8 (the decode batch), on
  // kernels/skinny_gemm.h, with the residual add inside and SiLU * up in one launch, instead of
  // libtorch's cuBLAS calls and elementwise ops; taken where fused_norm_rope is. 0 = never
  // (comparisons: EngineOptions::skinny_gemm_min_rows). 1: faster than cuBLAS at batch 8 (H100,
  // Llama-3-8B 32K TPOT dense 10.61 vs 11.61 ms, the paper's lookup 8.57 vs 9.53 ms; run 23) and,
  // since the product lets the next kernel launch only after its stream (kernels/skinny_gemm.cu),
  // at batch 1 (33K: 8.25 vs 8.58 ms, 7.05 vs 7.45 ms; run 25): bench/kernels/NOTES.md.
  int skinny_min_rows = 1;
};

// How the ingest prefill shares the engine: each unit of work (a chunk of tokens through the
// token-wise matmuls, or a block of queries through attention) runs inside `exclusive`, which holds
// the engine's forward lock, so that generation steps run between units; `cancelled` is polled
// between units.
struct PrefillControl {
  int64_t block_tokens = 512;  // tokens per unit of work
  std::function<void(const std::function<void()>&)> exclusive = [](const std::function<void()>& f) { f(); };
  CancelFn cancelled;
  // The share of the prefill done, in (0, 1], after each unit of work.
  std::function<void(double)> progress;
};

struct PrefillResult {
  KvCache kv;                              // per layer [H_kv, S, D], token order, length S
  std::vector<at::Tensor> window_queries;  // per layer [H, W, D] (undefined when W = 0)
};

// The attention groups of one planned step: per backend, the batch entries it serves.
struct PlannedStep {
  std::vector<AttentionBackend*> backends;
  std::vector<std::vector<size_t>> members;  // members[g]: entries of `batch` served by backends[g]
  std::vector<int64_t> offsets;              // first stacked row of each entry
  int64_t total_tokens = 0;
};

class LlamaModel {
 public:
  // Converts the checkpoint's weights to `dtype` on `device` (float32 on CPU, bfloat16 on CUDA).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(const ModelConfig& config,
                                                            const SafetensorsCheckpoint& weights,
                                                            at::Device device, at::ScalarType dtype,
                                                            const LlamaModelOptions& options = {});

  // The ingest prefill of `tokens` at positions 0 .. S-1 (causal). Keeps the post-RoPE queries of
  // the last `window` tokens of every layer (the calibration queries of the Squeezed index).
  // Cancelled when control.cancelled says so, ResourceExhausted when the KV does not fit, Internal
  // when a libtorch op fails.
  absl::StatusOr<PrefillResult> Prefill(const std::vector<int32_t>& tokens, int64_t window,
                                        const PrefillControl& control) const;

  // Runs the tokens through the model; the sequence's own length grows by num_tokens. Returns the
  // float32 logits [vocab] of the last token ([n, vocab] with logits_of_every_token), or an
  // undefined tensor when !compute_logits. The caller checks that the sequence has room.
  at::Tensor Forward(const ForwardArgs& args) const;

  // Several sequences in one pass (continuous batching): their tokens are stacked so that the
  // token-wise work (embedding, norms, projections, MLP, lm_head) is one matmul over all of them,
  // while each attends through its own SequenceAttention. Each entry is what Forward would do with
  // it alone; returns one logits tensor per entry (undefined when that entry has !compute_logits).
  std::vector<at::Tensor> ForwardBatch(const std::vector<const ForwardArgs*>& batch) const;

  // ForwardBatch in phases. PlanStep groups the entries by backend and plans each (host work);
  // RunLayers runs every layer over the stacked tokens — token ids and position ids as int64
  // tensors [N] on the model's device — and returns the hidden states [N, hidden] before the final
  // norm (device work only: no host synchronisation, no host data); FinishStep advances the
  // sequences. AbandonStep instead, when RunLayers threw.
  PlannedStep PlanStep(const std::vector<const ForwardArgs*>& batch) const;
  at::Tensor RunLayers(const at::Tensor& ids, const at::Tensor& positions, const PlannedStep& plan,
                       const std::vector<const ForwardArgs*>& batch) const;
  void FinishStep(const PlannedStep& plan) const;
  void AbandonStep(const PlannedStep& plan) const;
  // float32 logits [rows, vocab] of hidden states [rows, hidden] (RunLayers's): the final norm,
  // then the lm_head.
  at::Tensor Logits(const at::Tensor& hidden) const;

  // Empty K/V buffers for `capacity` tokens of every layer.
  KvCache NewCache(int64_t capacity) const;

  const ModelConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  // Whether RmsNorm and ApplyRope run the fused CUDA kernels (LlamaModelOptions::fused_norm_rope).
  bool fused_norm_rope() const { return fused_; }
  // Whether the decode batch's products run kernels/skinny_gemm.h (LlamaModelOptions::skinny_min_rows).
  bool skinny_gemm() const { return skinny_workspace_.defined(); }

 private:
  struct Layer {
    at::Tensor input_norm, post_attention_norm;
    at::Tensor qkv_proj;  // [q_out + 2·kv_out, hidden]: q, k and v stacked
    at::Tensor qkv_bias;  // undefined when the model has none
    at::Tensor o_proj, o_bias;
    at::Tensor gate_up_proj;  // [2·intermediate, hidden]: gate, then up
    at::Tensor down_proj;
  };
  struct Projected {
    // post-RoPE q [H, N, D] (on the GPU a view of token-major [N, H, D] memory), k [H_kv, N, D];
    // v [H_kv, N, D] (a view of the projection's columns)
    at::Tensor q, k, v;
  };

  LlamaModel(const ModelConfig& config, at::Device device, at::ScalarType dtype, const LlamaModelOptions& options);
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  // x [n, D·(H + H_kv)] → (q [H, n, D], k [H_kv, n, D]) with the rotary embedding applied.
  std::pair<at::Tensor, at::Tensor> ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
  // cos, sin [N, D] in the model dtype for position ids [N] (int64, on the device).
  std::pair<at::Tensor, at::Tensor> RopeTables(const at::Tensor& positions) const;
  // The residual stream x [N, hidden] through the input norm, q/k/v and RoPE.
  Projected Project(const Layer& layer, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;
  // x + the MLP of x's post-attention norm [N, hidden]; residual + the output projection of the
  // attention [N, H·D] (the adds fused into the matmuls where there is no bias).
  at::Tensor AddMlp(const Layer& layer, const at::Tensor& x) const;
  at::Tensor AddAttentionOutput(const Layer& layer, const at::Tensor& residual, const at::Tensor& attended) const;
  // x [M, K] times w [N, K] transposed, plus bias [N] and residual [M, N] where defined (the adds
  // inside the product where the kernels or BLAS allow).
  at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias = at::Tensor(),
                    const at::Tensor& residual = at::Tensor()) const;
  // Whether a product of x's rows runs kernels/skinny_gemm.h (LlamaModelOptions::skinny_min_rows;
  // the kernel then still checks the operands).
  bool SkinnyRows(const at::Tensor& x) const;
  // residual + (silu(gate) * up) w^T of gate_up [M, 2·intermediate] (gate, then up).
  at::Tensor AddSwiGluDown(const at::Tensor& residual, const at::Tensor& gate_up, const at::Tensor& w) const;

  ModelConfig config_;
  at::Device device_;
  at::ScalarType dtype_;
  bool fused_;  // RmsNorm / ApplyRope on the fused kernels, decided once at construction
  at::Tensor skinny_workspace_;  // kernels::skinny_gemm's where the products run it, else undefined
  int skinny_min_rows_ = 1;      // LlamaModelOptions::skinny_min_rows
  at::Tensor inv_freq_;  // float32 [D/2]
  at::Tensor embed_tokens_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
};

}  // namespace squeezeserve
