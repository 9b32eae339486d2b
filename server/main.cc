// squeezeserve: the gRPC server binary. Parses flags, starts gRPC (health NOT_SERVING, RPCs answer
// UNAVAILABLE) and prints the listening line, loads the model on a thread, flips health to SERVING,
// then waits for SIGTERM/SIGINT and drains: NOT_SERVING, no new calls, running streams get a grace
// period, exit 0.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "server/access_log.h"
#include "server/auth.h"
#include "server/flag_help.h"
#include "server/logging.h"
#include "server/metrics_http.h"
#include "server/native_log_capture.h"
#include "server/openai_http.h"
#include "server/reflection_v1.h"
#include "server/request_codec.h"
#include "server/service.h"
#include "server/tls.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, model, "", "Model checkpoint directory (config.json, *.safetensors, tokenizer.model). Required.");
ABSL_FLAG(std::string, served_model_name, "",
          "Name of the served model: the `model` label of every metric series and the model the OpenAI "
          "endpoints answer to; empty = the --model directory's name.");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "HOST:PORT to listen on. Port 0 picks a free port; the chosen address is printed on stdout as "
          "'squeezeserve listening on HOST:PORT'.");
ABSL_FLAG(uint64_t, max_resident_context_bytes, 0,
          "With --store: KV + index bytes of contexts kept in device memory (where generation reads them) at "
          "most; the least recently used move to host memory (--max_host_context_bytes) or are dropped from "
          "memory (they stay on disk), and come back on demand. 0 = no limit.");
ABSL_FLAG(uint64_t, max_host_context_bytes, 0,
          "With --store and --max_resident_context_bytes: KV + index bytes of contexts parked in host memory "
          "(pinned, when the model runs on a GPU) after leaving device memory; returning from there is a copy, "
          "not a disk read. Past it the least recently used are dropped to disk. 0 = no host tier.");
ABSL_FLAG(std::string, store, "",
          "Context store directory. Every ingested context is written there (atomically, with checksums) and "
          "survives restarts; replicas sharing the directory can serve each other's contexts. Empty: in memory "
          "only.");
ABSL_FLAG(std::string, device, "cpu", "Compute device: cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, attention_backend, "auto",
          "What runs the attention of Generate (squeezed and dense): auto (the CUDA kernels when --device is a "
          "GPU, the build has them, the model is bfloat16 and its head_dim is 64 or 128 with a GQA group of 1 "
          "to 8; libtorch otherwise), torch (always libtorch, e.g. for A/B benchmarks) or kernels (the "
          "kernels, or the model fails to load). Ingest prefill always uses libtorch's fused attention.");
ABSL_FLAG(std::string, prefill_kernel, "auto",
          "With the CUDA kernels: the kernel of a squeezed query prefill's attention. auto: the warp-specialized "
          "kernel (FlashAttention-3 structure; Hopper and head_dim 128 only) where a query's rows fill most of the "
          "device (prefill chunks of 512 tokens and more: 0.83x the mma.sync step at 1K x 512K), mma_sync where "
          "split-K cuts the keys into short ranges (questions up to a few hundred tokens; the warp-specialized "
          "one was slower on 64-token ones). mma_sync or warp_specialized: that kernel everywhere it runs, for "
          "comparisons. The log says which runs "
          "(bench/kernels/NOTES.md run 37).");
ABSL_FLAG(bool, programmatic_launch, true,
          "With the CUDA kernels on Hopper: launch the decode step's kernels with programmatic dependent launch "
          "(each starts while the previous one drains, so its index reads overlap that tail). false: plain stream "
          "order, for comparisons (bench/kernels/NOTES.md run 13); the log says so.");
ABSL_FLAG(bool, cuda_graphs, true,
          "With the CUDA kernels: decode steps captured once per batch shape and replayed as CUDA graphs. false: "
          "every step dispatched op by op, for comparisons and for profiling a step's kernels one by one "
          "(scripts/gpu/profile_decode_graph.sh --step eager_decode).");
ABSL_FLAG(int32_t, skinny_gemm_min_rows, 1,
          "On a GPU with the CUDA kernels: decode steps of at least this many tokens (up to 8) run their weight "
          "products on our kernel, which streams the weights near the copy rate with the residual add inside and "
          "SiLU * up in one launch (kernels/skinny_gemm.h); 1, the default: every decode step (measured faster than "
          "cuBLAS end to end at batch 8 in run 23 and at batch 1 in run 25: bench/kernels/NOTES.md). 0: libtorch's "
          "cuBLAS calls throughout, for comparisons; the log says which.");
ABSL_FLAG(bool, shared_context_decode, true,
          "Dense questions stepping together on one stored context read its KV together instead of once each: "
          "with the CUDA kernels their decode tokens once per bundle of up to 32 / G of them (G = query heads per "
          "KV head: 4 for Llama-3-8B, 1 for Llama-2-7B), on libtorch all their rows of a step in one call. "
          "false: once each, for comparisons; the log says so.");
ABSL_FLAG(std::string, squeezed_bundles, "auto",
          "With the CUDA kernels: squeezed questions stepping together on one stored context read the union of "
          "their selected clusters once per bundle (up to 8 / G of them, G = query heads per KV head), each still "
          "attending only its own clusters, so an answer never depends on its batch (docs/attention.md \"Questions "
          "on one document\"). auto: where it was measured to pay (G = 1, as Llama-2-7B; 4 or more questions on the "
          "paper's lookup, no pruned-cluster estimate); on: every run of 2 or more (for comparisons); off: never. "
          "The log says which.");
ABSL_FLAG(int32_t, threads, 0, "Intra-op CPU threads of the engine (0 = libtorch default).");
ABSL_FLAG(int32_t, prefill_chunk, 0,
          "Tokens per unit of ingest prefill work (each unit takes the forward lock on its own, and only while "
          "no generation step waits for it, so generation steps run between units); 0 = 32768 on a GPU, 128 "
          "on the CPU (docs/isolation.md \"Ingest\").");
ABSL_FLAG(int64_t, max_context_tokens, 1 << 20, "Largest context IngestContext accepts, in tokens.");
ABSL_FLAG(int64_t, max_context_bytes, 0,
          "Largest IngestContext upload in bytes of text or token ids (0 = 32 x max_context_tokens).");
ABSL_FLAG(int32_t, max_query_tokens, 8192, "Largest Generate prompt (the query), in tokens.");
ABSL_FLAG(int32_t, max_new_tokens, 4096, "Largest sampling.max_new_tokens a request may ask for.");
ABSL_FLAG(int32_t, default_max_new_tokens, 64, "Tokens generated when a request leaves max_new_tokens at 0.");
ABSL_FLAG(int32_t, max_concurrent_streams, 16,
          "Ingest and Generate streams doing model work at once; more are refused with RESOURCE_EXHAUSTED "
          "and trailing metadata grpc-retry-pushback-ms (the key gRPC retry policies read).");
ABSL_FLAG(int32_t, max_queued_requests, 64,
          "Generate requests that wait (highest priority first, then FIFO) when max_concurrent_streams are "
          "busy; beyond that they are refused with RESOURCE_EXHAUSTED and grpc-retry-pushback-ms. A waiting request's "
          "deadline and cancellation are honoured. 0 = no queue.");
ABSL_FLAG(std::string, scheduler, "batching",
          "How Generate streams share the model: batching (continuous batching: one loop steps every running "
          "stream in one forward pass) or thread_per_stream (each stream on its own worker, one forward at a "
          "time; kept for comparison).");
ABSL_FLAG(int64_t, batch_prefill_tokens, 0,
          "Query-prefill tokens per step: a query is prefilled in chunks of half this size, and with "
          "--scheduler=batching one step takes prefill chunks up to this many tokens besides its decode tokens "
          "(bounds how long a long prompt stalls the running streams' next token). 0 = by device: 32 on cpu "
          "(docs/operations.md \"Isolation\"), 1024 on cuda.");
ABSL_FLAG(int64_t, max_stream_backlog, 64,
          "Generate messages buffered for a client that is not reading before its stream is paused (the other "
          "streams go on).");
ABSL_FLAG(int64_t, stream_stall_timeout_ms, 20000,
          "A Generate stream paused this long for a client that does not read is cancelled and its slot freed.");
ABSL_FLAG(int64_t, store_revalidate_ms, 1000,
          "With --store shared by replicas: a context in memory is served this long before the store is checked "
          "for a delete or replacement by another replica (the staleness bound; 0 = check on every request).");
ABSL_FLAG(int64_t, max_message_bytes, 8 << 20, "Largest gRPC message received or sent, in bytes.");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT of the HTTP server for Prometheus (/metrics) and plain probes (/healthz); empty = off. "
          "Port 0 picks a free port, printed on stdout as 'squeezeserve metrics on HOST:PORT'.");
ABSL_FLAG(std::string, openai_listen, "",
          "HOST:PORT of the OpenAI-compatible HTTP endpoints (/v1/completions, /v1/chat/completions, /v1/models; "
          "docs/openai.md); off when empty. Port 0 picks one, printed as 'squeezeserve openai on HOST:PORT'.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve gRPC over TLS (with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require every client to present a certificate signed by it (mutual TLS).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File of bearer tokens, one per line ('#' comments): TOKEN [tenant=NAME] [scopes=read,generate,ingest,"
          "admin], plus 'quota NAME [contexts=N] [bytes=N]' lines (docs/operations.md \"Tenants\"). Squeezeserve "
          "RPCs must then send 'authorization: Bearer <token>' or get UNAUTHENTICATED; each tenant sees only its "
          "own contexts. The gRPC health service and reflection "
          "stay open for probes. Use with TLS: tokens are otherwise sent in clear text.");
ABSL_FLAG(std::string, default_mode, "auto",
          "Attention mode for requests that leave attention.mode unset: dense, squeezed, or auto: squeezed "
          "where the context is long enough for the index to pay for itself on this engine (logged at "
          "start; never on the CPU), dense otherwise. Contexts without an index always use dense; the "
          "response's stats say which mode served and why.");
ABSL_FLAG(float, default_sparsity, 0.9f,
          "Sparsity for squeezed requests that leave attention.sparsity at 0 (the nearest calibrated level "
          "of the context is used). 0.9 with the default lookup (pruned clusters estimated, read-ahead on) "
          "retrieves as dense does on the long-context evaluation and decodes faster than dense at batch 1 "
          "at every measured size, and at batch 8 on one document with Llama-2's shape; Llama-3's trails dense "
          "there by 5% (docs/attention.md).");
ABSL_FLAG(std::string, default_pruned, "estimated",
          "What becomes of pruned clusters for squeezed requests that leave attention.pruned unset: estimated "
          "(each still attends as one key: its centroid, weighing its size, with its mean value; what keeps "
          "retrieval at dense accuracy at 90%) or dropped (left out, as the paper; a little faster, much "
          "less accurate). auto = estimated (kept for existing deployments).");
ABSL_FLAG(float, estimate_floor, 0.0625f,
          "With pruned clusters estimated: estimate only those whose score reaches this fraction of their "
          "level's threshold, dropping the rest (0 = estimate every pruned cluster). The default, 1/16, "
          "estimates less than half of the pruned clusters on the small model for +0.0015 of attention "
          "error and lost no retrieval query at 4K-16K (docs/index_layout.md \"Estimate floor\"). In [0, 1].");
ABSL_FLAG(std::string, default_read_ahead, "on",
          "Read-ahead for squeezed requests that leave attention.read_ahead unset: on (a query head that "
          "concentrates on one context key also loads the cluster of the key after it at the next token; "
          "keeps copying on track) or off (the paper's lookup). auto = on (kept for existing deployments).");
ABSL_FLAG(int64_t, two_level_min_context_tokens, 262144,
          "Squeezed requests that leave attention.lookup_levels unset (and hierarchical false) decode through "
          "both levels of a two-level index (the ingest default) on contexts of at least this many tokens, "
          "through the fine level alone below (the question's prefill always uses the fine level). The default: from 256K tokens the two-level lookup "
          "measured faster on an H200 (25% at batch 8 with the accurate default) and as accurate at 4K-16K "
          "(docs/performance.md); below it, one level is as fast or faster at batch 1. -1 = always one level.");
ABSL_FLAG(int32_t, grace_period_s, 30, "On SIGTERM/SIGINT, seconds running streams get to finish.");
ABSL_FLAG(std::string, log_level, "info",
          "Log level on stderr: trace, debug, info (one access line per API call), warn, error, critical, off.");
ABSL_FLAG(std::string, log_format, "text",
          "Log lines on stderr: text, or json (one object per line: time, level, logger, msg; access lines "
          "carry method, code, duration_ms, peer, request_id, context_id and token counts as fields). Lines "
          "that libtorch, gRPC or sentencepiece print themselves go through the same logger (logger "
          "\"native\").");

namespace squeezeserve::server {
namespace {

// Flags -> ServerConfig, or an error message.
absl::StatusOr<ServerConfig> ConfigFromFlags() {
  ServerConfig config;
  ServerLimits& limits = config.limits;
  limits.max_context_tokens = absl::GetFlag(FLAGS_max_context_tokens);
  limits.max_query_tokens = absl::GetFlag(FLAGS_max_query_tokens);
  limits.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  limits.default_max_new_tokens = absl::GetFlag(FLAGS_default_max_new_tokens);
  limits.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  limits.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  if (limits.max_queued_requests < 0) return absl::InvalidArgumentError("--max_queued_requests must be >= 0");
  limits.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  limits.max_context_bytes = absl::GetFlag(FLAGS_max_context_bytes);
  if (limits.max_context_bytes <= 0) limits.max_context_bytes = 32 * limits.max_context_tokens;
  if (limits.max_context_tokens <= 0 || limits.max_query_tokens <= 0 || limits.max_new_tokens <= 0 ||
      limits.max_concurrent_streams <= 0 || limits.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("--max_* limits must be positive");
  }
  if (limits.default_max_new_tokens <= 0 || limits.default_max_new_tokens > limits.max_new_tokens) {
    return absl::InvalidArgumentError("--default_max_new_tokens must be in [1, --max_new_tokens]");
  }
  const std::string mode = absl::GetFlag(FLAGS_default_mode);
  config.defaults.mode_auto = mode == "auto";
  if (mode == "dense") {
    config.defaults.mode = AttentionMode::kDense;
  } else if (mode == "squeezed" || mode == "auto") {
    config.defaults.mode = AttentionMode::kSqueezed;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--default_mode must be auto, dense or squeezed, got ", mode));
  }
  if (const std::string backend = absl::GetFlag(FLAGS_attention_backend);
      backend != "auto" && backend != "torch" && backend != "kernels") {
    return absl::InvalidArgumentError(
        absl::StrCat("--attention_backend must be auto, torch or kernels, got ", backend));
  }
  if (const std::string kernel = absl::GetFlag(FLAGS_prefill_kernel);
      kernel != "auto" && kernel != "mma_sync" && kernel != "warp_specialized") {
    return absl::InvalidArgumentError(
        absl::StrCat("--prefill_kernel must be auto, mma_sync or warp_specialized, got ", kernel));
  }
  const std::string scheduler = absl::GetFlag(FLAGS_scheduler);
  if (scheduler == "batching") {
    config.scheduler = ServerConfig::Scheduler::kBatching;
  } else if (scheduler == "thread_per_stream") {
    config.scheduler = ServerConfig::Scheduler::kThreadPerStream;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--scheduler must be batching or thread_per_stream, got ", scheduler));
  }
  config.batch_prefill_tokens = absl::GetFlag(FLAGS_batch_prefill_tokens);
  if (config.batch_prefill_tokens < 0) return absl::InvalidArgumentError("--batch_prefill_tokens must be >= 0");
  if (config.batch_prefill_tokens == 0) {
    config.batch_prefill_tokens = absl::StartsWith(absl::GetFlag(FLAGS_device), "cuda") ? 1024 : 32;
  }
  config.max_stream_backlog = absl::GetFlag(FLAGS_max_stream_backlog);
  config.stream_stall_timeout_ms = absl::GetFlag(FLAGS_stream_stall_timeout_ms);
  config.store_revalidate_ms = absl::GetFlag(FLAGS_store_revalidate_ms);
  if (config.max_stream_backlog <= 0 || config.stream_stall_timeout_ms <= 0 || config.store_revalidate_ms < 0) {
    return absl::InvalidArgumentError(
        "--max_stream_backlog and --stream_stall_timeout_ms must be positive, --store_revalidate_ms >= 0");
  }
  config.defaults.sparsity = absl::GetFlag(FLAGS_default_sparsity);
  if (const std::string pruned = absl::GetFlag(FLAGS_default_pruned);
      pruned == "estimated" || pruned == "dropped" || pruned == "auto") {
    config.defaults.estimate_pruned = pruned != "dropped";
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--default_pruned must be estimated, dropped or auto, got ", pruned));
  }
  config.defaults.estimate_floor = absl::GetFlag(FLAGS_estimate_floor);
  if (!(config.defaults.estimate_floor >= 0 && config.defaults.estimate_floor <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--estimate_floor must be in [0, 1], got ", config.defaults.estimate_floor));
  }
  if (const std::string ahead = absl::GetFlag(FLAGS_default_read_ahead);
      ahead == "auto" || ahead == "on" || ahead == "off") {
    config.defaults.read_ahead = ahead != "off";
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--default_read_ahead must be on, off or auto, got ", ahead));
  }
  config.defaults.two_level_min_context_tokens = absl::GetFlag(FLAGS_two_level_min_context_tokens);
  if (config.defaults.two_level_min_context_tokens < -1) {
    return absl::InvalidArgumentError(absl::StrCat("--two_level_min_context_tokens must be -1 or at least 0, got ",
                                                   config.defaults.two_level_min_context_tokens));
  }
  config.store_dir = absl::GetFlag(FLAGS_store);
  config.max_resident_context_bytes = absl::GetFlag(FLAGS_max_resident_context_bytes);
  config.max_host_context_bytes = absl::GetFlag(FLAGS_max_host_context_bytes);
  if (!(config.defaults.sparsity > 0 && config.defaults.sparsity < 1)) {
    return absl::InvalidArgumentError("--default_sparsity must be in (0, 1)");
  }
  config.model_name = absl::GetFlag(FLAGS_served_model_name);
  if (config.model_name.empty()) {  // the directory's name, as the engine names the model
    const std::filesystem::path dir = std::filesystem::path(absl::GetFlag(FLAGS_model)).lexically_normal();
    config.model_name = (dir.has_filename() ? dir : dir.parent_path()).filename().string();
  }
  if (const std::string token_file = absl::GetFlag(FLAGS_auth_token_file); !token_file.empty()) {
    absl::StatusOr<TokenFile> tokens = ReadTokenFile(token_file);
    if (!tokens.ok()) return tokens.status();
    config.auth = *std::move(tokens);
  }
  return config;
}

// "HOST:PORT" with the port the server actually bound.
std::string BoundAddress(const std::string& listen, int port) {
  return absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
}

int Run() {
  absl::StatusOr<ServerConfig> config = ConfigFromFlags();
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) config = absl::InvalidArgumentError("--model DIR is required");
  if (!config.ok()) {
    spdlog::error("{} (try --help)", std::string(config.status().message()));
    return 1;
  }

  // Signals are taken by sigwait below; block them before gRPC and the loader start their threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);  // the loader's "load failed"
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A file size limit (RLIMIT_FSIZE) must fail the store write that hits it (EFBIG), not kill us.
  signal(SIGXFSZ, SIG_IGN);
  // libtorch's CPU tensors come from malloc, which by default hands large freed blocks back to the
  // kernel; the next step's tensors then fault in fresh zeroed pages. On the CPU that was most of a
  // long query's prefill time (4-10x; docs/isolation.md). Keep freed memory in the process.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeServerCredentials(
      {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_client_ca)});
  if (!credentials.ok()) {
    spdlog::error("{}", std::string(credentials.status().message()));
    return 1;
  }

  SqueezeserveService service(*config);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();  // v1alpha, for older tools
  std::vector<std::string> services = StandardServiceNames();
  services.insert(services.begin(), ::squeezeserve::v1::Squeezeserve::service_full_name());
  ReflectionV1Service reflection(services);
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, *credentials, &port);
  builder.RegisterService(&service);
  builder.RegisterService(&reflection);
  builder.experimental().SetInterceptorCreators(AccessLogInterceptors());
  builder.SetMaxReceiveMessageSize(static_cast<int>(config->limits.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config->limits.max_message_bytes));
  // Long streams: let clients keep the connection alive with pings.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    spdlog::error("could not listen on {}", listen);
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(::squeezeserve::v1::Squeezeserve::service_full_name(), false);
  health->SetServingStatus(false);
  // The metrics port comes up before the listening line, so a caller that waits for the gRPC line
  // finds both printed.
  std::unique_ptr<MetricsHttpServer> metrics_http;
  if (const std::string metrics_listen = absl::GetFlag(FLAGS_metrics_listen); !metrics_listen.empty()) {
    metrics_http = std::make_unique<MetricsHttpServer>([&service] { return service.metrics().Render(); },
                                                       [&service] { return service.serving(); });
    absl::StatusOr<std::string> bound = metrics_http->Start(metrics_listen);
    if (!bound.ok()) {
      spdlog::error("{}", std::string(bound.status().message()));
      server->Shutdown();
      return 1;
    }
    std::cout << "squeezeserve metrics on " << *bound << std::endl;
  }
  std::unique_ptr<OpenAiHttpServer> openai_http;
  if (const std::string openai_listen = absl::GetFlag(FLAGS_openai_listen); !openai_listen.empty()) {
    openai_http = std::make_unique<OpenAiHttpServer>(service.core(), absl::GetFlag(FLAGS_served_model_name));
    absl::StatusOr<std::string> bound = openai_http->Start(openai_listen);
    if (!bound.ok()) {
      spdlog::error("{}", std::string(bound.status().message()));
      server->Shutdown();
      return 1;
    }
    std::cout << "squeezeserve openai on " << *bound << std::endl;
  }
  std::cout << "squeezeserve listening on " << BoundAddress(listen, port) << std::endl;
  spdlog::info("security: {}{}{}", absl::GetFlag(FLAGS_tls_cert).empty() ? "plaintext" : "TLS",
               absl::GetFlag(FLAGS_tls_client_ca).empty() ? "" : " with client certificates (mTLS)",
               config->auth.tokens.empty() ? "" : absl::StrCat(", ", config->auth.tokens.size(), " bearer token(s)"));
  spdlog::info("listening on {}; loading model {} on {}", BoundAddress(listen, port), model_dir,
               absl::GetFlag(FLAGS_device));

  bool load_failed = false;
  std::thread loader([&] {
    EngineOptions options;
    options.model_dir = model_dir;
    options.device = absl::GetFlag(FLAGS_device);
    options.prefill_chunk_tokens = absl::GetFlag(FLAGS_prefill_chunk);
    options.num_threads = absl::GetFlag(FLAGS_threads);
    options.attention_backend = absl::GetFlag(FLAGS_attention_backend);
    options.prefill_kernel = absl::GetFlag(FLAGS_prefill_kernel);
    options.programmatic_launch = absl::GetFlag(FLAGS_programmatic_launch);
    options.shared_context_decode = absl::GetFlag(FLAGS_shared_context_decode);
    options.squeezed_bundles = absl::GetFlag(FLAGS_squeezed_bundles);
    options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
    options.skinny_gemm_min_rows = absl::GetFlag(FLAGS_skinny_gemm_min_rows);
    // Half the step budget, so a new short query fits in a step beside a long query's chunk.
    options.query_prefill_chunk_tokens = static_cast<int>(std::max<int64_t>(1, config->batch_prefill_tokens / 2));
    auto started = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
    if (!engine.ok()) {
      spdlog::error("loading the model failed: {}", std::string(engine.status().message()));
      load_failed = true;
      kill(getpid(), SIGUSR1);
      return;
    }
    const ModelInfo& model = (*engine)->model_info();
    spdlog::info("model {} loaded in {:.1f} s ({}, vocab {}, {} layers, {} on {})", model.name,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                 model.architecture, model.vocab_size, model.num_layers, model.dtype, model.device);
    service.SetEngine(*std::move(engine));
    health->SetServingStatus(true);
  });

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  loader.join();
  if (signal_number != SIGUSR1) spdlog::info("signal {}: draining", signal_number);

  // Drain: tell load balancers first, then refuse new work (UNAVAILABLE) and give running streams the
  // grace period while the port stays open, so health checks get NOT_SERVING rather than errors.
  health->Shutdown();
  service.BeginDrain();
  auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_grace_period_s));
  while (!service.idle() && std::chrono::system_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  server->Shutdown(deadline);
  server->Wait();
  if (openai_http != nullptr) openai_http->Stop();  // its running streams drained with the gRPC ones
  if (metrics_http != nullptr) metrics_http->Stop();
  for (const auto& [key, count] : service.counter().Snapshot()) {
    spdlog::info("status count: {} {} = {}", key.first, key.second, count);
  }
  spdlog::info("stopped");
  return load_failed ? 1 : 0;
}

}  // namespace
}  // namespace squeezeserve::server

int main(int argc, char** argv) {
  using squeezeserve::server::NativeLogCapture;
  constexpr char kUsage[] =
      "squeezeserve --model DIR [--listen HOST:PORT] [--device cpu|cuda] [flags]\n"
      "Serves squeezeserve.v1.Squeezeserve (Squeezed Attention over a stored long context), the gRPC "
      "health service (grpc.health.v1, open without credentials) and server reflection (v1 and v1alpha). "
      "Prints 'squeezeserve listening on HOST:PORT' on stdout once listening; logs go to stderr. "
      "SIGTERM/SIGINT drain and exit 0. See README.md and docs/operations.md.";
  if (squeezeserve::server::WantsHelp(argc, argv)) {
    std::cout << squeezeserve::server::FlagsHelp(kUsage, "server/main.cc");
    return 0;
  }
  absl::SetProgramUsageMessage(kUsage);
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<squeezeserve::server::LogFormat> format =
      squeezeserve::server::ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  const spdlog::level::level_enum level = spdlog::level::from_str(absl::GetFlag(FLAGS_log_level));
  if (!format.ok()) {
    std::cerr << "squeezeserve: " << format.status().message() << "\nTry --help.\n";
    return 1;
  }
  // Libraries' own stderr lines go through the logger from here on; the logger writes to the real stderr.
  absl::StatusOr<std::unique_ptr<NativeLogCapture>> capture = NativeLogCapture::Start();
  squeezeserve::server::ConfigureLogging(*format, level, capture.ok() ? (*capture)->original() : stderr);
  if (!capture.ok()) spdlog::warn("library output stays unformatted on stderr: {}", std::string(capture.status().message()));
  squeezeserve::server::RouteProtobufLogsToDebug();  // a client's malformed strings must not flood the log
  const int exit_code = squeezeserve::server::Run();
  spdlog::default_logger()->flush();
  if (capture.ok()) capture->reset();  // logs the library lines still in the pipe
  return exit_code;
}
