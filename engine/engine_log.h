// Log lines of the engine, kept out of libtorch translation units: libtorch 2.x bundles its own fmt,
// which breaks spdlog's headers in any file that sees both.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
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

// Where the host's time of a batched decode step goes (TorchEngine::StepBatch), beside the decode
// graph line's device and launch-to-launch times (decode_graphs.cc): per step the wall time of
// preparing its sequences, of the forward (on a GPU: planning, the graph's launch and the wait for
// it and for the greedy draws reduced behind it), of sampling the greedy rows (after a graph only
// reading its draws; else their kernels and the copy back), of emitting the tokens (other sampled
// rows and detokenizing), and the gap since the previous decode step ended (the scheduler, the
// streams' writes). One line per run of at least kMinSteps consecutive steps of one batch size,
// at most kMaxSteps a line:
//   "decode step host times: batch 8, 31 steps: gap 0.21 ms, prepare 0.05 ms, forward 26.90 ms,
//    sample 0.31 ms, emit 0.04 ms (medians), from 1796404422270 to 1796404422641 unix ms"
// (scripts/gpu/full_model_bench.py attaches them to its rows by time). Thread-safe.
class DecodeStepTimer {
 public:
  using Clock = std::chrono::steady_clock;
  // One step: when it started and when each phase ended.
  struct Step {
    Clock::time_point start, prepared, forwarded, sampled, emitted;
  };
  static constexpr size_t kMinSteps = 8, kMaxSteps = 256;

  // `log` receives each line (default: the engine's info log); `unix_ms` the wall clock.
  explicit DecodeStepTimer(std::function<void(const std::string&)> log = LogEngineInfo,
                           std::function<int64_t()> unix_ms = nullptr);
  ~DecodeStepTimer();
  DecodeStepTimer(const DecodeStepTimer&) = delete;
  DecodeStepTimer& operator=(const DecodeStepTimer&) = delete;

  // A decode step of `batch` sequences.
  void Add(int64_t batch, const Step& step);
  // A step that was not a decode step (a prefill chunk, a failed forward): the next decode step's
  // gap is not counted.
  void Skip();
  void Flush();

 private:
  void FlushLocked();
  std::function<void(const std::string&)> log_;
  std::function<int64_t()> unix_ms_;
  std::mutex mu_;
  int64_t batch_ = 0, first_unix_ms_ = 0, last_unix_ms_ = 0;
  std::optional<Clock::time_point> last_end_;
  std::vector<std::array<double, 5>> ms_;  // gap (NaN: none), prepare, forward, sample, emit
};

}  // namespace squeezeserve
