// IngestContext: reads the client's stream of content chunks (progress "receiving"), then tokenizes,
// prefills and indexes on a worker (progress "tokenizing", the engine's stages, "done" with .context).
#pragma once

#include <grpcpp/grpcpp.h>

#include "server/service_core.h"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezeserve::server {

// Messages travel as raw bytes (server/request_codec.h): IngestContextRequest in, IngestContextProgress out.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewIngestReactor(ServiceCore* core, grpc::CallbackServerContext* context);

}  // namespace squeezeserve::server
