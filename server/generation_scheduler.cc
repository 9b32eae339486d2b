#include "server/generation_scheduler.h"

#include <utility>

namespace squeezeserve::server {

void RunGeneration(Generation& generation, GenerationSink& sink) {
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
  }
}

absl::Status ThreadPerStreamScheduler::Submit(std::unique_ptr<Generation> generation, GenerationSink* sink) {
  // std::function needs a copyable callable: share the generation with the job.
  std::shared_ptr<Generation> shared(std::move(generation));
  QueuedJob job;
  job.run = [shared, sink] { RunGeneration(*shared, *sink); };
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
