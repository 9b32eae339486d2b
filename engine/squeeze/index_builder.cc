#include "engine/squeeze/index_builder.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/squeeze/kmeans.h"
#include "engine/squeeze/tensor_util.h"

namespace squeezeserve::squeeze {
namespace {

absl::Status ValidateBuildInput(const at::Tensor& keys, const at::Tensor& values, const IndexOptions& o) {
  if (!keys.defined() || keys.dim() != 3) return absl::InvalidArgumentError("keys must be [H_kv, S, D]");
  if (!values.defined() || values.dim() != 3 || values.size(0) != keys.size(0) || values.size(1) != keys.size(1)) {
    return absl::InvalidArgumentError("values must be [H_kv, S, Dv] matching keys");
  }
  if (o.levels != 1 && o.levels != 2) {
    return absl::InvalidArgumentError(absl::StrCat("index.levels must be 1 or 2, got ", o.levels));
  }
  if (!(o.centroid_fraction > 0 && o.centroid_fraction <= 1)) {
    return absl::InvalidArgumentError("index.centroid_fraction must be in (0, 1]");
  }
  if (o.levels == 2 && !(o.coarse_centroid_fraction > 0 && o.coarse_centroid_fraction <= 1)) {
    return absl::InvalidArgumentError("index.coarse_centroid_fraction must be in (0, 1]");
  }
  if (o.observation_window < 0) return absl::InvalidArgumentError("index.observation_window must be >= 0");
  if (o.max_iterations < 0) return absl::InvalidArgumentError("index.max_iterations must be >= 0");
  return absl::OkStatus();
}

int64_t ClusterCount(float fraction, int64_t n, int64_t cap) {
  return std::clamp<int64_t>(std::llround(double{fraction} * n), 1, cap);
}

// Centroids are scored as they are stored: in the KV's dtype on a bf16 model (the GPU kernels read
// bf16 centroids; docs/index_layout.md), so the fp32 means are rounded to it once here, and every
// path (kernels, libtorch, calibration) scores the same vectors.
at::Tensor RoundLike(const at::Tensor& centroids, const at::Tensor& keys) {
  if (keys.scalar_type() != at::kBFloat16 && keys.scalar_type() != at::kHalf) return centroids;
  return centroids.to(keys.scalar_type()).to(at::kFloat);
}

// Lloyd stops once fewer than this share of the keys change cluster in an iteration: the last
// sweeps of a converging k-means move few keys and barely change what the index selects
// (bench/results/squeeze_accuracy_small_8k_*.json), while each costs a full assignment pass —
// at a 512K-token context ~0.14 s per layer on the H200.
constexpr double kLloydTolerance = 0.01;

std::function<void(int, double)> Stage(const ClusteringProgressFn& progress, std::string_view stage) {
  if (!progress) return nullptr;
  return [progress, stage](int it, double changed) { progress(stage, it, changed); };
}

}  // namespace

at::Tensor FineSizes(const LayerIndex& index) { return SizesFromOffsets(index.cluster_offsets); }

at::Tensor CoarseParent(const LayerIndex& index) {
  return SegmentOfPosition(index.coarse_offsets, index.num_clusters());
}

at::Tensor CoarseSizes(const LayerIndex& index) {
  // Keys of coarse c = off[coarse_off[c+1]] − off[coarse_off[c]]: its children are contiguous.
  const at::Tensor key_offsets = index.cluster_offsets.to(at::kLong).gather(1, index.coarse_offsets.to(at::kLong));
  return SizesFromOffsets(key_offsets);
}

void AddDerivedTensors(LayerIndex* index) {
  const int64_t N = index->num_clustered(), K = index->num_clusters();
  const at::Tensor cluster_of_row = SegmentOfPosition(index->cluster_offsets, N);  // [H, N]
  index->cluster_of_position =
      at::empty_like(cluster_of_row, cluster_of_row.options().dtype(at::kInt))
          .scatter_(1, index->perm.to(at::kLong), cluster_of_row.to(at::kInt));
  const at::Tensor values = index->values.to(at::kFloat);
  const at::Tensor sums = BatchedSegmentSum(cluster_of_row, values, K);  // [H, K, Dv]
  const at::Tensor sizes = FineSizes(*index).to(at::kFloat).unsqueeze(-1);
  index->cluster_values = (sums / sizes.clamp_min(1)).to(index->values.scalar_type());
  if (index->levels == 2) {
    // Coarse sums from the fine sums of each coarse cluster's (contiguous) children.
    const int64_t Kc = index->num_coarse_clusters();
    const at::Tensor parent = CoarseParent(*index);
    const at::Tensor coarse_sums = BatchedSegmentSum(parent, sums, Kc);
    const at::Tensor coarse_sizes = CoarseSizes(*index).to(at::kFloat).unsqueeze(-1);
    index->coarse_values = (coarse_sums / coarse_sizes.clamp_min(1)).to(index->values.scalar_type());
  }
}

absl::StatusOr<LayerIndex> BuildLayerIndex(const at::Tensor& keys, const at::Tensor& values,
                                           const IndexOptions& options, const ClusteringProgressFn& progress,
                                           IndexBuildTimes* times) {
  if (absl::Status s = ValidateBuildInput(keys, values, options); !s.ok()) return s;
  const int64_t H = keys.size(0), S = keys.size(1), D = keys.size(2);
  const int64_t W = std::min<int64_t>(options.observation_window, S);
  const int64_t N = S - W;
  const at::TensorOptions long_opts = keys.options().dtype(at::kLong);

  LayerIndex index;
  index.levels = options.levels;
  index.window_keys = keys.narrow(1, N, W).contiguous();
  index.window_values = values.narrow(1, N, W).contiguous();
  const at::Tensor keys_c = keys.narrow(1, 0, N);
  const at::Tensor values_c = values.narrow(1, 0, N);

  if (N == 0) {  // Nothing to cluster: an empty clustered part, K = Kc = 0.
    index.keys = keys_c.contiguous();
    index.values = values_c.contiguous();
    index.perm = at::zeros({H, 0}, long_opts.dtype(at::kInt));
    index.centroids = at::zeros({H, 0, D}, keys.options().dtype(at::kFloat));
    index.cluster_offsets = at::zeros({H, 1}, long_opts.dtype(at::kInt));
    if (index.levels == 2) {
      index.coarse_centroids = index.centroids.clone();
      index.coarse_offsets = index.cluster_offsets.clone();
    }
    AddDerivedTensors(&index);
    return index;
  }

  const int64_t K = ClusterCount(options.centroid_fraction, N, N);
  KMeansOptions km;
  km.num_clusters = K;
  km.max_iterations = options.max_iterations;
  km.tolerance = kLloydTolerance;
  km.seed_objective = false;
  km.seed = options.seed;
  km.progress = Stage(progress, "fine");
  km.timed = times != nullptr;
  KMeansResult fine = KMeans(keys_c, km);
  auto started = std::chrono::steady_clock::now();
  if (times != nullptr) {
    times->fine_seeding = fine.seconds_seeding;
    times->fine_lloyd = fine.seconds_lloyd;
  }
  at::Tensor labels = fine.labels;        // [H, N]
  at::Tensor centroids = fine.centroids;  // [H, K, D]
  at::Tensor sizes = fine.sizes;          // [H, K]

  if (index.levels == 2) {
    // Coarse level: k-means over the non-empty fine centroids (as vectors, normalized like keys).
    // Its centroids are the unweighted means of the member fine centroids (index_layout.md).
    km.num_clusters = ClusterCount(options.coarse_centroid_fraction, N, K);
    km.progress = Stage(progress, "coarse");
    KMeansResult coarse = KMeans(centroids, km, /*valid=*/sizes > 0);
    const at::Tensor parent = coarse.labels;  // [H, K] coarse id of every fine cluster (empty ones too)

    // Renumber the fine clusters so each coarse cluster's children are contiguous: new id = rank
    // of the fine cluster in a stable sort by parent. new_of_old is the inverse permutation.
    const at::Tensor order = std::get<1>(at::sort(parent, /*stable=*/true, /*dim=*/-1, /*descending=*/false));
    const at::Tensor new_of_old =
        at::empty_like(order).scatter_(1, order, at::arange(K, long_opts).unsqueeze(0).expand({H, K}).contiguous());
    labels = new_of_old.gather(1, labels);
    centroids = GatherRows(centroids, order);
    sizes = sizes.gather(1, order);
    const at::Tensor children = BatchedBincount(parent, at::ones({H, K}, long_opts), km.num_clusters);
    index.coarse_offsets = OffsetsFromSizes(children);
    index.coarse_centroids = coarse.centroids;
    if (times != nullptr) {
      if (centroids.is_cuda()) centroids.flatten()[0].item<float>();
      times->coarse = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      started = std::chrono::steady_clock::now();
    }
  }

  // Sort the rows by cluster id; the stable sort keeps original order inside a cluster.
  const at::Tensor perm = std::get<1>(at::sort(labels, /*stable=*/true, /*dim=*/-1, /*descending=*/false));
  index.perm = perm.to(at::kInt);
  index.keys = GatherRows(keys_c, perm);
  index.values = GatherRows(values_c, perm);
  index.centroids = RoundLike(centroids, keys).contiguous();
  if (index.levels == 2) index.coarse_centroids = RoundLike(index.coarse_centroids, keys);
  index.cluster_offsets = OffsetsFromSizes(sizes);
  AddDerivedTensors(&index);
  if (times != nullptr) {
    if (index.keys.is_cuda()) index.cluster_values.flatten()[0].item<float>();
    times->layout = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }
  return index;
}

}  // namespace squeezeserve::squeeze
