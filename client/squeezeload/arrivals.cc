#include "client/squeezeload/arrivals.h"

#include <algorithm>

namespace squeezeload {

ArrivalSchedule::ArrivalSchedule(double rate_per_s, uint64_t seed, absl::Time start, absl::Time end,
                                 int64_t max_requests)
    : rate_per_s_(rate_per_s), end_(end), max_requests_(max_requests), rng_(seed), next_arrival_(start) {}

std::optional<absl::Time> ArrivalSchedule::Next() {
  std::lock_guard<std::mutex> lock(mu_);
  if (max_requests_ > 0 && issued_ >= max_requests_) return std::nullopt;
  absl::Time at = absl::Now();
  if (rate_per_s_ > 0) {
    // Exponential gaps give a Poisson process; the first request leaves at `start`.
    at = next_arrival_;
    next_arrival_ += absl::Seconds(std::exponential_distribution<double>(rate_per_s_)(rng_));
  }
  if (at >= end_) return std::nullopt;
  ++issued_;
  return at;
}

int64_t ArrivalSchedule::issued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return issued_;
}

}  // namespace squeezeload
