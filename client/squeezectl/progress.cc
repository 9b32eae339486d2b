#include "client/squeezectl/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace squeezectl {

ProgressReporter::ProgressReporter() : tty_(isatty(STDERR_FILENO) == 1) {}

void ProgressReporter::Update(const squeezeserve::v1::IngestContextProgress& progress) {
  float fraction = std::clamp(progress.fraction(), 0.0f, 1.0f);
  if (tty_) {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(fraction * kWidth);
    std::fprintf(stderr, "\r[%-*s] %3d%% %-12s %llu/%llu tokens", kWidth, std::string(filled, '#').c_str(),
                 static_cast<int>(fraction * 100), progress.stage().c_str(),
                 static_cast<unsigned long long>(progress.tokens_done()),
                 static_cast<unsigned long long>(progress.tokens_total()));
    std::fflush(stderr);
    drawn_ = true;
    return;
  }
  int decile = static_cast<int>(fraction * 10);
  if (progress.stage() == last_stage_ && decile == last_decile_) return;
  last_stage_ = progress.stage();
  last_decile_ = decile;
  std::fprintf(stderr, "progress: stage=%s fraction=%.2f tokens=%llu/%llu\n", progress.stage().c_str(), fraction,
               static_cast<unsigned long long>(progress.tokens_done()),
               static_cast<unsigned long long>(progress.tokens_total()));
}

void ProgressReporter::Done() {
  if (tty_ && drawn_) std::fputc('\n', stderr);
  drawn_ = false;
}

}  // namespace squeezectl
