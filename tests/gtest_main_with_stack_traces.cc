// GoogleTest main that prints a stack trace when a test crashes (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
// SIGABRT): the GPU machine has no debugger, so a crash there must explain itself in the log.
// glibc's backtrace() unwinds with the DWARF call-frame info, which works without frame pointers
// (absl's failure handler walks frame pointers and died mid-trace on the PyTorch 2.11 build). Each
// line is "binary(symbol+offset) [address]"; `addr2line -f -C -e binary offset` names static ones.
#include <execinfo.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace {

void PrintStackAndDie(int signal_number, siginfo_t* info, void* context) {
  // Only async-signal-safe calls here: write() and backtrace_symbols_fd() (no malloc).
  constexpr char kHeader[] = "\n*** fatal signal; stack trace:\n";
  (void)!write(STDERR_FILENO, kHeader, sizeof(kHeader) - 1);
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), STDERR_FILENO);
#if defined(__x86_64__)
  // A jump to a bad address (a dead function object, a freed vtable) leaves nothing to unwind
  // from; the faulting PC and the word at the stack pointer (the caller's return address, right
  // after a call) still name the culprit.
  const ucontext_t* uc = static_cast<const ucontext_t*>(context);
  void* where[2] = {reinterpret_cast<void*>(uc->uc_mcontext.gregs[REG_RIP]),
                    *reinterpret_cast<void* const*>(uc->uc_mcontext.gregs[REG_RSP])};
  constexpr char kWhere[] = "*** faulting PC, then the word at the stack pointer:\n";
  (void)!write(STDERR_FILENO, kWhere, sizeof(kWhere) - 1);
  backtrace_symbols_fd(where, 2, STDERR_FILENO);
#endif
  (void)info;
  signal(signal_number, SIG_DFL);
  raise(signal_number);
}

void InstallCrashStackTraces() {
  void* warm_up[1];
  backtrace(warm_up, 1);  // loads libgcc's unwinder now, not inside the handler
  static std::vector<char> alternate_stack(1 << 16);  // a stack overflow still gets its trace
  stack_t stack{};
  stack.ss_sp = alternate_stack.data();
  stack.ss_size = alternate_stack.size();
  sigaltstack(&stack, nullptr);
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_sigaction = PrintStackAndDie;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(s, &action, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  InstallCrashStackTraces();
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
