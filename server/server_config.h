// Limits and defaults of one server process, filled from command-line flags in main.cc and read by
// validation and the RPC handlers. Plain data, no gRPC or engine dependencies.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/tenants.h"

namespace squeezeserve::server {

struct ServerLimits {
  int64_t max_context_tokens = 1 << 20;
  int64_t max_query_tokens = 8192;
  int max_new_tokens = 4096;          // upper bound a request may ask for
  int default_max_new_tokens = 64;    // used when a request leaves max_new_tokens at 0
  int max_concurrent_streams = 16;    // ingest + generate work running at once
  int max_queued_requests = 64;       // Generate requests waiting for a worker beyond that
  int64_t max_message_bytes = 8 << 20;  // one gRPC message, either direction
  int64_t max_context_bytes = 64ll << 20;  // all text/token bytes of one IngestContext stream
};

struct ServerDefaults {
  // attention.mode unset: `mode`, or with mode_auto (--default_mode auto) squeezed where the
  // context has an index and at least squeezed_min_context_tokens tokens (ModelInfo: from there the
  // index pays for itself on this engine; -1 = never, e.g. the CPU), dense otherwise.
  AttentionMode mode = AttentionMode::kSqueezed;
  bool mode_auto = false;  // --default_mode auto (the flag's default) sets it
  int64_t squeezed_min_context_tokens = -1;
  float sparsity = 0.9f;
  bool estimate_pruned = true;  // attention.pruned unset: ESTIMATED (true) or DROPPED
  float estimate_floor = 0.0625f;  // every squeezed request's (AttentionOptions::estimate_floor; --estimate_floor)
  bool read_ahead = true;       // attention.read_ahead unset: ON (true) or OFF
  // attention.lookup_levels unset (and hierarchical false): two levels where the context's index
  // has them and the context holds at least this many tokens, else one (-1 = always one level;
  // --two_level_min_context_tokens).
  int64_t two_level_min_context_tokens = 262144;
};

struct ServerConfig {
  ServerLimits limits;
  ServerDefaults defaults;
  std::string version = "0.1.0";
  // The served model's name: the `model` label of every metric (--served_model_name).
  std::string model_name;
  // Context store directory; empty = contexts live in memory only and are lost on restart.
  std::string store_dir;
  // With store_dir: resident KV + index bytes at most (0 = no limit); see ContextStore.
  uint64_t max_resident_context_bytes = 0;
  uint64_t max_host_context_bytes = 0;
  // Bearer tokens a Squeezeserve RPC must present, their tenants and scopes, and tenant quotas
  // (--auth_token_file, server/tenants.h); no tokens = no authentication (one default tenant).
  TokenFile auth;
  // How Generate streams reach the engine (--scheduler): continuous batching, or one worker thread
  // per stream taking turns on the engine (kept for comparison).
  enum class Scheduler { kBatching, kThreadPerStream };
  Scheduler scheduler = Scheduler::kBatching;
  // Query-prefill tokens admitted into one step (--batch_prefill_tokens, resolved by device); the
  // engine prefills queries in chunks of half of it.
  int64_t batch_prefill_tokens = 32;
  // A Generate stream's output buffer: past this many messages the client is not taking, the stream
  // is paused (the batch goes on without it); paused longer than the stall timeout, it is cancelled
  // and its slot freed (--max_stream_backlog, --stream_stall_timeout_ms).
  int64_t max_stream_backlog = 64;
  int64_t stream_stall_timeout_ms = 20000;
  // Replicas sharing --store: how long a resident context is served before its store copy is checked
  // for a delete or replacement by another replica (--store_revalidate_ms; the staleness bound).
  int64_t store_revalidate_ms = 1000;
};

}  // namespace squeezeserve::server
