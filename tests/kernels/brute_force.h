// Brute-force definitions (double precision, per key) that the CPU references are checked against.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/selection_ref.h"
#include "kernels/synthetic_layer.h"

namespace squeezeserve::kernels::testing {

// Host storage behind a Selection.
struct SelectionBuffers {
  std::vector<int32_t> ids, row_start, counts, rows, comparisons;
  Selection sel;
  SelectionBuffers(int bh, int capacity)
      : ids(static_cast<size_t>(bh) * capacity, -1), row_start(ids.size(), -1), counts(bh, -1),
        rows(bh, -1), comparisons(bh, -1) {
    sel = {ids.data(), row_start.data(), counts.data(), rows.data(), comparisons.data(), capacity};
  }
  std::vector<int> selected(int bh) const {
    return {ids.begin() + static_cast<int64_t>(bh) * sel.capacity,
            ids.begin() + static_cast<int64_t>(bh) * sel.capacity + counts[bh]};
  }
};

// Per-cluster scores of one level for KV head h, computed key by key: the denominator of query row
// r is the sum over every key of exp(s * q_r . c_{cluster(key)}), as if each key were its centroid.
// `level_of_row[row]` maps a key to its cluster at the scored level; `centroid(c)` gives the vector.
template <typename CentroidFn>
std::vector<double> per_key_scores(const SyntheticLayer& L, const float* q, int lq, int hq_n, int h,
                                   int num_level_clusters, const std::vector<int>& level_of_row,
                                   CentroidFn centroid, const std::vector<double>* denominators,
                                   std::vector<double>* denominators_out) {
  const int d = L.spec.head_dim, g = hq_n / L.spec.num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto z = [&](int t, int j, int c) {
    const float* qv = q + (static_cast<int64_t>(t) * hq_n + h * g + j) * d;
    const float* cv = centroid(c);
    double acc = 0;
    for (int i = 0; i < d; ++i) acc += static_cast<double>(qv[i]) * cv[i];
    return acc * scale;
  };
  std::vector<double> den(static_cast<size_t>(lq) * g, 0.0);
  if (denominators) {
    den = *denominators;
  } else {
    for (int t = 0; t < lq; ++t)
      for (int j = 0; j < g; ++j)
        for (int key = 0; key < L.spec.num_rows; ++key) den[t * g + j] += std::exp(z(t, j, level_of_row[key]));
  }
  if (denominators_out) *denominators_out = den;
  std::vector<double> score(num_level_clusters, -1.0);
  std::vector<bool> has_key(num_level_clusters, false);
  for (int key = 0; key < L.spec.num_rows; ++key) has_key[level_of_row[key]] = true;
  for (int c = 0; c < num_level_clusters; ++c) {
    if (!has_key[c]) continue;  // empty: never selected
    for (int j = 0; j < g; ++j) {
      double mean = 0;
      for (int t = 0; t < lq; ++t) mean += std::exp(z(t, j, c)) / den[t * g + j];
      score[c] = std::max(score[c], mean / lq);
    }
  }
  return score;
}

// Fine cluster of each sorted row of head h.
inline std::vector<int> fine_cluster_of_rows(const SyntheticLayer& L, int h) {
  const int k = L.spec.num_clusters;
  const int32_t* off = &L.offsets[static_cast<size_t>(h) * (k + 1)];
  std::vector<int> out(L.spec.num_rows);
  for (int j = 0; j < k; ++j)
    for (int r = off[j]; r < off[j + 1]; ++r) out[r] = j;
  return out;
}

// Dense softmax attention (double) of one query vector over explicit key/value rows.
inline std::vector<double> dense_attention(const float* qv, int d, const std::vector<const float*>& k,
                                           const std::vector<const float*>& v) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> logits(k.size());
  double m = -INFINITY;
  for (size_t i = 0; i < k.size(); ++i) {
    double acc = 0;
    for (int x = 0; x < d; ++x) acc += static_cast<double>(qv[x]) * k[i][x];
    logits[i] = acc * scale;
    m = std::max(m, logits[i]);
  }
  std::vector<double> o(d, 0.0);
  double den = 0;
  for (size_t i = 0; i < k.size(); ++i) {
    const double p = std::exp(logits[i] - m);
    den += p;
    for (int x = 0; x < d; ++x) o[x] += p * v[i][x];
  }
  for (double& x : o) x = den > 0 ? x / den : 0.0;
  return o;
}

// The q-quantile of per-key scores (each key carries its cluster's score).
inline double key_quantile(const std::vector<double>& cluster_score, const std::vector<int>& cluster_of_row,
                           double q) {
  std::vector<double> s;
  for (int c : cluster_of_row) s.push_back(cluster_score[c]);
  std::sort(s.begin(), s.end());
  return s[std::min(s.size() - 1, static_cast<size_t>(q * s.size()))];
}

}  // namespace squeezeserve::kernels::testing
