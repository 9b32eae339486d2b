// Where a Generate stream's tokens come from. The RPC handler hands a ready Generation and a sink to
// the scheduler and only ever talks to the sink side. Two implementations: BatchingScheduler
// (server/batching_scheduler.h, the default: continuous batching) and ThreadPerStreamScheduler below
// (each generation alone on a worker thread; --scheduler=thread_per_stream, kept for comparison).
#pragma once

#include <memory>

#include "absl/status/status.h"
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
  // One token; `stats` is the generation's running total. May block briefly for backpressure.
  virtual void OnToken(const TokenStep& step, const GenerationStats& stats) = 0;
  // OK after the step carrying the finish reason; otherwise the error (or CANCELLED). A generation
  // cancelled while it waited for a worker gets OnFinish(CANCELLED) without OnStart.
  virtual void OnFinish(const absl::Status& status) = 0;
};

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
  explicit ThreadPerStreamScheduler(WorkerPool* pool) : pool_(pool) {}
  absl::Status Submit(std::unique_ptr<Generation> generation, GenerationSink* sink) override;

 private:
  WorkerPool* pool_;
};

// Steps `generation` to its end into `sink` on the calling thread (the body of a worker job).
void RunGeneration(Generation& generation, GenerationSink& sink);

}  // namespace squeezeserve::server
