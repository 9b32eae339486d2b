// Engine::Load and the dense engine: model loading, context ingest (chunked prefill) and token
// generation over a stored context. Forward passes are serialized by one mutex for now (a batching
// scheduler replaces it later); stored contexts are immutable and each Generation owns its KV.
#include <c10/core/InferenceMode.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "engine/context_store.h"
#include "engine/dense_context.h"
#include "engine/engine.h"
#include "engine/llama_model.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"
#include "engine/sampler.h"
#include "engine/text_stream.h"
#include "engine/tokenizer.h"

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

class TorchEngine;

class TorchGeneration : public Generation {
 public:
  TorchGeneration(TorchEngine* engine, std::shared_ptr<const DenseContext> context, std::vector<int32_t> query,
                  const SamplingOptions& sampling, KvCache cache, std::optional<TextStream> text)
      : engine_(engine),
        context_(std::move(context)),
        query_(std::move(query)),
        sampling_(sampling),
        sampler_(SamplerOptions{sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed}),
        cache_(std::move(cache)),
        text_(std::move(text)) {
    stats_.prompt_tokens = static_cast<int64_t>(query_.size());
    stats_.cached_tokens = context_->summary().num_tokens;
  }

  absl::StatusOr<TokenStep> Next() override;
  const GenerationStats& stats() const override { return stats_; }

 private:
  TorchEngine* engine_;  // outlives its generations
  std::shared_ptr<const DenseContext> context_;
  std::vector<int32_t> query_;
  SamplingOptions sampling_;
  Sampler sampler_;
  KvCache cache_;  // query + generated tokens
  std::optional<TextStream> text_;  // absent when the model has no tokenizer
  GenerationStats stats_;
  int32_t last_token_ = -1;
  bool finished_ = false;
};

class TorchEngine : public Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);

  const ModelInfo& model_info() const override { return info_; }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const override {
    if (tokenizer_ == nullptr) {
      return absl::FailedPreconditionError("the model has no tokenizer.model; send token ids instead of text");
    }
    return tokenizer_->Encode(text, add_bos, config_.bos_token_id);
  }

  std::string Decode(absl::Span<const int32_t> ids) const override {
    return tokenizer_ == nullptr ? std::string() : tokenizer_->Decode(ids.data(), ids.size());
  }

  absl::StatusOr<std::shared_ptr<const Context>> Ingest(std::string id, std::vector<int32_t> tokens,
                                                        const IndexOptions& index, const ProgressFn& progress,
                                                        const CancelFn& cancelled) override;

  absl::StatusOr<std::unique_ptr<Generation>> StartGeneration(std::shared_ptr<const Context> context,
                                                              std::vector<int32_t> query,
                                                              const SamplingOptions& sampling,
                                                              const AttentionOptions& attention) override;

  // One forward pass, serialized with every other one. Returns the logits (undefined when not asked).
  absl::StatusOr<at::Tensor> RunForward(const ForwardArgs& args) const {
    absl::MutexLock lock(&forward_mu_);
    c10::InferenceMode inference_mode;
    try {
      at::Tensor logits = model_->Forward(args);
      if (logits.defined()) logits = logits.to(at::kCPU).contiguous();
      return logits;
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("forward pass failed: ", e.what()));
    }
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
  std::unique_ptr<LlamaModel> model_;
  mutable absl::Mutex forward_mu_;
};

absl::StatusOr<std::unique_ptr<Engine>> TorchEngine::Create(const EngineOptions& options) {
  auto engine = std::make_unique<TorchEngine>();
  engine->options_ = options;
  if (options.prefill_chunk_tokens <= 0) {
    return absl::InvalidArgumentError("prefill_chunk_tokens must be positive");
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
  const fs::path tokenizer_path = dir / "tokenizer.model";
  std::error_code ec;
  if (fs::exists(tokenizer_path, ec)) {
    auto tokenizer_bytes = ReadFile(tokenizer_path);
    if (!tokenizer_bytes.ok()) return tokenizer_bytes.status();
    auto tokenizer = Tokenizer::Load(tokenizer_path.string());
    if (!tokenizer.ok()) return tokenizer.status();
    engine->tokenizer_ = std::move(*tokenizer);
    absl::StrAppend(&fingerprint_input, "tokenizer.model:", tokenizer_bytes->size(), ":", *tokenizer_bytes);
  }

  auto model = LlamaModel::Create(engine->config_, **weights, device->device, device->dtype);
  if (!model.ok()) return model.status();
  engine->model_ = std::move(*model);

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
  info.bos_token_id = c.bos_token_id;
  info.eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids[0];
  info.device = device->name;
  info.dtype = DTypeLabel(device->dtype);
  spdlog::info("engine: loaded {} ({}, {} layers, {} q / {} kv heads, head_dim {}) on {} as {}", info.name,
               info.architecture, info.num_layers, info.num_attention_heads, info.num_kv_heads, info.head_dim,
               info.device, info.dtype);
  if (c.sliding_window > 0) {
    spdlog::warn("engine: sliding_window={} is not applied; sequences longer than it differ from the reference",
                 c.sliding_window);
  }
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
  if (index.observation_window < 0) {
    return absl::InvalidArgumentError("index.observation_window must be >= 0");
  }

  // The whole context KV, written chunk by chunk in place.
  KvCache context_kv;
  try {
    context_kv = model_->NewCache(total);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("allocating the context KV: ", e.what()));
  }
  const int64_t window = std::min<int64_t>(index.observation_window, total);
  const int64_t window_start = total - window;
  std::vector<std::vector<at::Tensor>> window_query_chunks(config_.num_layers);

  const int64_t chunk = options_.prefill_chunk_tokens;
  for (int64_t start = 0; start < total; start += chunk) {
    if (cancelled && cancelled()) return absl::CancelledError("ingest cancelled");
    const int64_t n = std::min(chunk, total - start);
    // Part (a): the context before this chunk; part (b): this chunk, written at [start, start + n).
    std::vector<at::Tensor> prefix_keys, prefix_values;
    KvCache chunk_cache;
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      prefix_keys.push_back(context_kv.keys[l].narrow(1, 0, start));
      prefix_values.push_back(context_kv.values[l].narrow(1, 0, start));
      chunk_cache.keys.push_back(context_kv.keys[l].narrow(1, start, total - start));
      chunk_cache.values.push_back(context_kv.values[l].narrow(1, start, total - start));
    }
    ForwardArgs args;
    args.token_ids = tokens.data() + start;
    args.num_tokens = n;
    args.start_position = start;
    args.prefix = KvPrefix{&prefix_keys, &prefix_values};
    args.cache = &chunk_cache;
    args.compute_logits = false;
    std::vector<at::Tensor> captured;
    if (start + n > window_start) {
      args.captured_queries = &captured;
      args.capture_from = std::max<int64_t>(0, window_start - start);
    }
    auto forward = RunForward(args);
    if (!forward.ok()) return forward.status();
    for (size_t l = 0; l < captured.size(); ++l) window_query_chunks[l].push_back(captured[l]);
    if (progress) {
      progress(IngestProgress{"prefill", static_cast<float>(start + n) / static_cast<float>(total), start + n, total});
    }
  }

  std::vector<at::Tensor> window_queries;
  for (auto& chunks : window_query_chunks) {
    window_queries.push_back(chunks.empty() ? at::Tensor() : at::cat(chunks, 1));
  }
  ContextSummary summary;
  summary.id = std::move(id);
  summary.num_tokens = total;
  summary.index = index;
  summary.has_index = false;  // the dense path; the Squeezed index builder adds the index
  summary.kv_bytes = 2ull * config_.num_layers * config_.num_kv_heads * total * config_.head_dim *
                     at::elementSize(model_->dtype());
  summary.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  summary.tier = "device";  // the KV stays in the engine device's memory
  return std::shared_ptr<const Context>(std::make_shared<DenseContext>(
      std::move(summary), std::move(tokens), std::move(context_kv.keys), std::move(context_kv.values),
      std::move(window_queries)));
}

absl::StatusOr<std::unique_ptr<Generation>> TorchEngine::StartGeneration(std::shared_ptr<const Context> context,
                                                                         std::vector<int32_t> query,
                                                                         const SamplingOptions& sampling,
                                                                         const AttentionOptions& attention) {
  auto dense = std::dynamic_pointer_cast<const DenseContext>(context);
  if (dense == nullptr) return absl::InvalidArgumentError("context_id: the context was not built by this engine");
  if (query.empty()) return absl::InvalidArgumentError("prompt: the query must not be empty");
  if (auto status = CheckTokenIds(query, config_.vocab_size, "prompt.tokens"); !status.ok()) return status;
  if (sampling.max_new_tokens < 1) {
    return absl::InvalidArgumentError("sampling.max_new_tokens must be >= 1");
  }
  const int64_t context_tokens = dense->summary().num_tokens;
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
  // A context without an index is served densely whatever the requested mode.

  KvCache cache;
  try {
    cache = model_->NewCache(static_cast<int64_t>(query.size()) + sampling.max_new_tokens);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("allocating the generation KV: ", e.what()));
  }
  std::optional<TextStream> text;
  if (tokenizer_ != nullptr) {
    text.emplace([this](const std::vector<int32_t>& ids) { return tokenizer_->Decode(ids.data(), ids.size()); },
                 sampling.stop);
  }
  return std::unique_ptr<Generation>(std::make_unique<TorchGeneration>(
      this, std::move(dense), std::move(query), sampling, std::move(cache), std::move(text)));
}

absl::StatusOr<TokenStep> TorchGeneration::Next() {
  if (finished_) return absl::FailedPreconditionError("the generation has already finished");
  const bool first = cache_.length == 0;
  // Positions continue after the context: query token i sits at num_tokens + i.
  ForwardArgs args;
  args.token_ids = first ? query_.data() : &last_token_;
  args.num_tokens = first ? static_cast<int64_t>(query_.size()) : 1;
  args.start_position = stats_.cached_tokens + cache_.length;
  args.prefix = KvPrefix{&context_->keys(), &context_->values()};
  args.cache = &cache_;
  auto logits = engine_->RunForward(args);
  if (!logits.ok()) {
    finished_ = true;
    return logits.status();
  }

  const SampledToken sampled =
      sampler_.Sample(absl::MakeConstSpan(logits->data_ptr<float>(), static_cast<size_t>(logits->numel())));
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

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  try {
    return TorchEngine::Create(options);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading the model: ", e.what()));
  }
}

}  // namespace squeezeserve
