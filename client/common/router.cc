#include "client/common/router.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace squeezeserve::routing {

uint64_t RingHash64(absl::string_view key) { return XXH64(key.data(), key.size(), 0); }

std::string HostOf(absl::string_view replica) {
  if (!replica.empty() && replica.front() == '[') {  // [v6]:port
    const size_t close = replica.find(']');
    return std::string(replica.substr(1, close == absl::string_view::npos ? absl::string_view::npos : close - 1));
  }
  const size_t colon = replica.rfind(':');
  if (colon == absl::string_view::npos || replica.find(':') != colon) return std::string(replica);  // no port, bare v6
  return std::string(replica.substr(0, colon));
}

RingHashRouter::RingHashRouter(const std::vector<std::string>& replicas, uint64_t minimum_ring_size,
                               uint64_t maximum_ring_size) {
  if (replicas.empty()) return;
  // Envoy's arithmetic, step for step and in doubles, so the number of points per host matches
  // exactly: equal weights normalised to 1/N, a scale that gives the lightest host
  // ceil(weight * minimum) points, and running sums across hosts.
  const double weight = 1.0 / static_cast<double>(replicas.size());
  const double scale = std::min(std::ceil(weight * static_cast<double>(minimum_ring_size)) / weight,
                                static_cast<double>(maximum_ring_size));
  uint64_t current_hashes = 0;
  double target_hashes = 0;
  for (size_t r = 0; r < replicas.size(); ++r) {
    const std::string prefix = absl::StrCat(HostOf(replicas[r]), "_");
    target_hashes += scale * weight;
    for (uint64_t i = 0; static_cast<double>(current_hashes) < target_hashes; ++i, ++current_hashes) {
      ring_.emplace_back(RingHash64(absl::StrCat(prefix, i)), r);
    }
  }
  std::sort(ring_.begin(), ring_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
}

size_t RingHashRouter::Pick(absl::string_view context_id) {
  const uint64_t h = RingHash64(context_id);
  auto it = std::lower_bound(ring_.begin(), ring_.end(), h,
                             [](const std::pair<uint64_t, size_t>& point, uint64_t hash) { return point.first < hash; });
  if (it == ring_.end()) it = ring_.begin();  // wrap around the ring
  return it->second;
}

absl::StatusOr<std::unique_ptr<Router>> MakeRouter(const std::string& policy,
                                                   const std::vector<std::string>& replicas) {
  if (replicas.empty()) return absl::InvalidArgumentError("--server: no replicas");
  if (policy == "ring_hash") return std::make_unique<RingHashRouter>(replicas);
  if (policy == "round_robin") return std::make_unique<RoundRobinRouter>(replicas.size());
  return absl::InvalidArgumentError(absl::StrCat("--routing: unknown policy \"", policy,
                                                 "\" (ring_hash, round_robin)"));
}

}  // namespace squeezeserve::routing
