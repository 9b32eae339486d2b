#include "engine/context_builder.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/engine_log.h"
#include "engine/squeeze/calibration.h"
#include "engine/squeeze/index_builder.h"

namespace squeezeserve {
namespace {

// Share of the progress fraction taken by the prefill when an index is built afterwards; the
// clustering takes most of the rest, calibration the last sliver.
constexpr float kPrefillShare = 0.5f;
constexpr float kClusteringShare = 0.45f;

// Waits for the device's queued work (a stage's wall time is then its own).
void WaitForDevice(const at::Tensor& any) {
  if (any.defined() && any.is_cuda() && any.numel() > 0) any.flatten()[0].item<float>();
}

uint64_t Bytes(const at::Tensor& t) { return t.defined() ? static_cast<uint64_t>(t.nbytes()) : 0; }

// Clusters every layer (replacing its KV by the cluster-sorted KV + window, so the KV is held once),
// then calibrates the thresholds on the window queries. Fills the index fields of `summary`.
absl::StatusOr<std::vector<squeeze::LayerIndex>> BuildIndex(KvCache& kv, const std::vector<at::Tensor>& window_queries,
                                                            const IndexOptions& options, ContextSummary& summary,
                                                            const ProgressFn& progress, const CancelFn& cancelled) {
  const int64_t layers = static_cast<int64_t>(kv.keys.size());
  const int64_t total = summary.num_tokens;
  squeeze::CalibrationOptions calibration;
  calibration.sparsity_levels = options.sparsity_levels;
  calibration.head_floor_share = options.head_floor_share;
  squeeze::Calibrator calibrator(calibration);
  std::vector<squeeze::LayerIndex> index;
  if (progress) progress(IngestProgress{"clustering", kPrefillShare, total, total});
  // Lloyd iterations run per level, for the log (the clustering's cost is about proportional to them).
  int64_t fine_iterations = 0, coarse_iterations = 0;
  squeeze::IndexBuildTimes first_layer_times;  // where layer 0's build spends its time (logged)
  const squeeze::ClusteringProgressFn count_iterations = [&](std::string_view stage, int, double) {
    ++(stage == "fine" ? fine_iterations : coarse_iterations);
  };
  for (int64_t l = 0; l < layers; ++l) {
    if (cancelled && cancelled()) return absl::CancelledError("ingest cancelled");
    auto layer = squeeze::BuildLayerIndex(kv.keys[l], kv.values[l], options, count_iterations,
                                          l == 0 ? &first_layer_times : nullptr);
    if (!layer.ok()) return layer.status();
    const int64_t n = layer->num_clustered(), w = layer->window();
    kv.keys[l] = at::cat({layer->keys, layer->window_keys}, 1);
    kv.values[l] = at::cat({layer->values, layer->window_values}, 1);
    layer->keys = kv.keys[l].narrow(1, 0, n);
    layer->window_keys = kv.keys[l].narrow(1, n, w);
    layer->values = kv.values[l].narrow(1, 0, n);
    layer->window_values = kv.values[l].narrow(1, n, w);
    index.push_back(std::move(*layer));
    if (progress) {
      const float done = static_cast<float>(l + 1) / static_cast<float>(layers);
      progress(IngestProgress{"clustering", kPrefillShare + kClusteringShare * done, total, total});
    }
  }
  WaitForDevice(kv.keys.back());
  LogEngineInfo(absl::StrCat("clustering: ", fine_iterations / std::max<int64_t>(1, layers), " Lloyd iterations per layer",
                             index.empty() || index[0].levels < 2
                                 ? std::string()
                                 : absl::StrCat(" (coarse level: ", coarse_iterations / layers, ")"),
                             absl::StrFormat("; layer 0: seeding %.1f ms, Lloyd %.1f ms, coarse level %.1f ms, "
                                             "layout %.1f ms",
                                             1e3 * first_layer_times.fine_seeding, 1e3 * first_layer_times.fine_lloyd,
                                             1e3 * first_layer_times.coarse, 1e3 * first_layer_times.layout)));
  if (progress) progress(IngestProgress{"calibrating", kPrefillShare + kClusteringShare, total, total});
  for (int64_t l = 0; l < layers; ++l) {
    if (auto s = calibrator.AddLayer(index[l], window_queries[l]); !s.ok()) return s;
  }
  auto calibrated = calibrator.Finish();
  if (!calibrated.ok()) return calibrated.status();

  for (int64_t l = 0; l < layers; ++l) {
    index[l].head_thresholds = calibrated->HeadThresholdsOfLayer(l).to(index[l].centroids.device());
  }
  summary.has_index = true;
  summary.sparsity_levels = calibrated->Summary();
  const squeeze::LayerIndex& first = index.front();
  summary.centroids_per_level.clear();
  if (first.levels == 2) summary.centroids_per_level.push_back(first.num_coarse_clusters());
  summary.centroids_per_level.push_back(first.num_clusters());
  summary.index_bytes = 0;
  for (const squeeze::LayerIndex& layer : index) {
    // Resident bytes (the tier limits count them): the derived tensors too.
    summary.index_bytes += Bytes(layer.perm) + Bytes(layer.centroids) + Bytes(layer.cluster_offsets) +
                           Bytes(layer.coarse_centroids) + Bytes(layer.coarse_offsets) +
                           Bytes(layer.cluster_values) + Bytes(layer.coarse_values) +
                           Bytes(layer.cluster_of_position);
  }
  if (progress) progress(IngestProgress{"calibrating", 1.0f, total, total});
  return index;
}

}  // namespace

absl::Status ValidateIndexOptions(const IndexOptions& index) {
  if (index.observation_window < 0) return absl::InvalidArgumentError("index.observation_window must be >= 0");
  if (index.dense_only) return absl::OkStatus();
  if (index.levels != 1 && index.levels != 2) {
    return absl::InvalidArgumentError(absl::StrCat("index.levels must be 1 or 2, got ", index.levels));
  }
  if (!(index.centroid_fraction > 0 && index.centroid_fraction <= 1)) {
    return absl::InvalidArgumentError("index.centroid_fraction must be in (0, 1]");
  }
  if (index.levels == 2 && !(index.coarse_centroid_fraction > 0 && index.coarse_centroid_fraction <= 1)) {
    return absl::InvalidArgumentError("index.coarse_centroid_fraction must be in (0, 1]");
  }
  if (index.max_iterations < 0) return absl::InvalidArgumentError("index.max_iterations must be >= 0");
  if (index.sparsity_levels.empty()) {
    return absl::InvalidArgumentError("index.sparsity_levels must list at least one level (or set dense_only)");
  }
  for (size_t i = 0; i < index.sparsity_levels.size(); ++i) {
    const float q = index.sparsity_levels[i];
    if (!(q >= 0 && q < 1)) {
      return absl::InvalidArgumentError(absl::StrCat("index.sparsity_levels[", i, "] = ", q, " is not in [0, 1)"));
    }
  }
  return absl::OkStatus();
}

bool ShouldBuildIndex(int64_t num_tokens, const IndexOptions& index) {
  if (index.dense_only) return false;
  const int64_t window = std::min<int64_t>(index.observation_window, num_tokens);
  const int64_t clustered = num_tokens - window;
  const int64_t min_clustered = static_cast<int64_t>(std::ceil(1.0 / index.centroid_fraction));
  return window >= 1 && clustered >= min_clustered;
}

absl::StatusOr<std::shared_ptr<StoredContext>> BuildStoredContext(const LlamaModel& model, std::string id,
                                                                  std::vector<int32_t> tokens,
                                                                  const IndexOptions& index,
                                                                  const PrefillControl& control,
                                                                  const ProgressFn& progress) {
  if (auto s = ValidateIndexOptions(index); !s.ok()) return s;
  c10::InferenceMode inference_mode;  // clustering and calibration need no autograd bookkeeping
  const int64_t total = static_cast<int64_t>(tokens.size());
  const bool indexed = ShouldBuildIndex(total, index);
  const int64_t window = std::min<int64_t>(index.observation_window, total);
  PrefillControl prefill_control = control;
  const float prefill_share = indexed ? kPrefillShare : 1.0f;
  prefill_control.progress = [&](double done) {
    if (progress) {
      progress(IngestProgress{"prefill", prefill_share * static_cast<float>(done),
                              static_cast<int64_t>(std::llround(done * static_cast<double>(total))), total});
    }
  };
  auto prefill = model.Prefill(tokens, window, prefill_control);
  if (!prefill.ok()) return prefill.status();
  WaitForDevice(prefill->kv.keys.back());

  ContextSummary summary;
  summary.id = std::move(id);
  summary.num_tokens = total;
  summary.index = index;
  const ModelConfig& config = model.config();
  summary.kv_bytes = 2ull * config.num_layers * config.num_kv_heads * total * config.head_dim *
                     at::elementSize(model.dtype());
  summary.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  summary.tier = "device";  // the KV stays in the engine device's memory

  std::vector<squeeze::LayerIndex> layer_index;
  if (indexed) {
    try {
      auto built = BuildIndex(prefill->kv, prefill->window_queries, index, summary, progress, control.cancelled);
      if (!built.ok()) return built.status();
      layer_index = std::move(*built);
      WaitForDevice(prefill->kv.keys.back());
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("building the Squeezed index: ", e.what()));
    }
  }
  return std::make_shared<StoredContext>(std::move(summary), std::move(tokens), std::move(prefill->kv.keys),
                                         std::move(prefill->kv.values), std::move(prefill->window_queries),
                                         std::move(layer_index));
}

}  // namespace squeezeserve
