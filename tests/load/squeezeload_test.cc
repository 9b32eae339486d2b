// Unit tests of squeezeload's pure parts: metric definitions, workload parsing, arrivals, routing.
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/squeezeload/arrivals.h"
#include "client/squeezeload/metrics.h"
#include "client/common/router.h"
#include "client/squeezeload/workload.h"

namespace squeezeload {
namespace {

using squeezeserve::routing::MakeRouter;
using squeezeserve::routing::RingHashRouter;
using squeezeserve::routing::RoundRobinRouter;
using squeezeserve::routing::HostOf;
using squeezeserve::routing::RingHash64;

RequestRecord Ok(double ttft, double e2el, int out, std::vector<double> itl = {}) {
  RequestRecord r;
  r.ok = true;
  r.ttft_ms = ttft;
  r.e2el_ms = e2el;
  r.output_tokens = out;
  r.input_tokens = 10;
  r.itl_ms = std::move(itl);
  return r;
}

TEST(Percentile, InterpolatesLikeNumpy) {
  const std::vector<double> v = {4, 1, 3, 2};  // unsorted on purpose
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 3.7);  // numpy.percentile([1,2,3,4], 90) == 3.7
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
}

TEST(Tpot, ExcludesSingleTokenRequests) {
  EXPECT_DOUBLE_EQ(*Tpot(Ok(100, 190, 10)), 10.0);  // (190 - 100) / (10 - 1)
  EXPECT_FALSE(Tpot(Ok(100, 100, 1)).has_value());
  RequestRecord failed = Ok(100, 190, 10);
  failed.ok = false;
  EXPECT_FALSE(Tpot(failed).has_value());
}

TEST(Slo, ParsesSubsetsAndRejectsJunk) {
  auto slo = ParseSlo("ttft:500, tpot:50");
  ASSERT_TRUE(slo.ok());
  EXPECT_EQ(*slo->ttft_ms, 500);
  EXPECT_EQ(*slo->tpot_ms, 50);
  EXPECT_FALSE(slo->e2el_ms.has_value());
  EXPECT_TRUE(ParseSlo("")->empty());
  EXPECT_FALSE(ParseSlo("ttft:abc").ok());
  EXPECT_FALSE(ParseSlo("latency:5").ok());
  EXPECT_FALSE(ParseSlo("ttft:-1").ok());
}

TEST(Slo, GoodputNeedsEverySloAndTreatsOneTokenTpotAsZero) {
  Slo slo;
  slo.ttft_ms = 100;
  slo.tpot_ms = 10;
  EXPECT_TRUE(MeetsSlo(Ok(90, 180, 10), slo));    // TPOT 10: on the line counts as met
  EXPECT_FALSE(MeetsSlo(Ok(90, 190, 10), slo));   // TPOT 11.1
  EXPECT_FALSE(MeetsSlo(Ok(110, 120, 10), slo));  // TTFT over
  EXPECT_TRUE(MeetsSlo(Ok(90, 5000, 1), slo));    // one token: TPOT counts as 0
}

TEST(Summarize, CountsRatesErrorsAndPoolsItl) {
  RequestRecord failed;
  failed.status_code = 8;  // RESOURCE_EXHAUSTED
  std::vector<RequestRecord> records = {Ok(10, 30, 3, {10, 10}), Ok(20, 20, 1), Ok(30, 130, 5, {25, 25, 25, 25}),
                                        failed, failed};
  Slo slo;
  slo.e2el_ms = 50;
  const LoadSummary s = Summarize(records, 2.0, slo);
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 2);
  EXPECT_EQ(s.errors_by_code.at("RESOURCE_EXHAUSTED"), 2);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 4.5);             // 9 tokens / 2 s
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 19.5);       // (30 + 9) / 2 s
  EXPECT_DOUBLE_EQ(*s.request_goodput, 1.0);              // 2 of 3 under 50 ms
  EXPECT_EQ(s.itl.count, 6u);                             // pooled gaps, not per-request means
  EXPECT_EQ(s.tpot.count, 2u);                            // the 1-token request is left out
  EXPECT_DOUBLE_EQ(s.tpot.mean, 17.5);                    // (10 + 25) / 2
  EXPECT_DOUBLE_EQ(s.ttft.mean, 20);
  EXPECT_FALSE(Summarize(records, 2.0, Slo{}).request_goodput.has_value());
}

TEST(Workload, ParsesDistributionsAndContexts) {
  auto w = ParseWorkload(nlohmann::json::parse(R"({
    "seed": 3,
    "contexts": [{"id": "a", "file": "/tmp/a.txt"}, {"synthetic_tokens": 100}, {"synthetic_words": 5}],
    "query_tokens": {"dist": "uniform", "min": 4, "max": 8},
    "output_tokens": {"dist": "normal", "mean": 20, "stddev": 5, "min": 1, "max": 30},
    "dense_fraction": 0.25, "sparsity_levels": [0.5, 0.9]})"));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->contexts.size(), 3u);
  EXPECT_EQ(w->contexts[0].id, "a");
  EXPECT_EQ(w->contexts[1].id, "squeezeload-ctx-1");
  EXPECT_EQ(w->query_tokens.kind, LengthDist::Kind::kUniform);
  EXPECT_EQ(w->output_tokens.kind, LengthDist::Kind::kNormal);

  RequestSampler sampler(*w, 42);
  int dense = 0;
  std::set<float> sparsities;
  for (int i = 0; i < 2000; ++i) {
    const RequestSpec r = sampler.Next();
    ASSERT_GE(r.query_tokens, 4);
    ASSERT_LE(r.query_tokens, 8);
    ASSERT_GE(r.output_tokens, 1);
    ASSERT_LE(r.output_tokens, 30);
    ASSERT_LT(r.context_index, 3);
    if (r.dense) ++dense;
    else sparsities.insert(r.sparsity);
  }
  EXPECT_NEAR(dense / 2000.0, 0.25, 0.05);
  EXPECT_EQ(sparsities, (std::set<float>{0.5f, 0.9f}));
}

TEST(Workload, RejectsBadInput) {
  auto parse = [](const char* text) { return ParseWorkload(nlohmann::json::parse(text)).status(); };
  EXPECT_FALSE(parse(R"({"contexts": []})").ok());
  EXPECT_FALSE(parse(R"({"contexts": [{"id": "x"}]})").ok());  // no content source
  EXPECT_FALSE(parse(R"({"contexts": [{"file": "f", "synthetic_tokens": 3}]})").ok());  // two sources
  EXPECT_FALSE(parse(R"({"contexts": [{"synthetic_tokens": 3}], "query_tokens": {"dist": "zipf"}})").ok());
  EXPECT_FALSE(parse(R"({"contexts": [{"synthetic_tokens": 3}], "dense_fraction": 2})").ok());
  EXPECT_FALSE(parse(R"({"contexts": [{"synthetic_tokens": 3}], "sparsity_levels": [1.5]})").ok());
  EXPECT_FALSE(parse(R"({"contexts": [{"synthetic_tokens": "many"}]})").ok());  // wrong type
  const auto status = parse(R"({"contexts": [{"synthetic_tokens": 3}], "output_tokens": {"dist": "uniform"}})");
  EXPECT_NE(status.message().find("output_tokens"), std::string::npos) << status;
}

TEST(Arrivals, PoissonRateAndBounds) {
  const absl::Time start = absl::Now() + absl::Hours(1);  // far future: Next() never looks at the clock
  ArrivalSchedule schedule(100.0, 5, start, start + absl::Seconds(20), 0);
  int64_t n = 0;
  absl::Time last = start;
  while (auto at = schedule.Next()) {
    ASSERT_GE(*at, last);
    last = *at;
    ++n;
  }
  EXPECT_NEAR(double(n), 2000.0, 200.0);  // mean 100/s over 20 s; sd ~45
  ArrivalSchedule capped(0, 1, absl::Now(), absl::Now() + absl::Hours(1), 3);
  EXPECT_TRUE(capped.Next() && capped.Next() && capped.Next());
  EXPECT_FALSE(capped.Next());
}

std::vector<std::string> Keys() {
  std::vector<std::string> keys;
  for (int i = 0; i < 3000; ++i) keys.push_back(absl::StrCat("ctx-", i));
  return keys;
}

// Envoy's own ring for six hosts named "90".."95" with use_hostname_for_hashing and minimum_ring_size
// 12 (the hash ring its ring_hash_lb_test lists for that configuration): the same points, the same owners.
TEST(RingHash, BuildsEnvoysRingForHostnames) {
  RingHashRouter router({"90:1", "91:1", "92:1", "93:1", "94:1", "95:1"}, /*minimum_ring_size=*/12);
  const std::vector<std::pair<uint64_t, size_t>> envoy = {
      {1975508444536362413ull, 5}, {2376063919839173711ull, 5}, {2386806903309390596ull, 3},
      {6749904478991551885ull, 4}, {6803900775736438537ull, 3}, {7225015537174310577ull, 2},
      {8787465352164086522ull, 0}, {11282020843382717940ull, 2}, {13723418369486627818ull, 1},
      {13776502110861797421ull, 0}, {14338313586354474791ull, 1}, {15364271037087512980ull, 4}};
  EXPECT_EQ(router.ring(), envoy);
}

// Envoy's chooseHost: the first point at or after the request's hash, wrapping around.
TEST(RingHash, PicksTheFirstPointAtOrAfterTheKeysHash) {
  RingHashRouter router({"a.headless:50051", "b.headless:50051", "c.headless:50051"});
  ASSERT_EQ(router.ring().size(), 3u * 342);  // ceil(1024 / 3) points each
  for (const auto& key : Keys()) {
    const uint64_t h = RingHash64(key);
    size_t expected = router.ring().front().second;
    for (const auto& [point, replica] : router.ring()) {
      if (point >= h) {
        expected = replica;
        break;
      }
    }
    ASSERT_EQ(router.Pick(key), expected) << key;
  }
  EXPECT_EQ(HostOf("a.headless:50051"), "a.headless");
  EXPECT_EQ(HostOf("[::1]:50051"), "::1");
  EXPECT_EQ(HostOf("plain"), "plain");
}

TEST(RingHash, RemovingAReplicaMovesItsKeysAndFewOthers) {
  const std::vector<std::string> three_names = {"a:1", "b:1", "c:1"};
  const std::vector<std::string> two_names = {"a:1", "c:1"};  // b left; indexes shift, names do not
  RingHashRouter three(three_names);
  RingHashRouter two(two_names);
  std::map<std::string, int> owned;
  int moved_from_b = 0, moved_between_survivors = 0;
  for (const auto& key : Keys()) {
    const std::string before = three_names[three.Pick(key)];
    const std::string after = two_names[two.Pick(key)];
    ++owned[before];
    if (before == "b:1") {
      ++moved_from_b;
    } else if (before != after) {
      ++moved_between_survivors;  // Envoy gives the survivors more points: a few keys change hands
    }
  }
  EXPECT_EQ(moved_from_b, owned["b:1"]);
  EXPECT_LT(moved_between_survivors, 3000 / 10);
  for (const auto& [name, count] : owned) {  // 342 points each: close to 1/3 each
    EXPECT_GT(count, 850) << name;
    EXPECT_LT(count, 1150) << name;
  }
}

TEST(RingHash, StableAcrossInstances) {
  RingHashRouter x({"a:1", "b:1", "c:1"});
  RingHashRouter y({"a:1", "b:1", "c:1"});
  for (const auto& key : Keys()) ASSERT_EQ(x.Pick(key), y.Pick(key));
  EXPECT_EQ(RingHash64(""), 0xEF46DB3751D8E999ull);  // xxHash64's published value for the empty input
}

TEST(RoundRobin, Cycles) {
  RoundRobinRouter rr(3);
  EXPECT_EQ(rr.Pick("x"), 0u);
  EXPECT_EQ(rr.Pick("x"), 1u);
  EXPECT_EQ(rr.Pick("x"), 2u);
  EXPECT_EQ(rr.Pick("x"), 0u);
  EXPECT_FALSE(MakeRouter("random", {"a"}).ok());
  EXPECT_FALSE(MakeRouter("ring_hash", {}).ok());
}

TEST(SqueezeloadTest, DatasetQuestionsPickTheirContext) {
  auto w = ParseWorkload(nlohmann::json::parse(R"({
    "contexts": [{"id": "a", "synthetic_words": 10}, {"id": "b", "synthetic_words": 10}],
    "questions": [{"context": "b", "question": "why?"}, {"context": "a", "question": "how?"}]})"));
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->questions.size(), 2u);
  RequestSampler sampler(*w, 3);
  std::set<int> asked;
  for (int i = 0; i < 50; ++i) {
    const RequestSpec r = sampler.Next();
    ASSERT_GE(r.question_index, 0);
    EXPECT_EQ(r.context_index, w->questions[size_t(r.question_index)].context_index);
    asked.insert(r.question_index);
  }
  EXPECT_EQ(asked.size(), 2u);
  EXPECT_FALSE(ParseWorkload(nlohmann::json::parse(R"({"contexts": [{"id": "a", "synthetic_words": 1}],
    "questions": [{"context": "zzz", "question": "?"}]})")).ok());
}

TEST(SqueezeloadTest, ShippedDatasetLoads) {
  auto w = LoadWorkloadFile(std::string(SQUEEZELOAD_SOURCE_DIR) + "/client/squeezeload/datasets/ops_manual/workload.json");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->contexts.size(), 2u);
  EXPECT_GE(w->questions.size(), 10u);
}

TEST(SqueezeloadTest, ConfigurablePercentiles) {
  auto p = ParsePercentiles("50, 99.9");
  ASSERT_TRUE(p.ok()) << p.status();
  const LatencyStats s = ComputeStats({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, *p);
  ASSERT_EQ(s.percentiles.size(), 2u);
  EXPECT_DOUBLE_EQ(s.percentiles[0].second, 5.5);
  EXPECT_NEAR(s.percentiles[1].second, 9.991, 1e-9);
  EXPECT_FALSE(ParsePercentiles("101").ok());
  EXPECT_FALSE(ParsePercentiles("").ok());
}

}  // namespace
}  // namespace squeezeload
