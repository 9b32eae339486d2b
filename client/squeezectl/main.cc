// squeezectl: command-line client of squeezeserve.
//   squeezectl --server HOST:PORT <ingest|generate|list|get|delete|info|health> [flags] [args]
// Flags are global (absl flags) and each subcommand reads the ones it documents in `squeezectl help CMD`.
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "client/squeezectl/cli.h"
#include "client/squeezectl/rpc_util.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "squeezeserve address HOST:PORT, or several replicas HOST:PORT,HOST:PORT,... sharing a store: a "
          "call about a context then goes to the replica owning it on a consistent-hash ring (and carries an "
          "x-context-id header for proxies).");
ABSL_FLAG(double, timeout, 0, "Deadline of the call in seconds (0 = none); expiry exits 14 (DEADLINE_EXCEEDED).");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that signed the server's certificate: connect with TLS.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for mutual TLS (with --tls_key; implies TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, token_file, "",
          "File whose first non-comment line is a bearer token, sent as 'authorization: Bearer <token>'.");
ABSL_FLAG(bool, json, false, "Print the result as JSON on stdout (all commands).");
// Content.
ABSL_FLAG(std::string, file, "", "ingest: text file to ingest ('-' or unset = stdin).");
ABSL_FLAG(std::string, tokens, "", "ingest/generate: comma-separated token ids instead of text; @FILE reads them from a file.");
ABSL_FLAG(std::string, prompt, "", "generate: the query text.");
ABSL_FLAG(std::string, prompt_file, "", "generate: file holding the query text ('-' = stdin).");
// Ingest.
ABSL_FLAG(std::string, id, "", "ingest: context id (empty = content address assigned by the server).");
ABSL_FLAG(bool, no_bos, false, "ingest: do not prepend BOS to text content.");
ABSL_FLAG(float, centroid_fraction, 0, "ingest: centroids per clustered key (0 = server default 0.05).");
ABSL_FLAG(uint32_t, observation_window, 0, "ingest: unclustered calibration window (0 = default 100).");
ABSL_FLAG(uint32_t, max_iterations, 0, "ingest: k-means iteration cap (0 = default).");
ABSL_FLAG(uint64_t, index_seed, 0, "ingest: k-means seed.");
ABSL_FLAG(uint32_t, levels, 0, "ingest: index levels, 1 = flat, 2 = hierarchical (0 = default).");
ABSL_FLAG(float, coarse_centroid_fraction, 0, "ingest: coarse-level centroid fraction (0 = default).");
ABSL_FLAG(float, head_floor_share, 0,
          "ingest: share of each level's budget every KV head keeps of its own keys, in (0, 1] (0 = server "
          "default; negative = no floor, one global threshold per level as the paper).");
ABSL_FLAG(std::vector<std::string>, sparsity_levels, {}, "ingest: comma-separated sparsity levels to calibrate.");
ABSL_FLAG(bool, dense_only, false, "ingest: build no index (dense attention only).");
// Generate.
ABSL_FLAG(std::string, context, "", "generate/get/delete: context id.");
ABSL_FLAG(uint32_t, max_new_tokens, 0, "generate: tokens to generate at most (0 = server default).");
ABSL_FLAG(float, temperature, 0, "generate: sampling temperature (0 = greedy).");
ABSL_FLAG(float, top_p, 0, "generate: nucleus sampling mass in (0, 1] (0 = off).");
ABSL_FLAG(uint32_t, top_k, 0, "generate: keep the k most likely tokens (0 = off).");
ABSL_FLAG(uint64_t, seed, 0, "generate: sampler seed (equal seeds, equal samples).");
ABSL_FLAG(std::vector<std::string>, stop, {}, "generate: comma-separated stop strings.");
ABSL_FLAG(bool, ignore_eos, false, "generate: keep generating past EOS.");
ABSL_FLAG(std::string, mode, "", "generate: attention mode dense or squeezed (empty = server default).");
ABSL_FLAG(float, sparsity, 0, "generate: calibrated sparsity level to use (0 = server default).");
ABSL_FLAG(bool, hierarchical, false, "generate: use the hierarchical centroid lookup (= --lookup_levels two).");
ABSL_FLAG(std::string, lookup_levels, "",
          "generate: look clusters up through one level (the fine one) or two (coarse, then the kept coarse "
          "clusters' children; needs a two-level index); empty = server default (two from "
          "--two_level_min_context_tokens context tokens on, else one).");
ABSL_FLAG(std::string, pruned, "",
          "generate: what becomes of pruned clusters, estimated (each attends as one key: centroid, size, "
          "mean value) or dropped (as the paper; the fastest GPU path); empty = server default (estimated).");
ABSL_FLAG(std::string, read_ahead, "",
          "generate: read-ahead on (a query head that concentrates on one context key also loads the cluster "
          "of the key after it at the next token) or off (the paper's lookup); empty = server default (on).");
ABSL_FLAG(bool, logprobs, false, "generate: return per-token log-probabilities (shown with --json).");
ABSL_FLAG(bool, prompt_logprobs, false,
          "generate: return the prompt tokens' teacher-forced log-probabilities (shown with --json).");

namespace squeezectl {
namespace {

constexpr char kExitCodes[] =
    "Exit codes: 0 success; 1 usage error; 2 health: not serving; 10 + gRPC status code on an RPC error "
    "(13 INVALID_ARGUMENT, 14 DEADLINE_EXCEEDED, 15 NOT_FOUND, 18 RESOURCE_EXHAUSTED, "
    "19 FAILED_PRECONDITION, 24 UNAVAILABLE, ...).";

struct Command {
  int (*run)(const Cli&);
  const char* help;
};

const std::map<std::string, Command>& Commands() {
  static const auto* commands = new std::map<std::string, Command>{
      {"ingest",
       {RunIngest,
        "squeezectl ingest [--file PATH | --tokens 1,2,3] [--id ID] [--no_bos] [index flags] [--json]\n"
        "  Uploads a fixed context (text from --file or stdin, or token ids) in 1 MiB chunks; the server\n"
        "  tokenizes, prefills and indexes it once. Progress goes to stderr (a bar on a terminal). Prints\n"
        "  the context id and summary. Without --id the id is a content address: ingesting the same\n"
        "  content with the same options again returns the same id.\n"
        "  Index flags: --centroid_fraction --observation_window --max_iterations --index_seed --levels\n"
        "  --coarse_centroid_fraction --head_floor_share --sparsity_levels 0.5,0.7,0.9 --dense_only"}},
      {"generate",
       {RunGenerate,
        "squeezectl generate --context ID (--prompt TEXT | --prompt_file PATH | --tokens 1,2,3)\n"
        "                    [--max_new_tokens N] [--temperature T] [--top_p P] [--top_k K] [--seed S]\n"
        "                    [--stop a,b] [--ignore_eos] [--mode dense|squeezed] [--sparsity X]\n"
        "                    [--hierarchical | --lookup_levels one|two] [--pruned estimated|dropped]\n"
        "                    [--read_ahead on|off]\n"
        "                    [--logprobs] [--prompt_logprobs] [--json]\n"
        "  Streams the answer to a query appended to a stored context. Text goes to stdout as it arrives\n"
        "  and a usage line to stderr; --json prints one object with token_ids, logprobs, text,\n"
        "  finish_reason, usage and stats (and prompt_logprobs with --prompt_logprobs) instead."}},
      {"list", {RunList, "squeezectl list [--json]\n  Lists the stored contexts: id, tokens, indexed or not, tier."}},
      {"get", {RunGet, "squeezectl get ID [--json]\n  Shows one context's summary (NOT_FOUND exits 15)."}},
      {"delete", {RunDelete, "squeezectl delete ID [--json]\n  Deletes a context (NOT_FOUND exits 15)."}},
      {"info",
       {RunInfo, "squeezectl info [--json]\n  Shows the server's model, device, dtype, limits and attention modes."}},
      {"health",
       {RunHealth,
        "squeezectl health [SERVICE] [--json]\n"
        "  Asks grpc.health.v1 (open without a token, so it suits container health checks) whether the\n"
        "  server (or SERVICE, e.g. squeezeserve.v1.Squeezeserve) serves: prints SERVING and exits 0, or\n"
        "  prints NOT_SERVING (model loading, draining) and exits 2."}},
  };
  return *commands;
}

std::string GeneralHelp() {
  std::string text =
      "squeezectl --server HOST:PORT <command> [flags]\n"
      "Commands: ingest, generate, list, get, delete, info, health. 'squeezectl help <command>' explains one.\n"
      "Common flags: --server HOST:PORT, --timeout SECONDS, --json, --tls_ca FILE, --tls_cert FILE, "
      "--tls_key FILE, --token_file FILE.\n";
  return text + kExitCodes;
}

Cli ReadFlags(std::vector<std::string> args) {
  Cli cli;
  cli.server = absl::GetFlag(FLAGS_server);
  cli.timeout_s = absl::GetFlag(FLAGS_timeout);
  cli.json = absl::GetFlag(FLAGS_json);
  cli.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  cli.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  cli.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  cli.token_file = absl::GetFlag(FLAGS_token_file);
  cli.args = std::move(args);
  cli.file = absl::GetFlag(FLAGS_file);
  cli.tokens = absl::GetFlag(FLAGS_tokens);
  cli.prompt = absl::GetFlag(FLAGS_prompt);
  cli.prompt_file = absl::GetFlag(FLAGS_prompt_file);
  cli.id = absl::GetFlag(FLAGS_id);
  cli.no_bos = absl::GetFlag(FLAGS_no_bos);
  cli.centroid_fraction = absl::GetFlag(FLAGS_centroid_fraction);
  cli.observation_window = absl::GetFlag(FLAGS_observation_window);
  cli.max_iterations = absl::GetFlag(FLAGS_max_iterations);
  cli.index_seed = absl::GetFlag(FLAGS_index_seed);
  cli.levels = absl::GetFlag(FLAGS_levels);
  cli.coarse_centroid_fraction = absl::GetFlag(FLAGS_coarse_centroid_fraction);
  cli.head_floor_share = absl::GetFlag(FLAGS_head_floor_share);
  cli.sparsity_levels = absl::GetFlag(FLAGS_sparsity_levels);
  cli.dense_only = absl::GetFlag(FLAGS_dense_only);
  cli.context = absl::GetFlag(FLAGS_context);
  cli.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  cli.temperature = absl::GetFlag(FLAGS_temperature);
  cli.top_p = absl::GetFlag(FLAGS_top_p);
  cli.top_k = absl::GetFlag(FLAGS_top_k);
  cli.seed = absl::GetFlag(FLAGS_seed);
  cli.stop = absl::GetFlag(FLAGS_stop);
  cli.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  cli.mode = absl::GetFlag(FLAGS_mode);
  cli.sparsity = absl::GetFlag(FLAGS_sparsity);
  cli.hierarchical = absl::GetFlag(FLAGS_hierarchical);
  cli.lookup_levels = absl::GetFlag(FLAGS_lookup_levels);
  cli.pruned = absl::GetFlag(FLAGS_pruned);
  cli.read_ahead = absl::GetFlag(FLAGS_read_ahead);
  cli.logprobs = absl::GetFlag(FLAGS_logprobs);
  cli.prompt_logprobs = absl::GetFlag(FLAGS_prompt_logprobs);
  return cli;
}

// --help lists the flags defined in this file (absl's default looks for a file named after the binary).
void ConfigureHelp() {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view path) { return absl::EndsWith(path, "client/squeezectl/main.cc"); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
}

int Main(int argc, char** argv) {
  ConfigureHelp();
  absl::SetProgramUsageMessage(GeneralHelp());
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) {
    std::cerr << GeneralHelp() << "\n";
    return kExitUsage;
  }
  const std::string command = positional[1];
  std::vector<std::string> args(positional.begin() + 2, positional.end());
  if (command == "help") {
    if (args.empty()) {
      std::cout << GeneralHelp() << "\n";
      return kExitOk;
    }
    auto it = Commands().find(args[0]);
    if (it == Commands().end()) {
      std::cerr << "squeezectl: unknown command '" << args[0] << "'\n" << GeneralHelp() << "\n";
      return kExitUsage;
    }
    std::cout << it->second.help << "\n" << kExitCodes << "\n";
    return kExitOk;
  }
  auto it = Commands().find(command);
  if (it == Commands().end()) {
    std::cerr << "squeezectl: unknown command '" << command << "'\n" << GeneralHelp() << "\n";
    return kExitUsage;
  }
  Cli cli = ReadFlags(std::move(args));
  if (!LoadSecurityFiles(cli)) return kExitUsage;
  return it->second.run(cli);
}

}  // namespace
}  // namespace squeezectl

int main(int argc, char** argv) { return squeezectl::Main(argc, argv); }
