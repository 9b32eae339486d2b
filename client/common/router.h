// Client-side routing of requests to replicas by context id (squeezectl and squeezeload), with the
// same consistent hash as the Envoy router of the Helm chart (deploy/helm/squeezeserve, templates/
// envoy.yaml): Envoy's RING_HASH load balancer with xxHash64 and `use_hostname_for_hashing`. Given
// the same replica host names (the StatefulSet's stable pod DNS names, never pod IPs) in the same
// order, a client routing itself and a client going through Envoy reach the same replica for a context,
// and a restarted pod keeps its place on the ring.
//
// The ring, as Envoy builds it: every host gets ceil(minimum_ring_size / N) points (equal weights),
// point i of host H at xxHash64("H_i"); a request goes to the first point at or after
// xxHash64(context id), wrapping around. When a replica leaves, only its contexts move.
// round_robin ignores the key and is there for comparison.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace squeezeserve::routing {

// The request header Envoy hashes on (its route's hash_policy); clients set it to the context id.
inline constexpr char kContextIdHeader[] = "x-context-id";
// Envoy's defaults for RING_HASH, which the chart keeps (values.yaml routing.minimumRingSize).
inline constexpr uint64_t kMinimumRingSize = 1024;
inline constexpr uint64_t kMaximumRingSize = 8 * 1024 * 1024;

// xxHash64 with seed 0, as Envoy's HashUtil::xxHash64.
uint64_t RingHash64(absl::string_view key);

// The host part of "HOST:PORT" or "[V6]:PORT": what Envoy hashes with use_hostname_for_hashing.
std::string HostOf(absl::string_view replica);

class Router {
 public:
  virtual ~Router() = default;
  // Index into the replica list the router was built with.
  virtual size_t Pick(absl::string_view context_id) = 0;
};

class RingHashRouter : public Router {
 public:
  // `replicas`: HOST:PORT, in the order Envoy's cluster lists them (pod 0, 1, ...).
  explicit RingHashRouter(const std::vector<std::string>& replicas, uint64_t minimum_ring_size = kMinimumRingSize,
                          uint64_t maximum_ring_size = kMaximumRingSize);
  size_t Pick(absl::string_view context_id) override;
  // (point, replica index), sorted by point.
  const std::vector<std::pair<uint64_t, size_t>>& ring() const { return ring_; }

 private:
  std::vector<std::pair<uint64_t, size_t>> ring_;
};

class RoundRobinRouter : public Router {
 public:
  explicit RoundRobinRouter(size_t num_replicas) : n_(num_replicas) {}
  size_t Pick(absl::string_view) override { return next_.fetch_add(1) % n_; }

 private:
  const size_t n_;
  std::atomic<size_t> next_{0};
};

// policy: "ring_hash" or "round_robin".
absl::StatusOr<std::unique_ptr<Router>> MakeRouter(const std::string& policy,
                                                   const std::vector<std::string>& replicas);

}  // namespace squeezeserve::routing
