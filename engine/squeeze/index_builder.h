// Builds the Squeezed index of one layer (docs/index_layout.md): k-means of the clustered keys per
// KV head, an optional coarse level clustered from the fine centroids, and the KV rows stored
// sorted by (coarse, fine) cluster so that every cluster is one contiguous segment.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/engine.h"

namespace squeezeserve::squeeze {

// The index of one layer; H = KV heads, N = S − W clustered tokens, W = window tokens.
struct LayerIndex {
  int levels = 1;              // 1 (fine only) or 2 (coarse + fine)
  at::Tensor keys;             // [H, N, D] clustered keys sorted by cluster (dtype of the input)
  at::Tensor values;           // [H, N, Dv] same order
  at::Tensor perm;             // [H, N] int32: original position of each sorted row
  at::Tensor centroids;        // [H, K, D] float32: mean of the raw keys of each fine cluster
  at::Tensor cluster_offsets;  // [H, K+1] int32 into the sorted rows; size_j = off[j+1] − off[j]
  at::Tensor coarse_centroids;  // [H, Kc, D] float32 (levels == 2): mean of member fine centroids
  at::Tensor coarse_offsets;    // [H, Kc+1] int32 into the fine cluster ids (levels == 2)
  // Mean value of each cluster's keys, in the dtype of `values` (derived from values and offsets
  // by AddDerivedTensors, not stored in the index files): a pruned cluster can then still
  // attend as one key, its centroid, weighing its size (SelectionOptions::estimate_pruned).
  at::Tensor cluster_values;   // [H, K, Dv]
  at::Tensor coarse_values;    // [H, Kc, Dv] (levels == 2): over all keys of the coarse cluster
  // Fine cluster of each clustered position p in [0, N) (derived by AddDerivedTensors, not stored):
  // read-ahead (read_ahead.h) loads the cluster holding a given position.
  at::Tensor cluster_of_position;  // [H, N] int32
  at::Tensor window_keys;       // [H, W, D] last W tokens, original order
  at::Tensor window_values;     // [H, W, Dv]
  // Calibrated thresholds per KV head (calibration.h): [S, 2, 3, H] float32 on the index device,
  // S = the context's sparsity levels in summary order, then prefill/decode, then ThresholdKind.
  // Undefined until calibrated.
  at::Tensor head_thresholds;

  int64_t num_heads() const { return keys.size(0); }
  int64_t num_clustered() const { return keys.size(1); }
  int64_t num_clusters() const { return centroids.size(1); }
  int64_t num_coarse_clusters() const { return levels == 2 ? coarse_centroids.size(1) : 0; }
  int64_t window() const { return window_keys.size(1); }
};

// Derived views of the offsets (cheap; computed on the index's device).
at::Tensor FineSizes(const LayerIndex& index);     // [H, K] int64 keys per fine cluster
at::Tensor CoarseSizes(const LayerIndex& index);   // [H, Kc] int64 keys per coarse cluster
at::Tensor CoarseParent(const LayerIndex& index);  // [H, K] int64 coarse cluster of each fine one

// Sets the tensors derived from the stored ones: cluster_values (and coarse_values) from the sorted
// values and offsets (one segment sum over the clustered rows, in fp32, stored in the values'
// dtype; empty clusters get zeros), and cluster_of_position from perm and the offsets.
void AddDerivedTensors(LayerIndex* index);

// (stage: "fine" or "coarse", Lloyd iteration, fraction of labels changed)
using ClusteringProgressFn = std::function<void(std::string_view, int, double)>;

// keys, values: the layer's post-RoPE context KV [H_kv, S, D] / [H_kv, S, Dv] (any float dtype,
// any device; the index lives on the same device). Uses centroid_fraction, observation_window,
// max_iterations, seed, levels (1 or 2) and coarse_centroid_fraction of `options`.
// K = clamp(round(centroid_fraction·N), 1, N), Kc = clamp(round(coarse_centroid_fraction·N), 1, K).
// S <= W gives an index with N = 0 and K = 0: everything is window. InvalidArgument on bad input.
// Where one layer's index build spends its time (wall seconds, the device waited for at the end of
// each part): for the ingest's diagnostic log line.
struct IndexBuildTimes {
  double fine_seeding = 0, fine_lloyd = 0, coarse = 0, layout = 0;
};

// `times` (nullable) asks for the parts' times; it costs a device synchronisation per part.
absl::StatusOr<LayerIndex> BuildLayerIndex(const at::Tensor& keys, const at::Tensor& values,
                                           const IndexOptions& options,
                                           const ClusteringProgressFn& progress = nullptr,
                                           IndexBuildTimes* times = nullptr);

}  // namespace squeezeserve::squeeze
