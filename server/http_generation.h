// A generation driven for an HTTP handler (the OpenAI endpoints): the scheduler pushes tokens into it
// on its thread, the handler's thread takes them out in order. It keeps itself alive until the
// scheduler's last call (OnFinish), so a handler whose client went away may simply return.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "engine/engine.h"
#include "server/generation_scheduler.h"
#include "server/server_metrics.h"

namespace squeezeserve::server {

class HttpGeneration final : public GenerationSink {
 public:
  struct Event {
    TokenStep step;                // step.finish != kNone on the last token
    std::optional<absl::Status> finished;  // set on the final event (after the last token)
    GenerationStats stats;         // the final totals (on the finished event only)
    FinishReason finish = FinishReason::kNone;  // the generation's (on the finished event only)
  };

  // Submits `generation` to `scheduler`; RESOURCE_EXHAUSTED (and nothing else happens) when full.
  static absl::StatusOr<std::shared_ptr<HttpGeneration>> Start(std::unique_ptr<Generation> generation,
                                                               GenerationScheduler& scheduler, ServerMetrics* metrics);

  // The next event, waiting for it.
  Event Next();
  // Stops the generation within a step (the client went away).
  void Cancel() { cancelled_.store(true); }

  bool cancelled() const override { return cancelled_.load(); }
  void OnStart() override;
  void OnToken(const TokenStep& step, const GenerationStats& stats) override;
  void OnFinish(const absl::Status& status) override;

  // Milliseconds from arrival to the first token and per token after it.
  double ttft_ms() const;
  double tpot_ms() const;

 private:
  using Clock = std::chrono::steady_clock;
  explicit HttpGeneration(ServerMetrics* metrics) : metrics_(metrics) {}

  ServerMetrics* metrics_;
  std::atomic<bool> cancelled_{false};
  absl::Mutex mu_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  GenerationStats last_stats_;  // scheduler thread only
  FinishReason finish_ = FinishReason::kNone;
  const Clock::time_point arrival_ = Clock::now();
  Clock::time_point started_ = arrival_, first_token_, last_token_;
  int64_t tokens_ = 0;
  std::shared_ptr<HttpGeneration> self_;  // released by OnFinish
};

}  // namespace squeezeserve::server
