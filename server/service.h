// squeezeserve.v1.Squeezeserve on gRPC's callback API. Streaming RPCs live in their reactors
// (ingest_reactor, generate_reactor); the unary store and info RPCs are answered here directly.
// Every method is registered raw (bytes in, bytes out) and parses its request itself
// (server/request_codec.h): gRPC's typed handlers answer an unparseable request UNIMPLEMENTED with no
// message, or take a failed read of a client stream for its end.
#pragma once

#include <memory>

#include <grpcpp/grpcpp.h>

#include "engine/engine.h"
#include "server/server_config.h"
#include "server/service_core.h"
#include "squeezeserve/v1/squeezeserve.grpc.pb.h"

namespace squeezeserve::server {

namespace internal {
namespace pb = ::squeezeserve::v1;
using RawCallbackService = pb::Squeezeserve::WithRawCallbackMethod_IngestContext<
    pb::Squeezeserve::WithRawCallbackMethod_Generate<pb::Squeezeserve::WithRawCallbackMethod_GetContext<
        pb::Squeezeserve::WithRawCallbackMethod_ListContexts<pb::Squeezeserve::WithRawCallbackMethod_DeleteContext<
            pb::Squeezeserve::WithRawCallbackMethod_GetServerInfo<pb::Squeezeserve::WithRawCallbackMethod_Tokenize<
                pb::Squeezeserve::WithRawCallbackMethod_Detokenize<pb::Squeezeserve::Service>>>>>>>>;
}  // namespace internal

class SqueezeserveService final : public internal::RawCallbackService {
 public:
  explicit SqueezeserveService(ServerConfig config);
  // Waits for running model work; the gRPC server must be shut down first.
  ~SqueezeserveService() override;

  // Until SetEngine, every RPC answers UNAVAILABLE (the model is loading).
  void SetEngine(std::unique_ptr<Engine> engine);
  // From now on every new RPC answers UNAVAILABLE; running streams continue.
  void BeginDrain() { core_.draining.store(true); }
  const StatusCounter& counter() const { return core_.counter; }
  // The Prometheus metrics (/metrics) and whether RPCs are being served (/healthz).
  const ServerMetrics& metrics() const { return core_.metrics; }
  bool serving() const { return core_.CheckServing().ok(); }
  // No ingest or generation running or waiting (a drain can close the port).
  bool idle() const { return core_.pool->busy() == 0 && core_.pool->queued() == 0; }

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* IngestContext(
      grpc::CallbackServerContext* context) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* GetContext(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListContexts(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteContext(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;

  // For the OpenAI-compatible endpoints (server/openai_http.h), which share admission, auth,
  // scheduling and metrics with the RPCs.
  ServiceCore* core() { return &core_; }

 private:
  // A unary RPC: admission (with `scope`), parsing, `handler(principal, request, &response)`,
  // serialization, and the status counted under `method`.
  template <typename Request, typename Response, typename Handler>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, const char* method, uint32_t scope,
                                  const grpc::ByteBuffer* raw_request, grpc::ByteBuffer* raw_response,
                                  Handler handler);
  // Counts `status` under `method` and finishes the unary call with it.
  grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context, const char* method,
                                        const absl::Status& status);

  // Declared before core_ so that it is destroyed after core_'s workers have stopped using it.
  std::unique_ptr<Engine> engine_;
  ServiceCore core_;
};

}  // namespace squeezeserve::server
