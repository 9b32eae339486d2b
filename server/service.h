// squeezeserve.v1.Squeezeserve on gRPC's callback API. Streaming RPCs live in their reactors
// (ingest_reactor, generate_reactor); the unary store and info RPCs are answered here directly.
#pragma once

#include <memory>

#include <grpcpp/grpcpp.h>

#include "engine/engine.h"
#include "server/server_config.h"
#include "server/service_core.h"
#include "squeezeserve/v1/squeezeserve.grpc.pb.h"

namespace squeezeserve::server {

class SqueezeserveService final : public ::squeezeserve::v1::Squeezeserve::CallbackService {
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

  grpc::ServerBidiReactor<::squeezeserve::v1::IngestContextRequest, ::squeezeserve::v1::IngestContextProgress>*
  IngestContext(grpc::CallbackServerContext* context) override;
  grpc::ServerWriteReactor<::squeezeserve::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const ::squeezeserve::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetContext(grpc::CallbackServerContext* context,
                                       const ::squeezeserve::v1::GetContextRequest* request,
                                       ::squeezeserve::v1::ContextInfo* response) override;
  grpc::ServerUnaryReactor* ListContexts(grpc::CallbackServerContext* context,
                                         const ::squeezeserve::v1::ListContextsRequest* request,
                                         ::squeezeserve::v1::ListContextsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteContext(grpc::CallbackServerContext* context,
                                          const ::squeezeserve::v1::DeleteContextRequest* request,
                                          ::squeezeserve::v1::DeleteContextResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const ::squeezeserve::v1::GetServerInfoRequest* request,
                                          ::squeezeserve::v1::ServerInfo* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const ::squeezeserve::v1::TokenizeRequest* request,
                                     ::squeezeserve::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const ::squeezeserve::v1::DetokenizeRequest* request,
                                       ::squeezeserve::v1::DetokenizeResponse* response) override;

  // For the OpenAI-compatible endpoints (server/openai_http.h), which share admission, auth,
  // scheduling and metrics with the RPCs.
  ServiceCore* core() { return &core_; }

 private:
  // Counts `status` under `method` and finishes the unary call with it.
  grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context, const char* method,
                                        const absl::Status& status);

  // Declared before core_ so that it is destroyed after core_'s workers have stopped using it.
  std::unique_ptr<Engine> engine_;
  ServiceCore core_;
};

}  // namespace squeezeserve::server
