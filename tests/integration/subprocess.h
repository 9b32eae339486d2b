// Child processes for the integration tests: the server (kept running, its listening line parsed) and
// one-shot commands (squeezectl) with captured output and exit code.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace squeezeserve::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out;
  std::string err;
};

// Runs argv[0] with the arguments, `input` on stdin; waits for it.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& input = "");

class ServerProcess {
 public:
  ~ServerProcess();
  // Starts the binary and waits (up to timeout_s) for "squeezeserve listening on HOST:PORT" on its
  // stdout; returns HOST:PORT or nullopt. stderr is inherited (the server's logs land in the test log).
  std::optional<std::string> Start(const std::vector<std::string>& argv, int timeout_s);
  // SIGTERM, then waits up to timeout_s; the exit code, or -1 (killed by a signal or timed out).
  int Stop(int timeout_s);
  // SIGKILL, as a crash would; waits for the process to be gone.
  void Kill();
  // Sends `signal_number` and returns at once (Stop or Kill reap the process later).
  void Signal(int signal_number);
  // Everything the server printed on stdout up to its listening line (e.g. the metrics line).
  const std::string& startup_output() const { return startup_output_; }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string startup_output_;
};

}  // namespace squeezeserve::testing
