// Engine::Load and the engine: model loading, context ingest (context_builder.h), token generation
// over a stored context — dense, or through the Squeezed index (squeezed_lookup.h) — and context
// persistence (context_persistence.h). Forward passes are serialized by one mutex: a batching
// scheduler runs many generations' steps as one pass (StepBatch), ingest takes it per prefill chunk
// so that generation steps interleave with a long ingest; stored contexts are immutable and each
// Generation owns its KV.
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/context_builder.h"
#include "engine/context_persistence.h"
#include "engine/attention.h"
#include "engine/context_store.h"
#include "engine/decode_graphs.h"
#include "engine/device_memory.h"
#include "engine/engine.h"
#include "engine/engine_log.h"
#include "engine/kernel_attention.h"
#include "engine/llama_model.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"
#include "engine/sample_logits.h"
#include "engine/sampler.h"
#include "engine/squeezed_lookup.h"
#include "engine/stored_context.h"
#include "engine/text_stream.h"
#include "engine/tokenizer.h"
#include "engine/torch_attention.h"

namespace squeezeserve {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct DeviceChoice {
  at::Device device{at::kCPU};
  at::ScalarType dtype = at::kFloat;
  std::string name;
};

// "cpu" → float32 on CPU; "cuda" / "cuda:N" → bfloat16 on that GPU when libtorch can reach it.
absl::StatusOr<DeviceChoice> ParseDevice(const std::string& device) {
  if (device == "cpu") return DeviceChoice{at::Device(at::kCPU), at::kFloat, "cpu"};
  int index = 0;
  if (device != "cuda") {
    if (device.rfind("cuda:", 0) != 0 || !absl::SimpleAtoi(device.substr(5), &index) || index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("device \"", device, "\": expected cpu, cuda or cuda:N"));
    }
  }
  if (!at::hasCUDA()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device \"", device, "\": this libtorch has no CUDA support or sees no GPU"));
  }
  at::Device cuda(at::kCUDA, static_cast<at::DeviceIndex>(index));
  try {
    at::empty({1}, at::TensorOptions().device(cuda));
  } catch (const c10::Error& e) {
    return absl::FailedPreconditionError(absl::StrCat("device \"", device, "\": ", e.what_without_backtrace()));
  }
  return DeviceChoice{cuda, at::kBFloat16, absl::StrCat("cuda:", index)};
}

// The context length from which the server's default squeezed decode step on the kernels beats a
// dense one at batch 1: it saves reading most of the KV and costs a fixed time per layer (the
// selection's launches inside the step's CUDA graph, the estimate's rows). Not the point for a
// batch of questions on one context: their dense steps read the context once for the batch (the
// shared-context bundles, engine/kernel_attention.h) while each squeezed question reads its own
// selected rows, so there the default is slower than dense well past this point (one H100, batch
// 8: Llama-2 32K 1.10x, Llama-3 128K 1.05x; docs/performance.md run 30) until squeezed questions
// share their reads too.
int64_t SqueezedBreakEvenTokens(const ModelConfig& c) {
  // The default lookup (90%, estimate, read-ahead) reads ~15% of the context's KV bytes (~12% of the
  // keys and ~2.5% for the centroids) and costs a fixed time per layer and step: measured on the
  // H200 at batch 1 (docs/performance.md), Llama-3-8B shape, 32 layers: 64K dense 9.33 ms against
  // 8.88 ms, 512K 24.47 against 12.11 ms — ~45 us per layer beyond the bytes saved. Llama-3-8B's
  // break-even is thus ~52K tokens, Llama-2-7B's (4x the KV per token) ~13K.
  constexpr double kFixedSecondsPerLayer = 45e-6;
  constexpr double kBytesPerSecond = 4.0e12;
  const double saved_per_token = 0.85 * 2.0 * c.num_kv_heads * c.head_dim * 2 /*bf16*/ / kBytesPerSecond;
  return static_cast<int64_t>(std::ceil(kFixedSecondsPerLayer / saved_per_token / 1024.0)) * 1024;
}

const char* DTypeLabel(at::ScalarType dtype) { return dtype == at::kBFloat16 ? "bfloat16" : "float32"; }

// InvalidArgument naming the first id outside [0, vocab), e.g. "prompt.tokens[3]: id 70000 ...".
absl::Status CheckTokenIds(const std::vector<int32_t>& ids, int64_t vocab, const std::string& field) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "]: id ", ids[i],
                                                     " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

// The context of a prompt-only generation (StartGeneration without one): no tokens, no index, and
// per layer an empty [H_kv, 0, D] KV, so every step attends densely over the prompt and its output.
std::shared_ptr<const StoredContext> MakeEmptyContext(const ModelConfig& c, at::Device device, at::ScalarType dtype) {
  std::vector<at::Tensor> keys, values;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    keys.push_back(at::empty({c.num_kv_heads, 0, c.head_dim}, at::TensorOptions().device(device).dtype(dtype)));
    values.push_back(at::empty({c.num_kv_heads, 0, c.head_dim}, at::TensorOptions().device(device).dtype(dtype)));
  }
  ContextSummary summary;
  summary.index.dense_only = true;
  return std::make_shared<const StoredContext>(summary, std::vector<int32_t>(), std::move(keys), std::move(values),
                                               std::vector<at::Tensor>(c.num_layers), std::vector<squeeze::LayerIndex>());
}

class TorchEngine;

class TorchGeneration : public Generation {
 public:
  // `attention` serves the generation (made by the backend chosen at its start).
  TorchGeneration(TorchEngine* engine, std::shared_ptr<const StoredContext> context, std::vector<int32_t> query,
                  const SamplingOptions& sampling, std::unique_ptr<SequenceAttention> attention, bool squeezed,
                  std::optional<TextStream> text, int64_t prefill_chunk)
      : engine_(engine),
        context_(std::move(context)),
        attention_(std::move(attention)),
        squeezed_(squeezed),
        query_(std::move(query)),
        sampling_(sampling),
        sampler_(SamplerOptions{sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed}),
        text_(std::move(text)),
        prefill_chunk_(prefill_chunk > 0 ? prefill_chunk : static_cast<int64_t>(query_.size())) {
    stats_.prompt_tokens = static_cast<int64_t>(query_.size());
    stats_.cached_tokens = context_->summary().num_tokens;
    stats_.attention_backend = attention_->backend().name();
  }

  absl::StatusOr<TokenStep> Next() override;
  const GenerationStats& stats() const override { return stats_; }
  int64_t next_step_tokens() const override { return prefilling() ? NextChunk() : 1; }
  void set_attention_note(std::string note) { stats_.attention_note = std::move(note); }

  // Next() in two halves around the forward pass, so that TorchEngine::StepBatch can run the passes
  // of many generations as one. PrepareStep fills `args` (FailedPrecondition once finished);
  // CompleteStep samples from the logits (or records the forward's failure) and returns the step.
  absl::Status PrepareStep(ForwardArgs* args);
  absl::StatusOr<TokenStep> CompleteStep(absl::StatusOr<at::Tensor> logits);
  // CompleteStep in two halves around the sampling, so that StepBatch can reduce the greedy rows
  // of the whole batch at once (GreedyDraws). RowToSample records the forward's failure and
  // the prompt log-probs and returns the row to sample from (on the device), or an undefined
  // tensor when the step samples nothing (a query chunk before the last); Emit turns the sampled
  // token into the step.
  absl::StatusOr<at::Tensor> RowToSample(absl::StatusOr<at::Tensor> logits);
  absl::StatusOr<TokenStep> SampleAndEmit(const at::Tensor& row);  // SampleLogits, then Emit
  TokenStep Emit(const SampledToken& sampled);
  absl::Status Fail(absl::Status status) {
    finished_ = true;
    return status;
  }
  Sampler& sampler() { return sampler_; }

 private:
  // Fills stats_.prompt_logprobs from the query prefill's logits [n, vocab] (on the model's device;
  // row i predicts query token i + 1) and the context's last-token logits (which predict query token
  // 0), reducing them on the device; returns the last row (on the device), to sample from.
  absl::StatusOr<at::Tensor> ScorePrompt(const at::Tensor& query_logits);

  bool prefilling() const { return prefilled_ < static_cast<int64_t>(query_.size()); }
  int64_t NextChunk() const { return std::min(prefill_chunk_, static_cast<int64_t>(query_.size()) - prefilled_); }

  TorchEngine* engine_;  // outlives its generations
  std::shared_ptr<const StoredContext> context_;
  std::unique_ptr<SequenceAttention> attention_;  // own KV (query + generated tokens) and the lookup
  bool squeezed_;
  std::vector<int32_t> query_;
  SamplingOptions sampling_;
  Sampler sampler_;
  std::optional<TextStream> text_;  // absent when the model has no tokenizer
  GenerationStats stats_;
  int64_t prefill_chunk_;          // query tokens per prefill step (the whole query when not chunked)
  int64_t prefilled_ = 0;          // query tokens fed through the model so far
  int64_t step_tokens_ = 0;        // tokens of the step in flight (PrepareStep to CompleteStep)
  at::Tensor predictor_of_next_;   // prompt log-probs: the logits row predicting the next chunk's first token
  int32_t last_token_ = -1;
  bool finished_ = false;
};

class TorchEngine : public Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);

  const ModelInfo& model_info() const override { return info_; }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const override {
    if (tokenizer_ == nullptr) {
      return absl::FailedPreconditionError(
          "the model has no tokenizer (tokenizer.json or tokenizer.model); send token ids instead of text");
    }
    return tokenizer_->Encode(text, add_bos, config_.bos_token_id);
  }

  std::string Decode(absl::Span<const int32_t> ids) const override {
    return tokenizer_ == nullptr ? std::string() : tokenizer_->Decode(ids.data(), ids.size());
  }
  std::string DecodeTokens(absl::Span<const int32_t> ids, bool skip_special_tokens) const override {
    return tokenizer_ == nullptr ? std::string() : tokenizer_->Decode(ids.data(), ids.size(), skip_special_tokens);
  }

  absl::StatusOr<std::shared_ptr<const Context>> Ingest(std::string id, std::vector<int32_t> tokens,
                                                        const IndexOptions& index, const ProgressFn& progress,
                                                        const CancelFn& cancelled) override;

  absl::StatusOr<std::unique_ptr<Generation>> StartGeneration(std::shared_ptr<const Context> context,
                                                              std::vector<int32_t> query,
                                                              const SamplingOptions& sampling,
                                                              const AttentionOptions& attention) override;

  absl::Status SaveContext(const Context& context, const std::string& store_dir,
                           const SaveProgressFn& progress) const override {
    const auto* stored = dynamic_cast<const StoredContext*>(&context);
    if (stored == nullptr || !FitsModel(*stored)) {
      return absl::InvalidArgumentError("context: not built by this engine's model");
    }
    return SaveStoredContext(*stored, store_dir, info_.fingerprint, progress);
  }

  absl::StatusOr<std::shared_ptr<const Context>> LoadContext(const std::string& store_dir,
                                                             const std::string& id) const override {
    auto loaded = LoadStoredContext(store_dir, id, info_.fingerprint, config_, model_->device(), model_->dtype());
    if (!loaded.ok()) return loaded.status();
    return std::shared_ptr<const Context>(std::move(*loaded));
  }

  absl::StatusOr<std::shared_ptr<const Context>> MoveContext(const Context& context, MemoryTier tier) const override {
    const auto* stored = dynamic_cast<const StoredContext*>(&context);
    if (stored == nullptr) return absl::InvalidArgumentError("context: not made by this engine");
    const at::Device target = tier == MemoryTier::kDevice ? model_->device() : at::Device(at::kCPU);
    try {
      return std::shared_ptr<const Context>(
          CopyStoredContext(*stored, target, tier == MemoryTier::kDevice ? "device" : "host"));
    } catch (const std::exception& e) {  // out of memory on the target
      return absl::ResourceExhaustedError(absl::StrCat("moving context \"", context.summary().id, "\" to ",
                                                       tier == MemoryTier::kDevice ? "device" : "host",
                                                       " memory: ", e.what()));
    }
  }

  // The stored KV has this model's shape (a context of another engine would be saved under the wrong
  // fingerprint otherwise).
  bool FitsModel(const StoredContext& context) const {
    if (static_cast<int64_t>(context.keys().size()) != config_.num_layers) return false;
    for (const at::Tensor& k : context.keys()) {
      if (k.dim() != 3 || k.size(0) != config_.num_kv_heads || k.size(2) != config_.head_dim) return false;
    }
    return true;
  }

  // One forward pass, serialized with every other one. Returns the logits (undefined when not asked).
  absl::StatusOr<at::Tensor> RunForward(const ForwardArgs& args) const {
    StepWaiting waiting(this);
    absl::MutexLock lock(&forward_mu_);
    waiting.Acquired();
    return RunForwardLocked(args);
  }

  absl::StatusOr<at::Tensor> RunForwardLocked(const ForwardArgs& args) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(forward_mu_) {
    c10::InferenceMode inference_mode;
    try {
      // Logits stay on the device: the next token (SampleLogits) and the prompt log-probs
      // (ScorePrompt) reduce them there.
      return model_->Forward(args);
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("forward pass failed: ", e.what()));
    }
  }

  // ForwardBatch under the same lock: one pass for the whole batch. Logits per entry, on the
  // device (as RunForward), and their greedy draws where a decode graph ran the pass.
  absl::StatusOr<StepLogits> RunForwardBatch(const std::vector<const ForwardArgs*>& batch) const {
    StepWaiting waiting(this);
    absl::MutexLock lock(&forward_mu_);
    waiting.Acquired();
    c10::InferenceMode inference_mode;
    if (graphs_ != nullptr && graphs_->Eligible(batch)) {
      try {
        return graphs_->Run(batch);
      } catch (const std::exception& e) {
        // The step has not advanced: it runs eagerly below, and so do all later ones.
        LogEngineWarning(absl::StrCat("CUDA graph of a decode step failed, decoding without graphs from now on: ",
                                      e.what()));
        graphs_.reset();
      }
    }
    try {
      const EagerStepRange range(batch);
      return StepLogits{model_->ForwardBatch(batch), at::Tensor()};
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("batched forward pass failed: ", e.what()));
    }
  }

  void StepBatch(absl::Span<Generation* const> generations, std::vector<absl::StatusOr<TokenStep>>* out) override;

  // The logits [vocab] (float32, on the device) of the context's last token given the tokens before it: what
  // the dense prefill at ingest computed and did not keep (the first query token's distribution).
  // One dense single-token forward over the stored KV less its last row (the last context token is
  // the last row in both KV layouts, stored_context.h).
  absl::StatusOr<at::Tensor> ContextLastTokenLogits(const StoredContext& context) const {
    const int64_t S = context.summary().num_tokens;
    if (S < 1 || static_cast<int64_t>(context.tokens().size()) != S) {
      return absl::InternalError("prompt log-probs: the context's tokens are not available");
    }
    KvPrefix prefix;
    for (size_t l = 0; l < context.keys().size(); ++l) {
      prefix.keys.push_back(context.keys()[l].narrow(1, 0, S - 1));
      prefix.values.push_back(context.values()[l].narrow(1, 0, S - 1));
    }
    std::unique_ptr<SequenceAttention> scratch;
    try {
      scratch = torch_attention_.NewDense(std::move(prefix), model_->NewCache(1));
    } catch (const std::exception& e) {
      return absl::ResourceExhaustedError(absl::StrCat("allocating the prompt log-prob KV: ", e.what()));
    }
    ForwardArgs args;
    args.token_ids = &context.tokens().back();
    args.num_tokens = 1;
    args.start_position = S - 1;
    args.attention = scratch.get();
    return RunForward(args);
  }

  bool IsStopToken(int32_t token) const {
    for (int32_t eos : config_.eos_token_ids) {
      if (token == eos) return true;
    }
    return false;
  }

 private:
  EngineOptions options_;
  ModelConfig config_;
  ModelInfo info_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::shared_ptr<const StoredContext> empty_context_;  // what a prompt-only generation attends to
  std::unique_ptr<LlamaModel> model_;
  // The attention backends (attention_backend.h): libtorch always; the CUDA kernels when
  // EngineOptions::attention_backend chose them (null otherwise).
  mutable TorchAttention torch_attention_;
  std::unique_ptr<KernelAttention> kernels_;
  // Decode steps on the kernels replayed as CUDA graphs (EngineOptions::cuda_graphs; null when off
  // or after a capture failed).
  mutable std::unique_ptr<DecodeGraphs> graphs_;
  // Where the host's time of each batched decode step goes (engine_log.h; logged).
  DecodeStepTimer step_timer_;
  int64_t prefill_block_tokens_ = 512;
  mutable absl::Mutex forward_mu_;
  // Generation forward passes waiting for forward_mu_ (ingest prefill units let them go first).
  mutable std::atomic<int> steps_waiting_{0};
  class StepWaiting {
   public:
    explicit StepWaiting(const TorchEngine* engine) : engine_(engine) { engine_->steps_waiting_.fetch_add(1); }
    void Acquired() {
      if (engine_ != nullptr) engine_->steps_waiting_.fetch_sub(1);
      engine_ = nullptr;
    }
    ~StepWaiting() { Acquired(); }

   private:
    const TorchEngine* engine_;
  };
};

absl::StatusOr<std::unique_ptr<Engine>> TorchEngine::Create(const EngineOptions& options) {
  auto engine = std::make_unique<TorchEngine>();
  engine->options_ = options;
  if (options.prefill_chunk_tokens < 0) {
    return absl::InvalidArgumentError("prefill_chunk_tokens must be >= 0 (0 = the device's default)");
  }
  if (options.num_threads > 0) at::set_num_threads(options.num_threads);
  auto device = ParseDevice(options.device);
  if (!device.ok()) return device.status();

  const fs::path dir = fs::path(options.model_dir);
  auto config_text = ReadFile(dir / "config.json");
  if (!config_text.ok()) return config_text.status();
  auto config = ParseModelConfig(*config_text);
  if (!config.ok()) return config.status();
  engine->config_ = *config;

  auto weights = SafetensorsCheckpoint::Open(dir.string());
  if (!weights.ok()) return weights.status();

  // The fingerprint covers what determines the model's outputs: config, weight layout, tokenizer.
  std::string fingerprint_input = absl::StrCat("config.json:", config_text->size(), ":", *config_text);
  for (const auto& file : (*weights)->files()) {
    const std::string header = file->header_bytes();
    absl::StrAppend(&fingerprint_input, fs::path(file->path()).filename().string(), ":", header.size(), ":", header);
  }
  auto tokenizer = LoadCheckpointTokenizer(dir.string());  // tokenizer.json, else tokenizer.model, else none
  if (!tokenizer.ok()) return tokenizer.status();
  engine->tokenizer_ = std::move(tokenizer->tokenizer);
  absl::StrAppend(&fingerprint_input, tokenizer->fingerprint_input);

  if (options.skinny_gemm_min_rows < 0 || options.skinny_gemm_min_rows > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("skinny_gemm_min_rows ", options.skinny_gemm_min_rows, ": expected 0 (off) to 8"));
  }
  LlamaModelOptions model_options;
  model_options.skinny_min_rows = options.skinny_gemm_min_rows;
  auto model = LlamaModel::Create(engine->config_, **weights, device->device, device->dtype, model_options);
  if (!model.ok()) return model.status();
  engine->model_ = std::move(*model);
  std::string backend_reason;
  auto use_kernels = ChooseKernelBackend(options.attention_backend, engine->config_, device->device, device->dtype,
                                         &backend_reason);
  if (!use_kernels.ok()) return use_kernels.status();
  kernels::PrefillKernel prefill_kernel = kernels::PrefillKernel::kWhereRangesAreLong;
  if (options.prefill_kernel == "mma_sync") {
    prefill_kernel = kernels::PrefillKernel::kMmaSync;
  } else if (options.prefill_kernel == "warp_specialized") {
    prefill_kernel = kernels::PrefillKernel::kWarpSpecialized;
  } else if (options.prefill_kernel != "auto") {
    return absl::InvalidArgumentError(absl::StrCat("prefill_kernel \"", options.prefill_kernel,
                                                   "\": expected auto, mma_sync or warp_specialized"));
  }
  SqueezedBundles squeezed_bundles = SqueezedBundles::kWherePays;
  if (options.squeezed_bundles == "on") {
    squeezed_bundles = SqueezedBundles::kAlways;
  } else if (options.squeezed_bundles == "off") {
    squeezed_bundles = SqueezedBundles::kOff;
  } else if (options.squeezed_bundles != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("squeezed_bundles \"", options.squeezed_bundles, "\": expected auto, on or off"));
  }
  engine->torch_attention_.set_shared_prefix(options.shared_context_decode);
  if (!options.shared_context_decode) {
    absl::StrAppend(&backend_reason, "; dense questions on one context read it once each (shared_context_decode off)");
  }
  if (*use_kernels) {
    KernelAttentionOptions kernel_options;
    kernel_options.prefill_kernel = prefill_kernel;
    kernel_options.programmatic_launch = options.programmatic_launch;
    kernel_options.shared_context_decode = options.shared_context_decode;
    kernel_options.squeezed_bundles = squeezed_bundles;
    engine->kernels_ = std::make_unique<KernelAttention>(engine->config_, device->device, kernel_options);
    absl::StrAppend(&backend_reason, "; ", engine->kernels_->PrefillKernelNote(), "; ",
                    engine->kernels_->SqueezedBundlesNote());
    if (!options.programmatic_launch) {
      absl::StrAppend(&backend_reason, "; decode kernels in plain stream order (no PDL)");
    }
    if (options.cuda_graphs && DecodeGraphs::Compiled()) {
      engine->graphs_ = std::make_unique<DecodeGraphs>(*engine->model_, *engine->kernels_);
    } else if (!options.cuda_graphs) {
      absl::StrAppend(&backend_reason, "; decode steps dispatched op by op (no CUDA graphs)");
    }
  } else if (squeezed_bundles == SqueezedBundles::kAlways) {
    absl::StrAppend(&backend_reason, "; squeezed_bundles has no effect on libtorch attention (the kernels' only)");
  }
  if (engine->model_->skinny_gemm()) {
    absl::StrAppend(&backend_reason, "; decode steps of ", options.skinny_gemm_min_rows,
                    "-8 tokens: weight products on the skinny GEMM kernel");
  } else if (device->device.is_cuda()) {
    absl::StrAppend(&backend_reason, "; decode-batch weight products on libtorch (cuBLAS)",
                    options.skinny_gemm_min_rows > 0 ? "" : ": skinny_gemm_min_rows 0");
  }
  // Ingest prefill units: large on a GPU (the fused attention and the matmuls need big blocks to run
  // at speed; a 32K-token unit of an 8B model is a fraction of a second), small on the CPU (a unit
  // holds the forward lock, and generation steps wait for it).
  engine->prefill_block_tokens_ =
      options.prefill_chunk_tokens > 0 ? options.prefill_chunk_tokens : (device->device.is_cuda() ? 32768 : 128);
  SetFusedAttentionPreference(options.dense_attention);
  engine->empty_context_ = MakeEmptyContext(engine->config_, device->device, device->dtype);

  ModelInfo& info = engine->info_;
  const ModelConfig& c = engine->config_;
  info.name = fs::path(options.model_dir).lexically_normal().filename().string();
  if (info.name.empty()) info.name = fs::path(options.model_dir).lexically_normal().parent_path().filename().string();
  info.architecture = c.architecture;
  info.fingerprint = Sha256Hex(fingerprint_input);
  info.vocab_size = c.vocab_size;
  info.num_layers = c.num_layers;
  info.num_attention_heads = c.num_attention_heads;
  info.num_kv_heads = c.num_kv_heads;
  info.head_dim = c.head_dim;
  info.hidden_size = c.hidden_size;
  info.max_position_embeddings = c.max_position_embeddings;
  info.has_tokenizer = engine->tokenizer_ != nullptr;
  info.tokenizer_source = tokenizer->source;
  info.chat = {tokenizer->config.chat_template, tokenizer->config.bos_token, tokenizer->config.eos_token};
  info.bos_token_id = c.bos_token_id;
  info.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids[0];
  info.device = device->name;
  info.dtype = DTypeLabel(device->dtype);
  info.kv_bytes_per_token = 2ull * c.num_layers * c.num_kv_heads * c.head_dim * at::elementSize(device->dtype);
  info.squeezed_min_context_tokens = *use_kernels ? SqueezedBreakEvenTokens(c) : -1;
  LogEngineLoaded(info, c.sliding_window);
  LogAttentionBackend(*use_kernels ? "kernels" : "torch", backend_reason);
  return std::unique_ptr<Engine>(std::move(engine));
}

absl::StatusOr<std::shared_ptr<const Context>> TorchEngine::Ingest(std::string id, std::vector<int32_t> tokens,
                                                                   const IndexOptions& index,
                                                                   const ProgressFn& progress,
                                                                   const CancelFn& cancelled) {
  const int64_t total = static_cast<int64_t>(tokens.size());
  if (total == 0) return absl::InvalidArgumentError("content: the context must not be empty");
  if (auto status = CheckTokenIds(tokens, config_.vocab_size, "content.tokens"); !status.ok()) return status;
  if (total > config_.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("content.tokens: ", total,
                                                   " tokens exceed the model's max_position_embeddings (",
                                                   config_.max_position_embeddings, ")"));
  }
  IngestStageTimer timer;
  ResetPeakDeviceMemory(model_->device());
  const ProgressFn timed_progress = [&timer, &progress](const IngestProgress& p) {
    timer.Enter(p.stage);
    if (progress) progress(p);
  };
  PrefillControl control;
  control.block_tokens = prefill_block_tokens_;
  // Each unit of prefill work holds the forward lock on its own, and takes it only while no generation
  // step waits for it (absl::Mutex is not fair: an ingest re-taking the lock unit after unit starved
  // the batching loop for seconds), so generation steps and ingest units alternate.
  control.exclusive = [this](const std::function<void()>& unit) {
    forward_mu_.LockWhen(absl::Condition(
        +[](const std::atomic<int>* waiting) { return waiting->load() == 0; },
        static_cast<const std::atomic<int>*>(&steps_waiting_)));
    absl::Cleanup unlock = [this] { forward_mu_.Unlock(); };
    c10::InferenceMode inference_mode;
    unit();
  };
  control.cancelled = cancelled;
  auto context = BuildStoredContext(*model_, std::move(id), std::move(tokens), index, control, timed_progress);
  if (!context.ok()) return context.status();
  timer.LogDone((*context)->summary().id, total, PeakDeviceMemory(model_->device()));
  return std::shared_ptr<const Context>(std::move(*context));
}

absl::StatusOr<std::unique_ptr<Generation>> TorchEngine::StartGeneration(std::shared_ptr<const Context> context,
                                                                         std::vector<int32_t> query,
                                                                         const SamplingOptions& sampling,
                                                                         const AttentionOptions& attention) {
  const bool prompt_only = context == nullptr;  // no stored context: dense attention over the prompt alone
  auto stored = prompt_only ? empty_context_ : std::dynamic_pointer_cast<const StoredContext>(context);
  if (stored == nullptr) return absl::InvalidArgumentError("context_id: the context was not built by this engine");
  if (query.empty()) return absl::InvalidArgumentError("prompt: the query must not be empty");
  if (auto status = CheckTokenIds(query, config_.vocab_size, "prompt.tokens"); !status.ok()) return status;
  if (sampling.max_new_tokens < 1) {
    return absl::InvalidArgumentError("sampling.max_new_tokens must be >= 1");
  }
  const int64_t context_tokens = stored->summary().num_tokens;
  const int64_t needed = context_tokens + static_cast<int64_t>(query.size()) + sampling.max_new_tokens;
  if (needed > config_.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling.max_new_tokens: context (", context_tokens, ") + prompt (", query.size(), ") + max_new_tokens (",
        sampling.max_new_tokens, ") = ", needed, " exceeds the model's max_position_embeddings (",
        config_.max_position_embeddings, ")"));
  }
  if (!(sampling.temperature >= 0) || !std::isfinite(sampling.temperature)) {
    return absl::InvalidArgumentError("sampling.temperature must be a finite number >= 0");
  }
  if (!(sampling.top_p > 0 && sampling.top_p <= 1)) {
    return absl::InvalidArgumentError("sampling.top_p must be in (0, 1]");
  }
  if (sampling.top_k < 0) return absl::InvalidArgumentError("sampling.top_k must be >= 0");
  if (!sampling.stop.empty() && tokenizer_ == nullptr) {
    return absl::InvalidArgumentError("sampling.stop: stop strings need a tokenizer, and the model has none");
  }
  for (size_t i = 0; i < sampling.stop.size(); ++i) {
    if (sampling.stop[i].empty()) return absl::InvalidArgumentError(absl::StrCat("sampling.stop[", i, "] is empty"));
  }
  if (!(attention.sparsity >= 0 && attention.sparsity <= 1)) {
    return absl::InvalidArgumentError("attention.sparsity must be in [0, 1]");
  }
  // A prompt-only generation attends densely to its own tokens (an empty context).
  const bool squeezed = attention.mode == AttentionMode::kSqueezed && !prompt_only;
  LookupThresholds thresholds;
  if (squeezed) {
    auto found = ThresholdsFor(stored->summary(), attention);
    if (!found.ok()) return found.status();
    thresholds = *found;
  }
  // The backend is chosen once, here: the kernels when they can serve this generation, else
  // libtorch — and a squeezed generation that leaves the kernels says why (stats and log).
  std::string off_kernels;
  if (kernels_ != nullptr) {
    off_kernels = squeezed ? KernelAttention::WhyNotOnKernels(*stored, attention) : "";
    if (!squeezed && !stored->keys().empty() && !stored->keys()[0].is_cuda()) {
      off_kernels = "the context's KV is not in GPU memory";
    }
  }
  std::unique_ptr<SequenceAttention> sequence;
  try {
    const int64_t capacity = static_cast<int64_t>(query.size()) + sampling.max_new_tokens;
    if (kernels_ != nullptr && off_kernels.empty()) {
      sequence = squeezed ? kernels_->NewSqueezed(stored, attention, thresholds, capacity)
                          : kernels_->NewDense(stored, capacity);
    } else if (squeezed) {
      sequence = torch_attention_.NewSqueezed(SqueezedLookup(stored, attention, thresholds), model_->NewCache(capacity));
    } else {
      sequence = torch_attention_.NewDense(KvPrefix{stored->keys(), stored->values()}, model_->NewCache(capacity));
    }
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("allocating the generation KV: ", e.what()));
  }
  if (!off_kernels.empty()) {
    LogEngineWarning(absl::StrCat("a ", squeezed ? "squeezed" : "dense", " generation on context \"",
                                  stored->summary().id, "\" runs on libtorch, off the CUDA kernels: ", off_kernels));
  }
  std::optional<TextStream> text;
  if (tokenizer_ != nullptr) {
    text.emplace([this](const std::vector<int32_t>& ids) { return tokenizer_->Decode(ids.data(), ids.size()); },
                 sampling.stop);
  }
  auto generation = std::make_unique<TorchGeneration>(this, std::move(stored), std::move(query), sampling,
                                                      std::move(sequence), squeezed, std::move(text),
                                                      options_.query_prefill_chunk_tokens);
  if (!off_kernels.empty()) generation->set_attention_note(absl::StrCat("off the CUDA kernels: ", off_kernels));
  return std::unique_ptr<Generation>(std::move(generation));
}

absl::Status TorchGeneration::PrepareStep(ForwardArgs* out) {
  if (finished_) return absl::FailedPreconditionError("the generation has already finished");
  const bool first = prefilling();  // a chunk of the query (all of it unless chunked)
  step_tokens_ = first ? NextChunk() : 1;
  // Positions continue after the context: query token i sits at num_tokens + i.
  ForwardArgs& args = *out;
  args = ForwardArgs();
  args.token_ids = first ? query_.data() + prefilled_ : &last_token_;
  args.num_tokens = step_tokens_;
  args.start_position = stats_.cached_tokens + attention_->length();
  args.attention = attention_.get();
  args.query_prefill = first;
  args.logits_of_every_token = first && sampling_.prompt_logprobs;
  // A chunk before the query's last one samples nothing: its logits are wanted only for scoring.
  const bool last_chunk = !first || prefilled_ + step_tokens_ == static_cast<int64_t>(query_.size());
  args.compute_logits = last_chunk || args.logits_of_every_token;
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> TorchGeneration::ScorePrompt(const at::Tensor& chunk_logits) {
  // The chunk holds query tokens [prefilled_, prefilled_ + n); its row r predicts token
  // prefilled_ + r + 1. Its first token is predicted by the row kept from the chunk before, or for
  // the first chunk by the context's last token.
  const int64_t n = chunk_logits.size(0), begin = prefilled_;
  if (begin == 0) {
    absl::StatusOr<at::Tensor> first = engine_->ContextLastTokenLogits(*context_);
    if (!first.ok()) return first.status();
    predictor_of_next_ = *std::move(first);
  }
  c10::InferenceMode inference_mode;
  try {
    const at::Device device = chunk_logits.device();
    const at::Tensor predictors =
        at::cat({predictor_of_next_.to(device).view({1, -1}), chunk_logits.narrow(0, 0, n - 1)}, 0);
    const at::Tensor targets = at::from_blob(query_.data() + begin, {n, 1}, at::kInt).to(device, at::kLong);
    const at::Tensor scored =
        at::log_softmax(predictors, -1).gather(1, targets).view({n}).to(at::kCPU).contiguous();
    const float* data = scored.data_ptr<float>();
    stats_.prompt_logprobs.insert(stats_.prompt_logprobs.end(), data, data + n);
    predictor_of_next_ = chunk_logits[n - 1];
    return chunk_logits[n - 1];
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("prompt log-probs: ", e.what()));
  }
}

absl::StatusOr<TokenStep> TorchGeneration::Next() {
  ForwardArgs args;
  if (absl::Status status = PrepareStep(&args); !status.ok()) return status;
  return CompleteStep(engine_->RunForward(args));
}

// A step that fed a query chunk and samples nothing (more of the query follows).
TokenStep PrefillOnlyStep() {
  TokenStep step;
  step.prefill_only = true;
  return step;
}

absl::StatusOr<TokenStep> TorchGeneration::CompleteStep(absl::StatusOr<at::Tensor> logits) {
  absl::StatusOr<at::Tensor> row = RowToSample(std::move(logits));
  if (!row.ok()) return row.status();
  if (!row->defined()) return PrefillOnlyStep();
  return SampleAndEmit(*row);
}

absl::StatusOr<TokenStep> TorchGeneration::SampleAndEmit(const at::Tensor& row) {
  try {
    c10::InferenceMode inference_mode;
    return Emit(SampleLogits(sampler_, row));
  } catch (const std::exception& e) {
    return Fail(absl::InternalError(absl::StrCat("sampling the next token: ", e.what())));
  }
}

absl::StatusOr<at::Tensor> TorchGeneration::RowToSample(absl::StatusOr<at::Tensor> logits) {
  if (!logits.ok()) return Fail(logits.status());
  if (squeezed_) {
    stats_.kv_fraction_loaded = attention_->stats().kv_fraction_loaded();
    stats_.centroid_comparisons_per_token = attention_->stats().centroid_comparisons_per_token();
  }
  const bool prefill_step = prefilling();
  if (logits->defined() && logits->dim() == 2) {  // a query chunk with prompt log-probs: every row
    absl::StatusOr<at::Tensor> last = ScorePrompt(*logits);
    if (!last.ok()) return Fail(last.status());
    *logits = *std::move(last);
  }
  if (prefill_step) prefilled_ += step_tokens_;
  if (prefilling()) return at::Tensor();  // more of the query to feed: no token yet
  if (!logits->defined()) return Fail(absl::InternalError("the forward pass returned no logits to sample from"));
  return *std::move(logits);
}

TokenStep TorchGeneration::Emit(const SampledToken& sampled) {
  TokenStep step;
  step.token = last_token_ = sampled.token;
  step.logprob = sampled.logprob;
  ++stats_.completion_tokens;

  if (!sampling_.ignore_eos && engine_->IsStopToken(sampled.token)) {
    step.finish = FinishReason::kEos;  // the EOS token's own text is not shown
    if (text_) step.text_delta = text_->Flush();
  } else if (text_) {
    TextStream::Delta delta = text_->Push(sampled.token);
    step.text_delta = std::move(delta.text);
    if (delta.stopped) step.finish = FinishReason::kStop;
  }
  if (step.finish == FinishReason::kNone && stats_.completion_tokens >= sampling_.max_new_tokens) {
    step.finish = FinishReason::kLength;
    if (text_) step.text_delta += text_->Flush();
  }
  finished_ = step.finish != FinishReason::kNone;
  return step;
}

// The draws of a step's greedy members (`members`: their indices in the batch; `rows`: their rows),
// in that order: those that the decode graph reduced right behind the forward, where it ran the step
// (its entries' rows are the members' rows: RowToSample passes a decode step's row on unchanged),
// else one reduction of the rows and one copy back now.
std::vector<SampledToken> GreedyDraws(const StepLogits& logits, const std::vector<size_t>& members,
                                      const std::vector<at::Tensor>& rows) {
  if (!logits.greedy.defined()) return SampleGreedyRows(rows);
  const std::vector<SampledToken> every_entry = GreedyTokens(logits.greedy);
  std::vector<SampledToken> out;
  for (size_t m : members) out.push_back(every_entry[m]);
  return out;
}

void TorchEngine::StepBatch(absl::Span<Generation* const> generations,
                            std::vector<absl::StatusOr<TokenStep>>* out) {
  out->assign(generations.size(), absl::StatusOr<TokenStep>(absl::UnknownError("not stepped")));
  DecodeStepTimer::Step times;
  times.start = DecodeStepTimer::Clock::now();
  std::vector<ForwardArgs> args(generations.size());
  std::vector<TorchGeneration*> members;  // of this engine and ready, in batch order
  std::vector<size_t> slots;              // their index in `generations`
  for (size_t i = 0; i < generations.size(); ++i) {
    auto* generation = dynamic_cast<TorchGeneration*>(generations[i]);
    if (generation == nullptr) {
      (*out)[i] = absl::InvalidArgumentError("StepBatch: a generation not started by this engine");
      continue;
    }
    if (std::find(members.begin(), members.end(), generation) != members.end()) {
      (*out)[i] = absl::InvalidArgumentError("StepBatch: the same generation twice in one batch");
      continue;
    }
    if (absl::Status status = generation->PrepareStep(&args[i]); !status.ok()) {
      (*out)[i] = status;
      continue;
    }
    members.push_back(generation);
    slots.push_back(i);
  }
  if (members.empty()) {
    step_timer_.Skip();
    return;
  }
  std::vector<const ForwardArgs*> batch;
  bool decode = true;  // every member one token of its answer (not a query chunk): a timed step
  for (size_t slot : slots) {
    batch.push_back(&args[slot]);
    decode = decode && args[slot].num_tokens == 1 && !args[slot].query_prefill;
  }
  times.prepared = DecodeStepTimer::Clock::now();
  absl::StatusOr<StepLogits> logits = RunForwardBatch(batch);
  times.forwarded = DecodeStepTimer::Clock::now();
  std::vector<absl::StatusOr<at::Tensor>> rows;
  for (size_t m = 0; m < members.size(); ++m) {
    rows.push_back(members[m]->RowToSample(logits.ok() ? absl::StatusOr<at::Tensor>(logits->rows[m])
                                                       : absl::StatusOr<at::Tensor>(logits.status())));
  }
  // The greedy rows together (GreedyDraws); sampled rows one by one.
  std::vector<size_t> greedy;
  std::vector<at::Tensor> greedy_rows;
  for (size_t m = 0; m < members.size(); ++m) {
    if (rows[m].ok() && rows[m]->defined() && members[m]->sampler().greedy()) {
      greedy.push_back(m);
      greedy_rows.push_back(*rows[m]);
    }
  }
  std::vector<SampledToken> greedy_tokens;
  absl::Status greedy_status;
  try {
    c10::InferenceMode inference_mode;
    if (!greedy_rows.empty()) greedy_tokens = GreedyDraws(*logits, greedy, greedy_rows);
  } catch (const std::exception& e) {
    greedy_status = absl::InternalError(absl::StrCat("sampling the next token: ", e.what()));
  }
  times.sampled = DecodeStepTimer::Clock::now();
  size_t next_greedy = 0;
  for (size_t m = 0; m < members.size(); ++m) {
    absl::StatusOr<TokenStep>& result = (*out)[slots[m]];
    if (!rows[m].ok()) {
      result = rows[m].status();
    } else if (!rows[m]->defined()) {
      result = PrefillOnlyStep();
    } else if (next_greedy < greedy.size() && greedy[next_greedy] == m) {
      ++next_greedy;
      result = greedy_status.ok() ? absl::StatusOr<TokenStep>(members[m]->Emit(greedy_tokens[next_greedy - 1]))
                                  : members[m]->Fail(greedy_status);
    } else {
      result = members[m]->SampleAndEmit(*rows[m]);
    }
  }
  times.emitted = DecodeStepTimer::Clock::now();
  if (decode && logits.ok()) {
    step_timer_.Add(static_cast<int64_t>(members.size()), times);
  } else {
    step_timer_.Skip();
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  try {
    return TorchEngine::Create(options);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading the model: ", e.what()));
  }
}

}  // namespace squeezeserve
