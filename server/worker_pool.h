// A fixed set of worker threads for model work (ingest, generation), so gRPC's callback threads never
// block on the model, with a bounded wait queue in front of it (admission control):
// - TrySubmit runs a job only when a worker is free and nobody waits (ingest: refused otherwise).
// - Enqueue runs a job when a worker is free, else parks it in the wait queue (highest priority
//   first, FIFO among equals) while fewer than `max_queued` wait; beyond that it is refused, which
//   the RPC handlers answer with RESOURCE_EXHAUSTED and a retry hint.
// A waiting job whose client has gone (cancelled, or its deadline passed: gRPC cancels the call) is
// withdrawn by a sweeper within kSweepInterval, so it frees its queue slot without waiting for a worker.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace squeezeserve::server {

struct QueuedJob {
  std::function<void()> run;
  // Polled while the job waits; true = withdraw it. May be empty (never withdrawn).
  std::function<bool()> abandoned;
  // Called instead of `run` when the job was withdrawn; on the sweeper thread, outside the pool's lock.
  std::function<void()> withdrawn;
  int priority = 0;  // higher runs first
};

class WorkerPool {
 public:
  // How often the sweeper looks for abandoned waiting jobs.
  static constexpr absl::Duration kSweepInterval = absl::Milliseconds(20);

  explicit WorkerPool(int num_workers, int max_queued = 0);
  // Lets running and accepted jobs (waiting ones included) finish, then joins the workers.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs `job` on a worker; false (job dropped) when no worker is free or jobs are waiting.
  bool TrySubmit(std::function<void()> job);
  // Runs or queues `job`; false (job dropped, no callback called) when the wait queue is full.
  bool Enqueue(QueuedJob job);

  int capacity() const { return static_cast<int>(threads_.size()); }
  int max_queued() const { return max_queued_; }
  // Jobs on a worker or about to be taken by a free one.
  int busy() const;
  // Jobs that wait for a worker (the queue depth).
  int queued() const;

 private:
  struct Pending {
    QueuedJob job;
    uint64_t sequence;  // arrival order, FIFO among equal priorities
  };
  void WorkerLoop();
  void SweeperLoop();
  int WaitingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_queued_;
  mutable absl::Mutex mu_;
  std::list<Pending> pending_ ABSL_GUARDED_BY(mu_);  // accepted, not yet taken by a worker
  int running_ ABSL_GUARDED_BY(mu_) = 0;              // taken by a worker, not finished
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  std::thread sweeper_;
};

}  // namespace squeezeserve::server
