#include "client/squeezeload/openai_client.h"

#include <httplib.h>

#include <chrono>

#include <grpcpp/support/status.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace squeezeload {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Failures are reported in gRPC terms, like the RPC path's (errors_by_code).
int GrpcCodeOfHttp(int status) {
  switch (status) {
    case 400: return int(grpc::StatusCode::INVALID_ARGUMENT);
    case 401: return int(grpc::StatusCode::UNAUTHENTICATED);
    case 403: return int(grpc::StatusCode::PERMISSION_DENIED);
    case 404: return int(grpc::StatusCode::NOT_FOUND);
    case 429: return int(grpc::StatusCode::RESOURCE_EXHAUSTED);
    case 503: return int(grpc::StatusCode::UNAVAILABLE);
    case 504: return int(grpc::StatusCode::DEADLINE_EXCEEDED);
    default: return int(grpc::StatusCode::INTERNAL);
  }
}

httplib::Client MakeClient(const OpenAiEndpoint& endpoint, absl::Duration timeout) {
  httplib::Client client(endpoint.base_url);
  const auto seconds = static_cast<time_t>(absl::ToInt64Seconds(timeout));
  client.set_connection_timeout(10, 0);
  client.set_read_timeout(seconds, 0);
  client.set_write_timeout(seconds, 0);
  if (!endpoint.api_key.empty()) client.set_bearer_token_auth(endpoint.api_key);
  return client;
}

}  // namespace

RequestRecord RunOpenAiCompletion(const OpenAiEndpoint& endpoint, const std::string& prompt,
                                  const std::string& context_id, const RequestSpec& spec, absl::Duration timeout) {
  json body = {{"model", endpoint.model},
               {"prompt", prompt},
               {"max_tokens", spec.output_tokens},
               {"ignore_eos", true},  // output lengths follow the workload (vLLM and squeezeserve honour it)
               {"temperature", 0},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (!context_id.empty()) {
    body["context_id"] = context_id;
    body["attention"] = {{"mode", spec.dense ? "dense" : "squeezed"}};
    if (!spec.dense && spec.sparsity > 0) body["attention"]["sparsity"] = spec.sparsity;
  }
  RequestRecord record;
  record.dense = spec.dense || context_id.empty();
  httplib::Client client = MakeClient(endpoint, timeout);

  std::string buffer, error_body;
  bool got_first = false, done = false;
  int chunks = 0;
  const Clock::time_point sent = Clock::now();
  Clock::time_point last_chunk = sent;
  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/completions";
  request.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
  request.body = body.dump();
  int http_status = 0;
  request.response_handler = [&](const httplib::Response& response) {
    http_status = response.status;
    return true;
  };
  request.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
    if (http_status != 200) {
      error_body.append(data, length);
      return true;
    }
    buffer.append(data, length);
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      const json chunk = json::parse(payload, nullptr, /*allow_exceptions=*/false);
      if (chunk.is_discarded()) continue;
      if (chunk.contains("error")) {
        error_body = payload;
        continue;
      }
      if (chunk.contains("usage") && chunk["usage"].is_object()) {
        record.input_tokens = chunk["usage"].value("prompt_tokens", 0);
        record.output_tokens = chunk["usage"].value("completion_tokens", 0);
      }
      if (!chunk.contains("choices") || chunk["choices"].empty()) continue;
      const json& choice = chunk["choices"][0];
      if (!choice.contains("text") || !choice["text"].is_string() || choice["text"].get<std::string>().empty()) continue;
      const Clock::time_point now = Clock::now();
      ++chunks;
      if (!got_first) {
        record.ttft_ms = MsBetween(sent, now);
        got_first = true;
      } else {
        record.itl_ms.push_back(MsBetween(last_chunk, now));
      }
      last_chunk = now;
    }
    return true;
  };
  httplib::Response response;
  httplib::Error error = httplib::Error::Success;
  const bool sent_ok = client.send(request, response, error);
  record.e2el_ms = MsBetween(sent, last_chunk);
  if (record.output_tokens == 0) record.output_tokens = chunks;  // a server without usage in the stream
  if (!sent_ok) {
    record.status_code = int(grpc::StatusCode::UNAVAILABLE);
    record.error = absl::StrCat("HTTP request failed: ", httplib::to_string(error));
  } else if (http_status != 200) {
    record.status_code = GrpcCodeOfHttp(http_status);
    record.error = absl::StrCat("HTTP ", http_status, ": ", error_body);
  } else if (!error_body.empty()) {
    record.status_code = int(grpc::StatusCode::INTERNAL);
    record.error = error_body;
  } else if (!got_first || !done) {
    record.status_code = int(grpc::StatusCode::INTERNAL);
    record.error = got_first ? "stream ended without [DONE]" : "stream ended without text";
  } else {
    record.ok = true;
  }
  return record;
}

std::string FirstOpenAiModel(const OpenAiEndpoint& endpoint, absl::Duration timeout) {
  httplib::Client client = MakeClient(endpoint, timeout);
  for (int attempt = 0; attempt < 600; ++attempt) {  // a server may still be loading its model
    auto response = client.Get("/v1/models");
    if (response && response->status == 200) {
      const json models = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
      if (models.is_object() && models.contains("data") && !models["data"].empty()) {
        return models["data"][0].value("id", "");
      }
      return "";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return "";
}

}  // namespace squeezeload
