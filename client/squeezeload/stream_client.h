// The two RPCs squeezeload drives, timed on the client with a monotonic clock. Both set the
// `x-context-id` request header, which the chart's Envoy hashes on (deploy/helm/squeezeserve, client/common/router.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/squeezeload/metrics.h"
#include "client/squeezeload/workload.h"
#include "squeezeserve/v1/squeezeserve.grpc.pb.h"

namespace squeezeload {

// Sends one Generate request for `spec` (query = `query_tokens`, exactly spec.output_tokens generated:
// ignore_eos is set so output lengths follow the workload) and times its stream.
// A non-empty `query_text` (dataset mode) is sent as text instead of `query_tokens`.
RequestRecord RunGenerate(squeezeserve::v1::Squeezeserve::Stub& stub, const std::string& context_id,
                          const RequestSpec& spec, const std::vector<int32_t>& query_tokens,
                          const std::string& query_text, absl::Duration timeout);

// Content of one context, exactly one of the two set.
struct ContextContent {
  std::string text;
  std::vector<int32_t> tokens;
};

// Ingests a context in chunks (so big documents stay under the message size limit). A context the
// server already holds (ALREADY_EXISTS) counts as success.
absl::StatusOr<squeezeserve::v1::ContextInfo> IngestContext(
    squeezeserve::v1::Squeezeserve::Stub& stub, const std::string& context_id, const ContextContent& content,
    const Workload& workload, absl::Duration timeout);

}  // namespace squeezeload
