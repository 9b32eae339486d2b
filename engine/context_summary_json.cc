#include "engine/context_summary_json.h"

namespace squeezeserve {

nlohmann::json SummaryToJson(const ContextSummary& s) {
  nlohmann::json levels = nlohmann::json::array();
  for (const SparsityLevelInfo& level : s.sparsity_levels) {
    levels.push_back({{"sparsity", level.sparsity},
                      {"thresholds", level.thresholds},
                      {"one_level_threshold", level.one_level_threshold},
                      {"kept_fraction", level.kept_fraction},
                      {"decode_thresholds", level.decode_thresholds},
                      {"decode_one_level_threshold", level.decode_one_level_threshold},
                      {"decode_kept_fraction", level.decode_kept_fraction}});
  }
  const IndexOptions& o = s.index;
  return {{"id", s.id},
          {"num_tokens", s.num_tokens},
          {"index",
           {{"centroid_fraction", o.centroid_fraction},
            {"observation_window", o.observation_window},
            {"max_iterations", o.max_iterations},
            {"seed", o.seed},
            {"levels", o.levels},
            {"coarse_centroid_fraction", o.coarse_centroid_fraction},
            {"sparsity_levels", o.sparsity_levels},
            {"head_floor_share", o.head_floor_share},
            {"dense_only", o.dense_only}}},
          {"has_index", s.has_index},
          {"sparsity_levels", levels},
          {"centroids_per_level", s.centroids_per_level},
          {"kv_bytes", s.kv_bytes},
          {"index_bytes", s.index_bytes},
          {"created_unix_ms", s.created_unix_ms}};
}

absl::StatusOr<ContextSummary> SummaryFromJson(const nlohmann::json& j) {
  try {
    ContextSummary s;
    s.id = j.at("id").get<std::string>();
    s.num_tokens = j.at("num_tokens").get<int64_t>();
    const auto& o = j.at("index");
    s.index.centroid_fraction = o.at("centroid_fraction").get<float>();
    s.index.observation_window = o.at("observation_window").get<int>();
    s.index.max_iterations = o.at("max_iterations").get<int>();
    s.index.seed = o.at("seed").get<uint64_t>();
    s.index.levels = o.at("levels").get<int>();
    s.index.coarse_centroid_fraction = o.at("coarse_centroid_fraction").get<float>();
    s.index.sparsity_levels = o.at("sparsity_levels").get<std::vector<float>>();
    s.index.dense_only = o.at("dense_only").get<bool>();
    s.index.head_floor_share = o.value("head_floor_share", 0.0f);  // older manifests: one global τ
    s.has_index = j.at("has_index").get<bool>();
    for (const auto& level : j.at("sparsity_levels")) {
      SparsityLevelInfo info;
      info.sparsity = level.at("sparsity").get<float>();
      info.thresholds = level.at("thresholds").get<std::vector<float>>();
      info.one_level_threshold = level.at("one_level_threshold").get<float>();
      info.kept_fraction = level.at("kept_fraction").get<float>();
      // Older manifests have one threshold set: decode then uses it too (as it did when written).
      info.decode_thresholds = level.value("decode_thresholds", info.thresholds);
      info.decode_one_level_threshold = level.value("decode_one_level_threshold", info.one_level_threshold);
      info.decode_kept_fraction = level.value("decode_kept_fraction", info.kept_fraction);
      s.sparsity_levels.push_back(std::move(info));
    }
    s.centroids_per_level = j.at("centroids_per_level").get<std::vector<int64_t>>();
    s.kv_bytes = j.at("kv_bytes").get<uint64_t>();
    s.index_bytes = j.at("index_bytes").get<uint64_t>();
    s.created_unix_ms = j.at("created_unix_ms").get<int64_t>();
    s.tier = "disk";
    return s;
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(std::string("context summary in manifest is malformed: ") + e.what());
  }
}

}  // namespace squeezeserve
