// Generate: validates the request on the gRPC thread (cheap checks, prompt tokenization), then hands
// the generation to the scheduler and streams one GenerateResponse per token; the last one carries
// the finish reason, Usage and AttentionStats.
#pragma once

#include <grpcpp/grpcpp.h>

#include "server/service_core.h"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezeserve::server {

// `request` is a GenerateRequest's raw bytes and responses are written as raw bytes
// (server/request_codec.h): a request that does not parse is answered INVALID_ARGUMENT.
grpc::ServerWriteReactor<grpc::ByteBuffer>* NewGenerateReactor(ServiceCore* core, grpc::CallbackServerContext* context,
                                                               const grpc::ByteBuffer* request);

}  // namespace squeezeserve::server
