// One access line per finished RPC, written by a gRPC server interceptor: method, status code, duration,
// peer, request id, context id and, for Generate, the token counts. The API's RPCs log at info; the
// health and reflection services (probed every few seconds) at debug.
//
// The same interceptor adds the standard retry hint to RESOURCE_EXHAUSTED answers (trailing
// `grpc-retry-pushback-ms`, which gRPC's retry policies read), whichever handler refused the call.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/support/server_interceptor.h>

namespace squeezeserve::server {

// What an access line says; -1 / empty = not known for this RPC.
struct AccessRecord {
  std::string method;  // "/squeezeserve.v1.Squeezeserve/Generate"
  std::string code;    // "OK", "NOT_FOUND", ...
  double duration_ms = 0;
  std::string peer;
  std::string request_id;
  std::string context_id;
  int64_t prompt_tokens = -1;
  int64_t completion_tokens = -1;
  int64_t context_tokens = -1;  // IngestContext: tokens of the ingested context
  std::string error;            // the status message when not OK

  // Text: "Generate OK 12.3 ms peer=... request_id=... context=... tokens=4+16"; JSON: an object.
  std::string ToText() const;
  std::string ToJson() const;
};

// For ServerBuilder::experimental().SetInterceptorCreators.
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> AccessLogInterceptors();

}  // namespace squeezeserve::server
