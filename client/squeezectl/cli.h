// squeezectl's parsed command line, shared by the subcommands (flags are read once in main.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace squeezectl {

// Exit codes: 0 OK, 1 usage error, 10 + gRPC status code for an RPC error (e.g. 15 = NOT_FOUND).
inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 1;
inline constexpr int kExitNotServing = 2;  // health: the server answered, but not SERVING
inline constexpr int kExitRpcBase = 10;

struct Cli {
  std::string server;
  double timeout_s = 0;  // 0 = no deadline
  bool json = false;
  // Security: TLS when a CA or a client certificate is given (mutual TLS with both), bearer token.
  std::string tls_ca_file, tls_cert_file, tls_key_file, token_file;
  bool tls = false;
  std::string tls_ca_pem, tls_cert_pem, tls_key_pem, token;  // contents, read by LoadSecurityFiles
  std::vector<std::string> args;  // positional arguments after the subcommand

  // Content (ingest: the context; generate: the prompt).
  std::string file;         // ingest: path, "-" = stdin
  std::string tokens;       // comma-separated token ids
  std::string prompt;
  std::string prompt_file;

  // ingest
  std::string id;
  bool no_bos = false;
  float centroid_fraction = 0;
  uint32_t observation_window = 0;
  uint32_t max_iterations = 0;
  uint64_t index_seed = 0;
  uint32_t levels = 0;
  float coarse_centroid_fraction = 0;
  float head_floor_share = 0;  // 0: server default; < 0: no floor
  std::vector<std::string> sparsity_levels;
  bool dense_only = false;

  // generate
  std::string context;
  uint32_t max_new_tokens = 0;
  float temperature = 0;
  float top_p = 0;
  uint32_t top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  std::string mode;  // "", "dense", "squeezed"
  float sparsity = 0;
  bool hierarchical = false;
  std::string lookup_levels;  // "", "one", "two"
  std::string pruned;  // "", "estimated", "dropped"
  std::string read_ahead;  // "", "on", "off"
  bool logprobs = false;
  bool prompt_logprobs = false;
};

int RunIngest(const Cli& cli);
int RunGenerate(const Cli& cli);
int RunList(const Cli& cli);
int RunGet(const Cli& cli);
int RunDelete(const Cli& cli);
int RunInfo(const Cli& cli);
int RunHealth(const Cli& cli);

}  // namespace squeezectl
