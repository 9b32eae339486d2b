// Output of a load run: a table for people and JSON for tools. JSON field names follow vLLM's
// benchmark_serving (request_throughput, output_throughput, mean_ttft_ms, p99_ttft_ms, ...), so existing
// dashboards and scripts read both.
#pragma once

#include <ostream>

#include <nlohmann/json.hpp>

#include "client/squeezeload/metrics.h"

namespace squeezeload {

nlohmann::json ToJson(const LoadSummary& summary);
void PrintTable(const LoadSummary& summary, std::ostream& out);
// One request of the measured phase, a line of --requests_out (JSON lines).
nlohmann::json RequestJson(const RequestRecord& record);

}  // namespace squeezeload
