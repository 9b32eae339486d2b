#include "server/native_log_capture.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "server/logging.h"
#include "spdlog/spdlog.h"

namespace squeezeserve::server {
namespace {

// For the fatal-signal handler, which may use only async-signal-safe calls.
std::atomic<int> g_original_fd{-1};
std::atomic<int> g_read_fd{-1};
constexpr int kFatalSignals[] = {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL};

void OnFatalSignal(int signal_number) {
  const int original = g_original_fd.load();
  const int read_fd = g_read_fd.load();
  if (original >= 0 && read_fd >= 0) {
    dup2(original, STDERR_FILENO);  // whatever the dying process writes next goes out directly
    fcntl(read_fd, F_SETFL, O_NONBLOCK);
    char buffer[4096];
    ssize_t n;
    while ((n = read(read_fd, buffer, sizeof buffer)) > 0) {
      if (write(original, buffer, static_cast<size_t>(n)) < 0) break;
    }
  }
  raise(signal_number);  // SA_RESETHAND restored the default action
}

void LogLine(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return;
  const NativeLine parsed = ParseNativeLine(line);
  if (auto logger = spdlog::get(kNativeLogger)) logger->log(parsed.level, "{}", NativePayload(parsed));
}

}  // namespace

absl::StatusOr<std::unique_ptr<NativeLogCapture>> NativeLogCapture::Start() {
  if (g_original_fd.load() >= 0) return absl::FailedPreconditionError("stderr is already captured");
  const int original = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
  int pipe_fds[2];
  if (original < 0 || pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(std::string("capturing stderr: ") + std::strerror(errno));
  }
  if (dup2(pipe_fds[1], STDERR_FILENO) < 0) {
    return absl::InternalError(std::string("capturing stderr: ") + std::strerror(errno));
  }
  close(pipe_fds[1]);  // fd 2 is now the only write end: restoring it ends the reader
  std::unique_ptr<NativeLogCapture> capture(new NativeLogCapture(original, pipe_fds[0]));
  g_original_fd.store(original);
  g_read_fd.store(pipe_fds[0]);
  struct sigaction action = {};
  action.sa_handler = OnFatalSignal;
  action.sa_flags = SA_RESETHAND | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  for (int signal_number : kFatalSignals) sigaction(signal_number, &action, nullptr);
  return capture;
}

NativeLogCapture::NativeLogCapture(int original_fd, int read_fd)
    : original_fd_(original_fd), read_fd_(read_fd), original_(fdopen(original_fd, "w")) {
  setvbuf(original_, nullptr, _IOLBF, 0);
  // The reader never takes a process signal: it starts before main() blocks SIGTERM/SIGINT for its
  // sigwait, and a thread with them unblocked would die of a second SIGTERM sent during a drain.
  // Threads inherit the creator's mask, so block everything around the thread's creation.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  reader_ = std::thread([this] { ReadLines(); });
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

NativeLogCapture::~NativeLogCapture() {
  std::fflush(stderr);
  dup2(original_fd_, STDERR_FILENO);  // closes the pipe's last write end: the reader sees EOF
  reader_.join();
  struct sigaction action = {};
  action.sa_handler = SIG_DFL;
  for (int signal_number : kFatalSignals) sigaction(signal_number, &action, nullptr);
  g_read_fd.store(-1);
  g_original_fd.store(-1);
  close(read_fd_);
  // original_ (the original stderr) stays open: loggers may still write to it until the process ends.
}

void NativeLogCapture::ReadLines() {
  std::string pending;
  char buffer[4096];
  while (true) {
    const ssize_t n = read(read_fd_, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buffer, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t newline; (newline = pending.find('\n', start)) != std::string::npos; start = newline + 1) {
      LogLine(std::string_view(pending).substr(start, newline - start));
    }
    pending.erase(0, start);
  }
  LogLine(pending);  // a last line without a newline
}

}  // namespace squeezeserve::server
