// The exported metrics: names, labels (the model label on every series) and the values read at scrape
// time. The exposition format itself is prometheus-cpp's.
#include "server/server_metrics.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace squeezeserve::server {
namespace {

MetricSources TestSources(const StatusCounter* counter) {
  MetricSources sources;
  sources.model = "tiny";
  sources.status_counter = counter;
  sources.running = [] { return 2; };
  sources.queued = [] { return 3; };
  sources.contexts = [] {
    return std::vector<ContextUsage>{{"device", 100, 10}, {"host", 1000, 20}, {"device", 200, 30}};
  };
  sources.state = [] { return std::string("serving"); };
  return sources;
}

TEST(ServerMetrics, ExportsTheNamedMetricsWithTheModelLabel) {
  ServerMetrics metrics;
  StatusCounter counter;
  counter.Count("Generate", grpc::StatusCode::RESOURCE_EXHAUSTED);
  metrics.AddSources(TestSources(&counter));
  ServerMetrics::Generation g;
  g.ttft_s = 0.2;
  g.completion_tokens = 5;
  g.prompt_tokens = 4;
  g.kv_fraction_loaded = 0.3;
  g.finished_reason = "length";
  metrics.RecordGeneration(g);
  metrics.RecordBatchSize(3);
  metrics.RecordIngest(1.5, 64, true);
  const std::string text = metrics.Render();
  for (const char* expected :
       {"squeezeserve_requests_total{model=\"tiny\",method=\"Generate\",code=\"RESOURCE_EXHAUSTED\"} 1\n",
        "squeezeserve_num_requests_running{model=\"tiny\"} 2\n", "squeezeserve_queue_depth{model=\"tiny\"} 3\n",
        "squeezeserve_num_requests_waiting{model=\"tiny\"} 3\n",
        "squeezeserve_contexts{model=\"tiny\",tier=\"device\"} 2\n",
        "squeezeserve_contexts{model=\"tiny\",tier=\"host\"} 1\n",
        "squeezeserve_context_bytes{model=\"tiny\",tier=\"device\",kind=\"kv\"} 300\n",
        "squeezeserve_context_bytes{model=\"tiny\",tier=\"device\",kind=\"index\"} 40\n",
        "squeezeserve_context_bytes{model=\"tiny\",tier=\"host\",kind=\"kv\"} 1000\n",
        "squeezeserve_model_load_state{model=\"tiny\",state=\"serving\"} 1\n",
        "squeezeserve_model_load_state{model=\"tiny\",state=\"loading\"} 0\n",
        "# TYPE squeezeserve_generation_tokens_total counter\n",
        "squeezeserve_generation_tokens_total{model=\"tiny\"} 5\n",
        "squeezeserve_prompt_tokens_total{model=\"tiny\"} 4\n",
        "# TYPE squeezeserve_time_to_first_token_seconds histogram\n",
        "squeezeserve_time_to_first_token_seconds_count{model=\"tiny\"} 1\n",
        "squeezeserve_kv_fraction_loaded_bucket{model=\"tiny\",le=\"0.3\"} 1\n",
        "squeezeserve_request_success_total{model=\"tiny\",finished_reason=\"length\"} 1\n",
        "squeezeserve_batch_size_bucket{model=\"tiny\",le=\"2\"} 0\n",
        "squeezeserve_batch_size_bucket{model=\"tiny\",le=\"4\"} 1\n",
        "squeezeserve_ingest_duration_seconds_count{model=\"tiny\",result=\"ok\"} 1\n",
        "squeezeserve_ingest_duration_seconds_count{model=\"tiny\",result=\"error\"} 0\n",
        "squeezeserve_ingested_tokens_total{model=\"tiny\"} 64\n"}) {
    EXPECT_TRUE(absl::StrContains(text, expected)) << expected << "\n" << text;
  }
  EXPECT_TRUE(absl::StrContains(text, "squeezeserve_build_info{model=\"tiny\",")) << text;
  EXPECT_TRUE(absl::StrContains(text, ",version=\"")) << text;
}

TEST(ServerMetrics, EverySeriesCarriesTheModelLabel) {
  ServerMetrics metrics;
  StatusCounter counter;
  counter.Count("GetContext", grpc::StatusCode::NOT_FOUND);
  metrics.AddSources(TestSources(&counter));
  int series = 0;
  for (absl::string_view line : absl::StrSplit(metrics.Render(), '\n')) {
    if (line.empty() || line[0] == '#') continue;
    ++series;
    EXPECT_TRUE(absl::StrContains(line, "{model=\"tiny\"")) << line;
  }
  EXPECT_GT(series, 50);  // the histograms' buckets included
}

TEST(ServerMetrics, ScrapeTimeValuesAreReadAtEachScrape) {
  ServerMetrics metrics;
  int queued = 1;
  MetricSources sources;
  sources.queued = [&queued] { return queued; };
  metrics.AddSources(sources);
  EXPECT_TRUE(absl::StrContains(metrics.Render(), "squeezeserve_queue_depth{model=\"\"} 1\n"));
  queued = 7;
  EXPECT_TRUE(absl::StrContains(metrics.Render(), "squeezeserve_queue_depth{model=\"\"} 7\n"));
}

TEST(ServerMetrics, ConcurrentRecordsAreNotLost) {
  ServerMetrics metrics;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&metrics] {
      ServerMetrics::Generation g;
      g.completion_tokens = 1;
      g.e2e_s = 0.01;
      for (int i = 0; i < 5000; ++i) metrics.RecordGeneration(g);
    });
  }
  for (auto& thread : threads) thread.join();
  const std::string text = metrics.Render();
  EXPECT_TRUE(absl::StrContains(text, "squeezeserve_generation_tokens_total{model=\"\"} 20000\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "squeezeserve_e2e_request_latency_seconds_count{model=\"\"} 20000\n")) << text;
}

}  // namespace
}  // namespace squeezeserve::server
