// Routes what libraries print on the process's stderr (libtorch's glog or c10 messages, gRPC's own log,
// sentencepiece) into the "native" logger, so that a JSON log stays one object per line and every line
// has a level. fd 2 becomes a pipe; a thread reads it line by line and logs each line; the loggers write
// to the original stderr, which original() returns.
//
// A crash must not lose the library's last words (a fatal glog line, a CHECK failure): a fatal signal
// copies whatever is still in the pipe straight to the original stderr before the default action.
#pragma once

#include <cstdio>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"

namespace squeezeserve::server {

class NativeLogCapture {
 public:
  // At most one per process.
  static absl::StatusOr<std::unique_ptr<NativeLogCapture>> Start();
  // Restores fd 2 and logs what is left in the pipe.
  ~NativeLogCapture();

  // The original stderr, for the log sink.
  FILE* original() const { return original_; }

 private:
  NativeLogCapture(int original_fd, int read_fd);
  void ReadLines();

  const int original_fd_;
  const int read_fd_;
  FILE* original_ = nullptr;
  std::thread reader_;
};

}  // namespace squeezeserve::server
