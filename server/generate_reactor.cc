#include "server/generate_reactor.h"

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/outbox_reactor.h"
#include "server/prompt_text.h"
#include "server/proto_convert.h"
#include "server/request_codec.h"
#include "server/request_id.h"
#include "server/validation.h"
#include "spdlog/spdlog.h"

namespace squeezeserve::server {
namespace {

namespace pb = ::squeezeserve::v1;
using Clock = std::chrono::steady_clock;

double MillisBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

class GenerateReactor final : public OutboxReactor<grpc::ServerWriteReactor<grpc::ByteBuffer>, pb::GenerateResponse>,
                              public GenerationSink {
 public:
  GenerateReactor(ServiceCore* core, grpc::CallbackServerContext* context, const grpc::ByteBuffer& raw_request)
      : OutboxReactor(context, "Generate", &core->counter, &core->writer),
        core_(core),
        arrival_(Clock::now()),
        request_id_(AssignRequestId(context)) {
    absl::Status started = Start(raw_request);
    if (!started.ok()) {
      spdlog::debug("request {}: Generate refused: {}", request_id_, std::string(started.message()));
      FinishAfterWrites(ToGrpcStatus(started));
    }
  }

  // GenerationSink, called on the scheduler's thread.
  bool cancelled() const override { return OutboxReactor::cancelled(); }

  void OnStart() override { started_ = Clock::now(); }
  int priority() const override { return priority_; }

  void OnToken(const TokenStep& step, const GenerationStats& stats) override {
    Clock::time_point now = Clock::now();
    pb::GenerateResponse response;
    if (step.token >= 0) {
      if (tokens_sent_++ == 0) {
        first_token_ = now;
      } else {
        core_->metrics.RecordInterTokenLatency(std::chrono::duration<double>(now - last_token_).count());
      }
      last_token_ = now;
      response.add_token_ids(step.token);
      if (include_logprobs_) response.add_logprobs(step.logprob);
    }
    response.set_text(step.text_delta);
    if (step.finish != FinishReason::kNone) {
      response.set_finish_reason(ToProto(step.finish));
      *response.mutable_usage() = ToUsage(stats, Timings());
      *response.mutable_stats() = ToAttentionStats(stats, attention_, attention_note_);
      response.mutable_prompt_logprobs()->Add(stats.prompt_logprobs.begin(), stats.prompt_logprobs.end());
      final_stats_ = stats;
      finish_reason_ = step.finish;
    }
    Send(response);
  }

  size_t backlog() const override { return OutboxReactor::backlog(); }
  bool WaitForBacklogBelow(size_t bound, absl::Duration timeout) override {
    return OutboxReactor::WaitForBacklogBelow(bound, timeout);
  }

  void OnFinish(const absl::Status& status) override {
    if (!status.ok() && !cancelled()) {
      spdlog::warn("request {}: Generate failed: {}", request_id_, std::string(status.message()));
    }
    // The scheduler gave up on a client that stopped reading: its queued messages would never be
    // written, so cancel the call rather than wait for the client to go away.
    if (IsStalled(status)) AbortCall();
    RecordMetrics(status);
    spdlog::debug("request {}: Generate finished ({}, {} tokens)", request_id_, status.ok() ? "ok" : "error",
                  tokens_sent_);
    FinishAfterWrites(ToGrpcStatus(status));  // last touch of this reactor
  }

 private:
  void OnDone() override { delete this; }

  // Validation and hand-off; any error becomes the RPC's status.
  absl::Status Start(const grpc::ByteBuffer& raw_request) {
    absl::StatusOr<Principal> principal = core_->Admit(*context(), kScopeGenerate, "Generate");
    if (!principal.ok()) return principal.status();
    pb::GenerateRequest request;
    if (absl::Status parsed = ParseMessage(raw_request, &request); !parsed.ok()) return parsed;
    include_logprobs_ = request.include_logprobs();
    priority_ = request.priority();
    Engine* engine = core_->engine.load();
    const ModelInfo& model = engine->model_info();
    const ServerLimits& limits = core_->config.limits;

    // No context_id: a prompt-only request, dense over the prompt alone (engine.h StartGeneration).
    std::shared_ptr<const Context> context;
    if (!request.context_id().empty()) {
      if (absl::Status id = ValidateContextId(request.context_id(), "context_id"); !id.ok()) return id;
      absl::StatusOr<std::shared_ptr<const Context>> stored = core_->store.Get(ContextKey{principal->tenant, request.context_id()});
      if (!stored.ok()) return stored.status();
      context = *std::move(stored);
    }
    absl::StatusOr<SamplingOptions> sampling = ToEngineSampling(request.sampling(), limits);
    if (!sampling.ok()) return sampling.status();
    sampling->prompt_logprobs = request.include_prompt_logprobs();
    attention_.mode = AttentionMode::kDense;
    if (context != nullptr) {
      absl::StatusOr<AttentionOptions> attention =
          ResolveAttention(request.attention(), context->summary(), core_->defaults, &attention_note_);
      if (!attention.ok()) return attention.status();
      attention_ = *attention;
    }

    absl::StatusOr<std::vector<int32_t>> query = PromptTokens(request, *engine, /*starts_sequence=*/context == nullptr);
    if (!query.ok()) return query.status();
    if (absl::Status length = ValidatePromptLength(static_cast<int64_t>(query->size()), limits); !length.ok()) {
      return length;
    }

    absl::StatusOr<std::unique_ptr<Generation>> generation =
        engine->StartGeneration(std::move(context), *std::move(query), *sampling, attention_);
    if (!generation.ok()) return generation.status();
    return core_->scheduler->Submit(*std::move(generation), this);
  }

  // The query as token ids: text continuing a context is encoded without BOS, a prompt-only text with
  // the tokenizer's special tokens; messages are rendered with the chat template (which has them).
  absl::StatusOr<std::vector<int32_t>> PromptTokens(const pb::GenerateRequest& request, const Engine& engine,
                                                    bool starts_sequence) {
    const ServerLimits& limits = core_->config.limits;
    switch (request.prompt_case()) {
      case pb::GenerateRequest::kTokens: {
        const auto& ids = request.tokens().ids();
        if (static_cast<int64_t>(ids.size()) > limits.max_query_tokens) {
          return ValidatePromptLength(ids.size(), limits);
        }
        absl::Status valid = ValidateTokenIds(absl::MakeConstSpan(ids.data(), ids.size()),
                                              engine.model_info().vocab_size, "tokens.ids");
        if (!valid.ok()) return valid;
        return std::vector<int32_t>(ids.begin(), ids.end());
      }
      case pb::GenerateRequest::kText: {
        // A generous byte bound keeps tokenization of absurd prompts off the callback thread.
        if (static_cast<int64_t>(request.text().size()) > limits.max_query_tokens * 64) {
          return absl::InvalidArgumentError(absl::StrCat("text: the prompt has ", request.text().size(),
                                                         " bytes, far more than max_query_tokens (",
                                                         limits.max_query_tokens, ") allows"));
        }
        if (request.text().empty()) return absl::InvalidArgumentError("prompt: must not be empty");
        return engine.Encode(request.text(), /*add_bos=*/starts_sequence);
      }
      case pb::GenerateRequest::kMessages:
        return EncodeChat(engine, ToJson(request.messages()), !request.messages().no_generation_prompt());
      case pb::GenerateRequest::PROMPT_NOT_SET:
        break;
    }
    return absl::InvalidArgumentError("prompt: must not be empty (set text or tokens)");
  }

  // Latencies and token counts of a generation that reached the scheduler (queue time included).
  void RecordMetrics(const absl::Status& status) {
    const GenerationTimings timings = Timings();
    ServerMetrics::Generation g;
    if (started_ != arrival_) g.queue_s = timings.queue_ms / 1000;
    if (tokens_sent_ > 0) g.ttft_s = timings.time_to_first_token_ms / 1000;
    if (tokens_sent_ > 1) g.tpot_s = timings.time_per_output_token_ms / 1000;
    g.e2e_s = std::chrono::duration<double>(Clock::now() - arrival_).count();
    g.prompt_tokens = final_stats_.prompt_tokens;
    g.completion_tokens = tokens_sent_;
    if (status.ok()) g.kv_fraction_loaded = final_stats_.kv_fraction_loaded;
    switch (status.ok() ? finish_reason_ : FinishReason::kNone) {
      case FinishReason::kNone: g.finished_reason = cancelled() ? "cancelled" : "error"; break;
      case FinishReason::kStop: g.finished_reason = "stop"; break;
      case FinishReason::kLength: g.finished_reason = "length"; break;
      case FinishReason::kEos: g.finished_reason = "eos"; break;
      case FinishReason::kCancelled: g.finished_reason = "cancelled"; break;
    }
    core_->metrics.RecordGeneration(g);
  }

  GenerationTimings Timings() const {
    GenerationTimings timings;
    timings.queue_ms = MillisBetween(arrival_, started_);
    if (tokens_sent_ > 0) timings.time_to_first_token_ms = MillisBetween(arrival_, first_token_);
    if (tokens_sent_ > 1) timings.time_per_output_token_ms = MillisBetween(first_token_, last_token_) / (tokens_sent_ - 1);
    return timings;
  }

  ServiceCore* const core_;
  bool include_logprobs_ = false;
  AttentionOptions attention_;
  std::string attention_note_;  // why the default mode chose what it chose (AttentionStats.note)
  // Written by the scheduler thread only.
  const Clock::time_point arrival_;
  Clock::time_point started_ = arrival_;
  Clock::time_point first_token_;
  Clock::time_point last_token_;
  int64_t tokens_sent_ = 0;
  GenerationStats final_stats_;
  FinishReason finish_reason_ = FinishReason::kNone;
  const std::string request_id_;
  int priority_ = 0;
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* NewGenerateReactor(ServiceCore* core, grpc::CallbackServerContext* context,
                                                               const grpc::ByteBuffer* request) {
  return new GenerateReactor(core, context, *request);
}

}  // namespace squeezeserve::server
