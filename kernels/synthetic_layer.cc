#include "kernels/synthetic_layer.h"

#include <algorithm>
#include <numeric>
#include <random>

namespace squeezeserve::kernels {

std::vector<float> random_normal(int64_t count, uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, stddev);
  std::vector<float> out(count);
  for (float& x : out) x = normal(rng);
  return out;
}

SequenceLayerF32 SyntheticLayer::view() const {
  SequenceLayerF32 v;
  const int d = spec.head_dim;
  v.keys = keys.data();
  v.values = values.data();
  v.head_stride = static_cast<int64_t>(spec.num_rows) * d;
  v.centroids = centroids.data();
  v.offsets = offsets.data();
  v.num_clusters = spec.num_clusters;
  if (spec.num_coarse > 0) {
    v.coarse_centroids = coarse_centroids.data();
    v.coarse_offsets = coarse_offsets.data();
    v.num_coarse = spec.num_coarse;
  }
  v.dense_keys = dense_keys.data();
  v.dense_values = dense_values.data();
  v.dense_head_stride = static_cast<int64_t>(spec.dense_len) * d;
  v.dense_len = spec.dense_len;
  if (!cluster_values.empty()) {
    v.cluster_values = cluster_values.data();
    if (spec.num_coarse > 0) v.coarse_values = coarse_values.data();
    v.perm = perm.data();
    v.cluster_of_position = cluster_of_position.data();
    v.window_len = window_len;
  }
  return v;
}

void SyntheticLayer::add_lookup_data(uint64_t seed, int window) {
  const int h_n = spec.num_kv_heads, d = spec.head_dim, k = spec.num_clusters, n = spec.num_rows;
  std::mt19937_64 rng(seed);
  window_len = window;
  cluster_values.assign(static_cast<size_t>(h_n) * k * d, 0.f);
  perm.resize(static_cast<size_t>(h_n) * n);
  cluster_of_position.resize(perm.size());
  std::vector<double> sums(static_cast<size_t>(d));
  for (int h = 0; h < h_n; ++h) {
    const int32_t* off = &offsets[static_cast<size_t>(h) * (k + 1)];
    int32_t* p = &perm[static_cast<size_t>(h) * n];
    std::iota(p, p + n, 0);
    std::shuffle(p, p + n, rng);
    for (int j = 0; j < k; ++j) {
      for (int r = off[j]; r < off[j + 1]; ++r) cluster_of_position[static_cast<size_t>(h) * n + p[r]] = j;
      std::fill(sums.begin(), sums.end(), 0.0);
      for (int r = off[j]; r < off[j + 1]; ++r)
        for (int i = 0; i < d; ++i) sums[i] += values[(static_cast<size_t>(h) * n + r) * d + i];
      for (int i = 0; off[j + 1] > off[j] && i < d; ++i)
        cluster_values[(static_cast<size_t>(h) * k + j) * d + i] = static_cast<float>(sums[i] / (off[j + 1] - off[j]));
    }
  }
  if (spec.num_coarse == 0) return;
  const int kc = spec.num_coarse;
  coarse_values.assign(static_cast<size_t>(h_n) * kc * d, 0.f);
  for (int h = 0; h < h_n; ++h) {
    const int32_t* off = &offsets[static_cast<size_t>(h) * (k + 1)];
    const int32_t* coff = &coarse_offsets[static_cast<size_t>(h) * (kc + 1)];
    for (int c = 0; c < kc; ++c) {
      const int lo = off[coff[c]], hi = off[coff[c + 1]];
      std::fill(sums.begin(), sums.end(), 0.0);
      for (int r = lo; r < hi; ++r)
        for (int i = 0; i < d; ++i) sums[i] += values[(static_cast<size_t>(h) * n + r) * d + i];
      for (int i = 0; hi > lo && i < d; ++i)
        coarse_values[(static_cast<size_t>(h) * kc + c) * d + i] = static_cast<float>(sums[i] / (hi - lo));
    }
  }
}

void SyntheticLayer::recompute_centroids() {
  const int h_n = spec.num_kv_heads, d = spec.head_dim, k = spec.num_clusters, n = spec.num_rows;
  centroids.assign(static_cast<size_t>(h_n) * k * d, 0.f);
  for (int h = 0; h < h_n; ++h) {
    const int32_t* off = &offsets[static_cast<size_t>(h) * (k + 1)];
    for (int j = 0; j < k; ++j) {
      float* c = &centroids[(static_cast<size_t>(h) * k + j) * d];
      for (int r = off[j]; r < off[j + 1]; ++r)
        for (int i = 0; i < d; ++i) c[i] += keys[(static_cast<size_t>(h) * n + r) * d + i];
      const int size = off[j + 1] - off[j];
      for (int i = 0; size > 0 && i < d; ++i) c[i] /= size;
    }
    if (spec.num_coarse == 0) continue;
    const int kc = spec.num_coarse;
    const int32_t* coff = &coarse_offsets[static_cast<size_t>(h) * (kc + 1)];
    for (int c = 0; c < kc; ++c) {
      float* cc = &coarse_centroids[(static_cast<size_t>(h) * kc + c) * d];
      std::fill(cc, cc + d, 0.f);
      int members = 0;
      for (int j = coff[c]; j < coff[c + 1]; ++j) {
        if (off[j + 1] == off[j]) continue;  // an empty cluster has no mean
        ++members;
        for (int i = 0; i < d; ++i) cc[i] += centroids[(static_cast<size_t>(h) * k + j) * d + i];
      }
      for (int i = 0; members > 0 && i < d; ++i) cc[i] /= members;
    }
  }
}

SyntheticLayer make_synthetic_layer(const SyntheticSpec& spec) {
  SyntheticLayer L;
  L.spec = spec;
  const int h_n = spec.num_kv_heads, d = spec.head_dim, k = spec.num_clusters, n = spec.num_rows;
  std::mt19937_64 rng(spec.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  L.keys.resize(static_cast<size_t>(h_n) * n * d);
  L.values.resize(L.keys.size());
  L.offsets.resize(static_cast<size_t>(h_n) * (k + 1));
  for (int h = 0; h < h_n; ++h) {
    // Sizes: each row goes to a random non-empty cluster; rows are then laid out cluster by cluster.
    std::vector<int> live;
    for (int j = 0; j < k; ++j)
      if (uniform(rng) >= spec.empty_fraction) live.push_back(j);
    if (live.empty()) live.push_back(0);
    std::vector<int> sizes(k, 0);
    std::uniform_int_distribution<int> pick(0, static_cast<int>(live.size()) - 1);
    for (int r = 0; r < n; ++r) ++sizes[live[pick(rng)]];
    int32_t* off = &L.offsets[static_cast<size_t>(h) * (k + 1)];
    off[0] = 0;
    for (int j = 0; j < k; ++j) off[j + 1] = off[j] + sizes[j];
    for (int j = 0; j < k; ++j) {
      std::vector<float> dir(d);
      for (float& x : dir) x = normal(rng);
      for (int r = off[j]; r < off[j + 1]; ++r) {
        float* key = &L.keys[(static_cast<size_t>(h) * n + r) * d];
        for (int i = 0; i < d; ++i) key[i] = dir[i] + spec.cluster_spread * normal(rng);
      }
    }
  }
  for (float& v : L.values) v = normal(rng);
  L.dense_keys.resize(static_cast<size_t>(h_n) * spec.dense_len * d);
  L.dense_values.resize(L.dense_keys.size());
  for (float& v : L.dense_keys) v = normal(rng);
  for (float& v : L.dense_values) v = normal(rng);
  if (spec.num_coarse > 0) {
    // Children of a coarse cluster are a contiguous range of fine ids: cut [0, K) at random points.
    const int kc = spec.num_coarse;
    L.coarse_offsets.resize(static_cast<size_t>(h_n) * (kc + 1));
    L.coarse_centroids.resize(static_cast<size_t>(h_n) * kc * d);
    for (int h = 0; h < h_n; ++h) {
      std::vector<int> cuts(k - 1);
      std::iota(cuts.begin(), cuts.end(), 1);
      std::shuffle(cuts.begin(), cuts.end(), rng);
      cuts.resize(std::min(kc - 1, k - 1));
      std::sort(cuts.begin(), cuts.end());
      int32_t* coff = &L.coarse_offsets[static_cast<size_t>(h) * (kc + 1)];
      coff[0] = 0;
      for (int c = 1; c < kc; ++c) coff[c] = c - 1 < static_cast<int>(cuts.size()) ? cuts[c - 1] : k;
      coff[kc] = k;
    }
  }
  L.recompute_centroids();
  return L;
}

}  // namespace squeezeserve::kernels
