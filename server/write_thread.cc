#include "server/write_thread.h"

#include <utility>

namespace squeezeserve::server {

WriteThread::WriteThread() : thread_([this] { Loop(); }) {}

WriteThread::~WriteThread() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void WriteThread::Post(std::function<void()> start_write) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(start_write));
}

void WriteThread::Loop() {
  while (true) {
    std::function<void()> next;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WriteThread* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) { return t->stopping_ || !t->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // stopping, and everything posted has run
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    next();
  }
}

}  // namespace squeezeserve::server
