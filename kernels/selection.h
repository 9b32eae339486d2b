// Centroid scoring + cluster selection on the GPU (docs/index_layout.md). Plain C++ header: the
// stream is an opaque cudaStream_t passed as void*. CPU reference with the same contract:
// selection_ref.h.
//
// Everything stays on the device: outputs are worst-case sized (Selection::capacity) and the
// attention kernels read counts from device memory, so a decode step can be captured in a graph.
// Launches (fixed grids): with Lq * g <= 8 query rows (decode), 2 per level: one stream over the
// level's bf16 centroids (logits + LSE partials), then per chunk of 1024 candidates of each
// (sequence, KV head) one CTA that scores, thresholds and compacts the chunk and writes its list at
// the offset the head's earlier chunks publish (deterministic, in candidate order). Hierarchical: the coarse
// level, then the children of the kept coarse clusters only (their fine centroids are the only
// ones read), scored with the coarse level's denominators.
// Prefill blocks: lse partials -> log denominators -> flags -> compaction (hierarchical: that chain
// on the coarse level, then flags + compaction over the children).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

struct SelectionLimits {
  int32_t max_clusters = 0;  // >= every sequence's K (also Selection::capacity)
  int32_t max_coarse = 0;    // >= every sequence's Kc (hierarchical), else 0
};

// How the launch runs (not what it computes: every choice gives the same selection, bit for bit).
struct SelectionLaunch {
  // A promise that every sequence of the launch has the same index (the same context: centroids,
  // offsets, coarse level per head); their queries and thresholds may differ. Decode launches then
  // read each chunk of centroids once and score it for up to 8 sequences (a batch of questions on
  // one document; the tensor-core stream), where that grid (chunks x KV heads x groups of 8) has
  // at least min_shared_sm_fraction CTAs per SM: below that, one CTA per (chunk, sequence) fills the
  // device better. Measured with batch 8 on an H100 (bench/kernels/NOTES.md run 30, the sequences
  // packed into the MMA's columns): shared 23.8 against 21.8 us at Llama-3 32K (64 CTAs for 132
  // SMs), 25.6 against 30.6 at 64K (104 CTAs), 33.9 against 50.7 at 128K, 18.5 against 41.6 at
  // Llama-2 32K. Ignored for one sequence; breaking the promise scores every sequence against the
  // first one's centroids. 0: share at any size.
  bool shared_context = false;
  float min_shared_sm_fraction = 0.75f;
  // The decode centroid stream's dot products on tensor cores (mma.sync). false: on CUDA cores,
  // one CTA per (chunk, sequence) also where the launch could share (the A/B rows of
  // kernels_bench; up to 2% faster per step with one query row per sequence, MHA, slower elsewhere).
  // Selections agree with the CPU reference either way; between the two, scores differ in the
  // last bits (another summation order), so a cluster within rounding of its threshold may flip.
  bool tensor_core_stream = true;
  // Two-level decode (tensor_core_stream on): each level's centroid stream also thresholds and
  // places its own chunks (selection_decode.cu, kPlace), where a second launch per level read its
  // logits back: two launches of the chain fewer per step. Only with head_sync set, one sequence
  // per CTA (not a shared launch) and the coarse level's whole grid resident at once on the device;
  // else both levels run as two launches each. Measured on an H100 (bench/kernels/NOTES.md, run
  // 18), Llama-3 batch 1: 512K 121.8 -> 117.7 us a step, 32K 46.4 -> 43.2 us. false: always two
  // launches per level (kernels_bench's "*-two-level-unfused" rows).
  bool fused_place = true;
  // Nullable device array of at least B * H_kv ints, all zero before the first launch that uses it;
  // every launch leaves them zero (as DecodeLaunch::tickets): the coarse fused stream's barrier
  // counts (the workspace cannot hold them across launches: the attention reuses it).
  int32_t* head_sync = nullptr;
};

// Bytes of scratch the launcher needs for this shape (query_len, group and batch matter).
size_t selection_workspace_bytes(const AttentionShape& shape, const SelectionLimits& limits);

// seqs: device array of shape.batch views (bf16 KV and bf16 centroids). q: device bf16
// [B][Lq][Hq][D]. out: device arrays. workspace: device, selection_workspace_bytes() long.
// Requires head_dim in {64, 128}, any group 1..8, query_len * group <= 16384.
// Thresholds: seqs[b].tau_fine / tau_coarse ([H_kv] floats in device memory) where non-null, else
// params.tau_fine / tau_coarse, per (sequence b, KV head h) at every level and on every path; so
// one launch serves sequences with different (or per-head) thresholds.
// Read-ahead: seqs[b].read_ahead (device [Hq] int32) keeps the fine cluster of each position whatever
// its score, and expands its coarse parent (squeeze_types.h). Pruned-cluster estimate: when
// out.estimate_ids and out.estimated are set (both, or neither), the clusters each sequence with
// cluster_values estimates are listed there for the attention kernels (0 for the others): its pruned
// non-empty clusters at or above params.estimate_floor (in [0, 1]) of their level's threshold; a
// decode launch (query_len 1) also writes their logits to out.estimate_logits when set.
// `scores_out` (nullable, device, [B*H_kv][capacity] fp32): the group score of each scored
// candidate of the last level, in candidate order (for diagnostics and checks).
// Returns a cudaError_t value (0 = success).
int select_clusters(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                    const SelectionParams& params, const SelectionLimits& limits, const Selection& out,
                    void* workspace, float* scores_out, void* stream, const SelectionLaunch& launch = {});

}  // namespace squeezeserve::kernels
