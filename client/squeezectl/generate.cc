// squeezectl generate: streams the answer to a query against a stored context. Text goes to stdout as
// it arrives; --json prints one object at the end (token ids, logprobs, text, usage, stats) for scripts.
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/squeezectl/cli.h"
#include "client/squeezectl/rpc_util.h"

namespace squeezectl {
namespace {

namespace pb = squeezeserve::v1;

// A flag naming one of two enum values; empty leaves *out at 0 (unset: the server's default).
// False after a usage error on stderr.
template <typename Enum>
bool ParseChoice(const char* flag, const std::string& value, std::pair<const char*, Enum> first,
                 std::pair<const char*, Enum> second, Enum* out) {
  if (value.empty()) return true;
  for (const auto& [name, choice] : {first, second}) {
    if (value == name) {
      *out = choice;
      return true;
    }
  }
  UsageError(std::string("generate: ") + flag + " must be " + first.first + " or " + second.first);
  return false;
}

// Builds the request from the flags; nullopt after a usage error on stderr.
std::optional<pb::GenerateRequest> BuildRequest(const Cli& cli) {
  pb::GenerateRequest request;
  request.set_context_id(cli.context.empty() && !cli.args.empty() ? cli.args[0] : cli.context);
  if (request.context_id().empty()) {
    UsageError("generate: --context ID is required");
    return std::nullopt;
  }
  int prompt_sources = !cli.prompt.empty() + !cli.prompt_file.empty() + !cli.tokens.empty();
  if (prompt_sources != 1) {
    UsageError("generate: give exactly one of --prompt, --prompt_file, --tokens");
    return std::nullopt;
  }
  if (!cli.tokens.empty()) {
    std::optional<std::vector<int32_t>> ids = ParseTokenIds(cli.tokens);
    if (!ids) return std::nullopt;
    request.mutable_tokens()->mutable_ids()->Add(ids->begin(), ids->end());
  } else if (!cli.prompt_file.empty()) {
    std::optional<std::string> text = ReadAll(cli.prompt_file);
    if (!text) return std::nullopt;
    request.set_text(*text);
  } else {
    request.set_text(cli.prompt);
  }

  pb::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_max_new_tokens(cli.max_new_tokens);
  sampling->set_temperature(cli.temperature);
  sampling->set_top_p(cli.top_p);
  sampling->set_top_k(cli.top_k);
  sampling->set_seed(cli.seed);
  for (const std::string& stop : cli.stop) sampling->add_stop(stop);
  sampling->set_ignore_eos(cli.ignore_eos);

  pb::AttentionOptions* attention = request.mutable_attention();
  using Attention = pb::AttentionOptions;
  Attention::Mode mode{};
  Attention::Pruned pruned{};
  Attention::ReadAhead read_ahead{};
  Attention::LookupLevels levels{};
  if (!ParseChoice("--mode", cli.mode, {"dense", Attention::DENSE}, {"squeezed", Attention::SQUEEZED}, &mode) ||
      !ParseChoice("--lookup_levels", cli.lookup_levels, {"one", Attention::ONE_LEVEL}, {"two", Attention::TWO_LEVELS},
                   &levels) ||
      !ParseChoice("--pruned", cli.pruned, {"estimated", Attention::ESTIMATED}, {"dropped", Attention::DROPPED},
                   &pruned) ||
      !ParseChoice("--read_ahead", cli.read_ahead, {"on", Attention::READ_AHEAD_ON}, {"off", Attention::READ_AHEAD_OFF},
                   &read_ahead)) {
    return std::nullopt;
  }
  attention->set_mode(mode);
  attention->set_sparsity(cli.sparsity);
  attention->set_hierarchical(cli.hierarchical);
  attention->set_lookup_levels(levels);
  attention->set_pruned(pruned);
  attention->set_read_ahead(read_ahead);
  request.set_include_logprobs(cli.logprobs);
  request.set_include_prompt_logprobs(cli.prompt_logprobs);
  return request;
}

}  // namespace

int RunGenerate(const Cli& cli) {
  std::optional<pb::GenerateRequest> request = BuildRequest(cli);
  if (!request) return kExitUsage;

  auto stub = MakeStub(cli);
  grpc::ClientContext context;
  ApplyCallOptions(cli, &context);
  auto stream = stub->Generate(&context, *request);

  nlohmann::json tokens = nlohmann::json::array();
  nlohmann::json logprobs = nlohmann::json::array();
  std::string text;
  pb::GenerateResponse response;
  pb::GenerateResponse last;
  while (stream->Read(&response)) {
    for (int32_t id : response.token_ids()) tokens.push_back(id);
    for (float logprob : response.logprobs()) logprobs.push_back(logprob);
    text += response.text();
    if (!cli.json) std::cout << response.text() << std::flush;
    if (response.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) last = response;
  }
  grpc::Status status = stream->Finish();
  if (!cli.json && !text.empty()) std::cout << "\n";
  if (!status.ok()) return ReportStatus(status);

  if (cli.json) {
    nlohmann::json out = {
        {"context_id", request->context_id()},
        {"token_ids", tokens},
        {"logprobs", logprobs},
        {"text", text},
        {"finish_reason", pb::FinishReason_Name(last.finish_reason())},
        {"usage", nlohmann::json::parse(ToJson(last.usage()))},
        {"stats", nlohmann::json::parse(ToJson(last.stats()))},
    };
    if (cli.prompt_logprobs) out["prompt_logprobs"] = std::vector<float>(last.prompt_logprobs().begin(), last.prompt_logprobs().end());
    std::cout << out.dump() << "\n";
  } else {
    const pb::Usage& usage = last.usage();
    std::cerr << "[" << pb::FinishReason_Name(last.finish_reason()) << "; prompt " << usage.prompt_tokens()
              << " + cached " << usage.cached_tokens() << " tokens -> " << usage.completion_tokens()
              << " tokens; ttft " << usage.time_to_first_token_ms() << " ms, tpot "
              << usage.time_per_output_token_ms() << " ms]\n";
  }
  return kExitOk;
}

}  // namespace squeezectl
