// In-memory registry of ingested contexts, keyed by context id. Thread-safe.
// (Persistence to a store directory plugs in behind this interface: see the Squeezed index issue.)
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "engine/engine.h"

namespace squeezeserve {

class ContextStore {
 public:
  // Replaces any context of the same id.
  void Put(std::shared_ptr<const Context> context);
  // nullptr when unknown.
  std::shared_ptr<const Context> Get(std::string_view id) const;
  // Sorted by id.
  std::vector<std::shared_ptr<const Context>> List() const;
  // False when unknown. Readers holding the context keep it alive until they finish.
  bool Delete(std::string_view id);

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const Context>, std::less<>> contexts_ ABSL_GUARDED_BY(mu_);
};

// 1-128 characters of [A-Za-z0-9._-], not starting with '.' (ids become directory names).
bool IsValidContextId(std::string_view id);

// Content address of a context: hex SHA-256 over the model fingerprint, the token ids and the index
// options. Stable across restarts and replicas.
std::string ContentAddress(std::string_view model_fingerprint, absl::Span<const int32_t> tokens,
                           const IndexOptions& index);

// Hex SHA-256 of bytes.
std::string Sha256Hex(std::string_view bytes);

}  // namespace squeezeserve
