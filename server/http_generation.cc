#include "server/http_generation.h"

namespace squeezeserve::server {

absl::StatusOr<std::shared_ptr<HttpGeneration>> HttpGeneration::Start(std::unique_ptr<Generation> generation,
                                                                      GenerationScheduler& scheduler,
                                                                      ServerMetrics* metrics) {
  std::shared_ptr<HttpGeneration> sink(new HttpGeneration(metrics));
  sink->self_ = sink;
  absl::Status submitted = scheduler.Submit(std::move(generation), sink.get());
  if (!submitted.ok()) {
    sink->self_.reset();  // never called back
    return submitted;
  }
  return sink;
}

HttpGeneration::Event HttpGeneration::Next() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(+[](std::deque<Event>* events) { return !events->empty(); }, &events_));
  Event event = std::move(events_.front());
  events_.pop_front();
  return event;
}

void HttpGeneration::OnStart() { started_ = Clock::now(); }

void HttpGeneration::OnToken(const TokenStep& step, const GenerationStats& stats) {
  const Clock::time_point now = Clock::now();
  if (step.token >= 0) {
    if (tokens_++ == 0) {
      first_token_ = now;
    } else {
      metrics_->RecordInterTokenLatency(std::chrono::duration<double>(now - last_token_).count());
    }
    last_token_ = now;
  }
  if (step.finish != FinishReason::kNone) finish_ = step.finish;
  last_stats_ = stats;
  absl::MutexLock lock(&mu_);
  events_.push_back({step, std::nullopt, GenerationStats()});
}

void HttpGeneration::OnFinish(const absl::Status& status) {
  ServerMetrics::Generation g;
  auto seconds = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  if (started_ != arrival_) g.queue_s = seconds(arrival_, started_);
  if (tokens_ > 0) g.ttft_s = seconds(arrival_, first_token_);
  if (tokens_ > 1) g.tpot_s = seconds(first_token_, last_token_) / static_cast<double>(tokens_ - 1);
  g.e2e_s = seconds(arrival_, Clock::now());
  g.prompt_tokens = last_stats_.prompt_tokens;
  g.completion_tokens = tokens_;
  if (status.ok()) g.kv_fraction_loaded = last_stats_.kv_fraction_loaded;
  switch (status.ok() ? finish_ : FinishReason::kNone) {
    case FinishReason::kNone: g.finished_reason = cancelled() ? "cancelled" : "error"; break;
    case FinishReason::kStop: g.finished_reason = "stop"; break;
    case FinishReason::kLength: g.finished_reason = "length"; break;
    case FinishReason::kEos: g.finished_reason = "eos"; break;
    case FinishReason::kCancelled: g.finished_reason = "cancelled"; break;
  }
  metrics_->RecordGeneration(g);
  std::shared_ptr<HttpGeneration> keep = std::move(self_);  // `this` may go when `keep` does
  absl::MutexLock lock(&mu_);
  Event event;
  event.finished = status;
  event.stats = last_stats_;
  event.finish = finish_;
  events_.push_back(std::move(event));
}

double HttpGeneration::ttft_ms() const {
  return tokens_ > 0 ? std::chrono::duration<double, std::milli>(first_token_ - arrival_).count() : 0;
}

double HttpGeneration::tpot_ms() const {
  return tokens_ > 1 ? std::chrono::duration<double, std::milli>(last_token_ - first_token_).count() / (tokens_ - 1) : 0;
}

}  // namespace squeezeserve::server
