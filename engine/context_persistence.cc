#include "engine/context_persistence.h"

#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/context_files.h"
#include "engine/context_summary_json.h"
#include "engine/safetensors.h"
#include "engine/squeeze/calibration.h"

namespace squeezeserve {
namespace {

absl::StatusOr<DType> ToFileDType(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kF32;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    case at::kInt: return DType::kI32;
    case at::kLong: return DType::kI64;
    default: return absl::InternalError(absl::StrCat("cannot store dtype ", c10::toString(t)));
  }
}

at::ScalarType ToScalarType(DType t) {
  switch (t) {
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kI32: return at::kInt;
    case DType::kI64: return at::kLong;
  }
  return at::kFloat;
}

std::string LayerName(int64_t layer, const char* what) { return absl::StrCat("layers.", layer, ".", what); }

// Collects CPU-contiguous tensors for WriteSafetensors and keeps them alive until it ran.
class TensorWriter {
 public:
  absl::Status Add(const std::string& name, const at::Tensor& tensor) {
    at::Tensor cpu = tensor.to(at::kCPU).contiguous();
    auto dtype = ToFileDType(cpu.scalar_type());
    if (!dtype.ok()) return dtype.status();
    keep_alive_.push_back(cpu);
    tensors_.push_back(TensorToWrite{name, *dtype, cpu.sizes().vec(), cpu.data_ptr()});
    return absl::OkStatus();
  }
  const std::vector<TensorToWrite>& tensors() const { return tensors_; }

 private:
  std::vector<at::Tensor> keep_alive_;
  std::vector<TensorToWrite> tensors_;
};

// Reads named tensors out of the mapped file, checking them; every failure is DataLoss.
class TensorReader {
 public:
  TensorReader(const SafetensorsFile& file, std::string context_id) : file_(file), id_(std::move(context_id)) {}

  // `dtypes`: accepted stored dtypes; the copy keeps the stored dtype.
  absl::StatusOr<at::Tensor> Read(const std::string& name, std::initializer_list<DType> dtypes,
                                  const std::vector<int64_t>& shape) const {
    const TensorView* view = file_.Find(name);
    if (view == nullptr) return Loss(absl::StrCat("tensor ", name, " is missing"));
    bool dtype_ok = false;
    for (DType d : dtypes) dtype_ok |= view->dtype == d;
    if (!dtype_ok) return Loss(absl::StrCat("tensor ", name, " has dtype ", DTypeName(view->dtype)));
    if (view->shape != shape) {
      return Loss(absl::StrCat("tensor ", name, " has shape [", absl::StrJoin(view->shape, ", "), "], expected [",
                               absl::StrJoin(shape, ", "), "]"));
    }
    at::Tensor out = at::empty(shape, at::TensorOptions().dtype(ToScalarType(view->dtype)));
    if (view->nbytes != out.nbytes()) return Loss(absl::StrCat("tensor ", name, " has the wrong byte size"));
    // The mapped data need not be aligned: copy bytes, never view them as typed memory.
    if (view->nbytes > 0) std::memcpy(out.data_ptr(), view->data, view->nbytes);
    return out;
  }

  bool Has(const std::string& name) const { return file_.Find(name) != nullptr; }

  absl::Status Loss(const std::string& what) const {
    return absl::DataLossError(absl::StrCat("context '", id_, "': ", what));
  }

 private:
  const SafetensorsFile& file_;
  std::string id_;
};

// Offsets [H, M+1] must start at 0, never decrease and end at `total`.
bool ValidOffsets(const at::Tensor& offsets, int64_t total) {
  const at::Tensor o = offsets.to(at::kLong);
  const int64_t m = o.size(1) - 1;
  if (!(o.select(1, 0) == 0).all().item<bool>()) return false;
  if (!(o.select(1, m) == total).all().item<bool>()) return false;
  return m == 0 || (o.narrow(1, 1, m) >= o.narrow(1, 0, m)).all().item<bool>();
}

bool AllFinite(const at::Tensor& t) { return t.numel() == 0 || at::isfinite(t).all().item<bool>(); }

absl::Status CheckThresholds(const ContextSummary& summary, int levels, const TensorReader& reader) {
  if (summary.sparsity_levels.empty()) return reader.Loss("the index has no calibrated sparsity level");
  for (const SparsityLevelInfo& level : summary.sparsity_levels) {
    bool finite = std::isfinite(level.one_level_threshold) && std::isfinite(level.sparsity) &&
                  std::isfinite(level.decode_one_level_threshold);
    for (float t : level.thresholds) finite &= std::isfinite(t);
    for (float t : level.decode_thresholds) finite &= std::isfinite(t);
    if (!finite || static_cast<int>(level.thresholds.size()) != levels ||
        level.decode_thresholds.size() != level.thresholds.size()) {
      return reader.Loss(absl::StrCat("thresholds of sparsity level ", level.sparsity, " do not match the index"));
    }
  }
  return absl::OkStatus();
}

// LayerIndex::head_thresholds for contexts saved before there were per-head thresholds: every head
// gets its level's global thresholds, which is what the lookup applied when they were saved.
at::Tensor HeadThresholdsFromSummary(const ContextSummary& summary, int64_t heads) {
  std::vector<float> values;
  for (const SparsityLevelInfo& level : summary.sparsity_levels) {
    for (const auto& [set, one_level] : {std::pair{&level.thresholds, level.one_level_threshold},
                                         std::pair{&level.decode_thresholds, level.decode_one_level_threshold}}) {
      const bool two = set->size() == 2;
      values.insert(values.end(),
                    {one_level, two ? (*set)[0] : squeeze::kKeepAll, two ? (*set)[1] : squeeze::kKeepAll});
    }
  }
  const int64_t S = static_cast<int64_t>(summary.sparsity_levels.size());
  return at::tensor(values, at::kFloat).view({S, 2, 3, 1}).expand({S, 2, 3, heads}).contiguous();
}

struct Layout {
  int64_t num_layers = 0;
  int levels = 0;  // 0 without index
  int64_t clustered_tokens = 0;
  int64_t window_tokens = 0;
};

// Reads one layer's index tensors; `keys`/`values` are the layer's whole KV on the target device.
absl::StatusOr<squeeze::LayerIndex> ReadLayerIndex(const TensorReader& reader, int64_t layer, const Layout& layout,
                                                   const ContextSummary& summary, const ModelConfig& config,
                                                   const at::Tensor& keys, const at::Tensor& values,
                                                   at::Device device) {
  const int64_t H = config.num_kv_heads, D = config.head_dim, N = layout.clustered_tokens;
  const int64_t K = summary.centroids_per_level.back();
  squeeze::LayerIndex index;
  index.levels = layout.levels;
  auto perm = reader.Read(LayerName(layer, "perm"), {DType::kI32}, {H, N});
  if (!perm.ok()) return perm.status();
  if (N > 0 && !((*perm >= 0) & (*perm < N)).all().item<bool>()) return reader.Loss("perm out of range");
  auto centroids = reader.Read(LayerName(layer, "centroids"), {DType::kF32}, {H, K, D});
  if (!centroids.ok()) return centroids.status();
  if (!AllFinite(*centroids)) return reader.Loss("centroids are not finite");
  auto offsets = reader.Read(LayerName(layer, "cluster_offsets"), {DType::kI32}, {H, K + 1});
  if (!offsets.ok()) return offsets.status();
  if (!ValidOffsets(*offsets, N)) return reader.Loss(absl::StrCat("layer ", layer, ": cluster offsets are invalid"));
  const int64_t S = static_cast<int64_t>(summary.sparsity_levels.size());
  at::Tensor head_thresholds = HeadThresholdsFromSummary(summary, H);
  if (reader.Has(LayerName(layer, "head_thresholds"))) {
    auto stored = reader.Read(LayerName(layer, "head_thresholds"), {DType::kF32}, {S, 2, 3, H});
    if (!stored.ok()) return stored.status();
    if (!AllFinite(*stored)) return reader.Loss("per-head thresholds are not finite");
    head_thresholds = *stored;
  }
  index.perm = perm->to(device);
  index.centroids = centroids->to(device);
  index.cluster_offsets = offsets->to(device);
  index.head_thresholds = head_thresholds.to(device);
  if (layout.levels == 2) {
    const int64_t Kc = summary.centroids_per_level.front();
    auto coarse = reader.Read(LayerName(layer, "coarse_centroids"), {DType::kF32}, {H, Kc, D});
    if (!coarse.ok()) return coarse.status();
    if (!AllFinite(*coarse)) return reader.Loss("coarse centroids are not finite");
    auto coarse_offsets = reader.Read(LayerName(layer, "coarse_offsets"), {DType::kI32}, {H, Kc + 1});
    if (!coarse_offsets.ok()) return coarse_offsets.status();
    if (!ValidOffsets(*coarse_offsets, K)) {
      return reader.Loss(absl::StrCat("layer ", layer, ": coarse offsets are invalid"));
    }
    index.coarse_centroids = coarse->to(device);
    index.coarse_offsets = coarse_offsets->to(device);
  }
  index.keys = keys.narrow(1, 0, N);
  index.values = values.narrow(1, 0, N);
  index.window_keys = keys.narrow(1, N, layout.window_tokens);
  index.window_values = values.narrow(1, N, layout.window_tokens);
  squeeze::AddDerivedTensors(&index);  // derived, not stored
  return index;
}

absl::StatusOr<std::shared_ptr<StoredContext>> Rebuild(const ContextDir& dir, const std::string& id,
                                                       const ModelConfig& config, at::Device device,
                                                       at::ScalarType dtype) {
  const TensorReader reader(*dir.tensors, id);
  const nlohmann::json& manifest = dir.manifest;
  if (!manifest.contains("summary")) return reader.Loss("manifest has no summary");
  auto summary = SummaryFromJson(manifest.at("summary"));
  if (!summary.ok()) return summary.status();
  summary->id = id;
  summary->tier = "device";  // loaded onto the engine's device, as an ingested context

  Layout layout;
  try {
    const nlohmann::json& l = manifest.at("layout");
    layout.num_layers = l.at("num_layers").get<int64_t>();
    layout.levels = l.at("levels").get<int>();
    layout.clustered_tokens = l.at("clustered_tokens").get<int64_t>();
    layout.window_tokens = l.at("window_tokens").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    return reader.Loss(absl::StrCat("manifest layout is malformed: ", e.what()));
  }
  const int64_t S = summary->num_tokens;
  if (layout.num_layers != config.num_layers) return reader.Loss("layer count does not match the model");
  if (S < 1 || S > config.max_position_embeddings) return reader.Loss(absl::StrCat("bad token count ", S));
  if (summary->has_index) {
    const int levels = static_cast<int>(summary->centroids_per_level.size());
    if (layout.levels != levels || (levels != 1 && levels != 2) || layout.clustered_tokens < 0 ||
        layout.window_tokens < 0 || layout.clustered_tokens + layout.window_tokens != S) {
      return reader.Loss("index layout does not match the summary");
    }
    for (int64_t k : summary->centroids_per_level) {
      if (k < 0 || k > layout.clustered_tokens) return reader.Loss("bad centroid count");
    }
    if (auto s = CheckThresholds(*summary, levels, reader); !s.ok()) return s;
  } else if (layout.levels != 0) {
    return reader.Loss("index layout present on a context without index");
  }

  auto tokens_tensor = reader.Read("tokens", {DType::kI32}, {S});
  if (!tokens_tensor.ok()) return tokens_tensor.status();
  if (!((*tokens_tensor >= 0) & (*tokens_tensor < config.vocab_size)).all().item<bool>()) {
    return reader.Loss("token ids outside the vocabulary");
  }
  const int32_t* ids = tokens_tensor->data_ptr<int32_t>();
  std::vector<int32_t> tokens(ids, ids + S);

  const int64_t H = config.num_kv_heads, D = config.head_dim;
  std::vector<at::Tensor> keys, values, window_queries;
  std::vector<squeeze::LayerIndex> index;
  const auto kv_dtypes = {DType::kF32, DType::kBF16, DType::kF16};
  for (int64_t l = 0; l < config.num_layers; ++l) {
    auto k = reader.Read(LayerName(l, "keys"), kv_dtypes, {H, S, D});
    if (!k.ok()) return k.status();
    auto v = reader.Read(LayerName(l, "values"), kv_dtypes, {H, S, D});
    if (!v.ok()) return v.status();
    // A NaN or infinity under a matching checksum (written so, or crafted) would turn every
    // generation over this context into noise: refuse it like any other damage.
    if (!AllFinite(*k) || !AllFinite(*v)) return reader.Loss(absl::StrCat("layer ", l, ": keys or values are not finite"));
    keys.push_back(k->to(device, dtype));
    values.push_back(v->to(device, dtype));
    at::Tensor queries;
    if (const TensorView* view = dir.tensors->Find(LayerName(l, "window_queries")); view != nullptr) {
      const int64_t W = view->shape.size() == 3 ? view->shape[1] : -1;  // any other rank fails the shape check
      auto q = reader.Read(LayerName(l, "window_queries"), kv_dtypes, {config.num_attention_heads, W, D});
      if (!q.ok()) return q.status();
      if (!AllFinite(*q)) return reader.Loss(absl::StrCat("layer ", l, ": window queries are not finite"));
      queries = q->to(device, dtype);
    }
    window_queries.push_back(queries);
    if (summary->has_index) {
      auto layer = ReadLayerIndex(reader, l, layout, *summary, config, keys.back(), values.back(), device);
      if (!layer.ok()) return layer.status();
      index.push_back(std::move(*layer));
    }
  }
  return std::make_shared<StoredContext>(std::move(*summary), std::move(tokens), std::move(keys), std::move(values),
                                         std::move(window_queries), std::move(index));
}

}  // namespace

absl::Status SaveStoredContext(const StoredContext& context, const std::string& store_dir,
                               const std::string& model_fingerprint, const SaveProgressFn& progress) {
  const ContextSummary& summary = context.summary();
  TensorWriter writer;
  Layout layout;
  layout.num_layers = static_cast<int64_t>(context.keys().size());
  try {
    std::vector<int32_t> tokens = context.tokens();
    if (auto s = writer.Add("tokens", at::from_blob(tokens.data(), {static_cast<int64_t>(tokens.size())}, at::kInt));
        !s.ok()) {
      return s;
    }
    for (int64_t l = 0; l < layout.num_layers; ++l) {
      std::vector<std::pair<std::string, at::Tensor>> named = {{LayerName(l, "keys"), context.keys()[l]},
                                                               {LayerName(l, "values"), context.values()[l]}};
      if (context.window_queries()[l].defined()) {
        named.emplace_back(LayerName(l, "window_queries"), context.window_queries()[l]);
      }
      if (summary.has_index) {
        const squeeze::LayerIndex& index = context.index()[l];
        layout.levels = index.levels;
        layout.clustered_tokens = index.num_clustered();
        layout.window_tokens = index.window();
        named.emplace_back(LayerName(l, "perm"), index.perm);
        named.emplace_back(LayerName(l, "centroids"), index.centroids);
        named.emplace_back(LayerName(l, "cluster_offsets"), index.cluster_offsets);
        if (index.head_thresholds.defined()) named.emplace_back(LayerName(l, "head_thresholds"), index.head_thresholds);
        if (index.levels == 2) {
          named.emplace_back(LayerName(l, "coarse_centroids"), index.coarse_centroids);
          named.emplace_back(LayerName(l, "coarse_offsets"), index.coarse_offsets);
        }
      }
      for (const auto& [name, tensor] : named) {
        if (auto s = writer.Add(name, tensor); !s.ok()) return s;
      }
    }
    nlohmann::json manifest = {{"model_fingerprint", model_fingerprint},
                               {"summary", SummaryToJson(summary)},
                               {"layout",
                                {{"num_layers", layout.num_layers},
                                 {"levels", layout.levels},
                                 {"clustered_tokens", layout.clustered_tokens},
                                 {"window_tokens", layout.window_tokens}}}};
    return PublishContextDir(store_dir, summary.id, std::move(manifest), writer.tensors(), progress);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("saving context '", summary.id, "': ", e.what()));
  }
}

absl::StatusOr<std::shared_ptr<StoredContext>> LoadStoredContext(const std::string& store_dir, const std::string& id,
                                                                 const std::string& model_fingerprint,
                                                                 const ModelConfig& config, at::Device device,
                                                                 at::ScalarType dtype) {
  auto dir = OpenContextDir(store_dir, id, model_fingerprint);
  if (!dir.ok()) return dir.status();
  c10::InferenceMode inference_mode;
  try {
    return Rebuild(*dir, id, config, device, dtype);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("context '", id, "': ", e.what()));
  }
}

namespace {

at::Tensor CopyTo(const at::Tensor& t, at::Device device) {
  if (!t.defined()) return t;
  const bool pin = device.is_cpu() && t.is_cuda();
  at::Tensor copy = at::empty(t.sizes(), t.options().device(device).pinned_memory(pin));
  copy.copy_(t);
  return copy;
}

}  // namespace

std::shared_ptr<StoredContext> CopyStoredContext(const StoredContext& context, at::Device device,
                                                 const std::string& tier) {
  std::vector<at::Tensor> keys, values, window_queries;
  std::vector<squeeze::LayerIndex> index;
  for (size_t l = 0; l < context.keys().size(); ++l) {
    keys.push_back(CopyTo(context.keys()[l], device));
    values.push_back(CopyTo(context.values()[l], device));
    window_queries.push_back(CopyTo(context.window_queries()[l], device));
    if (context.index().empty()) continue;
    const squeeze::LayerIndex& from = context.index()[l];
    squeeze::LayerIndex to;
    to.levels = from.levels;
    to.perm = CopyTo(from.perm, device);
    to.centroids = CopyTo(from.centroids, device);
    to.cluster_offsets = CopyTo(from.cluster_offsets, device);
    to.coarse_centroids = CopyTo(from.coarse_centroids, device);
    to.coarse_offsets = CopyTo(from.coarse_offsets, device);
    to.head_thresholds = CopyTo(from.head_thresholds, device);
    to.cluster_values = CopyTo(from.cluster_values, device);
    to.coarse_values = CopyTo(from.coarse_values, device);
    to.cluster_of_position = CopyTo(from.cluster_of_position, device);
    // The index's KV stays a view of the layer's KV (stored once), as at ingest and load.
    const int64_t N = from.num_clustered();
    to.keys = keys.back().narrow(1, 0, N);
    to.values = values.back().narrow(1, 0, N);
    to.window_keys = keys.back().narrow(1, N, from.window());
    to.window_values = values.back().narrow(1, N, from.window());
    index.push_back(std::move(to));
  }
  ContextSummary summary = context.summary();
  summary.tier = tier;
  return std::make_shared<StoredContext>(std::move(summary), context.tokens(), std::move(keys), std::move(values),
                                         std::move(window_queries), std::move(index));
}

}  // namespace squeezeserve
