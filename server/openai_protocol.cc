#include "server/openai_protocol.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/status_map.h"

namespace squeezeserve::server {
namespace {

using Json = nlohmann::ordered_json;

absl::Status Invalid(const std::string& param, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(param, ": ", why));
}

bool Present(const Json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

// A number field in [low, high] (or absent).
absl::StatusOr<std::optional<double>> Number(const Json& body, const char* key, double low, double high) {
  if (!Present(body, key)) return std::optional<double>();
  const Json& v = body[key];
  if (!v.is_number()) return Invalid(key, "must be a number");
  const double d = v.get<double>();
  if (!(d >= low && d <= high)) return Invalid(key, absl::StrCat("must be in [", low, ", ", high, "], got ", d));
  return std::optional<double>(d);
}

// Message content: a string, or a list of {"type": "text", "text": ...} parts (joined).
absl::StatusOr<std::string> ContentText(const Json& content, size_t index) {
  const std::string param = absl::StrCat("messages[", index, "].content");
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return Invalid(param, "must be a string or a list of text parts");
  std::string text;
  for (const Json& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
      return Invalid(param, "only text parts ({\"type\": \"text\", \"text\": ...}) are supported");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

absl::Status ParseMessages(const Json& body, OpenAiRequest& out) {
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty()) {
    return Invalid("messages", "must be a non-empty list");
  }
  out.messages = Json::array();
  const Json& messages = body["messages"];
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Invalid(absl::StrCat("messages[", i, "].role"), "must be a string");
    }
    Json message = m;  // tool_calls, name, tool_call_id reach the template as they are
    absl::StatusOr<std::string> text = ContentText(m.value("content", Json()), i);
    if (!text.ok()) return text.status();
    message["content"] = *text;
    out.messages.push_back(std::move(message));
  }
  if (Present(body, "tools")) {
    if (!body["tools"].is_array()) return Invalid("tools", "must be a list");
    out.tools = body["tools"];
  }
  return absl::OkStatus();
}

absl::Status ParsePrompt(const Json& body, OpenAiRequest& out) {
  if (!Present(body, "prompt")) return Invalid("prompt", "is required");
  Json prompt = body["prompt"];
  // A list of one prompt is the same as that prompt; batches of prompts are not supported.
  if (prompt.is_array() && prompt.size() == 1 && (prompt[0].is_string() || prompt[0].is_array())) prompt = prompt[0];
  if (prompt.is_string()) {
    out.prompt_text = prompt.get<std::string>();
    if (out.prompt_text.empty()) return Invalid("prompt", "must not be empty");
    return absl::OkStatus();
  }
  if (prompt.is_array() && !prompt.empty()) {
    for (const Json& id : prompt) {
      if (!id.is_number_integer()) return Invalid("prompt", "must be a string, or a list of token ids (one prompt per request)");
      out.prompt_ids.push_back(id.get<int32_t>());
    }
    out.prompt_is_ids = true;
    return absl::OkStatus();
  }
  return Invalid("prompt", "must be a non-empty string or list of token ids");
}

absl::Status ParseSampling(const Json& body, OpenAiRequest& out) {
  pb::SamplingParams& s = out.sampling;
  const char* max_key = out.chat && Present(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (Present(body, max_key)) {
    if (!body[max_key].is_number_integer() || body[max_key].get<int64_t>() < 1) {
      return Invalid(max_key, "must be an integer >= 1");
    }
    s.set_max_new_tokens(static_cast<uint32_t>(std::min<int64_t>(body[max_key].get<int64_t>(), 1 << 30)));
  } else if (!out.chat) {
    s.set_max_new_tokens(16);  // the API's default for completions
  }
  auto temperature = Number(body, "temperature", 0, 2);
  if (!temperature.ok()) return temperature.status();
  s.set_temperature(static_cast<float>(temperature->value_or(1.0)));  // the API's default: 1 (sampling)
  auto top_p = Number(body, "top_p", 0, 1);
  if (!top_p.ok()) return top_p.status();
  if (top_p->has_value()) {
    if (**top_p <= 0) return Invalid("top_p", "must be in (0, 1]");
    s.set_top_p(static_cast<float>(**top_p));
  }
  if (Present(body, "top_k")) {  // an extension, as in vLLM
    if (!body["top_k"].is_number_integer()) return Invalid("top_k", "must be an integer");
    s.set_top_k(static_cast<uint32_t>(std::max<int64_t>(0, body["top_k"].get<int64_t>())));
  }
  if (Present(body, "seed")) {
    if (!body["seed"].is_number_integer()) return Invalid("seed", "must be an integer");
    s.set_seed(static_cast<uint64_t>(body["seed"].get<int64_t>()));
  }
  if (Present(body, "stop")) {
    const Json& stop = body["stop"];
    if (stop.is_string()) {
      s.add_stop(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const Json& x : stop) {
        if (!x.is_string()) return Invalid("stop", "must be a string or a list of strings");
        s.add_stop(x.get<std::string>());
      }
    } else {
      return Invalid("stop", "must be a string or a list of strings");
    }
  }
  if (Present(body, "ignore_eos")) s.set_ignore_eos(body["ignore_eos"].is_boolean() && body["ignore_eos"].get<bool>());
  for (const char* penalty : {"presence_penalty", "frequency_penalty", "repetition_penalty"}) {
    auto value = Number(body, penalty, -2, 2);
    if (!value.ok()) return value.status();
    if (value->has_value() && **value != (std::string(penalty) == "repetition_penalty" ? 1 : 0)) {
      return Invalid(penalty, "is not supported (only the neutral value)");
    }
  }
  return absl::OkStatus();
}

absl::Status ParseUnsupported(const Json& body, bool chat) {
  if (Present(body, "n") && !(body["n"].is_number_integer() && body["n"].get<int64_t>() == 1)) {
    return Invalid("n", "only n = 1 is supported");
  }
  if (!chat && Present(body, "best_of") && !(body["best_of"].is_number_integer() && body["best_of"].get<int64_t>() == 1)) {
    return Invalid("best_of", "only best_of = 1 is supported");
  }
  if (!chat && Present(body, "echo") && body["echo"].is_boolean() && body["echo"].get<bool>()) {
    return Invalid("echo", "is not supported");
  }
  if (!chat && Present(body, "suffix")) return Invalid("suffix", "is not supported");
  if (Present(body, "logit_bias") && !(body["logit_bias"].is_object() && body["logit_bias"].empty())) {
    return Invalid("logit_bias", "is not supported");
  }
  return absl::OkStatus();
}

absl::Status ParseExtensions(const Json& body, OpenAiRequest& out) {
  if (Present(body, "context_id")) {
    if (!body["context_id"].is_string()) return Invalid("context_id", "must be a string");
    out.context_id = body["context_id"].get<std::string>();
  }
  if (Present(body, "attention")) {
    const Json& a = body["attention"];
    if (!a.is_object()) return Invalid("attention", "must be an object");
    const std::string mode = a.value("mode", "");
    if (mode == "dense") out.attention.set_mode(pb::AttentionOptions::DENSE);
    else if (mode == "squeezed") out.attention.set_mode(pb::AttentionOptions::SQUEEZED);
    else if (!mode.empty()) return Invalid("attention.mode", "must be \"dense\" or \"squeezed\"");
    if (a.contains("sparsity")) {
      if (!a["sparsity"].is_number()) return Invalid("attention.sparsity", "must be a number");
      out.attention.set_sparsity(a["sparsity"].get<float>());
    }
    if (a.contains("hierarchical")) out.attention.set_hierarchical(a["hierarchical"].is_boolean() && a["hierarchical"].get<bool>());
  }
  return absl::OkStatus();
}

Json LogprobsJson(const OpenAiRequest& request, const std::vector<OpenAiToken>& tokens, size_t text_offset) {
  if (!request.logprobs) return nullptr;
  if (request.chat) {
    Json content = Json::array();
    for (const OpenAiToken& t : tokens) {
      Json bytes = Json::array();
      for (unsigned char c : t.text) bytes.push_back(static_cast<int>(c));
      content.push_back({{"token", t.text}, {"logprob", t.logprob}, {"bytes", bytes}, {"top_logprobs", Json::array()}});
    }
    return {{"content", content}};
  }
  Json text = Json::array(), logprobs = Json::array(), offsets = Json::array();
  for (const OpenAiToken& t : tokens) {
    text.push_back(t.text);
    logprobs.push_back(t.logprob);
    offsets.push_back(text_offset);
    text_offset += t.text.size();
  }
  return {{"tokens", text}, {"token_logprobs", logprobs}, {"top_logprobs", nullptr}, {"text_offset", offsets}};
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(const std::string& body_text, bool chat) {
  const Json body = Json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) return Invalid("body", "must be a JSON object");
  OpenAiRequest out;
  out.chat = chat;
  try {
    if (Present(body, "model")) {
      if (!body["model"].is_string()) return Invalid("model", "must be a string");
      out.model = body["model"].get<std::string>();
    }
    absl::Status status = chat ? ParseMessages(body, out) : ParsePrompt(body, out);
    if (status.ok()) status = ParseSampling(body, out);
    if (status.ok()) status = ParseUnsupported(body, chat);
    if (status.ok()) status = ParseExtensions(body, out);
    if (!status.ok()) return status;
    out.stream = body.value("stream", false);
    if (Present(body, "stream_options")) {
      out.include_usage = body["stream_options"].is_object() && body["stream_options"].value("include_usage", false);
    }
    if (chat) {
      out.logprobs = Present(body, "logprobs") && body["logprobs"].is_boolean() && body["logprobs"].get<bool>();
    } else if (Present(body, "logprobs")) {
      if (!body["logprobs"].is_number_integer() || body["logprobs"].get<int64_t>() < 0) {
        return Invalid("logprobs", "must be an integer >= 0");
      }
      out.logprobs = true;
    }
  } catch (const nlohmann::json::exception& e) {
    return Invalid("body", e.what());
  }
  return out;
}

const char* OpenAiFinishReason(FinishReason reason) { return reason == FinishReason::kLength ? "length" : "stop"; }

Json UsageJson(const OpenAiUsage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

Json CompletionResponse(const OpenAiRequest& request, const std::string& id, int64_t created, const std::string& model,
                        const std::string& text, const std::vector<OpenAiToken>& tokens, FinishReason finish,
                        const OpenAiUsage& usage) {
  Json choice = {{"index", 0}};
  if (request.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = LogprobsJson(request, tokens, 0);
  choice["finish_reason"] = OpenAiFinishReason(finish);
  return {{"id", id},
          {"object", request.chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", Json::array({choice})},
          {"usage", UsageJson(usage)}};
}

Json StreamChunk(const OpenAiRequest& request, const std::string& id, int64_t created, const std::string& model,
                 const std::string& text, const std::vector<OpenAiToken>& tokens, std::optional<FinishReason> finish,
                 bool first) {
  Json choice = {{"index", 0}};
  if (request.chat) {
    Json delta = Json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = LogprobsJson(request, tokens, 0);
  choice["finish_reason"] = finish.has_value() ? Json(OpenAiFinishReason(*finish)) : Json();
  Json chunk = {{"id", id},
                {"object", request.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", Json::array({choice})}};
  if (request.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

Json UsageChunk(const OpenAiRequest& request, const std::string& id, int64_t created, const std::string& model,
                const OpenAiUsage& usage) {
  return {{"id", id},
          {"object", request.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", Json::array()},
          {"usage", UsageJson(usage)}};
}

Json ModelsResponse(const std::string& model, int64_t created, int64_t max_model_len) {
  return {{"object", "list"},
          {"data", Json::array({Json{{"id", model},
                                     {"object", "model"},
                                     {"created", created},
                                     {"owned_by", "squeezeserve"},
                                     {"max_model_len", max_model_len}}})}};
}

OpenAiError ToOpenAiError(const absl::Status& status) {
  OpenAiError e;
  const std::string message(status.message());
  e.http_status = ToHttpStatus(status.code());
  const char* type = e.http_status == 401   ? "authentication_error"
                     : e.http_status == 403 ? "permission_error"
                     : e.http_status == 429 ? "rate_limit_error"
                     : e.http_status < 500  ? "invalid_request_error"
                                            : "server_error";
  // Messages name their field first ("temperature: must be ..."): that is OpenAI's `param`.
  Json param = nullptr;
  const size_t colon = message.find(':');
  if (colon != std::string::npos && colon > 0 && message.find(' ') > colon) param = message.substr(0, colon);
  e.body = {{"error", {{"message", message}, {"type", type}, {"param", param}, {"code", nullptr}}}};
  return e;
}

}  // namespace squeezeserve::server
