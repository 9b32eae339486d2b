// Sparse prefill attention on the GPU: a block of query tokens attends to its KV head's selected
// cluster segments (no mask) and to the dense part (window + own tokens) with a causal mask among
// the block's tokens, in one online softmax (equivalent to the log-sum-exp merge of the two).
// Plain C++ header; CPU reference with the same contract: attention_ref.h.
//
// Tensor cores (mma.sync, bf16, fp32 accumulate; kernels/prefill_mma.cuh). The GQA group is packed into
// the M dimension: row m of a 128-row tile is token m / G, query head h * G + m % G, so every K/V
// tile gathered from the selected segments serves the whole group.
//
// Split-K for short blocks: a block of few query rows gives few CTAs (a 64-token question at the
// Llama-3-8B shape: 2 row tiles x 8 KV heads = 16 CTAs on 132 SMs, each streaming its head's whole
// selection). With a workspace, each (row tile, KV head) is cut into up to kMaxPrefillSplits
// contiguous ranges of its key tiles, one CTA each, writing fp32 partials (unnormalised output,
// max, sum, read-ahead's context sum and top key) that a second kernel merges in range order
// (deterministic).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

constexpr int32_t kMaxPrefillSplits = 16;

// Which kernel runs a launch where the warp-specialized one can (head_dim 128 on an sm_90a device
// and build: prefill_warp_specialized_available); elsewhere the mma.sync kernel always does.
enum class PrefillKernel {
  kMmaSync,          // prefill_attention.cu: FlashAttention-2's structure
  kWarpSpecialized,  // prefill_attention_ws.cu: a producer warpgroup gathering the tiles, two consumer
                     // warpgroups on wgmma taking turns, each overlapping one tile's softmax with the
                     // next tile's products
  // The warp-specialized kernel where each CTA streams at least half its head's selection (split-K
  // of at most kWarpSpecializedMaxSplits: a long query's row tiles fill most of the device; the
  // server's 512-token prefill chunks and longer at Llama-2 and Llama-3 on 132 SMs), mma.sync where
  // split-K cuts the selection finer (questions of tens to a few hundred tokens). Measured on an
  // H100 (bench/kernels/NOTES.md run 37): at 1K x 512K, unsplit, the ws kernel's step 0.83x the
  // mma.sync one's (attention 0.85-0.94x); a Llama-2 64-token question (split 8 ways, 64 rows: the
  // consumers split the keys) took 1.07-1.16x the TTFT end to end (run 37) and its attention
  // 1.1-1.7x (run 14, before the swizzle). Not yet measured: 512-token chunks (2 ways).
  kWhereRangesAreLong,
};
constexpr int32_t kWarpSpecializedMaxSplits = 2;  // PrefillKernel::kWhereRangesAreLong

// Key ranges per (row tile, KV head) of a launch of `ctas` (row tiles x KV heads x batch) on `sms`
// SMs when PrefillLaunch::splits is 0: ~2 CTAs per SM (one ~250-register, 256-thread CTA fits an
// SM at a time; 2 per SM evens out the ranges' ends), 1 when the row tiles already fill the device.
constexpr int32_t prefill_auto_splits(int64_t ctas, int32_t sms) {
  const int64_t splits = 2 * static_cast<int64_t>(sms) / (ctas > 0 ? ctas : 1);
  return static_cast<int32_t>(splits < 1 ? 1 : splits > kMaxPrefillSplits ? kMaxPrefillSplits : splits);
}

// Whether a launch of `splits` key ranges runs the warp-specialized kernel (`available`: it can run
// here, prefill_warp_specialized_available() at head_dim 128).
constexpr bool prefill_runs_warp_specialized(PrefillKernel kernel, int32_t splits, bool available) {
  return available && (kernel == PrefillKernel::kWarpSpecialized ||
                       (kernel == PrefillKernel::kWhereRangesAreLong && splits <= kWarpSpecializedMaxSplits));
}

struct PrefillLaunch {
  // Key ranges per (row tile, KV head): 0 = as many as give the current device ~2 CTAs per SM
  // (1 when the row tiles already do), n = min(n, kMaxPrefillSplits). A null workspace means 1.
  int32_t splits = 0;
  // Warps whose 16 rows all lie past the block (a Llama-2 question's 64 rows fill half a 128-row
  // tile) skip the products and softmax; they still load and meet every barrier. Measured (H100,
  // bench/kernels/NOTES.md run 10): the Llama-2 64-token question's attention 24-29% faster, the
  // others unchanged. false: every warp computes (kept for the A/B row and the check).
  bool skip_padding_warps = true;
  // The kernel (see PrefillKernel; the engine's default is kWhereRangesAreLong).
  PrefillKernel kernel = PrefillKernel::kMmaSync;
};

// Whether the warp-specialized kernel can run on the current device (at head_dim 128).
bool prefill_warp_specialized_available();

// Bytes of workspace a launch of this shape needs (0 when it runs unsplit).
size_t prefill_attention_workspace_bytes(const AttentionShape& shape, const PrefillLaunch& launch);

// q, out: device bf16 [B][Lq][Hq][D]; lse: nullable device fp32 [B][Lq][Hq] (natural log).
// With the pruned-cluster estimate (Selection::estimated) the estimated clusters are attended as
// one key each, unmasked. top: read-ahead's outputs (squeeze_types.h; device [B][Lq][Hq]; needs
// every view's perm and window_len), default none. workspace: prefill_attention_workspace_bytes
// (null: unsplit).
// Requires head_dim in {64, 128}, any group 1..8. Returns a cudaError_t value.
int sparse_prefill_attention(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                             const Selection& selection, void* out, float* lse, void* workspace,
                             const PrefillLaunch& launch, void* stream, const TopKeys& top = {});

}  // namespace squeezeserve::kernels
