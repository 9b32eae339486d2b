#include "engine/engine_log.h"

#include <spdlog/spdlog.h>

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

}  // namespace squeezeserve
