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
  bool accepted = pool_->TrySubmit([shared, sink] { RunGeneration(*shared, *sink); });
  if (!accepted) {
    return absl::ResourceExhaustedError("all generation workers are busy (max_concurrent_streams); retry later");
  }
  return absl::OkStatus();
}

}  // namespace squeezeserve::server
