// An Engine without a model, for fuzzing the real RPC handlers (service, reactors, schedulers, the
// context store and its files) without libtorch: "ingest" keeps the token ids, "generation" emits
// deterministic tokens after a chunked "prefill", and contexts go to and come back from a real store
// directory (engine/context_files.h) with a tiny tensor, so the store's files layer runs too.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/context_files.h"
#include "engine/context_summary_json.h"
#include "engine/engine.h"

namespace squeezeserve::fuzz {

class FakeContext : public Context {
 public:
  FakeContext(ContextSummary summary, std::vector<int32_t> tokens)
      : summary_(std::move(summary)), tokens_(std::move(tokens)) {}
  const ContextSummary& summary() const override { return summary_; }
  const std::vector<int32_t>& tokens() const override { return tokens_; }

 private:
  ContextSummary summary_;
  std::vector<int32_t> tokens_;
};

class FakeGeneration : public Generation {
 public:
  FakeGeneration(int64_t query, int max_new_tokens) : prompt_left_(query), left_(max_new_tokens) {
    stats_.prompt_tokens = query;
  }
  int64_t next_step_tokens() const override { return prompt_left_ > 0 ? std::min<int64_t>(prompt_left_, 8) : 1; }
  absl::StatusOr<TokenStep> Next() override {
    if (left_ == 0) return absl::FailedPreconditionError("finished");
    TokenStep step;
    if (prompt_left_ > 0) {
      prompt_left_ -= std::min<int64_t>(prompt_left_, 8);
      if (prompt_left_ > 0) {
        step.prefill_only = true;
        return step;
      }
    }
    step.token = 3 + static_cast<int32_t>(left_ % 50);
    step.text_delta = "x";
    if (--left_ == 0) step.finish = FinishReason::kLength;
    ++stats_.completion_tokens;
    return step;
  }
  const GenerationStats& stats() const override { return stats_; }

 private:
  int64_t prompt_left_;
  int left_;
  GenerationStats stats_;
};

class FakeEngine : public Engine {
 public:
  FakeEngine() {
    info_.name = "fake";
    info_.fingerprint = "fake-model";
    info_.vocab_size = 1000;
    info_.num_layers = 1;
    info_.max_position_embeddings = 1 << 20;
    info_.has_tokenizer = true;
    info_.bos_token_id = 1;
    info_.eos_token_id = 2;
  }
  const ModelInfo& model_info() const override { return info_; }
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(3 + c % 900);
    return ids;
  }
  std::string Decode(absl::Span<const int32_t> ids) const override { return std::string(ids.size(), 'x'); }
  absl::StatusOr<std::shared_ptr<const Context>> Ingest(std::string id, std::vector<int32_t> tokens,
                                                        const IndexOptions& index, const ProgressFn& progress,
                                                        const CancelFn& cancelled) override {
    if (tokens.empty()) return absl::InvalidArgumentError("content: empty");
    if (progress) progress(IngestProgress{"prefill", 0.5f, 1, 2});
    if (cancelled && cancelled()) return absl::CancelledError("cancelled");
    ContextSummary summary;
    summary.id = std::move(id);
    summary.num_tokens = static_cast<int64_t>(tokens.size());
    summary.index = index;
    summary.kv_bytes = tokens.size() * 16;
    return std::shared_ptr<const Context>(std::make_shared<FakeContext>(std::move(summary), std::move(tokens)));
  }
  absl::StatusOr<std::unique_ptr<Generation>> StartGeneration(std::shared_ptr<const Context> context,
                                                              std::vector<int32_t> query,
                                                              const SamplingOptions& sampling,
                                                              const AttentionOptions&) override {
    if (query.empty()) return absl::InvalidArgumentError("prompt: empty");
    return std::unique_ptr<Generation>(
        std::make_unique<FakeGeneration>(static_cast<int64_t>(query.size()), std::min(sampling.max_new_tokens, 64)));
  }
  absl::Status SaveContext(const Context& context, const std::string& store_dir,
                           const SaveProgressFn& progress) const override {
    const std::vector<int32_t>& tokens = context.tokens();
    nlohmann::json manifest = {{"model_fingerprint", info_.fingerprint}, {"summary", SummaryToJson(context.summary())}};
    return PublishContextDir(store_dir, context.summary().id, manifest,
                             {{"tokens", DType::kI32, {static_cast<int64_t>(tokens.size())}, tokens.data()}}, progress);
  }
  absl::StatusOr<std::shared_ptr<const Context>> LoadContext(const std::string& store_dir,
                                                             const std::string& id) const override {
    absl::StatusOr<ContextDir> dir = OpenContextDir(store_dir, id, info_.fingerprint);
    if (!dir.ok()) return dir.status();
    if (!dir->manifest.contains("summary")) return absl::DataLossError("no summary");
    absl::StatusOr<ContextSummary> summary = SummaryFromJson(dir->manifest["summary"]);
    if (!summary.ok()) return summary.status();
    const TensorView* view = dir->tensors->Find("tokens");
    if (view == nullptr || view->dtype != DType::kI32 || view->shape.size() != 1 ||
        view->shape[0] != summary->num_tokens || view->nbytes != static_cast<uint64_t>(summary->num_tokens) * 4) {
      return absl::DataLossError(absl::StrCat("context '", id, "': tokens do not match the summary"));
    }
    std::vector<int32_t> tokens(summary->num_tokens);
    if (view->nbytes > 0) std::memcpy(tokens.data(), view->data, view->nbytes);
    summary->id = id;
    return std::shared_ptr<const Context>(std::make_shared<FakeContext>(*std::move(summary), std::move(tokens)));
  }
  absl::StatusOr<std::shared_ptr<const Context>> MoveContext(const Context& context, MemoryTier) const override {
    return std::shared_ptr<const Context>(std::make_shared<FakeContext>(context.summary(), context.tokens()));
  }

 private:
  ModelInfo info_;
};

}  // namespace squeezeserve::fuzz
