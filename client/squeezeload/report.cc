#include "client/squeezeload/report.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace squeezeload {
namespace {

// vLLM's key names: p99, p99.9 (no trailing zeros).
std::string PercentileName(double p) { return absl::StrCat("p", p); }

void AddStats(nlohmann::json& j, const std::string& metric, const LatencyStats& s) {
  j["mean_" + metric + "_ms"] = s.mean;
  j["median_" + metric + "_ms"] = s.median;
  j["std_" + metric + "_ms"] = s.std;
  for (const auto& [p, value] : s.percentiles) j[PercentileName(p) + "_" + metric + "_ms"] = value;
}

void PrintStats(std::ostream& out, const char* title, const LatencyStats& s) {
  out << absl::StrFormat("%-6s %10.2f", title, s.mean);
  for (const auto& [p, value] : s.percentiles) out << absl::StrFormat(" %10.2f", value);
  out << absl::StrFormat(" %8zu\n", s.count);
}

}  // namespace

nlohmann::json ToJson(const LoadSummary& s) {
  nlohmann::json j;
  j["max_concurrency"] = s.concurrency;
  j["request_rate"] = s.request_rate > 0 ? nlohmann::json(s.request_rate) : nlohmann::json("inf");
  j["routing"] = s.routing;
  j["duration"] = s.duration_s;
  j["completed"] = s.completed;
  j["failed"] = s.failed;
  j["errors_by_code"] = s.errors_by_code;
  j["total_input_tokens"] = s.total_input_tokens;
  j["total_output_tokens"] = s.total_output_tokens;
  j["request_throughput"] = s.request_throughput;
  j["output_throughput"] = s.output_throughput;
  j["total_token_throughput"] = s.total_token_throughput;
  if (s.request_goodput) {
    j["request_goodput"] = *s.request_goodput;
    nlohmann::json slo;
    if (s.slo.ttft_ms) slo["ttft"] = *s.slo.ttft_ms;
    if (s.slo.tpot_ms) slo["tpot"] = *s.slo.tpot_ms;
    if (s.slo.e2el_ms) slo["e2el"] = *s.slo.e2el_ms;
    j["goodput_slo_ms"] = slo;
  }
  AddStats(j, "ttft", s.ttft);
  AddStats(j, "tpot", s.tpot);
  AddStats(j, "itl", s.itl);
  AddStats(j, "e2el", s.e2el);
  return j;
}

void PrintTable(const LoadSummary& s, std::ostream& out) {
  out << absl::StrFormat("==== load: concurrency %d, rate %s, routing %s ====\n", s.concurrency,
                         s.request_rate > 0 ? absl::StrFormat("%.2f/s", s.request_rate) : "inf (closed loop)",
                         s.routing);
  out << absl::StrFormat("duration %.2f s, completed %d, failed %d\n", s.duration_s, s.completed, s.failed);
  for (const auto& [code, count] : s.errors_by_code) out << absl::StrFormat("  %-20s %d\n", code, count);
  out << absl::StrFormat("request throughput   %10.2f req/s\n", s.request_throughput);
  if (s.request_goodput) out << absl::StrFormat("request goodput      %10.2f req/s\n", *s.request_goodput);
  out << absl::StrFormat("output throughput    %10.2f tok/s\n", s.output_throughput);
  out << absl::StrFormat("total tok throughput %10.2f tok/s\n", s.total_token_throughput);
  out << absl::StrFormat("%-6s %10s", "(ms)", "mean");
  for (const auto& [p, value] : s.ttft.percentiles) out << absl::StrFormat(" %10s", PercentileName(p));
  out << absl::StrFormat(" %8s\n", "n");
  PrintStats(out, "TTFT", s.ttft);
  PrintStats(out, "TPOT", s.tpot);
  PrintStats(out, "ITL", s.itl);
  PrintStats(out, "E2EL", s.e2el);
}

nlohmann::json RequestJson(const RequestRecord& r) {
  nlohmann::json j = {{"sent_s", r.sent_s},         {"context_id", r.context_id}, {"ok", r.ok},
                      {"ttft_ms", r.ttft_ms},       {"e2el_ms", r.e2el_ms},       {"itl_ms", r.itl_ms},
                      {"input_tokens", r.input_tokens}, {"output_tokens", r.output_tokens}, {"dense", r.dense}};
  if (auto tpot = Tpot(r)) j["tpot_ms"] = *tpot;
  if (r.question_index >= 0) j["question_index"] = r.question_index;
  if (!r.ok) {
    j["status_code"] = r.status_code;
    j["error"] = r.error;
  }
  return j;
}

}  // namespace squeezeload
