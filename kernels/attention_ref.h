// CPU reference of sparse attention (docs/index_layout.md, "Attention at query time"): exact softmax
// attention of each query head over the selected cluster segments of its KV head (no mask), the
// pruned-cluster estimate when the selection carries one (one key per estimated cluster: centroid,
// logit + log n, mean value; no mask), then the dense part (window + own tokens) with a causal mask
// for the query block, in one softmax (which is what the GPU kernels' log-sum-exp merge computes).
// In a squeezed bundle (Selection::member_masks) a query head attends only its member's clusters.
// Same contract as decode_attention.h / prefill_attention.h; float math.
#pragma once

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

// q, out: [B][Lq][Hq][D] fp32. lse (nullable): [B][Lq][Hq], natural-log LSE of the scaled logits.
// Query token t of the block sits at dense position dense_len - Lq + t and sees dense rows <= that.
// A query with nothing to attend to (no selected rows, no dense rows) gets zeros and lse = -inf.
// top: read-ahead's most attended selected key per query row (squeeze_types.h; host arrays).
void sparse_attention_ref(const AttentionShape& shape, const SequenceLayerF32* seqs, const float* q,
                          const Selection& selection, float* out, float* lse, const TopKeys& top = {});

}  // namespace squeezeserve::kernels
