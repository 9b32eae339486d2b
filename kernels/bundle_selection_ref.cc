#include "kernels/bundle_selection_ref.h"

#include <limits>
#include <map>
#include <vector>

namespace squeezeserve::kernels {

template <typename T>
void bundle_selections_ref(const BundleMembers& bundles, int num_kv_heads, const SequenceLayer<T>* bundle_seqs,
                           const Selection& members, const Selection& out, uint32_t* masks,
                           uint32_t* estimate_masks) {
  for (int k = 0; k < bundles.bundles; ++k) {
    const SequenceLayer<T>& s = bundle_seqs[k];
    for (int h = 0; h < num_kv_heads; ++h) {
      // cluster id -> slots that selected (estimated) it, ascending ids; with out.estimate_logits,
      // estimated cluster id -> (slot, the slot's entry index)
      std::map<int32_t, uint32_t> mask_of, estimate_mask_of;
      std::map<int32_t, std::vector<std::pair<int, int64_t>>> entries_of;
      for (int m = 0; m < bundles.slots; ++m) {
        const int b = bundles.members[static_cast<int64_t>(k) * bundles.slots + m];
        if (b < 0) continue;
        const int64_t bh = static_cast<int64_t>(b) * num_kv_heads + h;
        for (int i = 0; i < members.counts[bh]; ++i) mask_of[members.cluster_ids[bh * members.capacity + i]] |= 1u << m;
        const int estimated = estimate_masks != nullptr && members.estimated != nullptr ? members.estimated[bh] : 0;
        for (int i = 0; i < estimated; ++i) {
          const int64_t at = bh * members.estimate_capacity + i;
          estimate_mask_of[members.estimate_ids[at]] |= 1u << m;
          if (out.estimate_logits != nullptr) entries_of[members.estimate_ids[at]].emplace_back(m, at);
        }
      }
      const int64_t kh = static_cast<int64_t>(k) * num_kv_heads + h;
      if (estimate_masks != nullptr) {
        int count = 0;
        // The union's logits: member m's columns m g .. m g + g - 1 its own logits, -inf where it
        // does not estimate the cluster, 0 past the bundle's group.
        const int g = out.member_group, group = g * bundles.slots;
        const int member_stride = estimate_logit_stride(g), stride = estimate_logit_stride(group);
        for (const auto& [id, mask] : estimate_mask_of) {
          const int64_t at = kh * out.estimate_capacity + count++;
          out.estimate_ids[at] = id;
          estimate_masks[at] = mask;
          if (out.estimate_logits == nullptr) continue;
          float* row = out.estimate_logits + at * stride;
          for (int c = 0; c < stride; ++c) row[c] = c < group ? -std::numeric_limits<float>::infinity() : 0.f;
          for (const auto& [m, from] : entries_of[id]) {
            for (int c = 0; c < g; ++c) row[m * g + c] = members.estimate_logits[from * member_stride + c];
          }
        }
        out.estimated[kh] = count;
      }
      const int32_t* off = s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1);
      int count = 0, rows = 0;
      for (const auto& [id, mask] : mask_of) {
        const int64_t at = kh * out.capacity + count++;
        out.cluster_ids[at] = id;
        out.row_start[at] = rows;
        masks[at] = mask;
        rows += off[id + 1] - off[id];
      }
      out.counts[kh] = count;
      out.rows[kh] = rows;
    }
  }
}

template void bundle_selections_ref<float>(const BundleMembers&, int, const SequenceLayer<float>*, const Selection&,
                                           const Selection&, uint32_t*, uint32_t*);
template void bundle_selections_ref<uint16_t>(const BundleMembers&, int, const SequenceLayer<uint16_t>*,
                                              const Selection&, const Selection&, uint32_t*, uint32_t*);

}  // namespace squeezeserve::kernels
