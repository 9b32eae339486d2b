// Sparse prefill attention on the GPU: a block of query tokens attends to its KV head's selected
// cluster segments (no mask) and to the dense part (window + own tokens) with a causal mask among
// the block's tokens, in one online softmax (equivalent to the log-sum-exp merge of the two).
// Plain C++ header; CPU reference with the same contract: attention_ref.h.
//
// Tensor cores (mma.sync m16n8k16 bf16, fp32 accumulate; sm_80+). The GQA group is packed into
// the M dimension: row m of a 64-row tile is token m / G, query head h * G + m % G, so every K/V
// tile gathered from the selected segments serves the whole group.
#pragma once

#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

// q, out: device bf16 [B][Lq][Hq][D]; lse: nullable device fp32 [B][Lq][Hq] (natural log).
// With the pruned-cluster estimate (Selection::estimated) the estimated clusters are attended as
// one key each, unmasked. top: read-ahead's outputs (squeeze_types.h; device [B][Lq][Hq]; needs
// every view's perm and window_len), default none.
// Requires head_dim in {64, 128}, any group 1..8. Returns a cudaError_t value.
int sparse_prefill_attention(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                             const Selection& selection, void* out, float* lse, void* stream,
                             const TopKeys& top = {});

}  // namespace squeezeserve::kernels
