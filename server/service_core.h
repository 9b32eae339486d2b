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

namespace squeezeserve::server {

struct ServiceCore {
  explicit ServiceCore(ServerConfig server_config)
      : config(std::move(server_config)),
        defaults(config.defaults),
        auth(config.auth_tokens),
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
  // before anything about the server's state is revealed), then CheckServing.
  absl::Status Admit(const grpc::CallbackServerContext& context) const {
    if (absl::Status authenticated = auth.Check(context.client_metadata()); !authenticated.ok()) {
      return authenticated;
    }
    return CheckServing();
  }

  // "loading", "serving" or "draining" (the model_load_state metric).
  const char* state() const {
    if (draining.load()) return "draining";
    return engine.load() == nullptr ? "loading" : "serving";
  }

  std::unique_ptr<GenerationScheduler> MakeScheduler() {
    if (config.scheduler == ServerConfig::Scheduler::kThreadPerStream) {
      return std::make_unique<ThreadPerStreamScheduler>(pool.get());
    }
    return std::make_unique<BatchingScheduler>(
        pool.get(), &engine,
        BatchingOptions{config.batch_prefill_tokens, [this](size_t streams) { metrics.RecordBatchSize(streams); }});
  }

  const ServerConfig config;
  // What requests that leave a field unset get: config.defaults, with its "auto" values resolved
  // against the engine by SqueezeserveService::SetEngine before the engine is published (RPCs read
  // it only once they see the engine).
  ServerDefaults defaults;
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
