// What every RPC handler shares: configuration, the engine (once loaded), the context store, the
// workers and the status counters. Owned by SqueezeserveService; handlers get a pointer.
#pragma once

#include <atomic>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "engine/context_store.h"
#include "engine/engine.h"
#include "server/auth.h"
#include "server/batching_scheduler.h"
#include "server/generation_scheduler.h"
#include "server/server_config.h"
#include "server/server_metrics.h"
#include "server/status_map.h"
#include "server/worker_pool.h"
#include "server/write_thread.h"

namespace squeezeserve::server {

struct ServiceCore {
  explicit ServiceCore(ServerConfig server_config)
      : config(std::move(server_config)),
        defaults(config.defaults),
        auth(config.auth.tokens),
        pool(std::make_unique<WorkerPool>(config.limits.max_concurrent_streams, config.limits.max_queued_requests)),
        scheduler(MakeScheduler()) {}

  // The pool's accepted jobs may wait on the batching loop: drain the pool before the scheduler goes.
  ~ServiceCore() {
    pool.reset();
    scheduler.reset();
  }

  // OK when RPCs may use the engine; UNAVAILABLE while the model loads or the server drains.
  absl::Status CheckServing() const {
    if (draining.load()) return absl::UnavailableError("the server is shutting down");
    if (engine.load() == nullptr) return absl::UnavailableError("the model is still loading; retry shortly");
    return absl::OkStatus();
  }

  // The gate every Squeezeserve RPC passes first: UNAUTHENTICATED without a valid token (checked
  // before anything about the server's state is revealed), PERMISSION_DENIED without `scope`, then
  // CheckServing. Returns who is calling (the default tenant with every scope when authentication is
  // off). `scope` 0: any valid token will do.
  absl::StatusOr<Principal> Admit(const grpc::CallbackServerContext& context, uint32_t scope = 0,
                                  std::string_view what = "") const {
    return AdmitPrincipal(auth.Check(context.client_metadata()), scope, what);
  }
  // The same gate for an HTTP request's Authorization header (the OpenAI-compatible endpoints).
  absl::StatusOr<Principal> AdmitAuthorization(std::string_view header, uint32_t scope = 0,
                                               std::string_view what = "") const {
    return AdmitPrincipal(auth.CheckAuthorization(header), scope, what);
  }
  absl::StatusOr<Principal> AdmitPrincipal(absl::StatusOr<Principal> principal, uint32_t scope,
                                           std::string_view what) const {
    if (!principal.ok()) return principal.status();
    if (scope != 0) {
      if (absl::Status allowed = principal->Require(static_cast<Scope>(scope), what); !allowed.ok()) return allowed;
    }
    if (absl::Status serving = CheckServing(); !serving.ok()) return serving;
    return principal;
  }

  // The quota of `tenant` (--auth_token_file "quota" lines); no caps when it has none.
  TenantLimits LimitsOf(const std::string& tenant) const {
    auto it = config.auth.quotas.find(tenant);
    if (it == config.auth.quotas.end()) return {};
    return TenantLimits{it->second.max_contexts, it->second.max_bytes};
  }

  // "loading", "serving" or "draining" (the model_load_state metric).
  const char* state() const {
    if (draining.load()) return "draining";
    return engine.load() == nullptr ? "loading" : "serving";
  }

  std::unique_ptr<GenerationScheduler> MakeScheduler() {
    if (config.scheduler == ServerConfig::Scheduler::kThreadPerStream) {
      return std::make_unique<ThreadPerStreamScheduler>(
          pool.get(), StallPolicy{config.max_stream_backlog, absl::Milliseconds(config.stream_stall_timeout_ms)});
    }
    BatchingOptions options;
    options.max_prefill_tokens_per_step = config.batch_prefill_tokens;
    options.max_backlog_messages = config.max_stream_backlog;
    options.stall_timeout = absl::Milliseconds(config.stream_stall_timeout_ms);
    options.on_step = [this](size_t streams) { metrics.RecordBatchSize(streams); };
    return std::make_unique<BatchingScheduler>(pool.get(), &engine, options);
  }

  const ServerConfig config;
  // What requests that leave a field unset get: config.defaults, with its "auto" values resolved
  // against the engine by SqueezeserveService::SetEngine before the engine is published (RPCs read
  // it only once they see the engine).
  ServerDefaults defaults;
  // Starts the streamed responses' writes (OutboxReactor::Send). Declared before the scheduler and
  // the pool, whose last messages it may still have to start: destroyed after them.
  WriteThread writer;
  StatusCounter counter;
  const TokenAuthenticator auth;
  ServerMetrics metrics;
  ContextStore store;
  std::unique_ptr<WorkerPool> pool;
  std::unique_ptr<GenerationScheduler> scheduler;
  std::atomic<Engine*> engine{nullptr};  // set once, when the model has loaded
  std::atomic<bool> draining{false};
};

}  // namespace squeezeserve::server
