// Drives one load level against a Target: an optional warm-up (closed loop, results dropped), then the
// measured phase, bounded by a duration and/or a request count. Each worker thread runs one stream at
// a time over the blocking gRPC API: simple, and enough for the hundreds of streams a GPU replica holds.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "client/squeezeload/metrics.h"
#include "client/squeezeload/target.h"

namespace squeezeload {

struct LoadLevel {
  int concurrency = 1;      // closed loop: workers; open loop: cap on in-flight requests
  double request_rate = 0;  // > 0: open loop, Poisson arrivals at this mean rate per second
};

struct RunLimits {
  absl::Duration duration = absl::Seconds(30);  // no new requests after this
  int64_t num_requests = 0;                     // 0 = no cap
  int64_t warmup_requests = 0;
  absl::Duration request_timeout = absl::Seconds(120);
  uint64_t seed = 1;
};

struct LevelResult {
  std::vector<RequestRecord> records;
  double duration_s = 0;  // first send to last completion of the measured phase
};

LevelResult RunLevel(Target& target, const LoadLevel& level, const RunLimits& limits);

}  // namespace squeezeload
