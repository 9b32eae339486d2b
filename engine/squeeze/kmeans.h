// Batched k-means over the KV heads of one layer, as the Squeezed Attention authors cluster keys
// (docs/index_layout.md): Lloyd iterations on L2-normalized points (cosine-like clusters; centroids are not
// re-normalized, like cuML on unit vectors), k-means++ seeding (batched: kmeans.cc), empty
// clusters re-seeded from the farthest points while iterating, and the stored centroid is the mean
// of the RAW points. With many points per cluster the seeding and the iterations run on a uniform
// sample of 8 points per cluster and every point is assigned once at the end (kmeans.cc). Runs on the device of its input with tensor ops only (the assignment's scores
// in bf16 on a GPU); deterministic for a fixed seed on CPU.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

namespace squeezeserve::squeeze {

struct KMeansOptions {
  int64_t num_clusters = 1;  // K, same for every head; 1 <= K <= N
  int max_iterations = 30;   // Lloyd iterations after seeding (0 = seeding only)
  // Converged once at most this fraction of the (valid) labels changed in one iteration.
  double tolerance = 1e-4;
  uint64_t seed = 0;
  // Called after every Lloyd iteration: (iteration, starting at 1; fraction of labels changed).
  std::function<void(int, double)> progress;
  // Compute KMeansResult::seed_objective (one more assignment pass; the ingest skips it).
  bool seed_objective = true;
  // Measure the wall time of the seeding and of the Lloyd iterations (KMeansResult::seconds_*),
  // waiting for the device at their ends: for the ingest's diagnostic log line only.
  bool timed = false;
};

struct KMeansResult {
  at::Tensor labels;     // [H, N] int64: cluster of every point (invalid points get a label too)
  at::Tensor centroids;  // [H, K, D] float32: mean of the RAW valid points of each cluster; 0 if empty
  at::Tensor sizes;      // [H, K] int64: valid points per cluster; 0 marks an empty cluster
  // Σ over valid points of ‖x̂ − ĉ‖² in the normalized space, per head (float64): for the seeding
  // alone (undefined unless KMeansOptions::seed_objective) and after the Lloyd iterations (never
  // larger).
  at::Tensor seed_objective;
  at::Tensor final_objective;
  int iterations = 0;  // Lloyd iterations run
  double seconds_seeding = 0, seconds_lloyd = 0;  // with KMeansOptions::timed
};

// points: [H, N, D] (any float dtype, any device). valid: optional [H, N] bool; invalid points are
// never seeds, do not move centroids and are not counted in sizes (used to skip empty fine
// clusters when clustering centroids into a coarse level).
KMeansResult KMeans(const at::Tensor& points, const KMeansOptions& options, const at::Tensor& valid = {});

// The assignment step of KMeans on its own: the nearest of `centroids` [H, K, D] for every point of
// `points` [H, N, D] (same device), as [H, N] int64. On a GPU with D = 64 or 128 in a build with the
// CUDA kernels it runs the fused kernel (kernels/nearest_centroid.h), elsewhere libtorch (bf16 scores
// on a GPU, float32 on the CPU).
at::Tensor NearestCentroids(const at::Tensor& points, const at::Tensor& centroids);

}  // namespace squeezeserve::squeeze
