#include "engine/engine_log.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace squeezeserve {

void LogEngineLoaded(const ModelInfo& info, int64_t sliding_window) {
  spdlog::info("engine: loaded {} ({}, {} layers, {} q / {} kv heads, head_dim {}) on {} as {}", info.name,
               info.architecture, info.num_layers, info.num_attention_heads, info.num_kv_heads, info.head_dim,
               info.device, info.dtype);
  if (info.has_tokenizer) {
    spdlog::info("engine: tokenizer from {}{}", info.tokenizer_source,
                 info.chat.chat_template.empty() ? " (no chat template)" : ", with a chat template");
  } else {
    spdlog::warn("engine: {} has neither tokenizer.json nor tokenizer.model: requests must send token ids "
                 "(text, chat and the OpenAI endpoints answer FAILED_PRECONDITION)", info.name);
  }
  if (sliding_window > 0) {
    spdlog::warn("engine: sliding-window attention is not implemented: sequences are limited to the window "
                 "({} tokens), where it equals full attention",
                 sliding_window);
  }
}

void LogAttentionBackend(const std::string& chosen, const std::string& reason) {
  spdlog::info("engine: squeezed attention on {} ({})", chosen, reason);
}

void LogEngineInfo(const std::string& message) { spdlog::info("engine: {}", message); }

void LogEngineWarning(const std::string& message) { spdlog::warn("engine: {}", message); }

void IngestStageTimer::CloseCurrent(Clock::time_point now) {
  if (current_.empty()) return;
  const double seconds = std::chrono::duration<double>(now - stage_started_).count();
  for (auto& [stage, total] : seconds_) {
    if (stage == current_) {
      total += seconds;
      return;
    }
  }
  seconds_.emplace_back(current_, seconds);
}

void IngestStageTimer::Enter(const std::string& stage) {
  if (stage == current_) return;
  const Clock::time_point now = Clock::now();
  CloseCurrent(now);
  current_ = stage;
  stage_started_ = now;
}

void IngestStageTimer::LogDone(const std::string& context_id, int64_t tokens, int64_t peak_device_bytes) {
  const Clock::time_point now = Clock::now();
  CloseCurrent(now);
  current_.clear();
  std::string stages;
  for (const auto& [stage, seconds] : seconds_) {
    stages += absl::StrFormat("%s%s %.2f s", stages.empty() ? "" : ", ", stage, seconds);
  }
  if (peak_device_bytes >= 0) {
    stages += absl::StrFormat("; peak device memory %.2f GB", static_cast<double>(peak_device_bytes) / 1e9);
  }
  spdlog::info("ingest {}: {} tokens in {:.2f} s: {}", context_id, tokens,
               std::chrono::duration<double>(now - started_).count(), stages);
}

namespace {

int64_t SystemUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double Ms(DecodeStepTimer::Clock::time_point from, DecodeStepTimer::Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Median of the non-NaN values; NaN when there are none.
double Median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::isnan(x); }), v.end());
  if (v.empty()) return std::nan("");
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

}  // namespace

DecodeStepTimer::DecodeStepTimer(std::function<void(const std::string&)> log, std::function<int64_t()> unix_ms)
    : log_(std::move(log)), unix_ms_(unix_ms ? std::move(unix_ms) : SystemUnixMs) {}

DecodeStepTimer::~DecodeStepTimer() { Flush(); }

void DecodeStepTimer::Add(int64_t batch, const Step& step) {
  const std::lock_guard<std::mutex> lock(mu_);
  if (batch != batch_ || ms_.size() >= kMaxSteps) {
    FlushLocked();
    batch_ = batch;
  }
  const double gap = last_end_ ? Ms(*last_end_, step.start) : std::nan("");  // none after a flush or Skip
  ms_.push_back({gap, Ms(step.start, step.prepared), Ms(step.prepared, step.forwarded),
                 Ms(step.forwarded, step.sampled), Ms(step.sampled, step.emitted)});
  last_end_ = step.emitted;
  last_unix_ms_ = unix_ms_();
  if (ms_.size() == 1) first_unix_ms_ = last_unix_ms_;
}

void DecodeStepTimer::Skip() {
  const std::lock_guard<std::mutex> lock(mu_);
  last_end_.reset();
}

void DecodeStepTimer::Flush() {
  const std::lock_guard<std::mutex> lock(mu_);
  FlushLocked();
}

void DecodeStepTimer::FlushLocked() {
  if (ms_.size() >= kMinSteps) {
    std::array<double, 5> median;
    for (size_t k = 0; k < median.size(); ++k) {
      std::vector<double> column;
      for (const auto& row : ms_) column.push_back(row[k]);
      median[k] = Median(std::move(column));
    }
    log_(absl::StrFormat("decode step host times: batch %d, %d steps: gap %.3f ms, prepare %.3f ms, forward %.3f ms, "
                         "sample %.3f ms, emit %.3f ms (medians), from %d to %d unix ms",
                         batch_, ms_.size(), median[0], median[1], median[2], median[3], median[4], first_unix_ms_,
                         last_unix_ms_));
  }
  ms_.clear();
  last_end_.reset();
}

}  // namespace squeezeserve
