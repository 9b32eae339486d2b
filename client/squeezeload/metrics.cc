#include "client/squeezeload/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <grpcpp/support/status.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

#include "grpc_code_name.h"

namespace squeezeload {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * double(values.size() - 1);
  const size_t lo = size_t(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (rank - double(lo)) * (values[hi] - values[lo]);
}

std::optional<double> Tpot(const RequestRecord& r) {
  if (!r.ok || r.output_tokens < 2) return std::nullopt;
  return (r.e2el_ms - r.ttft_ms) / double(r.output_tokens - 1);
}

absl::StatusOr<Slo> ParseSlo(const std::string& spec) {
  Slo slo;
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, absl::MaxSplits(':', 1));
    const absl::string_view name = absl::StripAsciiWhitespace(kv.first);
    double ms = 0;
    if (!absl::SimpleAtod(kv.second, &ms) || ms <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--goodput: \"", std::string(part), "\" needs a positive number of milliseconds"));
    }
    if (name == "ttft") slo.ttft_ms = ms;
    else if (name == "tpot") slo.tpot_ms = ms;
    else if (name == "e2el") slo.e2el_ms = ms;
    else return absl::InvalidArgumentError(
        absl::StrCat("--goodput: unknown metric \"", std::string(name), "\" (ttft, tpot, e2el)"));
  }
  return slo;
}

bool MeetsSlo(const RequestRecord& r, const Slo& slo) {
  if (!r.ok) return false;
  if (slo.ttft_ms && r.ttft_ms > *slo.ttft_ms) return false;
  if (slo.tpot_ms && Tpot(r).value_or(0.0) > *slo.tpot_ms) return false;  // 1-token request: TPOT 0
  if (slo.e2el_ms && r.e2el_ms > *slo.e2el_ms) return false;
  return true;
}

absl::StatusOr<std::vector<double>> ParsePercentiles(const std::string& spec) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    double p = 0;
    if (!absl::SimpleAtod(part, &p) || !(p >= 0 && p <= 100)) {
      return absl::InvalidArgumentError(absl::StrCat("--percentiles: expected numbers in [0, 100], got '", part, "'"));
    }
    out.push_back(p);
  }
  if (out.empty()) return absl::InvalidArgumentError("--percentiles: give at least one, e.g. 50,90,99");
  return out;
}

LatencyStats ComputeStats(const std::vector<double>& values, const std::vector<double>& percentiles) {
  LatencyStats s;
  s.count = values.size();
  for (double p : percentiles) s.percentiles.emplace_back(p, values.empty() ? 0 : Percentile(values, p));
  if (values.empty()) return s;
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / double(values.size());
  double sq = 0;
  for (double v : values) sq += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(sq / double(values.size()));  // population std, as numpy.std
  s.p50 = s.median = Percentile(values, 50);
  s.p90 = Percentile(values, 90);
  s.p99 = Percentile(values, 99);
  return s;
}

LoadSummary Summarize(const std::vector<RequestRecord>& records, double duration_s, const Slo& slo,
                      const std::vector<double>& percentiles) {
  LoadSummary out;
  out.duration_s = duration_s;
  out.slo = slo;
  std::vector<double> ttft, tpot, itl, e2el;
  int64_t good = 0;
  for (const RequestRecord& r : records) {
    if (!r.ok) {
      ++out.failed;
      ++out.errors_by_code[squeezeserve::GrpcCodeName(static_cast<grpc::StatusCode>(r.status_code))];
      continue;
    }
    ++out.completed;
    out.total_input_tokens += r.input_tokens;
    out.total_output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_ms);
    e2el.push_back(r.e2el_ms);
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    if (auto t = Tpot(r)) tpot.push_back(*t);
    if (MeetsSlo(r, slo)) ++good;
  }
  if (duration_s > 0) {
    out.request_throughput = double(out.completed) / duration_s;
    out.output_throughput = double(out.total_output_tokens) / duration_s;
    out.total_token_throughput = double(out.total_input_tokens + out.total_output_tokens) / duration_s;
    if (!slo.empty()) out.request_goodput = double(good) / duration_s;
  }
  out.ttft = ComputeStats(ttft, percentiles);
  out.tpot = ComputeStats(tpot, percentiles);
  out.itl = ComputeStats(itl, percentiles);
  out.e2el = ComputeStats(e2el, percentiles);
  return out;
}

}  // namespace squeezeload
