// The engine's public API: plain C++ types only (no libtorch headers), so that server/ and client/
// can include it next to generated protobuf code. Everything behind it may use libtorch.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/safetensors.h"

namespace squeezeserve {

// The checkpoint's chat template and the special tokens it refers to (tokenizer_config.json).
struct ChatTemplateInfo {
  std::string chat_template;  // Jinja source; "" when the checkpoint has none
  std::string bos_token, eos_token;
};

struct ModelInfo {
  std::string name;          // directory name of the checkpoint
  std::string architecture;  // e.g. "LlamaForCausalLM"
  std::string fingerprint;   // hex SHA-256 over config, weight headers and tokenizer
  int64_t vocab_size = 0;
  int64_t num_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t hidden_size = 0;
  int64_t max_position_embeddings = 0;
  bool has_tokenizer = false;
  std::string tokenizer_source;  // "tokenizer.json", "tokenizer.model" or "" (token ids only)
  ChatTemplateInfo chat;
  int32_t bos_token_id = -1;  // -1 when the model has none
  int32_t eos_token_id = -1;
  std::string device;  // "cpu", "cuda:0"
  std::string dtype;   // compute dtype: "float32", "bfloat16"
  // Context length from which the server's default squeezed lookup (90%, pruned clusters estimated,
  // read-ahead) decodes faster than dense at batch 1 on this engine (docs/performance.md); -1 =
  // never (the CPU, or libtorch on a GPU: the libtorch lookup costs more than it saves). The
  // server's auto mode reads it.
  int64_t squeezed_min_context_tokens = -1;
  // KV cache bytes per context token (K and V of every layer, in the compute dtype): what a stored
  // context holds at least, before its index.
  uint64_t kv_bytes_per_token = 0;
};

struct EngineOptions {
  std::string model_dir;
  std::string device = "cpu";  // "cpu", "cuda" or "cuda:N"
  // Tokens per unit of ingest prefill work (LlamaModel::Prefill; each unit holds the forward lock
  // on its own, so generation steps interleave with a long ingest); 0 = 32768 on a GPU, 128 on the CPU.
  int prefill_chunk_tokens = 0;
  // Intra-op threads for CPU math; 0 keeps libtorch's default.
  int num_threads = 0;
  // Squeezed lookup + attention of generate: "auto" (the CUDA kernels of kernels/ when the engine
  // runs on a GPU, was built with them and the model's shape suits them: head_dim 64 or 128, GQA
  // group 1 to 8; libtorch otherwise), "torch" (always libtorch, for A/B) or "kernels" (the
  // kernels or Load fails).
  std::string attention_backend = "auto";
  // Dense attention on a GPU (attention.h): "auto" (libtorch's fused cuDNN kernel, else its
  // FlashAttention kernel, whichever first passes a check against the reference), "cudnn", "flash"
  // or "reference" (the blocked libtorch code; for comparisons).
  std::string dense_attention = "auto";
  // The squeezed query prefill's attention on the CUDA kernels: "auto" (the warp-specialized
  // kernel where each CTA streams at least half its head's selection, i.e. long queries, mma.sync
  // where split-K cuts it finer, i.e. questions: kernels::PrefillKernel::kWhereRangesAreLong says
  // what was measured), "mma_sync" (FlashAttention-2 structure, kernels/prefill_attention.cu) or
  // "warp_specialized" (FlashAttention-3 structure, kernels/prefill_attention_ws.cu), both for
  // comparisons. The warp-specialized kernel runs only at head_dim 128 on Hopper; mma.sync elsewhere.
  std::string prefill_kernel = "auto";
  // Decode steps on the CUDA kernels replayed as CUDA graphs (decode_graphs.h); false = every step
  // dispatched op by op (for comparisons).
  bool cuda_graphs = true;
  // The weight products of decode steps of at least this many tokens (up to 8) on our kernel
  // (kernels/skinny_gemm.h: the weights streamed near the copy rate, the residual add inside, SiLU *
  // up one launch) on a bf16 GPU model in a build with the kernels; 0 = libtorch's cuBLAS calls
  // throughout (for comparisons). 0..8, else Load fails. Default: llama_model.h skinny_min_rows.
  int skinny_gemm_min_rows = 1;
  // The decode step's kernels on sm_90+ launched with programmatic dependent launch (each starts
  // while the previous one drains, its index reads under that tail: kernels/chained_launch.cuh);
  // false = plain stream order (for comparisons; process-wide, as kernels/launch.h).
  bool programmatic_launch = true;
  // A batch's dense questions on one stored context read it together instead of once each: on the
  // CUDA kernels their decode tokens in bundles of up to 32 / G (G = the GQA group;
  // engine/kernel_attention.h), on libtorch all their rows of a step in one call
  // (engine/torch_attention.h); false = once each (for comparisons).
  bool shared_context_decode = true;
  // With the CUDA kernels: a step's squeezed questions on one stored context read the union of
  // their selected clusters once per bundle, each still attending only its own clusters (so a
  // question's output does not depend on its batch; engine/kernel_attention.h "Squeezed
  // bundles"). "auto": where it pays (one query head a KV head, 4+ questions on the paper's
  // lookup; bench/kernels/NOTES.md run 33); "on": every run of 2+; "off": never.
  std::string squeezed_bundles = "auto";
  // Chunked query prefill: a generation whose query is longer than this feeds it through the model
  // over several steps of at most this many tokens (so that a batching scheduler can interleave a
  // long prompt with the decode steps of other streams); 0 = the whole query in one step.
  int query_prefill_chunk_tokens = 0;
};

enum class AttentionMode { kDense, kSqueezed };

// Options of the Squeezed Attention index (docs/index_layout.md).
struct IndexOptions {
  float centroid_fraction = 0.05f;
  int observation_window = 100;
  int max_iterations = 30;
  uint64_t seed = 0;
  int levels = 2;
  float coarse_centroid_fraction = 0.01f;
  std::vector<float> sparsity_levels = {0.5f, 0.7f, 0.8f, 0.9f};
  // Every (layer, KV head) keeps at least this share of a level's budget (1 − sparsity) of its own
  // keys on the calibration queries; 0 = one global threshold per level, as the authors
  // (docs/index_layout.md "Per-head floor"; the default is the measured best on bench/eval_long_context).
  float head_floor_share = 1.0f;
  bool dense_only = false;
};

struct SparsityLevelInfo {
  float sparsity = 0;
  std::vector<float> thresholds;  // hierarchical lookup: one per index level, coarse first
  float one_level_threshold = 0;  // flat lookup over the fine level (also set for 2-level indexes)
  float kept_fraction = 0;        // measured on the calibration queries
  // Per-token (decode) selection: the same thresholds calibrated on single-query scores. A single
  // query's p̂ is more spread than the W-query mean the set above is calibrated on, so the prefill
  // thresholds would keep far more than 1 − sparsity per decode token (docs/index_layout.md).
  // Manifests written before these fields existed load them as the prefill values.
  std::vector<float> decode_thresholds;  // coarse first, like `thresholds`
  float decode_one_level_threshold = 0;
  float decode_kept_fraction = 0;  // mean over single calibration queries
};

struct ContextSummary {
  std::string id;
  int64_t num_tokens = 0;
  IndexOptions index;
  bool has_index = false;
  std::vector<SparsityLevelInfo> sparsity_levels;
  std::vector<int64_t> centroids_per_level;  // coarse first
  uint64_t kv_bytes = 0;
  uint64_t index_bytes = 0;
  int64_t created_unix_ms = 0;
  std::string tier = "device";
};

enum class MemoryTier { kDevice, kHost };

// An ingested fixed context: its KV cache and index. Immutable once built and shared by every
// generation that reads it; owned through shared_ptr so a delete never pulls it from under a reader.
class Context {
 public:
  virtual ~Context() = default;
  virtual const ContextSummary& summary() const = 0;
  virtual const std::vector<int32_t>& tokens() const = 0;
};

struct IngestProgress {
  std::string stage;  // "prefill", "clustering", "calibrating", ...
  float fraction = 0;  // of the engine's part of the ingest, in [0, 1]
  int64_t tokens_done = 0;
  int64_t tokens_total = 0;
};
using ProgressFn = std::function<void(const IngestProgress&)>;
// Storing a context: (bytes written, bytes of its tensors file), as the writing goes.
using SaveProgressFn = WriteProgressFn;
// Polled between steps of long work; returns true once the caller has given up (cancel, deadline).
using CancelFn = std::function<bool()>;

struct SamplingOptions {
  int max_new_tokens = 64;
  float temperature = 0;  // 0 = greedy
  float top_p = 1;        // (0, 1]
  int top_k = 0;          // 0 = disabled
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  // Also score the query: GenerationStats::prompt_logprobs (teacher-forced log-probs of the query
  // tokens, e.g. for perplexity). Costs a log-softmax over the query prefill's logits.
  bool prompt_logprobs = false;
};

struct AttentionOptions {
  AttentionMode mode = AttentionMode::kSqueezed;
  float sparsity = 0.7f;
  // Look up through both levels of a two-level index at decode steps (TwoLevelStep).
  bool hierarchical = false;
  // Squeezed: pruned clusters still attend, each as one key (centroid, size, mean value) instead
  // of being dropped as in the paper (squeeze::SelectionOptions::estimate_pruned); on the GPU inside
  // the kernels, one level and hierarchical.
  bool estimate_pruned = true;
  // With estimate_pruned: only the pruned clusters scoring at least this fraction of their
  // threshold are estimated (squeeze::SelectionOptions::estimate_floor); 0 = all of them.
  float estimate_floor = 0;
  // Squeezed: each query head that concentrates on one context key also loads, at the next step,
  // the cluster holding the key after it (squeeze/read_ahead.h: copying and induction heads read
  // consecutive positions); on the GPU inside the kernels.
  bool read_ahead = true;
};

// Whether a step of a lookup with AttentionOptions::hierarchical goes through both index levels:
// decode steps do; the question's prefill blocks select over the fine level alone, which every
// two-level index holds whole. The second level cuts the centroid bytes a decoded token reads; a
// prefill block's selection scores all centroids in one tensor-core GEMM pass, while two levels
// there run CUDA-core passes (time to first token at 256K, batch 8, H100: 289 against 104 ms).
inline bool TwoLevelStep(bool hierarchical, bool decode) { return hierarchical && decode; }

enum class FinishReason { kNone, kStop, kLength, kEos, kCancelled };

// One generated token and what the client should see of it.
struct TokenStep {
  int32_t token = -1;
  float logprob = 0;            // log-softmax of the raw logits at the chosen token
  std::string text_delta;       // decoded text newly complete after this token (may be empty)
  FinishReason finish = FinishReason::kNone;  // set on the last step
  // A chunk of the query was prefilled and no token sampled yet (EngineOptions::
  // query_prefill_chunk_tokens): token is -1, text_delta empty; the client sees nothing of it.
  bool prefill_only = false;
};

struct GenerationStats {
  int64_t prompt_tokens = 0;      // query tokens prefilled by this request
  int64_t cached_tokens = 0;      // context tokens served from the stored KV
  int64_t completion_tokens = 0;
  double kv_fraction_loaded = 1;  // mean over layers, KV heads and steps
  double centroid_comparisons_per_token = 0;
  // What serves the generation's attention: "kernels" (the CUDA kernels) or "torch" (libtorch), and
  // why it is not the fast path when it is not (empty otherwise).
  std::string attention_backend;
  std::string attention_note;
  // With SamplingOptions::prompt_logprobs, filled by the first step (the query prefill): entry i is
  // log p(query[i] | context, query[0..i)) under the generation's attention mode. Entry 0 is
  // conditioned on the context alone, which both modes compute densely (the stored context was
  // prefilled densely at ingest). Empty otherwise.
  std::vector<float> prompt_logprobs;
};

// The decode state of one request. Not thread-safe: one caller drives it.
class Generation {
 public:
  virtual ~Generation() = default;
  // Runs the query prefill on the first call (or, with EngineOptions::query_prefill_chunk_tokens,
  // one chunk of it per call, each returning a prefill_only step until the last chunk samples the
  // first token), then one decode step per call. After a step with finish != kNone, further calls
  // return FailedPrecondition.
  virtual absl::StatusOr<TokenStep> Next() = 0;
  virtual const GenerationStats& stats() const = 0;
  // Tokens the next step feeds through the model: the query (or its next chunk) while prefilling,
  // then 1. A batching scheduler budgets the prefill work of one step with it.
  virtual int64_t next_step_tokens() const { return 1; }
};

// Thread-safe.
class Engine {
 public:
  virtual ~Engine() = default;

  static absl::StatusOr<std::unique_ptr<Engine>> Load(const EngineOptions& options);

  virtual const ModelInfo& model_info() const = 0;

  // FailedPrecondition when the checkpoint has no tokenizer (tokenizer.json or tokenizer.model).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const = 0;
  virtual std::string Decode(absl::Span<const int32_t> ids) const = 0;
  // Decode, with special tokens (BOS, EOS, chat markers) kept unless skip_special_tokens (Decode
  // leaves them out). Engines without that distinction decode as Decode does.
  virtual std::string DecodeTokens(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
    (void)skip_special_tokens;
    return Decode(ids);
  }

  // Prefills `tokens` once and builds the index asked for. `id` is recorded in the summary.
  virtual absl::StatusOr<std::shared_ptr<const Context>> Ingest(std::string id, std::vector<int32_t> tokens,
                                                                const IndexOptions& index,
                                                                const ProgressFn& progress,
                                                                const CancelFn& cancelled) = 0;

  // Validates the options against the context (InvalidArgument naming the field) and returns the
  // generation; the work happens in Generation::Next. A null `context` is a prompt-only request:
  // dense attention over the query alone, as any server (attention.mode is then ignored).
  virtual absl::StatusOr<std::unique_ptr<Generation>> StartGeneration(std::shared_ptr<const Context> context,
                                                                      std::vector<int32_t> query,
                                                                      const SamplingOptions& sampling,
                                                                      const AttentionOptions& attention) = 0;

  // Writes the context (KV, index, thresholds, summary) to <store_dir>/<id> atomically
  // (engine/context_files.h); the manifest carries the summary (SummaryToJson) and the fingerprint.
  // `progress` (nullable) follows the writing.
  virtual absl::Status SaveContext(const Context& context, const std::string& store_dir,
                                   const SaveProgressFn& progress) const = 0;
  // Loads and verifies <store_dir>/<id>: NotFound when absent, FailedPrecondition when built for
  // another model or format version, DataLoss when a checksum or tensor does not verify.
  virtual absl::StatusOr<std::shared_ptr<const Context>> LoadContext(const std::string& store_dir,
                                                                     const std::string& id) const = 0;

  // Memory tiers (server/ContextStore): a copy of `context` whose KV and index live in `tier` memory —
  // kDevice: the engine's device, where generation reads them; kHost: CPU memory (pinned when the
  // engine runs on a GPU), a parking place cheaper to return from than the disk. The copy's summary
  // says "device" or "host". On a CPU engine both are CPU memory (the copy is still made).
  // ResourceExhausted when the target memory cannot hold it; the original is untouched either way.
  virtual absl::StatusOr<std::shared_ptr<const Context>> MoveContext(const Context& context, MemoryTier tier) const = 0;

  // Continuous batching: advances every generation by exactly one Next() — a query prefill for a
  // generation that has not started, else one decode token — in as few forward passes as the engine
  // can (TorchEngine: one, the tokens of all of them stacked). (*out)[i] is what generations[i]->Next()
  // would have returned; each result is independent (one failing generation does not fail the others).
  // The generations must be distinct, made by this engine, and not driven by anyone else meanwhile.
  // This default steps them one at a time.
  virtual void StepBatch(absl::Span<Generation* const> generations, std::vector<absl::StatusOr<TokenStep>>* out) {
    out->clear();
    out->reserve(generations.size());
    for (Generation* generation : generations) out->push_back(generation->Next());
  }
};

}  // namespace squeezeserve
