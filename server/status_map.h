// The one place where engine statuses (absl::Status) become gRPC statuses, where every status an RPC
// returns is counted (squeezeserve_requests_total reads the counts), and where an overload answer gets
// its retry hint.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "grpc_code_name.h"

namespace squeezeserve::server {

// absl and gRPC share the canonical code numbering; this maps code for code and keeps the message.
grpc::StatusCode ToGrpcCode(absl::StatusCode code);
grpc::Status ToGrpcStatus(const absl::Status& status);
// The HTTP status of the OpenAI-compatible endpoints (server/openai_http.h) for a code.
int ToHttpStatus(absl::StatusCode code);

// RESOURCE_EXHAUSTED carries trailing `grpc-retry-pushback-ms`: the key gRPC's retry policies read (a
// client with a retryPolicy for RESOURCE_EXHAUSTED waits that long before its next attempt).
inline constexpr char kRetryPushbackKey[] = "grpc-retry-pushback-ms";
inline constexpr int kRetryPushbackMs = 250;
// Adds the retry hint to `trailers` when `status` asks for one.
void AddRetryHint(const grpc::Status& status, std::multimap<std::string, std::string>* trailers);

// Counts the statuses returned, per RPC method and code. Thread-safe.
class StatusCounter {
 public:
  void Count(const std::string& method, grpc::StatusCode code);
  int64_t Get(const std::string& method, grpc::StatusCode code) const;
  // (method, code name) -> count, for logs and tests.
  std::map<std::pair<std::string, std::string>, int64_t> Snapshot() const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace squeezeserve::server
