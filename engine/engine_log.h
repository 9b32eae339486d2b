// Log lines of the engine, kept out of libtorch translation units: libtorch 2.x bundles its own fmt,
// which breaks spdlog's headers in any file that sees both.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace squeezeserve {

void LogEngineLoaded(const ModelInfo& info, int64_t sliding_window);
// Which path runs the Squeezed lookup + attention of generate (EngineOptions::attention_backend).
void LogAttentionBackend(const std::string& chosen, const std::string& reason);
// One-off engine facts and warnings (the fused attention kernel chosen, a generation that left
// the fast path, a CUDA graph that could not be captured).
void LogEngineInfo(const std::string& message);
void LogEngineWarning(const std::string& message);

// Wall time of each ingest stage, taken from the progress callbacks, logged once the ingest is done
// ("ingest ctx: 65536 tokens in 66.4 s: prefill 9.1 s, clustering 51.0 s, calibrating 6.3 s"). Timed on
// the host: GPU work queued at the end of one stage and finished in the next counts in the next.
class IngestStageTimer {
 public:
  void Enter(const std::string& stage);
  // peak_device_bytes < 0: unknown (not logged).
  void LogDone(const std::string& context_id, int64_t tokens, int64_t peak_device_bytes = -1);

 private:
  using Clock = std::chrono::steady_clock;
  void CloseCurrent(Clock::time_point now);
  std::vector<std::pair<std::string, double>> seconds_;  // in stage order
  std::string current_;
  Clock::time_point started_ = Clock::now();
  Clock::time_point stage_started_ = started_;
};

}  // namespace squeezeserve
