// ContextSummary <-> JSON, for the manifest of a stored context (so a context on disk can be listed
// without loading its tensors). Plain C++.
#pragma once

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "engine/engine.h"

namespace squeezeserve {

nlohmann::json SummaryToJson(const ContextSummary& summary);
// DataLoss when fields are missing or of the wrong type.
absl::StatusOr<ContextSummary> SummaryFromJson(const nlohmann::json& json);

}  // namespace squeezeserve
