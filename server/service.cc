#include "server/service.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/generate_reactor.h"
#include "server/ingest_reactor.h"
#include "server/prompt_text.h"
#include "server/proto_convert.h"
#include "server/request_codec.h"
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
    for (const ContextSummary& summary : core_.store.ListAll()) {
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
  core_.store.AttachDirectory(engine_.get(), core_.config.store_dir);
  core_.store.SetResidentLimit(core_.config.max_resident_context_bytes);
  core_.store.SetHostLimit(core_.config.max_host_context_bytes);
  core_.store.SetRevalidateInterval(absl::Milliseconds(core_.config.store_revalidate_ms));
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

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* SqueezeserveService::IngestContext(
    grpc::CallbackServerContext* context) {
  return NewIngestReactor(&core_, context);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* SqueezeserveService::Generate(grpc::CallbackServerContext* context,
                                                                         const grpc::ByteBuffer* request) {
  return NewGenerateReactor(&core_, context, request);
}

template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* SqueezeserveService::Unary(grpc::CallbackServerContext* context, const char* method,
                                                     uint32_t scope, const grpc::ByteBuffer* raw_request,
                                                     grpc::ByteBuffer* raw_response, Handler handler) {
  absl::StatusOr<Principal> principal = core_.Admit(*context, scope, method);
  absl::Status status = principal.status();
  Request request;
  Response response;
  if (status.ok()) status = ParseMessage(*raw_request, &request);
  if (status.ok()) status = handler(*principal, request, &response);
  if (status.ok()) *raw_response = SerializeMessage(response);
  return FinishUnary(context, method, status);
}

namespace {

// The caller's stored context named by `id`, or INVALID_ARGUMENT / NOT_FOUND. Another tenant's
// context of the same id is simply not there.
absl::StatusOr<std::shared_ptr<const Context>> FindContext(const ContextStore& store, const Principal& principal,
                                                          const std::string& id) {
  if (absl::Status valid = ValidateContextId(id, "context_id"); !valid.ok()) return valid;
  return store.Get(ContextKey{principal.tenant, id});
}

}  // namespace

grpc::ServerUnaryReactor* SqueezeserveService::GetContext(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return Unary<pb::GetContextRequest, pb::ContextInfo>(
      context, "GetContext", kScopeRead, request, response,
      [this](const Principal& principal, const pb::GetContextRequest& request, pb::ContextInfo* info) {
        absl::StatusOr<std::shared_ptr<const Context>> found = FindContext(core_.store, principal, request.context_id());
        if (!found.ok()) return found.status();
        *info = ToProto((*found)->summary(), engine_->model_info().fingerprint);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SqueezeserveService::ListContexts(grpc::CallbackServerContext* context,
                                                            const grpc::ByteBuffer* request,
                                                            grpc::ByteBuffer* response) {
  return Unary<pb::ListContextsRequest, pb::ListContextsResponse>(
      context, "ListContexts", kScopeRead, request, response,
      [this](const Principal& principal, const pb::ListContextsRequest&, pb::ListContextsResponse* list) {
        for (const ContextSummary& summary : core_.store.List(principal.tenant)) {
          *list->add_contexts() = ToProto(summary, engine_->model_info().fingerprint);
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SqueezeserveService::DeleteContext(grpc::CallbackServerContext* context,
                                                             const grpc::ByteBuffer* request,
                                                             grpc::ByteBuffer* response) {
  return Unary<pb::DeleteContextRequest, pb::DeleteContextResponse>(
      context, "DeleteContext", kScopeAdmin, request, response,
      [this](const Principal& principal, const pb::DeleteContextRequest& request, pb::DeleteContextResponse* deleted) {
        if (absl::Status valid = ValidateContextId(request.context_id(), "context_id"); !valid.ok()) return valid;
        // Running generations hold their own reference and finish normally; once this returns, no
        // new one can find the context (ContextStore: linearizable per context).
        absl::Status status = core_.store.Delete(ContextKey{principal.tenant, request.context_id()});
        deleted->set_deleted(status.ok());
        return status;
      });
}

grpc::ServerUnaryReactor* SqueezeserveService::GetServerInfo(grpc::CallbackServerContext* context,
                                                             const grpc::ByteBuffer* request,
                                                             grpc::ByteBuffer* response) {
  return Unary<pb::GetServerInfoRequest, pb::ServerInfo>(
      context, "GetServerInfo", /*scope=*/0, request, response,
      [this](const Principal&, const pb::GetServerInfoRequest&, pb::ServerInfo* info) {
        *info = BuildServerInfo(engine_->model_info(), core_.config);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* SqueezeserveService::Tokenize(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return Unary<pb::TokenizeRequest, pb::TokenizeResponse>(
      context, "Tokenize", /*scope=*/0, request, response,
      [this](const Principal&, const pb::TokenizeRequest& request, pb::TokenizeResponse* tokens) {
        return server::Tokenize(*engine_, request, tokens);
      });
}

grpc::ServerUnaryReactor* SqueezeserveService::Detokenize(grpc::CallbackServerContext* context,
                                                          const grpc::ByteBuffer* request, grpc::ByteBuffer* response) {
  return Unary<pb::DetokenizeRequest, pb::DetokenizeResponse>(
      context, "Detokenize", /*scope=*/0, request, response,
      [this](const Principal&, const pb::DetokenizeRequest& request, pb::DetokenizeResponse* text) {
        return server::Detokenize(*engine_, request, text);
      });
}

}  // namespace squeezeserve::server
