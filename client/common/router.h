// Client-side routing of requests to replicas by context id (squeezectl and squeezeload).
//
// ring_hash keeps every request for a context on one replica (where its KV cache is warm), and when a
// replica leaves only that replica's contexts move: each replica owns `virtual_nodes` points on a
// 64-bit ring and a key goes to the first point at or after its hash. round_robin ignores the key and
// is there for comparison (it needs the context on every replica, or a shared store).
// The hash is FNV-1a + a splitmix64 finaliser: stable across processes and platforms, unlike
// std::hash / absl::Hash, so two squeezeload runs (or squeezectl) agree on placement.
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

uint64_t StableHash64(absl::string_view key);

class Router {
 public:
  virtual ~Router() = default;
  // Index into the replica list the router was built with.
  virtual size_t Pick(absl::string_view context_id) = 0;
};

class RingHashRouter : public Router {
 public:
  RingHashRouter(const std::vector<std::string>& replicas, int virtual_nodes = 160);
  size_t Pick(absl::string_view context_id) override;

 private:
  std::vector<std::pair<uint64_t, size_t>> ring_;  // (point, replica index), sorted by point
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
