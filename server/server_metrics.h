// The metrics squeezeserve exports, on prometheus-cpp (Debian's prometheus-cpp-dev). Names follow
// vLLM's `vllm:*` set with a `squeezeserve_` prefix so dashboards and autoscalers carry over; every
// series carries a `model` label (the served model's name). Handlers record latencies, token counts
// and batch sizes here; state that lives elsewhere (status counts, running and waiting streams,
// contexts and their bytes per tier, model state) is read at scrape time from MetricSources, so each
// value has one source of truth.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/status_map.h"

namespace prometheus {
class Counter;
class Histogram;
template <typename T>
class Family;
class Registry;
}  // namespace prometheus

namespace squeezeserve::server {

// One stored context as the memory-tier metrics see it.
struct ContextUsage {
  std::string tier;  // "device", "host" or "disk"
  uint64_t kv_bytes = 0;
  uint64_t index_bytes = 0;
};

// What the collectors read at scrape time; each source is optional (empty = not exported).
struct MetricSources {
  std::string model;                    // the `model` label of every series
  const StatusCounter* status_counter = nullptr;
  std::function<int()> running;         // streams doing model work
  std::function<int()> queued;          // streams waiting for a worker
  std::function<std::vector<ContextUsage>()> contexts;  // one entry per stored context
  std::function<std::string()> state;   // "loading", "serving" or "draining"
};

class ServerMetrics {
 public:
  ServerMetrics();
  ~ServerMetrics();

  // Registers the scrape-time sources; call once, before serving /metrics.
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
  void RecordInterTokenLatency(double seconds);
  void RecordIngest(double seconds, int64_t tokens, bool ok);
  // Streams stepped together in one engine step (the batching scheduler's batch).
  void RecordBatchSize(size_t streams);

  // Everything, in the Prometheus text exposition format 0.0.4.
  std::string Render() const;

 private:
  class Sources;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<const Sources> sources_;  // set once by AddSources, before the first scrape
  // Children without labels (or with a fixed label set), created once: an observation is one call.
  prometheus::Histogram& queue_time_;
  prometheus::Histogram& time_to_first_token_;
  prometheus::Histogram& time_per_output_token_;
  prometheus::Histogram& inter_token_latency_;
  prometheus::Histogram& e2e_latency_;
  prometheus::Histogram& kv_fraction_loaded_;
  prometheus::Histogram& batch_size_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  prometheus::Family<prometheus::Counter>& request_success_;  // by finished_reason
  prometheus::Family<prometheus::Histogram>& ingest_duration_;  // by result
  prometheus::Histogram& ingest_ok_;
  prometheus::Histogram& ingest_error_;
  prometheus::Counter& ingested_tokens_;
};

}  // namespace squeezeserve::server
