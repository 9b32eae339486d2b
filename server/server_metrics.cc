#include "server/server_metrics.h"

#include <map>
#include <utility>

namespace squeezeserve::server {
namespace {

using metrics::Sample;

// Latency buckets in seconds, as vLLM uses for TTFT / E2E (sub-millisecond CPU steps to minutes).
std::vector<double> LatencyBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
          20.0, 40.0, 80.0, 160.0, 640.0};
}
std::vector<double> TokenLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0};
}
std::vector<double> FractionBuckets() { return {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0}; }

}  // namespace

ServerMetrics::ServerMetrics()
    : queue_time_(registry_.AddHistogram("squeezeserve_request_queue_time_seconds",
                                         "Time a Generate request waited for a worker.", {}, LatencyBuckets())),
      time_to_first_token_(registry_.AddHistogram("squeezeserve_time_to_first_token_seconds",
                                                  "Arrival to first generated token.", {}, LatencyBuckets())),
      time_per_output_token_(registry_.AddHistogram("squeezeserve_time_per_output_token_seconds",
                                                    "Per request: (last token - first token) / (tokens - 1).", {},
                                                    TokenLatencyBuckets())),
      inter_token_latency_(registry_.AddHistogram("squeezeserve_inter_token_latency_seconds",
                                                  "Every gap between successive generated tokens.", {},
                                                  TokenLatencyBuckets())),
      e2e_latency_(registry_.AddHistogram("squeezeserve_e2e_request_latency_seconds",
                                          "Arrival to the end of a Generate request.", {}, LatencyBuckets())),
      kv_fraction_loaded_(registry_.AddHistogram(
          "squeezeserve_kv_fraction_loaded",
          "Share of the context's KV read per decode step (AttentionStats.kv_fraction_loaded; 1 = dense).", {},
          FractionBuckets())),
      prompt_tokens_(registry_.AddCounter("squeezeserve_prompt_tokens_total", "Query tokens prefilled.")),
      generation_tokens_(registry_.AddCounter("squeezeserve_generation_tokens_total", "Tokens generated.")),
      request_success_(registry_.AddCounter("squeezeserve_request_success_total",
                                            "Finished Generate requests by finish reason.", {"finished_reason"})),
      ingest_duration_(registry_.AddHistogram("squeezeserve_ingest_duration_seconds",
                                              "IngestContext model work (prefill, clustering, calibration).",
                                              {"result"}, LatencyBuckets())),
      ingested_tokens_(registry_.AddCounter("squeezeserve_ingested_tokens_total", "Context tokens ingested.")) {}

void ServerMetrics::AddSources(MetricSources sources) {
  if (sources.status_counter != nullptr) {
    const StatusCounter* counter = sources.status_counter;
    registry_.AddCollected("squeezeserve_requests_total", "Finished RPCs by method and gRPC status code.",
                           "counter", {"method", "code"}, [counter] {
                             std::vector<Sample> samples;
                             for (const auto& [key, count] : counter->Snapshot()) {
                               samples.push_back({{key.first, key.second}, static_cast<double>(count)});
                             }
                             return samples;
                           });
  }
  if (sources.running) {
    registry_.AddCollected("squeezeserve_num_requests_running", "Streams doing model work now.", "gauge", {},
                           [f = sources.running] { return std::vector<Sample>{{{}, static_cast<double>(f())}}; });
  }
  if (sources.queued) {
    auto queued = [f = sources.queued] { return std::vector<Sample>{{{}, static_cast<double>(f())}}; };
    // queue_depth is the name the HorizontalPodAutoscaler in deploy/ scales on; num_requests_waiting
    // mirrors vLLM. Same value.
    registry_.AddCollected("squeezeserve_queue_depth", "Generate requests waiting for a worker.", "gauge", {}, queued);
    registry_.AddCollected("squeezeserve_num_requests_waiting", "Generate requests waiting for a worker.", "gauge",
                           {}, queued);
  }
  if (sources.context_tiers) {
    registry_.AddCollected("squeezeserve_contexts", "Stored contexts by tier.", "gauge", {"tier"},
                           [f = sources.context_tiers] {
                             std::map<std::string, int> per_tier;
                             for (const std::string& tier : f()) ++per_tier[tier];
                             std::vector<Sample> samples;
                             for (const auto& [tier, n] : per_tier) samples.push_back({{tier}, static_cast<double>(n)});
                             return samples;
                           });
  }
  if (sources.state) {
    registry_.AddCollected("squeezeserve_model_load_state", "1 for the server's current state, 0 for the others.",
                           "gauge", {"state"}, [f = sources.state] {
                             const std::string now = f();
                             std::vector<Sample> samples;
                             for (const char* state : {"loading", "serving", "draining"}) {
                               samples.push_back({{state}, now == state ? 1.0 : 0.0});
                             }
                             return samples;
                           });
  }
}

void ServerMetrics::RecordGeneration(const Generation& g) {
  if (g.queue_s >= 0) queue_time_.With().Observe(g.queue_s);
  if (g.ttft_s >= 0) time_to_first_token_.With().Observe(g.ttft_s);
  if (g.tpot_s >= 0) time_per_output_token_.With().Observe(g.tpot_s);
  if (g.e2e_s >= 0) e2e_latency_.With().Observe(g.e2e_s);
  if (g.kv_fraction_loaded >= 0) kv_fraction_loaded_.With().Observe(g.kv_fraction_loaded);
  prompt_tokens_.With().Increment(static_cast<double>(g.prompt_tokens));
  generation_tokens_.With().Increment(static_cast<double>(g.completion_tokens));
  if (!g.finished_reason.empty()) request_success_.With({g.finished_reason}).Increment();
}

void ServerMetrics::RecordIngest(double seconds, int64_t tokens, bool ok) {
  ingest_duration_.With({ok ? "ok" : "error"}).Observe(seconds);
  if (ok) ingested_tokens_.With().Increment(static_cast<double>(tokens));
}

}  // namespace squeezeserve::server
