// OpenAI-compatible HTTP endpoints beside the gRPC service, in the same process and on the same
// engine, admission (max_concurrent_streams / queue), bearer tokens and metrics:
//   GET  /v1/models
//   POST /v1/completions         prompt (text or token ids) -> text; "stream": true for SSE
//   POST /v1/chat/completions    messages, rendered with the model's chat template
//   POST /v1/tokenize, /v1/detokenize   (vLLM's shapes) the Tokenize / Detokenize RPCs over HTTP
//   GET  /health
// Extensions: "context_id" continues a stored context (ingested over gRPC) with Squeezed Attention,
// "attention": {"mode", "sparsity", "hierarchical"} as AttentionOptions, "ignore_eos", "top_k".
// Errors have OpenAI's shape ({"error": {"message", "type", "param", "code"}}) and HTTP status
// (server/openai_protocol.h). docs/openai.md has the details.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/http_listener.h"
#include "server/service_core.h"

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace squeezeserve::server {

class OpenAiHttpServer {
 public:
  // `served_model_name`: the "model" requests must name (empty: the checkpoint directory's name).
  OpenAiHttpServer(ServiceCore* core, std::string served_model_name);
  ~OpenAiHttpServer();  // stops and joins

  // Binds HOST:PORT (port 0 = any free port), serves on a thread; returns the bound "HOST:PORT".
  absl::StatusOr<std::string> Start(const std::string& listen);
  void Stop();

 private:
  void Models(const httplib::Request& request, httplib::Response& response);
  void Generate(const httplib::Request& request, httplib::Response& response, bool chat);
  void Tokenize(const httplib::Request& request, httplib::Response& response, bool detokenize);
  // Auth (with `scope`), then serving state (ServiceCore::AdmitAuthorization); the caller and the
  // engine when both pass.
  struct Admitted {
    Principal principal;
    Engine* engine;
  };
  absl::StatusOr<Admitted> Admit(const httplib::Request& request, uint32_t scope, std::string_view what) const;
  std::string ModelName(const Engine& engine) const;
  void Fail(httplib::Response& response, const char* method, const absl::Status& status);

  ServiceCore* core_;
  std::string served_model_name_;
  HttpListener http_;  // last: stopped before the members its handlers use go
};

}  // namespace squeezeserve::server
