// Engine types (plain C++) <-> public proto messages. No validation here (see validation.h).
#pragma once

#include <string>

#include "engine/engine.h"
#include "server/server_config.h"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezeserve::server {

namespace pb = ::squeezeserve::v1;

pb::IndexOptions ToProto(const IndexOptions& index);
pb::ContextInfo ToProto(const ContextSummary& summary, const std::string& model_fingerprint);
pb::ModelInfo ToProto(const ModelInfo& model);
pb::FinishReason ToProto(FinishReason reason);
pb::AttentionOptions::Mode ToProto(AttentionMode mode);

pb::ServerInfo BuildServerInfo(const ModelInfo& model, const ServerConfig& config);

// Timings of one generation, measured by the server.
struct GenerationTimings {
  double queue_ms = 0;                 // arrival -> worker starts
  double time_to_first_token_ms = 0;   // arrival -> first token
  double time_per_output_token_ms = 0; // mean after the first token
};

pb::Usage ToUsage(const GenerationStats& stats, const GenerationTimings& timings);
// `resolution_note`: why the server's default mode chose the mode (ResolveAttention), or empty;
// joined with the engine's note (GenerationStats::attention_note) into AttentionStats.note.
pb::AttentionStats ToAttentionStats(const GenerationStats& stats, const AttentionOptions& attention,
                                    const std::string& resolution_note = "");

}  // namespace squeezeserve::server
