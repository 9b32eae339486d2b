// When requests are sent. Closed loop: each worker sends its next request as soon as the previous one
// ends (the load is the number of workers). Open loop: Poisson arrivals at a fixed mean rate, seeded;
// a worker takes the next arrival time and sleeps until it, so arrivals never wait on responses unless
// every worker is busy (then --max_concurrency caps the in-flight requests, as vLLM's does).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <random>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace squeezeload {

class ArrivalSchedule {
 public:
  // rate_per_s <= 0 means closed loop. Requests stop at `end` or after `max_requests` (0 = no cap).
  ArrivalSchedule(double rate_per_s, uint64_t seed, absl::Time start, absl::Time end, int64_t max_requests);

  // Send time of the next request, or nullopt when the run is over. Thread-safe.
  std::optional<absl::Time> Next();

  int64_t issued() const;

 private:
  const double rate_per_s_;
  const absl::Time end_;
  const int64_t max_requests_;
  mutable std::mutex mu_;
  std::mt19937_64 rng_;
  absl::Time next_arrival_;
  int64_t issued_ = 0;
};

}  // namespace squeezeload
