#include "server/metrics_registry.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "server/server_metrics.h"

namespace squeezeserve::server::metrics {
namespace {

TEST(MetricsRegistry, RendersCounterWithHelpTypeAndEscapedLabels) {
  Registry registry;
  auto& requests = registry.AddCounter("x_requests_total", "Requests.\nSecond line \\", {"method"});
  requests.With({"Get\"Context\"\n"}).Increment(2);
  const std::string text = registry.Render();
  EXPECT_TRUE(absl::StrContains(text, "# HELP x_requests_total Requests.\\nSecond line \\\\\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "# TYPE x_requests_total counter\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "x_requests_total{method=\"Get\\\"Context\\\"\\n\"} 2\n")) << text;
}

TEST(MetricsRegistry, CountersIgnoreNegativeIncrements) {
  Counter counter;
  counter.Increment(3);
  counter.Increment(-1);
  EXPECT_EQ(counter.Get(), 3);
}

TEST(MetricsRegistry, HistogramBucketsAreCumulativeAndInclusive) {
  Registry registry;
  auto& latency = registry.AddHistogram("x_latency_seconds", "Latency.", {}, {1, 0.5, 2});  // unsorted on purpose
  Histogram& h = latency.With();
  for (double v : {0.1, 0.5, 0.7, 2.0, 10.0}) h.Observe(v);
  h.Observe(std::nan(""));  // ignored
  const std::string text = registry.Render();
  EXPECT_TRUE(absl::StrContains(text, "# TYPE x_latency_seconds histogram\n"));
  EXPECT_TRUE(absl::StrContains(text, "x_latency_seconds_bucket{le=\"0.5\"} 2\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "x_latency_seconds_bucket{le=\"1\"} 3\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "x_latency_seconds_bucket{le=\"2\"} 4\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "x_latency_seconds_bucket{le=\"+Inf\"} 5\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "x_latency_seconds_count 5\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "x_latency_seconds_sum 13.3\n")) << text;
}

TEST(MetricsRegistry, LabelledHistogramPutsLeLast) {
  Registry registry;
  registry.AddHistogram("x_h", "H.", {"result"}, {1}).With({"ok"}).Observe(0.5);
  EXPECT_TRUE(absl::StrContains(registry.Render(), "x_h_bucket{result=\"ok\",le=\"1\"} 1\n"));
}

TEST(MetricsRegistry, ConcurrentIncrementsAreNotLost) {
  Registry registry;
  auto& family = registry.AddCounter("x_total", "X.");
  auto& histogram = registry.AddHistogram("x_h", "H.", {}, {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        family.With().Increment();
        histogram.With().Observe(0.5);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(family.With().Get(), 40000);
  EXPECT_EQ(histogram.With().Read().count, 40000u);
}

TEST(MetricsRegistry, CollectedFamiliesAreReadAtScrapeTime) {
  Registry registry;
  int depth = 1;
  registry.AddCollected("x_queue_depth", "Depth.", "gauge", {}, [&] {
    return std::vector<Sample>{{{}, static_cast<double>(depth)}};
  });
  EXPECT_TRUE(absl::StrContains(registry.Render(), "x_queue_depth 1\n"));
  depth = 7;
  EXPECT_TRUE(absl::StrContains(registry.Render(), "x_queue_depth 7\n"));
}

TEST(MetricsRegistry, FormatsSpecialValues) {
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
}

TEST(ServerMetrics, ExportsTheNamedMetricsAndStatusCounts) {
  ServerMetrics server;
  StatusCounter counter;
  counter.Count("Generate", grpc::StatusCode::RESOURCE_EXHAUSTED);
  MetricSources sources;
  sources.status_counter = &counter;
  sources.running = [] { return 2; };
  sources.queued = [] { return 3; };
  sources.context_tiers = [] { return std::vector<std::string>{"device", "host", "device"}; };
  sources.state = [] { return std::string("serving"); };
  server.AddSources(sources);
  ServerMetrics::Generation g;
  g.ttft_s = 0.2;
  g.completion_tokens = 5;
  g.prompt_tokens = 4;
  g.kv_fraction_loaded = 0.3;
  g.finished_reason = "length";
  server.RecordGeneration(g);
  const std::string text = server.Render();
  for (const char* expected :
       {"squeezeserve_requests_total{method=\"Generate\",code=\"RESOURCE_EXHAUSTED\"} 1\n",
        "squeezeserve_num_requests_running 2\n", "squeezeserve_queue_depth 3\n",
        "squeezeserve_contexts{tier=\"device\"} 2\n", "squeezeserve_contexts{tier=\"host\"} 1\n",
        "squeezeserve_model_load_state{state=\"serving\"} 1\n", "squeezeserve_generation_tokens_total 5\n",
        "squeezeserve_prompt_tokens_total 4\n", "squeezeserve_time_to_first_token_seconds_count 1\n",
        "squeezeserve_kv_fraction_loaded_bucket{le=\"0.3\"} 1\n",
        "squeezeserve_request_success_total{finished_reason=\"length\"} 1\n"}) {
    EXPECT_TRUE(absl::StrContains(text, expected)) << expected << "\n" << text;
  }
}

}  // namespace
}  // namespace squeezeserve::server::metrics
