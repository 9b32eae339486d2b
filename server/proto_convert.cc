#include "server/proto_convert.h"

namespace squeezeserve::server {

pb::IndexOptions ToProto(const IndexOptions& index) {
  pb::IndexOptions out;
  out.set_centroid_fraction(index.centroid_fraction);
  out.set_observation_window(static_cast<uint32_t>(index.observation_window));
  out.set_max_iterations(static_cast<uint32_t>(index.max_iterations));
  out.set_seed(index.seed);
  out.set_levels(static_cast<uint32_t>(index.levels));
  out.set_coarse_centroid_fraction(index.coarse_centroid_fraction);
  out.set_head_floor_share(index.head_floor_share > 0 ? index.head_floor_share : -1.0f);  // -1: no floor
  for (float level : index.sparsity_levels) out.add_sparsity_levels(level);
  out.set_dense_only(index.dense_only);
  return out;
}

pb::ContextInfo ToProto(const ContextSummary& summary, const std::string& model_fingerprint) {
  pb::ContextInfo out;
  out.set_context_id(summary.id);
  out.set_num_tokens(static_cast<uint64_t>(summary.num_tokens));
  out.set_model_fingerprint(model_fingerprint);
  *out.mutable_index() = ToProto(summary.index);
  for (const SparsityLevelInfo& level : summary.sparsity_levels) {
    pb::SparsityLevel* proto_level = out.add_sparsity_levels();
    proto_level->set_sparsity(level.sparsity);
    for (float threshold : level.thresholds) proto_level->add_thresholds(threshold);
    proto_level->set_kept_fraction(level.kept_fraction);
    for (float threshold : level.decode_thresholds) proto_level->add_decode_thresholds(threshold);
    proto_level->set_decode_kept_fraction(level.decode_kept_fraction);
  }
  out.set_kv_bytes(summary.kv_bytes);
  out.set_index_bytes(summary.index_bytes);
  out.set_tier(summary.tier);
  out.set_created_unix_ms(summary.created_unix_ms);
  for (int64_t count : summary.centroids_per_level) out.add_centroids_per_level(static_cast<uint64_t>(count));
  out.set_indexed(summary.has_index);
  return out;
}

pb::ModelInfo ToProto(const ModelInfo& model) {
  pb::ModelInfo out;
  out.set_name(model.name);
  out.set_architecture(model.architecture);
  out.set_fingerprint(model.fingerprint);
  out.set_vocab_size(static_cast<uint32_t>(model.vocab_size));
  out.set_num_layers(static_cast<uint32_t>(model.num_layers));
  out.set_num_attention_heads(static_cast<uint32_t>(model.num_attention_heads));
  out.set_num_kv_heads(static_cast<uint32_t>(model.num_kv_heads));
  out.set_head_dim(static_cast<uint32_t>(model.head_dim));
  out.set_hidden_size(static_cast<uint32_t>(model.hidden_size));
  out.set_max_position_embeddings(static_cast<uint64_t>(model.max_position_embeddings));
  out.set_has_tokenizer(model.has_tokenizer);
  out.set_bos_token_id(model.bos_token_id);
  out.set_eos_token_id(model.eos_token_id);
  out.set_tokenizer(model.tokenizer_source);
  out.set_has_chat_template(!model.chat.chat_template.empty());
  return out;
}

pb::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return pb::STOP;
    case FinishReason::kLength: return pb::LENGTH;
    case FinishReason::kEos: return pb::EOS;
    case FinishReason::kCancelled: return pb::CANCELLED;
    case FinishReason::kNone: break;
  }
  return pb::FINISH_REASON_UNSPECIFIED;
}

pb::AttentionOptions::Mode ToProto(AttentionMode mode) {
  return mode == AttentionMode::kDense ? pb::AttentionOptions::DENSE : pb::AttentionOptions::SQUEEZED;
}

pb::ServerInfo BuildServerInfo(const ModelInfo& model, const ServerConfig& config) {
  pb::ServerInfo out;
  out.set_version(config.version);
  *out.mutable_model() = ToProto(model);
  out.set_device(model.device);
  out.set_dtype(model.dtype);
  pb::Limits* limits = out.mutable_limits();
  limits->set_max_context_tokens(static_cast<uint64_t>(config.limits.max_context_tokens));
  limits->set_max_query_tokens(static_cast<uint32_t>(config.limits.max_query_tokens));
  limits->set_max_new_tokens(static_cast<uint32_t>(config.limits.max_new_tokens));
  limits->set_max_concurrent_streams(static_cast<uint32_t>(config.limits.max_concurrent_streams));
  limits->set_max_message_bytes(static_cast<uint64_t>(config.limits.max_message_bytes));
  out.add_modes(pb::AttentionOptions::DENSE);
  out.add_modes(pb::AttentionOptions::SQUEEZED);
  out.set_default_mode(ToProto(config.defaults.mode));
  out.set_default_sparsity(config.defaults.sparsity);
  out.set_build(__DATE__ " " __TIME__);
  return out;
}

pb::Usage ToUsage(const GenerationStats& stats, const GenerationTimings& timings) {
  pb::Usage out;
  out.set_prompt_tokens(static_cast<uint32_t>(stats.prompt_tokens));
  out.set_completion_tokens(static_cast<uint32_t>(stats.completion_tokens));
  out.set_cached_tokens(static_cast<uint64_t>(stats.cached_tokens));
  out.set_time_to_first_token_ms(static_cast<float>(timings.time_to_first_token_ms));
  out.set_time_per_output_token_ms(static_cast<float>(timings.time_per_output_token_ms));
  out.set_queue_ms(static_cast<float>(timings.queue_ms));
  return out;
}

pb::AttentionStats ToAttentionStats(const GenerationStats& stats, const AttentionOptions& attention,
                                    const std::string& resolution_note) {
  pb::AttentionStats out;
  out.set_backend(stats.attention_backend);
  std::string note = resolution_note;
  if (!stats.attention_note.empty()) note += (note.empty() ? "" : "; ") + stats.attention_note;
  out.set_note(note);
  out.set_mode(ToProto(attention.mode));
  out.set_kv_fraction_loaded(static_cast<float>(stats.kv_fraction_loaded));
  out.set_centroid_comparisons_per_token(static_cast<float>(stats.centroid_comparisons_per_token));
  out.set_sparsity(attention.sparsity);
  out.set_hierarchical(attention.hierarchical);
  if (attention.mode == AttentionMode::kSqueezed) {
    out.set_pruned(attention.estimate_pruned ? pb::AttentionOptions::ESTIMATED : pb::AttentionOptions::DROPPED);
    out.set_read_ahead(attention.read_ahead ? pb::AttentionOptions::READ_AHEAD_ON : pb::AttentionOptions::READ_AHEAD_OFF);
  }
  return out;
}

}  // namespace squeezeserve::server
