#include "kernels/bundle_selection_ref.h"

#include <cmath>
#include <map>
#include <stdexcept>

namespace squeezeserve::kernels {

template <typename T>
void bundle_selections_ref(const BundleMembers& bundles, int num_kv_heads, const SequenceLayer<T>* bundle_seqs,
                           const Selection& members, const Selection& out, uint32_t* masks,
                           uint32_t* estimate_masks, float* estimate_log_sizes) {
  if (estimate_masks != nullptr && estimate_log_sizes == nullptr)  // as bundle_selections refuses it
    throw std::invalid_argument("bundle_selections_ref: estimate_masks without estimate_log_sizes");
  for (int k = 0; k < bundles.bundles; ++k) {
    const SequenceLayer<T>& s = bundle_seqs[k];
    for (int h = 0; h < num_kv_heads; ++h) {
      // cluster id -> slots that selected (estimated) it, ascending ids
      std::map<int32_t, uint32_t> mask_of, estimate_mask_of;
      for (int m = 0; m < bundles.slots; ++m) {
        const int b = bundles.members[static_cast<int64_t>(k) * bundles.slots + m];
        if (b < 0) continue;
        const int64_t bh = static_cast<int64_t>(b) * num_kv_heads + h;
        for (int i = 0; i < members.counts[bh]; ++i) mask_of[members.cluster_ids[bh * members.capacity + i]] |= 1u << m;
        const int estimated = estimate_masks != nullptr && members.estimated != nullptr ? members.estimated[bh] : 0;
        for (int i = 0; i < estimated; ++i) {  // one-level ids (< K) only, as the kernel's union
          const int32_t id = members.estimate_ids[bh * members.estimate_capacity + i];
          if (id < s.num_clusters) estimate_mask_of[id] |= 1u << m;
        }
      }
      const int64_t kh = static_cast<int64_t>(k) * num_kv_heads + h;
      const int32_t* off = s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1);
      if (estimate_masks != nullptr) {
        int count = 0;
        for (const auto& [id, mask] : estimate_mask_of) {
          const int64_t at = kh * out.estimate_capacity + count++;
          out.estimate_ids[at] = id;
          estimate_masks[at] = mask;
          estimate_log_sizes[at] = std::log(static_cast<float>(off[id + 1] - off[id]));
        }
        out.estimated[kh] = count;
      }
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
                                           const Selection&, uint32_t*, uint32_t*, float*);
template void bundle_selections_ref<uint16_t>(const BundleMembers&, int, const SequenceLayer<uint16_t>*,
                                              const Selection&, const Selection&, uint32_t*, uint32_t*, float*);

}  // namespace squeezeserve::kernels
