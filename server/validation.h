// Request validation: proto request fields -> engine options, or INVALID_ARGUMENT / FAILED_PRECONDITION
// with a message that names the offending field ("sampling.top_p: must be in (0, 1], got 1.5").
// Pure functions of their arguments (no engine, no gRPC calls), so they are unit-tested directly.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/engine.h"
#include "server/server_config.h"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezeserve::server {

namespace pb = ::squeezeserve::v1;

// A client-chosen context id: 1-128 characters of [A-Za-z0-9._-], not starting with '.'.
absl::Status ValidateContextId(std::string_view id, std::string_view field);

// Every id in [0, vocab_size). `field` names the list, e.g. "tokens.ids"; the message names the index.
// `first_index` offsets the reported index (ids arriving in chunks).
absl::Status ValidateTokenIds(absl::Span<const int32_t> ids, int64_t vocab_size, std::string_view field,
                              int64_t first_index = 0);

// Index options of an ingest; zero fields take the engine defaults. Sparsity levels come back sorted.
absl::StatusOr<IndexOptions> ToEngineIndexOptions(const pb::IndexOptions& proto);

// Sampling options of a generation; 0 = server default for max_new_tokens, 0 = 1 for top_p.
absl::StatusOr<SamplingOptions> ToEngineSampling(const pb::SamplingParams& proto, const ServerLimits& limits);

// The query token count against the limits (empty or too long -> INVALID_ARGUMENT on "prompt").
absl::Status ValidatePromptLength(int64_t num_tokens, const ServerLimits& limits);

// Attention mode and sparsity for a request against one context:
// - MODE_UNSPECIFIED takes the server default; a squeezed default falls back to dense for a context
//   without an index, while an explicit SQUEEZED there is FAILED_PRECONDITION.
// - sparsity 0 takes the calibrated level nearest to the server default; an explicit sparsity must be
//   one of the context's calibrated levels.
// `note` (nullable) receives why the default mode chose what it chose when that was not the
// request's own choice (auto mode), for AttentionStats.note.
absl::StatusOr<AttentionOptions> ResolveAttention(const pb::AttentionOptions& proto, const ContextSummary& context,
                                                  const ServerDefaults& defaults, std::string* note = nullptr);

}  // namespace squeezeserve::server
