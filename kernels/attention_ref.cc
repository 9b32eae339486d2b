#include "kernels/attention_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace squeezeserve::kernels {

void sparse_attention_ref(const AttentionShape& shape, const SequenceLayerF32* seqs, const float* q,
                          const Selection& selection, float* out, float* lse) {
  const int d = shape.head_dim, g = shape.group(), hq_n = shape.num_q_heads, lq = shape.query_len;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  std::vector<const float*> krows, vrows;
  std::vector<float> logits;
  for (int b = 0; b < shape.batch; ++b) {
    const SequenceLayerF32& s = seqs[b];
    for (int hq = 0; hq < hq_n; ++hq) {
      const int h = hq / g, bh = b * shape.num_kv_heads + h;
      const int32_t* off = s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1);
      // Rows of the selected segments, shared by every query token of the block.
      krows.clear();
      vrows.clear();
      for (int i = 0; i < selection.counts[bh]; ++i) {
        const int j = selection.cluster_ids[static_cast<int64_t>(bh) * selection.capacity + i];
        for (int r = off[j]; r < off[j + 1]; ++r) {
          krows.push_back(s.keys + h * s.head_stride + static_cast<int64_t>(r) * d);
          vrows.push_back(s.values + h * s.head_stride + static_cast<int64_t>(r) * d);
        }
      }
      const size_t num_sparse = krows.size();
      for (int t = 0; t < lq; ++t) {
        // Causal over the dense part: the block's token t is dense row dense_len - lq + t.
        const int visible_dense = std::max(0, s.dense_len - lq + t + 1);
        krows.resize(num_sparse);
        vrows.resize(num_sparse);
        for (int i = 0; i < std::min(visible_dense, s.dense_len); ++i) {
          krows.push_back(s.dense_keys + h * s.dense_head_stride + static_cast<int64_t>(i) * d);
          vrows.push_back(s.dense_values + h * s.dense_head_stride + static_cast<int64_t>(i) * d);
        }
        const int64_t qo = ((static_cast<int64_t>(b) * lq + t) * hq_n + hq) * d;
        const float* qv = q + qo;
        float* o = out + qo;
        logits.resize(krows.size());
        float m = -std::numeric_limits<float>::infinity();
        for (size_t i = 0; i < krows.size(); ++i) {
          float acc = 0.f;
          for (int k = 0; k < d; ++k) acc += qv[k] * krows[i][k];
          logits[i] = acc * scale;
          m = std::max(m, logits[i]);
        }
        std::fill(o, o + d, 0.f);
        float denom = 0.f;
        for (size_t i = 0; i < krows.size(); ++i) {
          const float p = std::exp(logits[i] - m);
          denom += p;
          for (int k = 0; k < d; ++k) o[k] += p * vrows[i][k];
        }
        if (denom > 0.f) {
          for (int k = 0; k < d; ++k) o[k] /= denom;
        }
        if (lse) {
          lse[(static_cast<int64_t>(b) * lq + t) * hq_n + hq] =
              denom > 0.f ? m + std::log(denom) : -std::numeric_limits<float>::infinity();
        }
      }
    }
  }
}

}  // namespace squeezeserve::kernels
