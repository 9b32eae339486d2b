// The canonical name of a gRPC status code ("NOT_FOUND"), shared by the server (metrics labels, logs)
// and the clients (error messages, load reports). gRPC's C++ API has no such function.
#pragma once

#include <grpcpp/support/status_code_enum.h>

namespace squeezeserve {

// "UNKNOWN_CODE" for values outside the enum.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace squeezeserve
