// squeezeload: load generator for squeezeserve. Ingests a workload's contexts, drives Generate streams
// (or an OpenAI-compatible server's /v1/completions, --openai) closed-loop (--concurrency) or open-loop
// (--rate, Poisson), on synthetic tokens or a text dataset (documents + questions), and reports
// TTFT/TPOT/ITL/E2EL percentiles, throughput and goodput as a table, vLLM-style JSON and per-request
// JSON lines. See docs/operations.md.
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "client/squeezeload/load_runner.h"
#include "client/squeezeload/report.h"
#include "client/squeezeload/target.h"

ABSL_FLAG(std::string, server, "localhost:50051", "Replicas, comma-separated HOST:PORT");
ABSL_FLAG(std::string, routing, "ring_hash", "ring_hash (by context id) or round_robin");
ABSL_FLAG(std::string, workload, "", "Workload JSON file; empty = one synthetic 1024-token context, 32/32 tokens");
ABSL_FLAG(int, concurrency, 8, "Closed loop: concurrent streams. Open loop: cap on in-flight requests");
ABSL_FLAG(double, rate, 0, "Open loop: mean Poisson arrival rate in requests/s (0 = closed loop)");
ABSL_FLAG(std::string, sweep, "", "Comma list of concurrencies to run in turn, e.g. 1,8,32 (overrides --concurrency)");
ABSL_FLAG(double, duration, 30, "Seconds per load level after which no new request is sent");
ABSL_FLAG(int64_t, num_requests, 0, "Requests per load level (0 = bounded by --duration only)");
ABSL_FLAG(int64_t, warmup_requests, 0, "Requests sent and discarded before each load level");
ABSL_FLAG(double, request_timeout, 120, "Deadline of each RPC in seconds");
ABSL_FLAG(std::string, goodput, "", "SLOs for goodput, e.g. ttft:500,tpot:50,e2el:5000 (milliseconds)");
ABSL_FLAG(std::string, json_out, "", "Write results as JSON here (a sweep writes {\"results\": [...]})");
ABSL_FLAG(uint64_t, seed, 1, "Seed of request sampling and Poisson arrivals");
ABSL_FLAG(bool, skip_ingest, false, "Assume the workload's contexts are already stored");
ABSL_FLAG(bool, verbose, false, "Log every failed request");
ABSL_FLAG(std::string, openai, "",
          "Send requests to this OpenAI-compatible server (http://HOST:PORT; /v1/completions, streamed) instead of "
          "the Generate RPC: squeezeserve --openai_listen, or another server on the same workload");
ABSL_FLAG(std::string, openai_model, "", "The \"model\" of OpenAI requests (default: the first of GET /v1/models)");
ABSL_FLAG(std::string, openai_api_key, "", "Bearer token of OpenAI requests");
ABSL_FLAG(std::string, openai_context, "inline",
          "OpenAI mode: inline (each prompt carries its context's text: any server) or id (squeezeserve: the "
          "contexts are ingested over gRPC at --server and named by the context_id extension)");
ABSL_FLAG(std::string, percentiles, "50,90,99", "Latency percentiles to report, e.g. 50,90,99,99.9");
ABSL_FLAG(std::string, requests_out, "",
          "Write every measured request here, one JSON object per line (send time, context, question, TTFT, "
          "ITL, E2EL, token counts, error)");

namespace {

constexpr char kDefaultWorkload[] = R"({
  "contexts": [{"id": "squeezeload-default", "synthetic_tokens": 1024}],
  "query_tokens": 32, "output_tokens": 32
})";

absl::StatusOr<std::vector<int>> Concurrencies() {
  std::vector<int> out;
  const std::string sweep = absl::GetFlag(FLAGS_sweep);
  if (sweep.empty()) return std::vector<int>{absl::GetFlag(FLAGS_concurrency)};
  for (absl::string_view part : absl::StrSplit(sweep, ',', absl::SkipWhitespace())) {
    int c = 0;
    if (!absl::SimpleAtoi(part, &c) || c < 1) {
      return absl::InvalidArgumentError("--sweep: expected positive integers, e.g. 1,8,32");
    }
    out.push_back(c);
  }
  return out;
}

int Fail(const absl::Status& status) {
  spdlog::error("{}", std::string(status.message()));
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // --help lists this file's flags (Abseil's default shows only flags of a file named like the binary).
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view path) { return absl::EndsWith(path, "client/squeezeload/main.cc"); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage("squeezeload --server HOST:PORT[,HOST:PORT...] [--workload FILE] [flags]");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_verbose)) spdlog::set_level(spdlog::level::debug);

  auto slo = squeezeload::ParseSlo(absl::GetFlag(FLAGS_goodput));
  if (!slo.ok()) return Fail(slo.status());
  auto concurrencies = Concurrencies();
  if (!concurrencies.ok()) return Fail(concurrencies.status());
  const std::string workload_path = absl::GetFlag(FLAGS_workload);
  auto workload = workload_path.empty() ? squeezeload::ParseWorkload(nlohmann::json::parse(kDefaultWorkload))
                                        : squeezeload::LoadWorkloadFile(workload_path);
  if (!workload.ok()) return Fail(workload.status());

  auto percentiles = squeezeload::ParsePercentiles(absl::GetFlag(FLAGS_percentiles));
  if (!percentiles.ok()) return Fail(percentiles.status());

  const std::vector<std::string> servers =
      absl::StrSplit(absl::GetFlag(FLAGS_server), ',', absl::SkipWhitespace());
  const absl::Duration timeout = absl::Seconds(absl::GetFlag(FLAGS_request_timeout));
  const std::string openai = absl::GetFlag(FLAGS_openai);
  const std::string openai_context = absl::GetFlag(FLAGS_openai_context);
  if (openai_context != "inline" && openai_context != "id") {
    return Fail(absl::InvalidArgumentError("--openai_context must be inline or id"));
  }
  absl::StatusOr<std::unique_ptr<squeezeload::Target>> target;
  if (!openai.empty() && openai_context == "inline") {  // no gRPC at all: any OpenAI-compatible server
    target = std::make_unique<squeezeload::Target>();
    (*target)->workload = *std::move(workload);
    (*target)->routing = "openai";
  } else {
    target = squeezeload::ConnectAndIngest(servers, absl::GetFlag(FLAGS_routing), *std::move(workload),
                                           absl::GetFlag(FLAGS_skip_ingest), timeout);
  }
  if (!target.ok()) return Fail(target.status());
  if (!openai.empty()) {
    squeezeload::OpenAiEndpoint endpoint{openai, absl::GetFlag(FLAGS_openai_model), absl::GetFlag(FLAGS_openai_api_key)};
    if (absl::Status attached = squeezeload::AttachOpenAi(**target, endpoint, openai_context == "inline", timeout);
        !attached.ok()) {
      return Fail(attached);
    }
  }
  std::ofstream requests_out;
  if (const std::string path = absl::GetFlag(FLAGS_requests_out); !path.empty()) {
    requests_out.open(path);
    if (!requests_out) return Fail(absl::InternalError("cannot write " + path));
  }

  squeezeload::RunLimits limits;
  limits.duration = absl::Seconds(absl::GetFlag(FLAGS_duration));
  limits.num_requests = absl::GetFlag(FLAGS_num_requests);
  limits.warmup_requests = absl::GetFlag(FLAGS_warmup_requests);
  limits.request_timeout = timeout;
  limits.seed = absl::GetFlag(FLAGS_seed);

  nlohmann::json results = nlohmann::json::array();
  for (int concurrency : *concurrencies) {
    const squeezeload::LoadLevel level{concurrency, absl::GetFlag(FLAGS_rate)};
    const squeezeload::LevelResult run = squeezeload::RunLevel(**target, level, limits);
    squeezeload::LoadSummary summary = squeezeload::Summarize(run.records, run.duration_s, *slo, *percentiles);
    if (requests_out.is_open()) {
      for (const squeezeload::RequestRecord& record : run.records) {
        nlohmann::json line = squeezeload::RequestJson(record);
        line["concurrency"] = level.concurrency;
        requests_out << line.dump() << "\n";
      }
    }
    summary.concurrency = level.concurrency;
    summary.request_rate = level.request_rate;
    summary.routing = (*target)->routing;
    squeezeload::PrintTable(summary, std::cout);
    results.push_back(squeezeload::ToJson(summary));
  }

  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    // One level: a flat object like vLLM's result file. A sweep: {"results": [one object per level]}.
    const nlohmann::json doc = results.size() == 1 ? results[0] : nlohmann::json{{"results", results}};
    std::ofstream out(json_out);
    out << doc.dump(2) << "\n";
    if (!out) return Fail(absl::InternalError("cannot write " + json_out));
  }
  return 0;
}
