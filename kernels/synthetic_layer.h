// Random clustered layers for tests and the GPU check/benchmark programs: keys drawn around one
// direction per cluster, stored cluster-sorted with exact mean centroids (docs/index_layout.md).
// Not used by the engine.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

struct SyntheticSpec {
  int num_kv_heads = 2;
  int head_dim = 64;
  int num_rows = 200;        // N, clustered tokens
  int num_clusters = 10;     // K (fine)
  int num_coarse = 0;        // Kc; 0 = one-level index
  int dense_len = 8;         // window + own tokens
  float empty_fraction = 0;  // share of fine clusters forced empty
  float cluster_spread = 0.5f;  // noise around each cluster direction (direction norm ~ 1 per dim)
  uint64_t seed = 1;
};

struct SyntheticLayer {
  SyntheticSpec spec;
  std::vector<float> keys, values;              // [H][N][D]
  std::vector<float> centroids;                 // [H][K][D]
  std::vector<int32_t> offsets;                 // [H][K+1]
  std::vector<float> coarse_centroids;          // [H][Kc][D]
  std::vector<int32_t> coarse_offsets;          // [H][Kc+1]
  std::vector<float> dense_keys, dense_values;  // [H][dense_len][D]
  // Lookup data (add_lookup_data; empty until then): the estimate's mean values and read-ahead's
  // position maps, derived as the engine derives them (engine/squeeze/index_builder.h).
  std::vector<float> cluster_values;             // [H][K][D]: mean value of each fine cluster's keys
  std::vector<float> coarse_values;              // [H][Kc][D]: over all keys of the coarse cluster
  std::vector<int32_t> perm;                     // [H][N]: original position of each sorted row
  std::vector<int32_t> cluster_of_position;      // [H][N]: fine cluster of each original position
  int window_len = 0;                            // dense rows of the context window

  // view() also points at the lookup data once it exists (the estimate is then on).
  SequenceLayerF32 view() const;
  // Recomputes every centroid as the mean of its keys (fine) / of its non-empty children (coarse).
  void recompute_centroids();
  // Derives the lookup data from the current values, with a random permutation per head for the
  // original positions; `window_len` of the dense rows are the context's window.
  void add_lookup_data(uint64_t seed, int window);
};

SyntheticLayer make_synthetic_layer(const SyntheticSpec& spec);

// Random fp32 values with a fixed seed (queries etc.).
std::vector<float> random_normal(int64_t count, uint64_t seed, float stddev = 1.f);

}  // namespace squeezeserve::kernels
