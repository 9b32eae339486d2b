#include "server/worker_pool.h"

#include <algorithm>
#include <utility>

namespace squeezeserve::server {

WorkerPool::WorkerPool(int num_workers, int max_queued) : max_queued_(std::max(max_queued, 0)) {
  threads_.reserve(num_workers);
  for (int i = 0; i < num_workers; ++i) threads_.emplace_back([this] { WorkerLoop(); });
  sweeper_ = std::thread([this] { SweeperLoop(); });
}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
  sweeper_.join();
}

int WorkerPool::WaitingLocked() const {
  // Pending jobs beyond the free workers are the ones that wait.
  int free_workers = capacity() - running_;
  return std::max(0, static_cast<int>(pending_.size()) - free_workers);
}

bool WorkerPool::TrySubmit(std::function<void()> job) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || running_ + static_cast<int>(pending_.size()) >= capacity()) return false;
  pending_.push_back(Pending{QueuedJob{std::move(job), {}, {}, 0}, next_sequence_++});
  return true;
}

bool WorkerPool::Enqueue(QueuedJob job) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || running_ + static_cast<int>(pending_.size()) >= capacity() + max_queued_) return false;
  pending_.push_back(Pending{std::move(job), next_sequence_++});
  return true;
}

int WorkerPool::busy() const {
  absl::MutexLock lock(&mu_);
  return running_ + static_cast<int>(pending_.size()) - WaitingLocked();
}

int WorkerPool::queued() const {
  absl::MutexLock lock(&mu_);
  return WaitingLocked();
}

void WorkerPool::WorkerLoop() {
  while (true) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WorkerPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
            return pool->stopping_ || !pool->pending_.empty();
          },
          this));
      if (pending_.empty()) return;  // stopping, and every accepted job has been taken
      // Highest priority first; the earliest arrival among equals (the list is in arrival order).
      auto best = pending_.begin();
      for (auto it = std::next(best); it != pending_.end(); ++it) {
        if (it->job.priority > best->job.priority) best = it;
      }
      job = std::move(best->job.run);
      pending_.erase(best);
      ++running_;
    }
    job();
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

void WorkerPool::SweeperLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), kSweepInterval);
    std::vector<std::function<void()>> withdrawn;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->job.abandoned && it->job.abandoned()) {
        if (it->job.withdrawn) withdrawn.push_back(std::move(it->job.withdrawn));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    if (withdrawn.empty()) continue;
    mu_.Unlock();  // the callbacks finish RPCs; never call out under the lock
    for (auto& callback : withdrawn) callback();
    mu_.Lock();
  }
}

}  // namespace squeezeserve::server
