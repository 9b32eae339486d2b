#include "client/common/router.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace squeezeserve::routing {

uint64_t StableHash64(absl::string_view key) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a offset basis
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  // splitmix64 finaliser: FNV alone clusters similar short keys ("ctx-1", "ctx-2") on the ring.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

RingHashRouter::RingHashRouter(const std::vector<std::string>& replicas, int virtual_nodes) {
  // Points are derived from the replica *name*, not its index, so removing one replica leaves the
  // others' points where they were.
  for (size_t r = 0; r < replicas.size(); ++r) {
    for (int v = 0; v < virtual_nodes; ++v) {
      ring_.emplace_back(StableHash64(absl::StrCat(replicas[r], "#", v)), r);
    }
  }
  std::sort(ring_.begin(), ring_.end());
}

size_t RingHashRouter::Pick(absl::string_view context_id) {
  const uint64_t h = StableHash64(context_id);
  auto it = std::lower_bound(ring_.begin(), ring_.end(), std::make_pair(h, size_t{0}));
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
