#include "kernels/attention_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace squeezeserve::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// One attended key of a (sequence, KV head): its key and value rows, a logit offset (log n for an
// estimated cluster, else 0) and, for rows of selected clusters, the sorted row (else -1).
struct KeyRow {
  const float* key;
  const float* value;
  float bias;
  int sorted_row;
};

// The keys every query token of the block attends to before the dense part: the selected
// clusters' rows in selection order, then one key per estimated cluster.
// `member`: the query head's member of a squeezed bundle (Selection::member_masks,
// estimate_masks), which attends and estimates only the clusters with its bit.
std::vector<KeyRow> clustered_keys(const SequenceLayerF32& s, const Selection& sel, int bh, int h, int d, int member) {
  std::vector<KeyRow> keys;
  const int32_t* off = s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1);
  for (int i = 0; i < sel.counts[bh]; ++i) {
    const int64_t at = static_cast<int64_t>(bh) * sel.capacity + i;
    if (sel.member_masks != nullptr && !((sel.member_masks[at] >> member) & 1u)) continue;
    const int j = sel.cluster_ids[at];
    for (int r = off[j]; r < off[j + 1]; ++r) {
      keys.push_back({s.keys + h * s.head_stride + static_cast<int64_t>(r) * d,
                      s.values + h * s.head_stride + static_cast<int64_t>(r) * d, 0.f, r});
    }
  }
  const int estimated = sel.estimated != nullptr && s.cluster_values != nullptr ? sel.estimated[bh] : 0;
  for (int i = 0; i < estimated; ++i) {
    const int64_t at = static_cast<int64_t>(bh) * sel.estimate_capacity + i;
    if (sel.estimate_masks != nullptr && !((sel.estimate_masks[at] >> member) & 1u)) continue;
    const int id = sel.estimate_ids[at];
    if (id < s.num_clusters) {
      const int64_t at = (static_cast<int64_t>(h) * s.num_clusters + id) * d;
      keys.push_back({s.centroids + at, s.cluster_values + at, std::log(static_cast<float>(off[id + 1] - off[id])), -1});
    } else {
      const int c = id - s.num_clusters;
      const int32_t* coff = s.coarse_offsets + static_cast<int64_t>(h) * (s.num_coarse + 1);
      const int64_t at = (static_cast<int64_t>(h) * s.num_coarse + c) * d;
      keys.push_back({s.coarse_centroids + at, s.coarse_values + at,
                      std::log(static_cast<float>(off[coff[c + 1]] - off[coff[c]])), -1});
    }
  }
  return keys;
}

}  // namespace

void sparse_attention_ref(const AttentionShape& shape, const SequenceLayerF32* seqs, const float* q,
                          const Selection& selection, float* out, float* lse, const TopKeys& top) {
  const int d = shape.head_dim, g = shape.group(), hq_n = shape.num_q_heads, lq = shape.query_len;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  std::vector<float> logits;
  for (int b = 0; b < shape.batch; ++b) {
    const SequenceLayerF32& s = seqs[b];
    for (int hq = 0; hq < hq_n; ++hq) {
      const int h = hq / g, bh = b * shape.num_kv_heads + h;
      // Shared by every query token of the block; the dense rows follow per token.
      const int member = selection.member_masks != nullptr ? hq % g / selection.member_group : 0;
      std::vector<KeyRow> keys = clustered_keys(s, selection, bh, h, d, member);
      const size_t num_clustered = keys.size();
      for (int t = 0; t < lq; ++t) {
        // Causal over the dense part: the block's token t is dense row dense_len - lq + t.
        const int visible_dense = std::max(0, s.dense_len - lq + t + 1);
        keys.resize(num_clustered);
        for (int i = 0; i < std::min(visible_dense, s.dense_len); ++i) {
          keys.push_back({s.dense_keys + h * s.dense_head_stride + static_cast<int64_t>(i) * d,
                          s.dense_values + h * s.dense_head_stride + static_cast<int64_t>(i) * d, 0.f, -1});
        }
        // The context: the clustered keys and the window, not the request's own tokens.
        const size_t num_context = num_clustered + std::min<size_t>(std::max(0, s.window_len), keys.size() - num_clustered);
        const int64_t row = (static_cast<int64_t>(b) * lq + t) * hq_n + hq;
        const float* qv = q + row * d;
        float* o = out + row * d;
        logits.resize(keys.size());
        float m = kNegInf;
        for (size_t i = 0; i < keys.size(); ++i) {
          float acc = 0.f;
          for (int k = 0; k < d; ++k) acc += qv[k] * keys[i].key[k];
          logits[i] = acc * scale + keys[i].bias;
          m = std::max(m, logits[i]);
        }
        std::fill(o, o + d, 0.f);
        float denom = 0.f, context = 0.f;
        for (size_t i = 0; i < keys.size(); ++i) {
          const float p = std::exp(logits[i] - m);
          denom += p;
          if (i < num_context) context += p;
          for (int k = 0; k < d; ++k) o[k] += p * keys[i].value[k];
        }
        if (denom > 0.f) {
          for (int k = 0; k < d; ++k) o[k] /= denom;
        }
        if (lse) lse[row] = denom > 0.f ? m + std::log(denom) : kNegInf;
        if (top.context_lse) top.context_lse[row] = context > 0.f ? m + std::log(context) : kNegInf;
        if (top.position != nullptr || top.share != nullptr) {
          // The first most attended row of a selected cluster; its share of the context softmax.
          int best = -1;
          for (size_t i = 0; i < num_clustered; ++i) {
            if (keys[i].sorted_row >= 0 && (best < 0 || logits[i] > logits[best])) best = static_cast<int>(i);
          }
          const float share = best >= 0 && context > 0.f ? std::exp(logits[best] - m) / context : 0.f;
          const int n = s.offsets[static_cast<int64_t>(h) * (s.num_clusters + 1) + s.num_clusters];
          if (top.share) top.share[row] = share;
          if (top.position) top.position[row] = share > 0.f ? s.perm[static_cast<int64_t>(h) * n + keys[best].sorted_row] : -1;
        }
      }
    }
  }
}

}  // namespace squeezeserve::kernels
