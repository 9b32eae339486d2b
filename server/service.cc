#include "server/service.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/generate_reactor.h"
#include "server/ingest_reactor.h"
#include "server/prompt_text.h"
#include "server/proto_convert.h"
#include "server/request_id.h"
#include "server/status_map.h"
#include "server/validation.h"
#include "spdlog/spdlog.h"

namespace squeezeserve::server {

namespace pb = ::squeezeserve::v1;

SqueezeserveService::SqueezeserveService(ServerConfig config) : core_(std::move(config)) {
  MetricSources sources;
  sources.model = core_.config.model_name;
  sources.status_counter = &core_.counter;
  sources.running = [this] { return core_.pool->busy(); };
  sources.queued = [this] { return core_.pool->queued(); };
  sources.contexts = [this] {
    std::vector<ContextUsage> contexts;
    for (const ContextSummary& summary : core_.store.List()) {
      contexts.push_back({summary.tier, summary.kv_bytes, summary.index_bytes});
    }
    return contexts;
  };
  sources.state = [this] { return std::string(core_.state()); };
  core_.metrics.AddSources(std::move(sources));
}

SqueezeserveService::~SqueezeserveService() = default;

void SqueezeserveService::SetEngine(std::unique_ptr<Engine> engine) {
  engine_ = std::move(engine);
  ServerDefaults& defaults = core_.defaults;
  defaults.squeezed_min_context_tokens = engine_->model_info().squeezed_min_context_tokens;
  if (defaults.mode_auto) {
    if (defaults.squeezed_min_context_tokens < 0) {
      spdlog::info("attention mode by default: dense (the Squeezed index does not pay for itself on this engine)");
    } else {
      spdlog::info("attention mode by default: squeezed from {} context tokens, dense below",
                   defaults.squeezed_min_context_tokens);
    }
  }
  if (defaults.estimate_pruned_auto) {
    defaults.estimate_pruned = !engine_->model_info().squeezed_attention_on_kernels;
    spdlog::info("pruned clusters by default: {}",
                 defaults.estimate_pruned ? "estimated" : "dropped (the estimate is not in the CUDA kernels yet)");
  }
  if (defaults.read_ahead_auto) {
    defaults.read_ahead = !engine_->model_info().squeezed_attention_on_kernels;
    spdlog::info("read-ahead by default: {}", defaults.read_ahead ? "on" : "off (the CUDA kernels have none yet)");
  }
  core_.store.AttachDirectory(engine_.get(), core_.config.store_dir);
  core_.store.SetResidentLimit(core_.config.max_resident_context_bytes);
  core_.store.SetHostLimit(core_.config.max_host_context_bytes);
  core_.engine.store(engine_.get());
}

grpc::ServerUnaryReactor* SqueezeserveService::FinishUnary(grpc::CallbackServerContext* context, const char* method,
                                                           const absl::Status& status) {
  grpc::Status grpc_status = ToGrpcStatus(status);
  core_.counter.Count(method, grpc_status.error_code());
  const std::string request_id = AssignRequestId(context);
  if (!status.ok()) {
    spdlog::debug("request {}: {} -> {}: {}", request_id, method, GrpcCodeName(grpc_status.error_code()),
                 grpc_status.error_message());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc_status);
  return reactor;
}

grpc::ServerBidiReactor<pb::IngestContextRequest, pb::IngestContextProgress>* SqueezeserveService::IngestContext(
    grpc::CallbackServerContext* context) {
  return NewIngestReactor(&core_, context);
}

grpc::ServerWriteReactor<pb::GenerateResponse>* SqueezeserveService::Generate(grpc::CallbackServerContext* context,
                                                                             const pb::GenerateRequest* request) {
  return NewGenerateReactor(&core_, context, request);
}

namespace {

// The stored context named by `id`, or INVALID_ARGUMENT / NOT_FOUND.
absl::StatusOr<std::shared_ptr<const Context>> FindContext(const ContextStore& store, const std::string& id) {
  if (absl::Status valid = ValidateContextId(id, "context_id"); !valid.ok()) return valid;
  return store.Get(id);
}

}  // namespace

grpc::ServerUnaryReactor* SqueezeserveService::GetContext(grpc::CallbackServerContext* context,
                                                          const pb::GetContextRequest* request,
                                                          pb::ContextInfo* response) {
  absl::Status status = core_.Admit(*context);
  if (status.ok()) {
    absl::StatusOr<std::shared_ptr<const Context>> found = FindContext(core_.store, request->context_id());
    if (found.ok()) {
      *response = ToProto((*found)->summary(), engine_->model_info().fingerprint);
    } else {
      status = found.status();
    }
  }
  return FinishUnary(context, "GetContext", status);
}

grpc::ServerUnaryReactor* SqueezeserveService::ListContexts(grpc::CallbackServerContext* context,
                                                            const pb::ListContextsRequest* /*request*/,
                                                            pb::ListContextsResponse* response) {
  absl::Status status = core_.Admit(*context);
  if (status.ok()) {
    for (const ContextSummary& summary : core_.store.List()) {
      *response->add_contexts() = ToProto(summary, engine_->model_info().fingerprint);
    }
  }
  return FinishUnary(context, "ListContexts", status);
}

grpc::ServerUnaryReactor* SqueezeserveService::DeleteContext(grpc::CallbackServerContext* context,
                                                             const pb::DeleteContextRequest* request,
                                                             pb::DeleteContextResponse* response) {
  absl::Status status = core_.Admit(*context);
  if (status.ok()) status = ValidateContextId(request->context_id(), "context_id");
  if (status.ok()) {
    // Running generations hold their own reference and finish normally.
    status = core_.store.Delete(request->context_id());
    response->set_deleted(status.ok());
  }
  return FinishUnary(context, "DeleteContext", status);
}

grpc::ServerUnaryReactor* SqueezeserveService::GetServerInfo(grpc::CallbackServerContext* context,
                                                             const pb::GetServerInfoRequest* /*request*/,
                                                             pb::ServerInfo* response) {
  absl::Status status = core_.Admit(*context);
  if (status.ok()) *response = BuildServerInfo(engine_->model_info(), core_.config);
  return FinishUnary(context, "GetServerInfo", status);
}

grpc::ServerUnaryReactor* SqueezeserveService::Tokenize(grpc::CallbackServerContext* context,
                                                        const pb::TokenizeRequest* request,
                                                        pb::TokenizeResponse* response) {
  absl::Status status = core_.Admit(*context);
  if (status.ok()) status = server::Tokenize(*engine_, *request, response);
  return FinishUnary(context, "Tokenize", status);
}

grpc::ServerUnaryReactor* SqueezeserveService::Detokenize(grpc::CallbackServerContext* context,
                                                          const pb::DetokenizeRequest* request,
                                                          pb::DetokenizeResponse* response) {
  absl::Status status = core_.Admit(*context);
  if (status.ok()) status = server::Detokenize(*engine_, *request, response);
  return FinishUnary(context, "Detokenize", status);
}

}  // namespace squeezeserve::server
