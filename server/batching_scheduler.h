// Continuous batching (docs/operations.md "Generation scheduling", docs/isolation.md): one loop thread steps every running
// generation together, one Engine::StepBatch per step, instead of one worker thread per stream
// taking turns on the engine's forward lock.
//
// Admission reuses the WorkerPool: a stream holds one pool slot from the moment it joins the batch
// until it leaves it, so max_concurrent_streams bounds the batch size, ingest competes for the same
// slots, and the pool's wait queue (priority, then FIFO; withdrawn on cancel/deadline) is the only
// queue. The slot's worker thread only waits (it does no model work).
//
// Each step of the loop:
//   1. takes in the streams that joined since the last step (OnStart);
//   2. ends the cancelled ones (client cancel or deadline: gRPC cancels the call), freeing their KV
//      and slot, so a cancellation takes effect within one step;
//   3. pauses the streams whose client stopped reading (their output buffer holds max_backlog
//      messages): they sit out the step while the others go on, and one paused longer than the stall
//      timeout is ended (StalledStatus) with its KV and slot freed. OnToken never blocks the loop;
//   4. picks the batch: every stream already decoding (one token each) plus query prefill chunks,
//      highest priority first then join order: the first always runs, later ones while their tokens
//      fit in max_prefill_tokens_per_step (a short query is not held behind a long one). A long
//      query runs in chunks (EngineOptions::query_prefill_chunk_tokens, set by the server), one per
//      step, interleaved with the decode steps of the others, as vLLM's chunked prefill: a long
//      prompt delays the running streams' tokens by one chunk's work per step, never by its whole
//      prefill;
//   5. runs it as one StepBatch and delivers each stream's TokenStep; finished or failed streams
//      leave the batch (generation freed, then the slot).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/generation_scheduler.h"
#include "server/worker_pool.h"

namespace squeezeserve::server {

struct BatchingOptions {
  // Query-prefill tokens admitted into one step (beyond the first prefill chunk, which always runs).
  int64_t max_prefill_tokens_per_step = 512;
  // Called with the number of streams of every step (the batch-size metric); may be empty.
  std::function<void(size_t)> on_step;
  // A stream's output buffer bound and how long it may stay full (GenerationSink::backlog).
  int64_t max_backlog_messages = 64;
  absl::Duration stall_timeout = absl::Seconds(20);
};

class BatchingScheduler : public GenerationScheduler {
 public:
  // `engine` is read when the first generation arrives (generations exist only once it is set).
  BatchingScheduler(WorkerPool* pool, const std::atomic<Engine*>* engine, BatchingOptions options);
  // Destroy the pool first (its accepted jobs wait for this loop); then this joins the loop.
  ~BatchingScheduler() override;
  BatchingScheduler(const BatchingScheduler&) = delete;
  BatchingScheduler& operator=(const BatchingScheduler&) = delete;

  absl::Status Submit(std::unique_ptr<Generation> generation, GenerationSink* sink) override;

 private:
  struct Stream {
    std::unique_ptr<Generation> generation;
    GenerationSink* sink = nullptr;
    absl::Notification* left = nullptr;  // notified when the stream has left the batch (frees the slot)
    uint64_t sequence = 0;               // join order
    bool prefilled = false;
    absl::Time paused_since = absl::InfiniteFuture();  // when its output buffer filled up
  };

  // Body of the stream's pool job: hands it to the loop and waits until it has left.
  void Join(std::unique_ptr<Generation> generation, GenerationSink* sink);
  void Loop();
  // One step over running_ (loop thread); false when no stream could step (all paused).
  bool Step();
  // Ends a stream: OnFinish(status), frees its generation, then its pool slot.
  static void Leave(Stream& stream, const absl::Status& status);

  WorkerPool* const pool_;
  const std::atomic<Engine*>* const engine_;
  const BatchingOptions options_;

  absl::Mutex mu_;
  std::deque<Stream> joining_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::vector<Stream> running_;  // loop thread only
  std::thread loop_;
};

}  // namespace squeezeserve::server
