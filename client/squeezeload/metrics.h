// Request records and their summary, with the definitions of vLLM's benchmark_serving
// (docs/operations.md "Metrics (vLLM benchmark_serving definitions)"):
//   TTFT  send -> first streamed message carrying tokens
//   ITL   every gap between successive token-carrying messages, pooled over requests
//   TPOT  per request (E2EL - TTFT) / (output_tokens - 1); requests with one output token are left out
//         of TPOT statistics and count as TPOT 0 for goodput
//   E2EL  send -> last streamed message
//   goodput  completed requests per second meeting every given SLO
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace squeezeload {

struct RequestRecord {
  bool ok = false;
  int status_code = 0;          // grpc::StatusCode
  std::string error;            // status message of a failed request
  double ttft_ms = 0;
  double e2el_ms = 0;
  std::vector<double> itl_ms;   // gaps between token-carrying messages
  int input_tokens = 0;         // query tokens (the context is not recomputed)
  int output_tokens = 0;
  bool dense = false;
  // For the per-request export (--requests_out).
  std::string context_id;
  int question_index = -1;
  double sent_s = 0;  // send time, seconds after the start of the measured phase
};

// Linear interpolation between closest ranks (numpy.percentile's default). `values` need not be sorted.
double Percentile(std::vector<double> values, double p);

// nullopt for requests with fewer than two output tokens.
std::optional<double> Tpot(const RequestRecord& r);

// Service-level objectives in milliseconds; unset ones are not checked.
struct Slo {
  std::optional<double> ttft_ms, tpot_ms, e2el_ms;
  bool empty() const { return !ttft_ms && !tpot_ms && !e2el_ms; }
};
// "ttft:500,tpot:50,e2el:2000" (any subset; empty string = no SLO).
absl::StatusOr<Slo> ParseSlo(const std::string& spec);
bool MeetsSlo(const RequestRecord& r, const Slo& slo);

struct LatencyStats {
  double mean = 0, median = 0, std = 0, p50 = 0, p90 = 0, p99 = 0;
  size_t count = 0;
  std::vector<std::pair<double, double>> percentiles;  // (p, value) for each asked percentile
};
// The percentiles reported (--percentiles); vLLM's names: p50, p99, p99.9.
inline const std::vector<double> kDefaultPercentiles = {50, 90, 99};
LatencyStats ComputeStats(const std::vector<double>& values,
                          const std::vector<double>& percentiles = kDefaultPercentiles);
// "50,90,99.9" -> {50, 90, 99.9}; each in [0, 100].
absl::StatusOr<std::vector<double>> ParsePercentiles(const std::string& spec);

struct LoadSummary {
  // The load level.
  int concurrency = 0;     // closed-loop workers, or the in-flight cap in open loop
  double request_rate = 0;  // 0 = closed loop
  std::string routing;
  // Counts and rates over the measured phase.
  double duration_s = 0;
  int64_t completed = 0, failed = 0;
  std::map<std::string, int64_t> errors_by_code;  // grpc status name -> count
  int64_t total_input_tokens = 0, total_output_tokens = 0;
  double request_throughput = 0, output_throughput = 0, total_token_throughput = 0;
  std::optional<double> request_goodput;  // only with an SLO
  Slo slo;
  LatencyStats ttft, tpot, itl, e2el;
};

LoadSummary Summarize(const std::vector<RequestRecord>& records, double duration_s, const Slo& slo,
                      const std::vector<double>& percentiles = kDefaultPercentiles);

}  // namespace squeezeload
