// The thread that starts the gRPC writes of streamed responses (OutboxReactor::Send), so that the
// threads producing the messages only queue them. Why: grpc's StartWrite performs the write on the
// calling thread, 60-130 us a message as measured on the batching loop, which delivers one message
// per stream between two decode steps: at batch 8 ~0.5 ms of every step with the GPU idle (the
// engine log's "gap"; docs/performance.md). A write posted here goes out one thread hop later,
// while the next step runs.
#pragma once

#include <deque>
#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"

namespace squeezeserve::server {

class WriteThread {
 public:
  WriteThread();
  // Runs what was posted, then joins. Nothing may post after the destructor begins.
  ~WriteThread();
  WriteThread(const WriteThread&) = delete;
  WriteThread& operator=(const WriteThread&) = delete;

  // Runs `start_write` on the thread, after everything posted before it.
  void Post(std::function<void()> start_write);

 private:
  void Loop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace squeezeserve::server
