// Generate: validates the request on the gRPC thread (cheap checks, prompt tokenization), then hands
// the generation to the scheduler and streams one GenerateResponse per token; the last one carries
// the finish reason, Usage and AttentionStats.
#pragma once

#include <grpcpp/grpcpp.h>

#include "server/service_core.h"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezeserve::server {

grpc::ServerWriteReactor<::squeezeserve::v1::GenerateResponse>* NewGenerateReactor(
    ServiceCore* core, grpc::CallbackServerContext* context, const ::squeezeserve::v1::GenerateRequest* request);

}  // namespace squeezeserve::server
