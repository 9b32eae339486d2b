#include "server/validation.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "engine/context_id.h"

namespace squeezeserve::server {
namespace {

// Debian's Abseil has its own absl::string_view; convert std::string_view explicitly.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status FieldError(std::string_view field, std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(AsAbsl(field), ": ", AsAbsl(problem)));
}

// A two-way enum field whose 0 (UNSPECIFIED) means the server's default: true for `on`, false for
// `off`; any other value is INVALID_ARGUMENT naming the field.
template <typename Enum>
absl::StatusOr<bool> OnOffField(Enum value, Enum on, Enum off, bool server_default, std::string_view field) {
  if (static_cast<int>(value) == 0) return server_default;
  if (value == on) return true;
  if (value == off) return false;
  return FieldError(field, absl::StrCat("unknown value ", static_cast<int>(value)));
}

// Written so that NaN fails every range check.
bool InOpenClosed(float x, float lo, float hi) { return x > lo && x <= hi; }
bool InOpen(float x, float lo, float hi) { return x > lo && x < hi; }

// Two sparsity levels are the same level when they agree to this tolerance (floats from clients).
constexpr float kSparsityTolerance = 1e-4f;

constexpr int kMaxObservationWindow = 1 << 16;
constexpr int kMaxIterations = 1000;
constexpr int kMaxIndexLevels = 4;
constexpr int kMaxSparsityLevels = 16;
constexpr int kMaxStopStrings = 16;
constexpr size_t kMaxStopBytes = 256;

}  // namespace

absl::Status ValidateContextId(std::string_view id, std::string_view field) {
  if (IsValidContextId(id)) return absl::OkStatus();
  std::string shown(id.substr(0, 64));
  return FieldError(field, absl::StrFormat("must be 1-128 characters of [A-Za-z0-9._-] not starting with '.', "
                                           "got \"%s\"%s",
                                           absl::CHexEscape(shown), id.size() > 64 ? "..." : ""));
}

absl::Status ValidateTokenIds(absl::Span<const int32_t> ids, int64_t vocab_size, std::string_view field,
                              int64_t first_index) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return FieldError(absl::StrCat(AsAbsl(field), "[", first_index + static_cast<int64_t>(i), "]"),
                        absl::StrCat("token id ", ids[i], " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<IndexOptions> ToEngineIndexOptions(const pb::IndexOptions& proto) {
  IndexOptions out;  // engine defaults
  if (proto.centroid_fraction() != 0) {
    if (!InOpenClosed(proto.centroid_fraction(), 0, 0.5f)) {
      return FieldError("index.centroid_fraction", absl::StrCat("must be in (0, 0.5], got ", proto.centroid_fraction()));
    }
    out.centroid_fraction = proto.centroid_fraction();
  }
  if (proto.observation_window() != 0) {
    if (proto.observation_window() > kMaxObservationWindow) {
      return FieldError("index.observation_window",
                        absl::StrCat("must be at most ", kMaxObservationWindow, ", got ", proto.observation_window()));
    }
    out.observation_window = static_cast<int>(proto.observation_window());
  }
  if (proto.max_iterations() != 0) {
    if (proto.max_iterations() > kMaxIterations) {
      return FieldError("index.max_iterations",
                        absl::StrCat("must be at most ", kMaxIterations, ", got ", proto.max_iterations()));
    }
    out.max_iterations = static_cast<int>(proto.max_iterations());
  }
  out.seed = proto.seed();
  if (proto.levels() != 0) {
    if (proto.levels() > kMaxIndexLevels) {
      return FieldError("index.levels", absl::StrCat("must be in [1, ", kMaxIndexLevels, "], got ", proto.levels()));
    }
    out.levels = static_cast<int>(proto.levels());
  }
  if (proto.coarse_centroid_fraction() != 0) {
    if (!InOpenClosed(proto.coarse_centroid_fraction(), 0, 0.5f)) {
      return FieldError("index.coarse_centroid_fraction",
                        absl::StrCat("must be in (0, 0.5], got ", proto.coarse_centroid_fraction()));
    }
    if (out.levels > 1 && proto.coarse_centroid_fraction() > out.centroid_fraction) {
      return FieldError("index.coarse_centroid_fraction",
                        absl::StrCat("must not exceed index.centroid_fraction (", out.centroid_fraction, "), got ",
                                     proto.coarse_centroid_fraction()));
    }
    out.coarse_centroid_fraction = proto.coarse_centroid_fraction();
  } else if (out.coarse_centroid_fraction > out.centroid_fraction) {
    // A small fine level with the coarse default left alone: keep the coarse level 5x coarser.
    out.coarse_centroid_fraction = out.centroid_fraction / 5;
  }
  if (proto.sparsity_levels_size() > 0) {
    if (proto.sparsity_levels_size() > kMaxSparsityLevels) {
      return FieldError("index.sparsity_levels", absl::StrCat("at most ", kMaxSparsityLevels, " levels, got ",
                                                              proto.sparsity_levels_size()));
    }
    std::vector<float> levels;
    for (int i = 0; i < proto.sparsity_levels_size(); ++i) {
      float level = proto.sparsity_levels(i);
      if (!InOpen(level, 0, 1)) {
        return FieldError(absl::StrCat("index.sparsity_levels[", i, "]"), absl::StrCat("must be in (0, 1), got ", level));
      }
      levels.push_back(level);
    }
    std::sort(levels.begin(), levels.end());
    for (size_t i = 1; i < levels.size(); ++i) {
      if (levels[i] - levels[i - 1] < kSparsityTolerance) {
        return FieldError("index.sparsity_levels", absl::StrCat("level ", levels[i], " is listed twice"));
      }
    }
    out.sparsity_levels = std::move(levels);
  }
  if (proto.head_floor_share() < 0) {
    out.head_floor_share = 0;  // no floor
  } else if (proto.head_floor_share() != 0) {
    if (!(proto.head_floor_share() <= 1)) {  // also rejects NaN
      return FieldError("index.head_floor_share",
                        absl::StrCat("must be in (0, 1] (or < 0 for no floor), got ", proto.head_floor_share()));
    }
    out.head_floor_share = proto.head_floor_share();
  }
  out.dense_only = proto.dense_only();
  return out;
}

absl::StatusOr<SamplingOptions> ToEngineSampling(const pb::SamplingParams& proto, const ServerLimits& limits) {
  SamplingOptions out;
  out.max_new_tokens = limits.default_max_new_tokens;
  if (proto.max_new_tokens() != 0) {
    if (proto.max_new_tokens() > static_cast<uint32_t>(limits.max_new_tokens)) {
      return FieldError("sampling.max_new_tokens",
                        absl::StrCat("must be at most ", limits.max_new_tokens, ", got ", proto.max_new_tokens()));
    }
    out.max_new_tokens = static_cast<int>(proto.max_new_tokens());
  }
  if (!(proto.temperature() >= 0) || std::isinf(proto.temperature())) {
    return FieldError("sampling.temperature", absl::StrCat("must be a finite value >= 0, got ", proto.temperature()));
  }
  out.temperature = proto.temperature();
  if (proto.top_p() != 0) {
    if (!InOpenClosed(proto.top_p(), 0, 1)) {
      return FieldError("sampling.top_p", absl::StrCat("must be in (0, 1], got ", proto.top_p()));
    }
    out.top_p = proto.top_p();
  }
  // top_k above the vocabulary keeps every token, like 0.
  out.top_k = static_cast<int>(std::min<uint32_t>(proto.top_k(), 1u << 30));
  out.seed = proto.seed();
  if (proto.stop_size() > kMaxStopStrings) {
    return FieldError("sampling.stop", absl::StrCat("at most ", kMaxStopStrings, " strings, got ", proto.stop_size()));
  }
  for (int i = 0; i < proto.stop_size(); ++i) {
    const std::string& stop = proto.stop(i);
    if (stop.empty() || stop.size() > kMaxStopBytes) {
      return FieldError(absl::StrCat("sampling.stop[", i, "]"),
                        absl::StrCat("must be 1-", kMaxStopBytes, " bytes, got ", stop.size()));
    }
    out.stop.push_back(stop);
  }
  out.ignore_eos = proto.ignore_eos();
  return out;
}

absl::Status ValidatePromptLength(int64_t num_tokens, const ServerLimits& limits) {
  if (num_tokens <= 0) return FieldError("prompt", "must not be empty");
  if (num_tokens > limits.max_query_tokens) {
    return FieldError("prompt", absl::StrCat("has ", num_tokens, " tokens, more than max_query_tokens (",
                                             limits.max_query_tokens, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<AttentionOptions> ResolveAttention(const pb::AttentionOptions& proto, const ContextSummary& context,
                                                  const ServerDefaults& defaults, std::string* note) {
  AttentionOptions out;
  out.hierarchical = proto.hierarchical();
  const float sparsity = proto.sparsity();
  if (sparsity != 0 && !InOpen(sparsity, 0, 1)) {
    return FieldError("attention.sparsity", absl::StrCat("must be in (0, 1), got ", sparsity));
  }

  switch (proto.mode()) {
    case pb::AttentionOptions::DENSE:
      out.mode = AttentionMode::kDense;
      break;
    case pb::AttentionOptions::SQUEEZED:
      if (!context.has_index) {
        return absl::FailedPreconditionError(
            absl::StrCat("attention.mode: context \"", context.id,
                         "\" has no Squeezed Attention index (ingested dense_only); ask for DENSE"));
      }
      out.mode = AttentionMode::kSqueezed;
      break;
    case pb::AttentionOptions::MODE_UNSPECIFIED:
      out.mode = context.has_index ? defaults.mode : AttentionMode::kDense;
      if (defaults.mode_auto && context.has_index) {
        const int64_t from = defaults.squeezed_min_context_tokens;
        const bool pays = from >= 0 && context.num_tokens >= from;
        out.mode = pays ? AttentionMode::kSqueezed : AttentionMode::kDense;
        if (!pays && note != nullptr) {
          *note = from < 0 ? "auto: dense, the Squeezed index does not pay for itself on this engine"
                           : absl::StrCat("auto: dense, the context's ", context.num_tokens,
                                          " tokens are below the ", from, " from which the index pays for itself here");
        }
      }
      break;
    default:
      return FieldError("attention.mode", absl::StrCat("unknown mode ", static_cast<int>(proto.mode())));
  }
  absl::StatusOr<bool> estimate_pruned =
      OnOffField(proto.pruned(), pb::AttentionOptions::ESTIMATED, pb::AttentionOptions::DROPPED,
                 defaults.estimate_pruned, "attention.pruned");
  if (!estimate_pruned.ok()) return estimate_pruned.status();
  out.estimate_pruned = *estimate_pruned;
  out.estimate_floor = *estimate_pruned ? defaults.estimate_floor : 0.f;
  absl::StatusOr<bool> read_ahead =
      OnOffField(proto.read_ahead(), pb::AttentionOptions::READ_AHEAD_ON, pb::AttentionOptions::READ_AHEAD_OFF,
                 defaults.read_ahead, "attention.read_ahead");
  if (!read_ahead.ok()) return read_ahead.status();
  out.read_ahead = *read_ahead;
  if (out.mode == AttentionMode::kDense) {
    out.sparsity = 0;
    out.hierarchical = false;
    out.estimate_pruned = false;
    out.estimate_floor = 0;
    out.read_ahead = false;
    return out;
  }

  // Squeezed: the sparsity must be a calibrated level of this context.
  if (context.sparsity_levels.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("attention.mode: context \"", context.id, "\" has an index without calibrated sparsity levels"));
  }
  const std::vector<SparsityLevelInfo>& levels = context.sparsity_levels;
  if (sparsity != 0) {
    auto match = std::find_if(levels.begin(), levels.end(), [&](const SparsityLevelInfo& level) {
      return std::fabs(level.sparsity - sparsity) < kSparsityTolerance;
    });
    if (match != levels.end()) {
      out.sparsity = match->sparsity;
    } else {
      std::string calibrated;
      for (const SparsityLevelInfo& level : levels) {
        absl::StrAppend(&calibrated, calibrated.empty() ? "" : ", ", level.sparsity);
      }
      return FieldError("attention.sparsity", absl::StrCat("must be one of the context's calibrated levels {",
                                                           calibrated, "}, got ", sparsity));
    }
  } else {
    // The calibrated level nearest to the server default.
    auto nearest = std::min_element(levels.begin(), levels.end(), [&](const auto& a, const auto& b) {
      return std::fabs(a.sparsity - defaults.sparsity) < std::fabs(b.sparsity - defaults.sparsity);
    });
    out.sparsity = nearest->sparsity;
  }
  // Which levels: asked for (lookup_levels, or hierarchical = true), else the server's rule.
  const pb::AttentionOptions::LookupLevels lookup = proto.lookup_levels();
  if (lookup != pb::AttentionOptions::LOOKUP_LEVELS_UNSPECIFIED && lookup != pb::AttentionOptions::ONE_LEVEL &&
      lookup != pb::AttentionOptions::TWO_LEVELS) {
    return FieldError("attention.lookup_levels", absl::StrCat("unknown value ", static_cast<int>(lookup)));
  }
  if (proto.hierarchical() && lookup == pb::AttentionOptions::ONE_LEVEL) {
    return FieldError("attention.lookup_levels", "ONE_LEVEL contradicts hierarchical = true");
  }
  const bool asked_two = proto.hierarchical() || lookup == pb::AttentionOptions::TWO_LEVELS;
  if (asked_two && context.index.levels < 2) {
    return FieldError(proto.hierarchical() ? "attention.hierarchical" : "attention.lookup_levels",
                      absl::StrCat("context \"", context.id, "\" has a flat (1-level) index"));
  }
  if (asked_two || lookup == pb::AttentionOptions::ONE_LEVEL) {
    out.hierarchical = asked_two;
  } else {
    const int64_t from = defaults.two_level_min_context_tokens;
    out.hierarchical = context.index.levels >= 2 && from >= 0 && context.num_tokens >= from;
  }
  return out;
}

}  // namespace squeezeserve::server
