#include "engine/engine_log.h"

#include <spdlog/spdlog.h>

namespace squeezeserve {

void LogEngineLoaded(const ModelInfo& info, int64_t sliding_window) {
  spdlog::info("engine: loaded {} ({}, {} layers, {} q / {} kv heads, head_dim {}) on {} as {}", info.name,
               info.architecture, info.num_layers, info.num_attention_heads, info.num_kv_heads, info.head_dim,
               info.device, info.dtype);
  if (sliding_window > 0) {
    spdlog::warn("engine: sliding_window={} is not applied; sequences longer than it differ from the reference",
                 sliding_window);
  }
}

void LogAttentionBackend(const std::string& chosen, const std::string& reason) {
  spdlog::info("engine: squeezed attention on {} ({})", chosen, reason);
}

}  // namespace squeezeserve
