#include "server/ingest_reactor.h"

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/ingest_accumulator.h"
#include "server/outbox_reactor.h"
#include "server/proto_convert.h"
#include "server/request_id.h"
#include "spdlog/spdlog.h"

namespace squeezeserve::server {
namespace {

namespace pb = ::squeezeserve::v1;

// Share of the whole ingest before the engine starts (receiving + tokenizing); the engine's own
// progress fills the rest.
constexpr float kEngineStart = 0.1f;

pb::IngestContextProgress Progress(std::string stage, float fraction, int64_t done, int64_t total) {
  pb::IngestContextProgress progress;
  progress.set_stage(std::move(stage));
  progress.set_fraction(fraction);
  progress.set_tokens_done(static_cast<uint64_t>(std::max<int64_t>(done, 0)));
  progress.set_tokens_total(static_cast<uint64_t>(std::max<int64_t>(total, 0)));
  return progress;
}

using IngestBase = grpc::ServerBidiReactor<pb::IngestContextRequest, pb::IngestContextProgress>;

class IngestReactor final : public OutboxReactor<IngestBase, pb::IngestContextProgress> {
 public:
  IngestReactor(ServiceCore* core, grpc::CallbackServerContext* context)
      : OutboxReactor(context, "IngestContext", &core->counter), core_(core), request_id_(AssignRequestId(context)) {
    if (absl::Status admitted = core_->Admit(*context); !admitted.ok()) {
      FinishAfterWrites(ToGrpcStatus(admitted));
      return;
    }
    engine_ = core_->engine.load();
    accumulator_.emplace(core_->config.limits, engine_->model_info().vocab_size);
    StartRead(&request_);
  }

 private:
  void OnReadDone(bool ok) override {
    if (!ok) {  // the client finished sending (or went away)
      if (cancelled()) {
        FinishAfterWrites(grpc::Status::CANCELLED);
      } else {
        StartWork();
      }
      return;
    }
    if (absl::Status added = accumulator_->Add(request_); !added.ok()) {
      FinishAfterWrites(ToGrpcStatus(added));
      return;
    }
    request_.Clear();
    Send(Progress("receiving", 0, accumulator_->received_units(), 0), /*replaceable=*/true);
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

  void StartWork() {
    if (absl::Status complete = accumulator_->Finish(); !complete.ok()) {
      FinishAfterWrites(ToGrpcStatus(complete));
      return;
    }
    if (!core_->pool->TrySubmit([this] { RunOnWorker(); })) {
      FinishAfterWrites(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                     "all workers are busy (max_concurrent_streams); retry later"));
    }
  }

  void RunOnWorker() {
    const auto started = std::chrono::steady_clock::now();
    absl::Status status = Ingest();
    core_->metrics.RecordIngest(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                                ingested_tokens_, status.ok());
    if (!status.ok() && !cancelled()) {
      spdlog::warn("request {}: IngestContext failed: {}", request_id_, std::string(status.message()));
    }
    FinishAfterWrites(ToGrpcStatus(status));  // last touch of this reactor
  }

  // The worker's part; the final message is queued before it returns OK.
  absl::Status Ingest() {
    const ModelInfo& model = engine_->model_info();
    std::vector<int32_t> tokens;
    if (accumulator_->is_text()) {
      Send(Progress("tokenizing", 0.05f, 0, 0), /*replaceable=*/true);
      absl::StatusOr<std::vector<int32_t>> encoded = engine_->Encode(accumulator_->text(), accumulator_->add_bos());
      if (!encoded.ok()) return encoded.status();
      tokens = *std::move(encoded);
      std::string().swap(accumulator_->text());  // the text is no longer needed
      if (tokens.empty()) return absl::InvalidArgumentError("text: the context tokenizes to no tokens");
      if (static_cast<int64_t>(tokens.size()) > core_->config.limits.max_context_tokens) {
        return absl::InvalidArgumentError(absl::StrCat("text: the context has ", tokens.size(),
                                                       " tokens, more than max_context_tokens (",
                                                       core_->config.limits.max_context_tokens, ")"));
      }
    } else {
      tokens = std::move(accumulator_->tokens());
    }

    const IndexOptions& index = accumulator_->index();
    std::string id = accumulator_->context_id();
    if (id.empty()) {
      id = ContentAddress(model.fingerprint, tokens, index);
      // Same tokens, options and model: the stored context is the answer (idempotent ingest).
      if (absl::StatusOr<std::shared_ptr<const Context>> existing = core_->store.Get(id); existing.ok()) {
        SendDone(**existing);
        return absl::OkStatus();
      }
    }

    const int64_t total = static_cast<int64_t>(tokens.size());
    Send(Progress("prefill", kEngineStart, 0, total), /*replaceable=*/true);
    ProgressFn on_progress = [this](const IngestProgress& p) {
      float fraction = kEngineStart + (1 - kEngineStart) * std::clamp(p.fraction, 0.0f, 1.0f);
      Send(Progress(p.stage, std::min(fraction, 0.99f), p.tokens_done, p.tokens_total), /*replaceable=*/true);
    };
    CancelFn is_cancelled = [this] { return cancelled(); };
    absl::StatusOr<std::shared_ptr<const Context>> context =
        engine_->Ingest(id, std::move(tokens), index, on_progress, is_cancelled);
    if (!context.ok()) return context.status();
    Send(Progress("storing", 0.99f, total, total), /*replaceable=*/true);
    if (absl::Status stored = core_->store.Put(*context); !stored.ok()) return stored;
    ingested_tokens_ = (*context)->summary().num_tokens;
    spdlog::info("request {}: ingested context {} ({} tokens, index: {})", request_id_, id, (*context)->summary().num_tokens,
                 (*context)->summary().has_index ? "yes" : "dense only");
    SendDone(**context);
    return absl::OkStatus();
  }

  void SendDone(const Context& context) {
    const ContextSummary& summary = context.summary();
    pb::IngestContextProgress done = Progress("done", 1, summary.num_tokens, summary.num_tokens);
    *done.mutable_context() = ToProto(summary, engine_->model_info().fingerprint);
    Send(std::move(done));
  }

  ServiceCore* const core_;
  Engine* engine_ = nullptr;
  pb::IngestContextRequest request_;
  std::optional<IngestAccumulator> accumulator_;
  const std::string request_id_;
  int64_t ingested_tokens_ = 0;  // set by the worker on success
};

}  // namespace

grpc::ServerBidiReactor<pb::IngestContextRequest, pb::IngestContextProgress>* NewIngestReactor(
    ServiceCore* core, grpc::CallbackServerContext* context) {
  return new IngestReactor(core, context);
}

}  // namespace squeezeserve::server
