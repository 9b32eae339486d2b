#include "server/access_log.h"

#include <chrono>
#include <string_view>
#include "absl/strings/string_view.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpc_code_name.h"
#include "nlohmann/json.hpp"
#include "server/logging.h"
#include "server/request_codec.h"
#include "server/request_id.h"
#include "server/status_map.h"
#include "spdlog/spdlog.h"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezeserve::server {
namespace {

namespace pb = ::squeezeserve::v1;
using grpc::experimental::InterceptionHookPoints;

constexpr absl::string_view kApiPrefix = "/squeezeserve.v1.Squeezeserve/";

std::string Find(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata, const char* key) {
  auto it = metadata.find(key);
  return it == metadata.end() ? "" : SanitizeRequestId(std::string_view(it->second.data(), it->second.size()));
}

class AccessLogInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit AccessLogInterceptor(grpc::experimental::ServerRpcInfo* info)
      : info_(info), started_(std::chrono::steady_clock::now()) {
    record_.method = info->method();
    api_ = absl::StartsWith(record_.method, kApiPrefix);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      OnRequest(methods->GetRecvMessage());
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      const auto* metadata = methods->GetSendInitialMetadata();
      if (auto it = metadata->find(kRequestIdHeader); it != metadata->end()) record_.request_id = it->second;
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      OnResponse(methods->GetSendMessage());
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      AddRetryHint(status, methods->GetSendTrailingMetadata());
      Log(status);
    }
    methods->Proceed();
  }

 private:
  // The API's messages, by method. Every Squeezeserve method is registered raw (server/service.h), so
  // the interceptor sees the wire bytes (a grpc::ByteBuffer) and parses what it logs; a message that
  // does not parse is the handler's INVALID_ARGUMENT and logs nothing here.
  template <typename Message>
  static bool Parse(const void* raw, Message* message) {
    return ParseMessage(*static_cast<const grpc::ByteBuffer*>(raw), message).ok();
  }

  void OnRequest(const void* message) {
    if (message == nullptr || !api_) return;
    const absl::string_view name = absl::string_view(record_.method).substr(kApiPrefix.size());
    if (name == "Generate") {
      if (pb::GenerateRequest request; Parse(message, &request)) record_.context_id = request.context_id();
    } else if (name == "GetContext") {
      if (pb::GetContextRequest request; Parse(message, &request)) record_.context_id = request.context_id();
    } else if (name == "DeleteContext") {
      if (pb::DeleteContextRequest request; Parse(message, &request)) record_.context_id = request.context_id();
    } else if (name == "IngestContext" && !ingest_request_seen_) {
      // Only the first message names the context; the rest are the document's chunks.
      ingest_request_seen_ = true;
      if (pb::IngestContextRequest request; Parse(message, &request)) record_.context_id = request.context_id();
    }
  }

  void OnResponse(const void* message) {
    if (message == nullptr || !api_) return;
    const absl::string_view name = absl::string_view(record_.method).substr(kApiPrefix.size());
    if (name == "Generate") {
      // Usage rides on the last message: keep a reference to it (a slice ref, not a copy of the
      // bytes) and parse only that one, when the status is sent — not one parse per token.
      last_generate_response_ = *static_cast<const grpc::ByteBuffer*>(message);
    } else if (name == "IngestContext") {
      pb::IngestContextProgress progress;
      if (Parse(message, &progress) && progress.has_context()) {
        record_.context_id = progress.context().context_id();  // the content address when none was given
        record_.context_tokens = static_cast<int64_t>(progress.context().num_tokens());
      }
    }
  }

  void Log(const grpc::Status& status) {
    if (last_generate_response_.Valid()) {
      pb::GenerateResponse response;
      if (Parse(&last_generate_response_, &response) && response.has_usage()) {
        record_.prompt_tokens = response.usage().prompt_tokens();
        record_.completion_tokens = response.usage().completion_tokens();
      }
    }
    record_.code = GrpcCodeName(status.error_code());
    if (!status.ok()) record_.error = status.error_message();
    record_.duration_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count();
    if (grpc::ServerContextBase* context = info_->server_context()) {
      record_.peer = context->peer();
      if (record_.context_id.empty()) record_.context_id = Find(context->client_metadata(), "x-context-id");
    }
    auto logger = spdlog::get(kAccessLogger);
    if (logger == nullptr) return;
    const spdlog::level::level_enum level = api_ ? spdlog::level::info : spdlog::level::debug;
    if (!logger->should_log(level)) return;
    logger->log(level, "{}", CurrentLogFormat() == LogFormat::kJson ? record_.ToJson() : record_.ToText());
  }

  grpc::experimental::ServerRpcInfo* const info_;
  const std::chrono::steady_clock::time_point started_;
  bool api_ = false;
  bool ingest_request_seen_ = false;
  grpc::ByteBuffer last_generate_response_;  // the latest Generate message sent (its usage, at the end)
  AccessRecord record_;
};

class AccessLogFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new AccessLogInterceptor(info);
  }
};

}  // namespace

std::string AccessRecord::ToText() const {
  std::string short_method = method;
  if (const size_t slash = method.rfind('/'); slash != std::string::npos) short_method = method.substr(slash + 1);
  std::string text = absl::StrFormat("%s %s %.1f ms peer=%s", short_method, code, duration_ms, peer);
  if (!request_id.empty()) absl::StrAppend(&text, " request_id=", request_id);
  if (!context_id.empty()) absl::StrAppend(&text, " context=", context_id);
  if (prompt_tokens >= 0) absl::StrAppend(&text, " prompt_tokens=", prompt_tokens);
  if (completion_tokens >= 0) absl::StrAppend(&text, " completion_tokens=", completion_tokens);
  if (context_tokens >= 0) absl::StrAppend(&text, " context_tokens=", context_tokens);
  if (!error.empty()) absl::StrAppend(&text, " error=\"", error, "\"");
  return text;
}

std::string AccessRecord::ToJson() const {
  nlohmann::ordered_json fields;
  fields["method"] = method;
  fields["code"] = code;
  fields["duration_ms"] = static_cast<double>(static_cast<int64_t>(duration_ms * 1000)) / 1000;
  fields["peer"] = peer;
  if (!request_id.empty()) fields["request_id"] = request_id;
  if (!context_id.empty()) fields["context_id"] = context_id;
  if (prompt_tokens >= 0) fields["prompt_tokens"] = prompt_tokens;
  if (completion_tokens >= 0) fields["completion_tokens"] = completion_tokens;
  if (context_tokens >= 0) fields["context_tokens"] = context_tokens;
  if (!error.empty()) fields["error"] = error;
  return fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> AccessLogInterceptors() {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<AccessLogFactory>());
  return factories;
}

}  // namespace squeezeserve::server
