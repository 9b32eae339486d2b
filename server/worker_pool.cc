#include "server/worker_pool.h"

namespace squeezeserve::server {

WorkerPool::WorkerPool(int num_workers) {
  threads_.reserve(num_workers);
  for (int i = 0; i < num_workers; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

bool WorkerPool::TrySubmit(std::function<void()> job) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || busy_ >= capacity()) return false;
  ++busy_;
  jobs_.push_back(std::move(job));
  return true;
}

int WorkerPool::busy() const {
  absl::MutexLock lock(&mu_);
  return busy_;
}

void WorkerPool::WorkerLoop() {
  while (true) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WorkerPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
            return pool->stopping_ || !pool->jobs_.empty();
          },
          this));
      if (jobs_.empty()) return;  // stopping, and every accepted job has been taken
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
    absl::MutexLock lock(&mu_);
    --busy_;
  }
}

}  // namespace squeezeserve::server
