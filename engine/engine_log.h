// Log lines of the engine, kept out of libtorch translation units: libtorch 2.x bundles its own fmt,
// which breaks spdlog's headers in any file that sees both.
#pragma once

#include <cstdint>

#include "engine/engine.h"

namespace squeezeserve {

void LogEngineLoaded(const ModelInfo& info, int64_t sliding_window);
// Which path runs the Squeezed lookup + attention of generate (EngineOptions::attention_backend).
void LogAttentionBackend(const std::string& chosen, const std::string& reason);

}  // namespace squeezeserve
