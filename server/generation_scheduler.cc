#include "server/generation_scheduler.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace squeezeserve::server {
namespace {
constexpr char kStalledPayload[] = "squeezeserve/stalled-output";
}  // namespace

absl::Status StalledStatus(const StallPolicy& policy) {
  absl::Status status = absl::ResourceExhaustedError(
      absl::StrCat("the client took no output for ", absl::FormatDuration(policy.timeout), " while ",
                   policy.max_backlog, " messages waited: the stream was ended (read your stream)"));
  status.SetPayload(kStalledPayload, absl::Cord("1"));
  return status;
}

bool IsStalled(const absl::Status& status) { return status.GetPayload(kStalledPayload).has_value(); }

void RunGeneration(Generation& generation, GenerationSink& sink, const StallPolicy& stall) {
  sink.OnStart();
  while (true) {
    if (sink.cancelled()) {
      sink.OnFinish(absl::CancelledError("generation cancelled"));
      return;
    }
    absl::StatusOr<TokenStep> step = generation.Next();
    if (!step.ok()) {
      sink.OnFinish(step.status());
      return;
    }
    if (step->prefill_only) continue;  // a chunk of a long query: nothing to stream yet
    sink.OnToken(*step, generation.stats());
    if (step->finish != FinishReason::kNone) {
      sink.OnFinish(absl::OkStatus());
      return;
    }
    if (!sink.WaitForBacklogBelow(static_cast<size_t>(stall.max_backlog), stall.timeout)) {
      sink.OnFinish(StalledStatus(stall));
      return;
    }
  }
}

absl::Status ThreadPerStreamScheduler::Submit(std::unique_ptr<Generation> generation, GenerationSink* sink) {
  // std::function needs a copyable callable: share the generation with the job.
  std::shared_ptr<Generation> shared(std::move(generation));
  QueuedJob job;
  job.run = [shared, sink, stall = stall_] { RunGeneration(*shared, *sink, stall); };
  job.abandoned = [sink] { return sink->cancelled(); };
  job.withdrawn = [sink] { sink->OnFinish(absl::CancelledError("cancelled while queued")); };
  job.priority = sink->priority();
  if (!pool_->Enqueue(std::move(job))) {
    return absl::ResourceExhaustedError(
        "all generation workers are busy and the wait queue is full (max_concurrent_streams, "
        "max_queued_requests); retry later");
  }
  return absl::OkStatus();
}

}  // namespace squeezeserve::server
