#include "kernels/selection_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace squeezeserve::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Rows of one KV head's problem: r = t * g + j for query token t and group member j.
struct HeadQueries {
  const float* q;  // [Lq][Hq][D]
  int lq, hq, d, g, h;
  int rows() const { return lq * g; }
  const float* row(int r) const { return q + (static_cast<int64_t>(r / g) * hq + h * g + r % g) * d; }
};

float scaled_dot(const float* a, const float* b, int d, float scale) {
  float acc = 0.f;
  for (int i = 0; i < d; ++i) acc += a[i] * b[i];
  return acc * scale;
}

// One candidate cluster of a level: its centroid and how many keys it stands for.
struct Candidate {
  int id;
  const float* centroid;
  int size;
};

// logden_r = logsumexp over non-empty candidates of (z_rc + log n_c), max-shifted.
std::vector<float> log_denominators(const HeadQueries& hq, const std::vector<Candidate>& cands,
                                    float scale) {
  std::vector<float> logden(hq.rows());
  for (int r = 0; r < hq.rows(); ++r) {
    float m = kNegInf;
    std::vector<float> x;
    x.reserve(cands.size());
    for (const Candidate& c : cands) {
      if (c.size <= 0) continue;  // empty clusters are masked, never scored as zero vectors
      x.push_back(scaled_dot(hq.row(r), c.centroid, hq.d, scale) + std::log(static_cast<float>(c.size)));
      m = std::max(m, x.back());
    }
    float s = 0.f;
    for (float v : x) s += std::exp(v - m);
    logden[r] = x.empty() ? kNegInf : m + std::log(s);
  }
  return logden;
}

// score_c = max over group members j of mean over tokens t of exp(z - logden). -inf if empty.
float group_score(const HeadQueries& hq, const Candidate& c, const std::vector<float>& logden,
                  float scale) {
  if (c.size <= 0) return kNegInf;
  float best = kNegInf;
  for (int j = 0; j < hq.g; ++j) {
    float sum = 0.f;
    for (int t = 0; t < hq.lq; ++t) {
      const int r = t * hq.g + j;
      sum += std::exp(std::min(scaled_dot(hq.row(r), c.centroid, hq.d, scale) - logden[r], kMaxLogScore));
    }
    best = std::max(best, sum / hq.lq);
  }
  return best;
}

// Threshold of KV head h: the sequence's per-head array when set, else the launch-wide value.
float head_tau(const float* per_head, float launch_wide, int h) { return per_head ? per_head[h] : launch_wide; }

// Read-ahead: the fine clusters of KV head h kept whatever their score (SequenceLayer::read_ahead).
std::vector<int> forced_clusters(const SequenceLayerF32& s, int h, int g) {
  std::vector<int> forced;
  if (s.read_ahead == nullptr) return forced;
  const int n = s.offsets[static_cast<int64_t>(h) * (s.num_clusters + 1) + s.num_clusters];
  for (int j = 0; j < g; ++j) {
    const int p = s.read_ahead[h * g + j];
    if (p >= 0 && p < n) forced.push_back(s.cluster_of_position[static_cast<int64_t>(h) * n + p]);
  }
  return forced;
}

bool contains(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

void select_clusters_ref(const AttentionShape& shape, const SequenceLayerF32* seqs, const float* q,
                         const SelectionParams& params, Selection& out) {
  const int d = shape.head_dim, g = shape.group(), hkv = shape.num_kv_heads;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  for (int b = 0; b < shape.batch; ++b) {
    const SequenceLayerF32& s = seqs[b];
    for (int h = 0; h < hkv; ++h) {
      const int bh = b * hkv + h;
      const float tau_fine = head_tau(s.tau_fine, params.tau_fine, h);
      HeadQueries hq{q + static_cast<int64_t>(b) * shape.query_len * shape.num_q_heads * d,
                     shape.query_len, shape.num_q_heads, d, g, h};
      const int32_t* off = s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1);
      auto fine = [&](int j) {
        return Candidate{j, s.centroids + (static_cast<int64_t>(h) * s.num_clusters + j) * d,
                         off[j + 1] - off[j]};
      };

      const std::vector<int> forced = forced_clusters(s, h, g);
      // The pruned-cluster estimate's list of this (b, h), when on (ids: fine j, coarse K + c).
      const bool estimate = out.estimated != nullptr && s.cluster_values != nullptr;
      std::vector<int> estimated;

      std::vector<Candidate> fine_cands;  // fine clusters that get scored
      std::vector<float> logden;          // denominator the fine scores use
      int comparisons = 0;
      if (!params.hierarchical) {
        for (int j = 0; j < s.num_clusters; ++j) fine_cands.push_back(fine(j));
        logden = log_denominators(hq, fine_cands, scale);
        comparisons = s.num_clusters;
      } else {
        const int32_t* coff = s.coarse_offsets + static_cast<int64_t>(h) * (s.num_coarse + 1);
        std::vector<int> forced_parents;
        for (int j : forced)
          forced_parents.push_back(static_cast<int>(std::upper_bound(coff, coff + s.num_coarse + 1, j) - coff) - 1);
        std::vector<Candidate> coarse;
        for (int c = 0; c < s.num_coarse; ++c) {
          coarse.push_back({c, s.coarse_centroids + (static_cast<int64_t>(h) * s.num_coarse + c) * d,
                            off[coff[c + 1]] - off[coff[c]]});
        }
        logden = log_denominators(hq, coarse, scale);
        comparisons = s.num_coarse;
        const float tau_coarse = head_tau(s.tau_coarse, params.tau_coarse, h);
        for (const Candidate& c : coarse) {
          if (c.size <= 0) continue;
          const float score = group_score(hq, c, logden, scale);
          if (score > tau_coarse || contains(forced_parents, c.id)) {
            for (int j = coff[c.id]; j < coff[c.id + 1]; ++j) fine_cands.push_back(fine(j));
          } else if (score >= params.estimate_floor * tau_coarse) {
            estimated.push_back(s.num_clusters + c.id);
          }
        }
        // Only the non-empty expanded fine centroids are scored (empty ones are masked).
        for (const Candidate& c : fine_cands) comparisons += c.size > 0;
      }

      int count = 0, rows = 0;
      for (const Candidate& c : fine_cands) {
        if (c.size <= 0) continue;
        const float score = group_score(hq, c, logden, scale);
        if (!(score > tau_fine || contains(forced, c.id))) {
          if (score >= params.estimate_floor * tau_fine) estimated.push_back(c.id);
          continue;
        }
        out.cluster_ids[static_cast<int64_t>(bh) * out.capacity + count] = c.id;
        out.row_start[static_cast<int64_t>(bh) * out.capacity + count] = rows;
        ++count;
        rows += c.size;
      }
      out.counts[bh] = count;
      out.rows[bh] = rows;
      out.comparisons[bh] = comparisons;
      if (out.estimated != nullptr) {
        if (!estimate) estimated.clear();
        out.estimated[bh] = static_cast<int32_t>(estimated.size());
        std::copy(estimated.begin(), estimated.end(), out.estimate_ids + static_cast<int64_t>(bh) * out.estimate_capacity);
        // Decode: each estimated cluster's logit per group member (Selection::estimate_logits).
        for (size_t e = 0; out.estimate_logits && shape.query_len == 1 && e < estimated.size(); ++e) {
          const int id = estimated[e];
          const bool fine_id = id < s.num_clusters;
          const float* centroid =
              fine_id ? s.centroids + (static_cast<int64_t>(h) * s.num_clusters + id) * d
                      : s.coarse_centroids + (static_cast<int64_t>(h) * s.num_coarse + id - s.num_clusters) * d;
          // Its key count: a fine cluster's, or a coarse one's contiguous children's.
          const int32_t* coff =
              fine_id ? nullptr : s.coarse_offsets + static_cast<int64_t>(h) * (s.num_coarse + 1) + (id - s.num_clusters);
          const int size = fine_id ? off[id + 1] - off[id] : off[coff[1]] - off[coff[0]];
          const float log_n = std::log(static_cast<float>(size));
          const int stride = estimate_logit_stride(g);
          float* to = out.estimate_logits + (static_cast<int64_t>(bh) * out.estimate_capacity + e) * stride;
          for (int j = 0; j < stride; ++j) to[j] = j < g ? scaled_dot(hq.row(j), centroid, d, scale) + log_n : 0.f;
        }
      }
    }
  }
}

}  // namespace squeezeserve::kernels
