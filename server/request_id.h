// Request ids for log correlation: the client's `x-request-id` metadata when it sends a sane one (a
// gateway's or load balancer's id), otherwise a fresh random one. Echoed to the client in initial
// metadata so it can quote it in a bug report.
#pragma once

#include <string>
#include <string_view>

#include <grpcpp/grpcpp.h>

namespace squeezeserve::server {

inline constexpr char kRequestIdHeader[] = "x-request-id";

// The id `header` names when it is 1-128 printable ASCII characters without spaces; empty otherwise
// (a hostile header must not inject log lines).
std::string SanitizeRequestId(std::string_view header);
// 32 random hex digits.
std::string NewRequestId();

// The call's id (from metadata or new), added to the initial metadata. Call once per RPC, before
// anything is written to it.
std::string AssignRequestId(grpc::CallbackServerContext* context);

}  // namespace squeezeserve::server
