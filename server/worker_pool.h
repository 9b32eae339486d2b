// A fixed set of worker threads for model work (ingest, generation), so gRPC's callback threads never
// block on the model. Admission is all-or-nothing: a job is refused (not queued) when every worker is
// taken, which the RPC handlers answer with RESOURCE_EXHAUSTED.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace squeezeserve::server {

class WorkerPool {
 public:
  explicit WorkerPool(int num_workers);
  // Lets running and accepted jobs finish, then joins the workers.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs `job` on a worker; false (job dropped) when all workers are taken.
  bool TrySubmit(std::function<void()> job);
  int capacity() const { return static_cast<int>(threads_.size()); }
  int busy() const;

 private:
  void WorkerLoop();

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  int busy_ ABSL_GUARDED_BY(mu_) = 0;  // accepted and not yet finished
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace squeezeserve::server
