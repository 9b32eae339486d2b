// Where a Generate stream's tokens come from. The RPC handler hands a ready Generation and a sink to
// the scheduler and only ever talks to the sink side. Two implementations: BatchingScheduler
// (server/batching_scheduler.h, the default: continuous batching) and ThreadPerStreamScheduler below
// (each generation alone on a worker thread; --scheduler=thread_per_stream, kept for comparison).
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/worker_pool.h"

namespace squeezeserve::server {

// Receives one generation's output, on a scheduler thread. Calls arrive in order: OnStart, OnToken...,
// then exactly one OnFinish, after which the scheduler never touches the sink again.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // Polled between steps: true once the client cancelled or its deadline passed.
  virtual bool cancelled() const = 0;
  // Work on this generation begins (ends its queue time).
  virtual void OnStart() = 0;
  // Among waiting generations, higher priorities start first (GenerateRequest.priority).
  virtual int priority() const { return 0; }
  // One token; `stats` is the generation's running total. Never blocks: the message joins the
  // stream's output buffer.
  virtual void OnToken(const TokenStep& step, const GenerationStats& stats) = 0;
  // Messages in the output buffer the client has not taken yet. A scheduler stops stepping a stream
  // whose backlog reached StallPolicy::max_backlog (its client stopped reading) until it drains.
  virtual size_t backlog() const { return 0; }
  // Blocks while backlog() >= `bound` (up to `timeout`; false then), for a scheduler that owns a
  // thread per stream.
  virtual bool WaitForBacklogBelow(size_t /*bound*/, absl::Duration /*timeout*/) { return true; }
  // OK after the step carrying the finish reason; otherwise the error (or CANCELLED). A generation
  // cancelled while it waited for a worker gets OnFinish(CANCELLED) without OnStart. A stream whose
  // client stopped reading gets StalledStatus (its buffered messages can never be delivered: the sink
  // should cancel the call).
  virtual void OnFinish(const absl::Status& status) = 0;
};

// How long a client may leave its stream's output unread.
struct StallPolicy {
  int64_t max_backlog = 64;  // messages buffered for one stream before it is paused
  absl::Duration timeout = absl::Seconds(20);  // paused this long: the stream is ended, its slot freed
};

// The status a stream ends with when its client took nothing for `policy.timeout`; IsStalled tells it
// from other errors (RESOURCE_EXHAUSTED: the server's output buffer for the stream was full).
absl::Status StalledStatus(const StallPolicy& policy);
bool IsStalled(const absl::Status& status);

class GenerationScheduler {
 public:
  virtual ~GenerationScheduler() = default;
  // RESOURCE_EXHAUSTED when at capacity and the wait queue is full (the sink is then never called);
  // otherwise the sink receives the output asynchronously.
  virtual absl::Status Submit(std::unique_ptr<Generation> generation, GenerationSink* sink) = 0;
};

// One worker per generation (waiting in the pool's queue when all are busy), stepping Generation::Next until it finishes or the sink is cancelled.
class ThreadPerStreamScheduler : public GenerationScheduler {
 public:
  ThreadPerStreamScheduler(WorkerPool* pool, StallPolicy stall) : pool_(pool), stall_(stall) {}
  absl::Status Submit(std::unique_ptr<Generation> generation, GenerationSink* sink) override;

 private:
  WorkerPool* pool_;
  StallPolicy stall_;
};

// Steps `generation` to its end into `sink` on the calling thread (the body of a worker job); waits
// while the sink's backlog is full, and ends the stream with StalledStatus past the stall timeout.
void RunGeneration(Generation& generation, GenerationSink& sink, const StallPolicy& stall);

}  // namespace squeezeserve::server
