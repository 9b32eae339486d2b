// The metrics squeezeserve exports, named after vLLM's `vllm:*` set with a `squeezeserve_` prefix
// (research/serving_anchors.md §3) so dashboards and autoscalers carry over. Handlers record request
// latencies and token counts here; state that lives elsewhere (status counts, running and waiting
// streams, contexts per tier, model state) is read at scrape time by collectors.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "server/metrics_registry.h"
#include "server/status_map.h"

namespace squeezeserve::server {

// What the collectors read at scrape time; each source is optional (empty = not exported).
struct MetricSources {
  const StatusCounter* status_counter = nullptr;
  std::function<int()> running;         // streams doing model work
  std::function<int()> queued;          // streams waiting for a worker
  std::function<std::vector<std::string>()> context_tiers;  // one entry per stored context
  std::function<std::string()> state;   // "loading", "serving" or "draining"
};

class ServerMetrics {
 public:
  ServerMetrics();

  // Registers the scrape-time collectors; call once, before serving /metrics.
  void AddSources(MetricSources sources);

  // One finished generation (any status); seconds; negative = not measured (e.g. no token sent).
  struct Generation {
    double queue_s = -1;
    double ttft_s = -1;
    double tpot_s = -1;
    double e2e_s = -1;
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    double kv_fraction_loaded = -1;
    std::string finished_reason;  // "stop", "length", "eos", "cancelled", "error"
  };
  void RecordGeneration(const Generation& generation);
  void RecordInterTokenLatency(double seconds) { inter_token_latency_.With().Observe(seconds); }
  void RecordIngest(double seconds, int64_t tokens, bool ok);

  std::string Render() const { return registry_.Render(); }
  metrics::Registry& registry() { return registry_; }

 private:
  metrics::Registry registry_;
  metrics::HistogramFamily& queue_time_;
  metrics::HistogramFamily& time_to_first_token_;
  metrics::HistogramFamily& time_per_output_token_;
  metrics::HistogramFamily& inter_token_latency_;
  metrics::HistogramFamily& e2e_latency_;
  metrics::HistogramFamily& kv_fraction_loaded_;
  metrics::Family<metrics::Counter>& prompt_tokens_;
  metrics::Family<metrics::Counter>& generation_tokens_;
  metrics::Family<metrics::Counter>& request_success_;
  metrics::HistogramFamily& ingest_duration_;
  metrics::Family<metrics::Counter>& ingested_tokens_;
};

}  // namespace squeezeserve::server
