#include "server/server_metrics.h"

#include <map>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace squeezeserve::server {
namespace {

using prometheus::ClientMetric;
using prometheus::Histogram;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Latency buckets in seconds, as vLLM uses for TTFT / E2E (sub-millisecond CPU steps to minutes).
const Histogram::BucketBoundaries& LatencyBuckets() {
  static const Histogram::BucketBoundaries buckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                                      1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0};
  return buckets;
}
const Histogram::BucketBoundaries& TokenLatencyBuckets() {
  static const Histogram::BucketBoundaries buckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
                                                      0.2,   0.3,    0.4,   0.5,  0.75,  1.0,  2.5,   5.0};
  return buckets;
}
const Histogram::BucketBoundaries& FractionBuckets() {
  static const Histogram::BucketBoundaries buckets = {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0};
  return buckets;
}
const Histogram::BucketBoundaries& BatchBuckets() {
  static const Histogram::BucketBoundaries buckets = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  return buckets;
}

Histogram& AddHistogram(prometheus::Registry& registry, const std::string& name, const std::string& help,
                        const Histogram::BucketBoundaries& buckets) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
}
prometheus::Counter& AddCounter(prometheus::Registry& registry, const std::string& name, const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
}

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddSample(MetricFamily* family, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (family->type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family->metric.push_back(std::move(metric));
}

}  // namespace

// The scrape-time families: values that live elsewhere, read when Prometheus asks.
class ServerMetrics::Sources {
 public:
  explicit Sources(MetricSources sources) : s_(std::move(sources)) {}
  const std::string& model() const { return s_.model; }

  std::vector<MetricFamily> Collect() const {
    std::vector<MetricFamily> out;
    if (s_.status_counter != nullptr) {
      MetricFamily family =
          Family("squeezeserve_requests_total", "Finished RPCs by method and gRPC status code.", MetricType::Counter);
      for (const auto& [key, count] : s_.status_counter->Snapshot()) {
        AddSample(&family, {{"method", key.first}, {"code", key.second}}, static_cast<double>(count));
      }
      out.push_back(std::move(family));
    }
    if (s_.running) {
      MetricFamily family = Family("squeezeserve_num_requests_running", "Streams doing model work now.", MetricType::Gauge);
      AddSample(&family, {}, s_.running());
      out.push_back(std::move(family));
    }
    if (s_.queued) {
      // queue_depth is the name the HorizontalPodAutoscaler in deploy/ scales on; num_requests_waiting
      // mirrors vLLM. Same value.
      const double queued = s_.queued();
      for (const char* name : {"squeezeserve_queue_depth", "squeezeserve_num_requests_waiting"}) {
        MetricFamily family = Family(name, "Generate requests waiting for a worker.", MetricType::Gauge);
        AddSample(&family, {}, queued);
        out.push_back(std::move(family));
      }
    }
    if (s_.contexts) {
      std::map<std::string, ContextUsage> per_tier;
      std::map<std::string, int> count;
      for (const ContextUsage& context : s_.contexts()) {
        ContextUsage& total = per_tier[context.tier];
        total.kv_bytes += context.kv_bytes;
        total.index_bytes += context.index_bytes;
        ++count[context.tier];
      }
      MetricFamily contexts = Family("squeezeserve_contexts", "Stored contexts by tier.", MetricType::Gauge);
      MetricFamily bytes = Family("squeezeserve_context_bytes",
                                  "KV cache and Squeezed Attention index bytes of the stored contexts, by tier.",
                                  MetricType::Gauge);
      for (const auto& [tier, total] : per_tier) {
        AddSample(&contexts, {{"tier", tier}}, count[tier]);
        AddSample(&bytes, {{"tier", tier}, {"kind", "kv"}}, static_cast<double>(total.kv_bytes));
        AddSample(&bytes, {{"tier", tier}, {"kind", "index"}}, static_cast<double>(total.index_bytes));
      }
      out.push_back(std::move(contexts));
      out.push_back(std::move(bytes));
    }
    if (s_.state) {
      MetricFamily family = Family("squeezeserve_model_load_state",
                                   "1 for the server's current state, 0 for the others.", MetricType::Gauge);
      const std::string now = s_.state();
      for (const char* state : {"loading", "serving", "draining"}) {
        AddSample(&family, {{"state", state}}, now == state ? 1.0 : 0.0);
      }
      out.push_back(std::move(family));
    }
    return out;
  }

 private:
  const MetricSources s_;
};

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      queue_time_(AddHistogram(*registry_, "squeezeserve_request_queue_time_seconds",
                               "Time a Generate request waited for a worker.", LatencyBuckets())),
      time_to_first_token_(AddHistogram(*registry_, "squeezeserve_time_to_first_token_seconds",
                                        "Arrival to first generated token.", LatencyBuckets())),
      time_per_output_token_(AddHistogram(*registry_, "squeezeserve_time_per_output_token_seconds",
                                          "Per request: (last token - first token) / (tokens - 1).",
                                          TokenLatencyBuckets())),
      inter_token_latency_(AddHistogram(*registry_, "squeezeserve_inter_token_latency_seconds",
                                        "Every gap between successive generated tokens.", TokenLatencyBuckets())),
      e2e_latency_(AddHistogram(*registry_, "squeezeserve_e2e_request_latency_seconds",
                                "Arrival to the end of a Generate request.", LatencyBuckets())),
      kv_fraction_loaded_(AddHistogram(
          *registry_, "squeezeserve_kv_fraction_loaded",
          "Share of the context's KV read per decode step (AttentionStats.kv_fraction_loaded; 1 = dense).",
          FractionBuckets())),
      batch_size_(AddHistogram(*registry_, "squeezeserve_batch_size",
                               "Streams stepped together in one engine step (--scheduler=batching).", BatchBuckets())),
      prompt_tokens_(AddCounter(*registry_, "squeezeserve_prompt_tokens_total", "Query tokens prefilled.")),
      generation_tokens_(AddCounter(*registry_, "squeezeserve_generation_tokens_total", "Tokens generated.")),
      request_success_(prometheus::BuildCounter()
                           .Name("squeezeserve_request_success_total")
                           .Help("Finished Generate requests by finish reason.")
                           .Register(*registry_)),
      ingest_duration_(prometheus::BuildHistogram()
                           .Name("squeezeserve_ingest_duration_seconds")
                           .Help("IngestContext model work (prefill, clustering, calibration).")
                           .Register(*registry_)),
      ingest_ok_(ingest_duration_.Add({{"result", "ok"}}, LatencyBuckets())),
      ingest_error_(ingest_duration_.Add({{"result", "error"}}, LatencyBuckets())),
      ingested_tokens_(AddCounter(*registry_, "squeezeserve_ingested_tokens_total", "Context tokens ingested.")) {
  prometheus::BuildGauge()
      .Name("squeezeserve_build_info")
      .Help("1, labelled with the build: squeezeserve version, gRPC version, CUDA kernels compiled in.")
      .Register(*registry_)
      .Add({{"version", SQUEEZESERVE_VERSION}, {"grpc", grpc::Version()}, {"cuda", SQUEEZESERVE_BUILD_CUDA}})
      .Set(1);
}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::AddSources(MetricSources sources) { sources_ = std::make_shared<const Sources>(std::move(sources)); }

void ServerMetrics::RecordGeneration(const Generation& g) {
  if (g.queue_s >= 0) queue_time_.Observe(g.queue_s);
  if (g.ttft_s >= 0) time_to_first_token_.Observe(g.ttft_s);
  if (g.tpot_s >= 0) time_per_output_token_.Observe(g.tpot_s);
  if (g.e2e_s >= 0) e2e_latency_.Observe(g.e2e_s);
  if (g.kv_fraction_loaded >= 0) kv_fraction_loaded_.Observe(g.kv_fraction_loaded);
  if (g.prompt_tokens > 0) prompt_tokens_.Increment(static_cast<double>(g.prompt_tokens));
  if (g.completion_tokens > 0) generation_tokens_.Increment(static_cast<double>(g.completion_tokens));
  if (!g.finished_reason.empty()) request_success_.Add({{"finished_reason", g.finished_reason}}).Increment();
}

void ServerMetrics::RecordInterTokenLatency(double seconds) { inter_token_latency_.Observe(seconds); }

void ServerMetrics::RecordIngest(double seconds, int64_t tokens, bool ok) {
  (ok ? ingest_ok_ : ingest_error_).Observe(seconds);
  if (ok && tokens > 0) ingested_tokens_.Increment(static_cast<double>(tokens));
}

void ServerMetrics::RecordBatchSize(size_t streams) { batch_size_.Observe(static_cast<double>(streams)); }

std::string ServerMetrics::Render() const {
  std::vector<MetricFamily> families = registry_->Collect();
  const std::shared_ptr<const Sources> sources = std::atomic_load(&sources_);
  if (sources != nullptr) {
    std::vector<MetricFamily> collected = sources->Collect();
    families.insert(families.end(), std::make_move_iterator(collected.begin()),
                    std::make_move_iterator(collected.end()));
  }
  // The model label goes first on every series: a Prometheus server scraping several models (or a
  // federation) tells them apart without relabelling rules.
  const std::string model = sources != nullptr ? sources->model() : "";
  for (MetricFamily& family : families) {
    for (ClientMetric& metric : family.metric) metric.label.insert(metric.label.begin(), {"model", model});
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace squeezeserve::server
