#include "server/openai_http.h"

#include <httplib.h>

#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/http_generation.h"
#include "server/openai_protocol.h"
#include "server/prompt_text.h"
#include "server/request_id.h"
#include "server/validation.h"
#include "spdlog/spdlog.h"

namespace squeezeserve::server {
namespace {

using Json = nlohmann::ordered_json;

// ToEngineSampling names proto fields; an OpenAI client knows them by the API's names.
absl::Status RenameSamplingField(const absl::Status& status) {
  std::string message(status.message());
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"sampling.max_new_tokens", "max_tokens"},
                                 {"sampling.temperature", "temperature"},
                                 {"sampling.top_p", "top_p"},
                                 {"sampling.stop", "stop"}}) {
    if (message.rfind(from, 0) == 0) message = to + message.substr(from.size());
  }
  return absl::Status(status.code(), message);
}

struct Prepared {
  std::unique_ptr<Generation> generation;
};

absl::StatusOr<std::vector<int32_t>> PromptIds(const Engine& engine, const OpenAiRequest& request,
                                               const ServerLimits& limits, bool starts_sequence) {
  if (request.chat) return EncodeChat(engine, request.messages, request.tools, true, nullptr);
  if (request.prompt_is_ids) {
    absl::Status valid = ValidateTokenIds(request.prompt_ids, engine.model_info().vocab_size, "prompt");
    if (!valid.ok()) return valid;
    return request.prompt_ids;
  }
  if (static_cast<int64_t>(request.prompt_text.size()) > limits.max_query_tokens * 64) {
    return absl::InvalidArgumentError(absl::StrCat("prompt: ", request.prompt_text.size(),
                                                   " bytes, far more than max_query_tokens (", limits.max_query_tokens,
                                                   ") allows"));
  }
  return engine.Encode(request.prompt_text, /*add_bos=*/starts_sequence);
}

// The same checks and defaults as the Generate RPC (server/generate_reactor.cc), in OpenAI's names.
absl::StatusOr<std::unique_ptr<Generation>> PrepareGeneration(ServiceCore& core, const Principal& principal,
                                                              Engine& engine, const OpenAiRequest& request) {
  const ServerLimits& limits = core.config.limits;
  std::shared_ptr<const Context> context;
  AttentionOptions attention;
  attention.mode = AttentionMode::kDense;
  if (!request.context_id.empty()) {
    if (absl::Status id = ValidateContextId(request.context_id, "context_id"); !id.ok()) return id;
    absl::StatusOr<std::shared_ptr<const Context>> stored = core.store.Get(ContextKey{principal.tenant, request.context_id});
    if (!stored.ok()) return stored.status();
    context = *std::move(stored);
    absl::StatusOr<AttentionOptions> resolved = ResolveAttention(request.attention, context->summary(), core.defaults);
    if (!resolved.ok()) return resolved.status();
    attention = *resolved;
  }
  absl::StatusOr<SamplingOptions> sampling = ToEngineSampling(request.sampling, limits);
  if (!sampling.ok()) return RenameSamplingField(sampling.status());
  absl::StatusOr<std::vector<int32_t>> ids = PromptIds(engine, request, limits, context == nullptr);
  if (!ids.ok()) return ids.status();
  if (absl::Status length = ValidatePromptLength(static_cast<int64_t>(ids->size()), limits); !length.ok()) return length;
  return engine.StartGeneration(std::move(context), *std::move(ids), *sampling, attention);
}

std::string SseEvent(const Json& data) { return absl::StrCat("data: ", data.dump(-1, ' ', false, Json::error_handler_t::replace), "\n\n"); }

OpenAiUsage UsageOf(const GenerationStats& stats) {
  OpenAiUsage usage;
  usage.prompt_tokens = stats.prompt_tokens + stats.cached_tokens;
  usage.cached_tokens = stats.cached_tokens;
  usage.completion_tokens = stats.completion_tokens;
  return usage;
}

// The text of each generated token for logprobs, such that the pieces add up to the text: decoded
// after a few previous tokens (sentencepiece-style decoders drop the leading space of a lone token).
class TokenTexts {
 public:
  std::string Next(const Engine& engine, int32_t id) {
    ids_.push_back(id);
    const size_t from = ids_.size() > kWindow ? ids_.size() - kWindow : 0;
    const auto window = absl::MakeConstSpan(ids_).subspan(from);
    const std::string with = engine.DecodeTokens(window, true);
    const std::string without = engine.DecodeTokens(window.subspan(0, window.size() - 1), true);
    if (with.compare(0, without.size(), without) == 0) return with.substr(without.size());
    return engine.DecodeTokens(window.subspan(window.size() - 1), true);
  }

 private:
  static constexpr size_t kWindow = 6;
  std::vector<int32_t> ids_;
};

// The parts of a response that depend on the running generation.
struct Collected {
  std::string text;
  std::vector<OpenAiToken> tokens;
  FinishReason finish = FinishReason::kStop;
};

// One token step into `collected` (its text delta, and the token itself for logprobs).
void Collect(const Engine& engine, const OpenAiRequest& request, const TokenStep& step, TokenTexts& texts,
             Collected& collected) {
  collected.text += step.text_delta;
  if (step.token >= 0 && request.logprobs) collected.tokens.push_back({texts.Next(engine, step.token), step.logprob});
  if (step.finish != FinishReason::kNone) collected.finish = step.finish;
}

}  // namespace

OpenAiHttpServer::OpenAiHttpServer(ServiceCore* core, std::string served_model_name)
    : core_(core), served_model_name_(std::move(served_model_name)) {
  httplib::Server& routes = http_.routes();
  routes.Get("/v1/models", [this](const httplib::Request& q, httplib::Response& r) { Models(q, r); });
  routes.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& r) { Generate(q, r, false); });
  routes.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& r) { Generate(q, r, true); });
  routes.Post("/v1/tokenize", [this](const httplib::Request& q, httplib::Response& r) { Tokenize(q, r, false); });
  routes.Post("/v1/detokenize", [this](const httplib::Request& q, httplib::Response& r) { Tokenize(q, r, true); });
  routes.Get("/health", [this](const httplib::Request&, httplib::Response& r) {
    AnswerHealth(core_->CheckServing().ok(), r);
  });
}

OpenAiHttpServer::~OpenAiHttpServer() { Stop(); }

absl::StatusOr<std::string> OpenAiHttpServer::Start(const std::string& listen) {
  return http_.Start(listen, "--openai_listen", "openai");
}

void OpenAiHttpServer::Stop() { http_.Stop(); }

absl::StatusOr<OpenAiHttpServer::Admitted> OpenAiHttpServer::Admit(const httplib::Request& request, uint32_t scope,
                                                                    std::string_view what) const {
  absl::StatusOr<Principal> principal =
      core_->AdmitAuthorization(request.get_header_value("Authorization"), scope, what);
  if (!principal.ok()) return principal.status();
  return Admitted{*std::move(principal), core_->engine.load()};
}

std::string OpenAiHttpServer::ModelName(const Engine& engine) const {
  return served_model_name_.empty() ? engine.model_info().name : served_model_name_;
}

void OpenAiHttpServer::Fail(httplib::Response& response, const char* method, const absl::Status& status) {
  core_->counter.Count(method, ToGrpcCode(status.code()));
  const OpenAiError error = ToOpenAiError(status);
  response.status = error.http_status;
  if (status.code() == absl::StatusCode::kResourceExhausted) {
    // HTTP's standard header (whole seconds), and the same hint as gRPC's pushback in milliseconds.
    response.set_header("Retry-After", "1");
    response.set_header("retry-after-ms", std::to_string(kRetryPushbackMs));
  }
  response.set_content(error.body.dump(), "application/json");
}

void OpenAiHttpServer::Models(const httplib::Request& request, httplib::Response& response) {
  absl::StatusOr<Admitted> admitted = Admit(request, /*scope=*/0, "OpenAI.Models");
  if (!admitted.ok()) return Fail(response, "OpenAI.Models", admitted.status());
  Engine& engine = *admitted->engine;
  core_->counter.Count("OpenAI.Models", grpc::StatusCode::OK);
  response.set_content(ModelsResponse(ModelName(engine), std::time(nullptr),
                                      engine.model_info().max_position_embeddings)
                           .dump(),
                       "application/json");
}

void OpenAiHttpServer::Tokenize(const httplib::Request& request, httplib::Response& response, bool detokenize) {
  const char* method = detokenize ? "OpenAI.Detokenize" : "OpenAI.Tokenize";
  absl::StatusOr<Admitted> admitted = Admit(request, /*scope=*/0, method);
  if (!admitted.ok()) return Fail(response, method, admitted.status());
  Engine& engine = *admitted->engine;
  const Json body = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    return Fail(response, method, absl::InvalidArgumentError("body: must be a JSON object"));
  }
  Json out;
  absl::Status status;
  try {
    if (detokenize) {
      pb::DetokenizeRequest rpc;
      for (const Json& id : body.value("tokens", Json::array())) rpc.add_ids(id.get<int32_t>());
      rpc.set_skip_special_tokens(body.value("skip_special_tokens", false));
      pb::DetokenizeResponse result;
      status = server::Detokenize(engine, rpc, &result);
      out = {{"prompt", result.text()}};
    } else {
      pb::TokenizeRequest rpc;
      if (body.contains("messages")) {
        for (const Json& m : body["messages"]) {
          pb::ChatMessage* message = rpc.mutable_messages()->add_messages();
          message->set_role(m.value("role", ""));
          message->set_content(m.value("content", ""));
        }
        rpc.mutable_messages()->set_no_generation_prompt(!body.value("add_generation_prompt", true));
      } else {
        rpc.set_text(body.value("prompt", ""));
        rpc.set_add_special_tokens(body.value("add_special_tokens", true));
      }
      pb::TokenizeResponse result;
      status = server::Tokenize(engine, rpc, &result);
      out = {{"count", result.ids_size()},
             {"max_model_len", engine.model_info().max_position_embeddings},
             {"tokens", Json(std::vector<int32_t>(result.ids().begin(), result.ids().end()))}};
      if (rpc.has_messages()) out["prompt"] = result.prompt();
    }
  } catch (const nlohmann::json::exception& e) {
    status = absl::InvalidArgumentError(absl::StrCat("body: ", e.what()));
  }
  if (!status.ok()) return Fail(response, method, status);
  core_->counter.Count(method, grpc::StatusCode::OK);
  response.set_content(out.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
}

void OpenAiHttpServer::Generate(const httplib::Request& http_request, httplib::Response& response, bool chat) {
  const char* method = chat ? "OpenAI.ChatCompletions" : "OpenAI.Completions";
  absl::StatusOr<Admitted> admitted = Admit(http_request, kScopeGenerate, method);
  if (!admitted.ok()) return Fail(response, method, admitted.status());
  Engine& engine = *admitted->engine;
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(http_request.body, chat);
  if (!parsed.ok()) return Fail(response, method, parsed.status());
  auto request = std::make_shared<OpenAiRequest>(*std::move(parsed));
  const std::string model = ModelName(engine);
  if (!request->model.empty() && request->model != model) {
    return Fail(response, method,
                absl::NotFoundError(absl::StrCat("model: '", request->model, "' does not exist; this server serves '",
                                                 model, "'")));
  }
  absl::StatusOr<std::unique_ptr<Generation>> generation = PrepareGeneration(*core_, admitted->principal, engine, *request);
  if (!generation.ok()) return Fail(response, method, generation.status());
  absl::StatusOr<std::shared_ptr<HttpGeneration>> running =
      HttpGeneration::Start(*std::move(generation), *core_->scheduler, &core_->metrics);
  if (!running.ok()) return Fail(response, method, running.status());

  const std::string id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", NewRequestId());
  const int64_t created = std::time(nullptr);
  std::shared_ptr<HttpGeneration> sink = *std::move(running);
  const Engine* model_engine = &engine;
  ServiceCore* core = core_;

  if (!request->stream) {
    Collected collected;
    TokenTexts texts;
    while (true) {
      HttpGeneration::Event event = sink->Next();
      if (!event.finished.has_value()) {
        Collect(*model_engine, *request, event.step, texts, collected);
        continue;
      }
      if (!event.finished->ok()) return Fail(response, method, *event.finished);
      core_->counter.Count(method, grpc::StatusCode::OK);
      response.set_content(CompletionResponse(*request, id, created, model, collected.text, collected.tokens,
                                              collected.finish, UsageOf(event.stats))
                               .dump(-1, ' ', false, Json::error_handler_t::replace),
                           "application/json");
      return;
    }
  }

  response.set_header("Cache-Control", "no-cache");
  response.set_chunked_content_provider(
      "text/event-stream",
      [sink, request, id, created, model, model_engine, core, method, first = true,
       texts = std::make_shared<TokenTexts>()](size_t, httplib::DataSink& out) mutable {
        HttpGeneration::Event event = sink->Next();
        auto write = [&](const std::string& data) {
          if (out.write(data.data(), data.size())) return true;
          sink->Cancel();  // the client went away: stop within a step; the sink frees itself
          core->counter.Count(method, grpc::StatusCode::CANCELLED);
          return false;
        };
        if (!event.finished.has_value()) {
          Collected delta;
          Collect(*model_engine, *request, event.step, *texts, delta);
          if (delta.text.empty() && delta.tokens.empty() && !first) return true;  // nothing to show yet
          const bool ok = write(SseEvent(StreamChunk(*request, id, created, model, delta.text, delta.tokens,
                                                     std::nullopt, first)));
          first = false;
          return ok;
        }
        const absl::Status& status = *event.finished;
        core->counter.Count(method, ToGrpcCode(status.code()));
        if (!status.ok()) {
          if (!write(SseEvent(ToOpenAiError(status).body))) return false;
        } else {
          const FinishReason finish = event.finish == FinishReason::kNone ? FinishReason::kStop : event.finish;
          if (!write(SseEvent(StreamChunk(*request, id, created, model, "", {}, finish, first)))) return false;
          if (request->include_usage && !write(SseEvent(UsageChunk(*request, id, created, model, UsageOf(event.stats))))) {
            return false;
          }
        }
        if (!write("data: [DONE]\n\n")) return false;
        out.done();
        return true;
      });
}

}  // namespace squeezeserve::server
