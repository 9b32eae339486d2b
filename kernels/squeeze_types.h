// Plain C++ description of the inputs and outputs shared by the CUDA kernels and their CPU
// references. No CUDA types here: the engine's CPU build includes this header.
//
// Layout: docs/index_layout.md. One `SequenceLayer` describes one sequence's view of one layer:
// the cluster-sorted clustered part with its index, plus the dense part (window + the request's own
// tokens). Sequences of a batch may point at different contexts (different N, K, dense lengths).
#pragma once

#include <cstdint>

// Functions both the CUDA kernels and their CPU references (or the engine) call.
#ifdef __CUDACC__
#define SQUEEZESERVE_HOST_DEVICE __host__ __device__
#else
#define SQUEEZESERVE_HOST_DEVICE
#endif

namespace squeezeserve::kernels {

// Element type of keys, values and centroids: `float` in the CPU references, bf16 bits
// (`uint16_t`) on the GPU. Centroids are bf16 on the GPU because decode selection streams every
// centroid of the level once per step: fp32 centroids cost c*256 B per token-head (5% of the KV
// bytes at c = 0.05) and cap the ideal decode speedup at 1/(f+c) = 6.7x; bf16 halves that to
// 1/(f+c/2) = 8x. Logits, LSE and scores stay fp32 (the products are accumulated in fp32).
template <typename T>
struct SequenceLayer {
  // Clustered part, rows sorted by cluster: keys[h * head_stride + row * D + d].
  const T* keys = nullptr;
  const T* values = nullptr;
  int64_t head_stride = 0;  // elements between KV heads (>= N * D)

  // Fine level: K clusters per head. centroids [H_kv][K][D] (T: fp32 CPU / bf16 GPU), offsets
  // [H_kv][K+1] into rows.
  const T* centroids = nullptr;
  const int32_t* offsets = nullptr;
  int32_t num_clusters = 0;

  // Coarse level (hierarchical only; null otherwise). coarse_offsets [H_kv][Kc+1] are fine-cluster ids.
  const T* coarse_centroids = nullptr;  // [H_kv][Kc][D], element type as centroids
  const int32_t* coarse_offsets = nullptr;
  int32_t num_coarse = 0;

  // Dense part (window, then the request's own tokens; the current query block is its LAST
  // query_len rows): dense_keys[h * dense_head_stride + i * D + d], i < dense_len.
  const T* dense_keys = nullptr;
  const T* dense_values = nullptr;
  int64_t dense_head_stride = 0;
  int32_t dense_len = 0;

  // Per-KV-head thresholds of this sequence (device memory on the GPU, host in the CPU reference),
  // [H_kv] floats each; when non-null they replace SelectionParams::tau_fine / tau_coarse for this
  // sequence's head h (keep iff score > tau[h]). The engine calibrates one per (layer, KV head).
  const float* tau_fine = nullptr;
  const float* tau_coarse = nullptr;   // hierarchical only

  // Pruned-cluster estimate (docs/index_layout.md "Pruned-cluster estimate"): on for this sequence
  // when cluster_values is set (and the launch's Selection has estimate arrays). Every pruned
  // non-empty cluster then attends as ONE key: its centroid, with logit s·q·c + log n (n = its key
  // count) and value the mean of its keys. One-level: each non-selected non-empty fine cluster.
  // Hierarchical: each pruned coarse cluster (coarse centroid, coarse key count, coarse_values)
  // and each expanded (child of a kept coarse cluster) but not selected non-empty fine cluster.
  // Null (the default): pruned clusters are dropped, as in the paper.
  const T* cluster_values = nullptr;  // [H_kv][K][D], element type as values
  const T* coarse_values = nullptr;   // [H_kv][Kc][D], hierarchical only

  // Read-ahead (docs/index_layout.md "Read-ahead"). read_ahead: [Hq] context positions, one per
  // query head (KV head h serves query heads h·G … h·G+G−1), −1 = none; null = none. Selection
  // then keeps the fine cluster holding each position p in [0, N) whatever its score
  // (cluster_of_position[h][p]; hierarchical: its coarse parent is expanded too). Positions
  // outside [0, N) (none, or the window, which is always attended) select nothing.
  // N = offsets[h][K], the clustered rows; cluster_of_position and perm are [H_kv][N] int32.
  const int32_t* read_ahead = nullptr;
  const int32_t* cluster_of_position = nullptr;  // required when read_ahead is set
  // Original context position of each cluster-sorted row: the attention kernels' top-key output
  // (TopKeys) reports positions through it. Required when TopKeys are asked for.
  const int32_t* perm = nullptr;
  // Dense rows [0, window_len) are the stored context's window (the rest: the request's own
  // tokens). Only the TopKeys share reads it: its denominator is the context attention.
  int32_t window_len = 0;
};

using SequenceLayerF32 = SequenceLayer<float>;
using SequenceLayerBf16 = SequenceLayer<uint16_t>;

// log p-hat = z - logden is capped here before exp (docs/index_layout.md, "Constants"): with its
// own level's denominator p-hat <= 1 anyway; a fine centroid scored over the coarse denominator
// (hierarchical) can exceed it by far, and exp would overflow to inf.
constexpr float kMaxLogScore = 40.f;

// Most query heads per KV head the kernels take (the GQA group).
constexpr int kMaxGroup = 8;

// Floats per estimated cluster in Selection::estimate_logits: the group rounded up to a power of
// two (1, 2, 4, 8). The decode selection writes that list, places it and the attention reads it
// once per layer and step; with a stride of kMaxGroup an MHA model moved 8x the bytes it uses.
SQUEEZESERVE_HOST_DEVICE constexpr int estimate_logit_stride(int group) {
  return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8;
}

struct AttentionShape {
  int32_t batch = 1;
  int32_t num_q_heads = 32;
  int32_t num_kv_heads = 32;
  int32_t head_dim = 128;
  int32_t query_len = 1;  // 1 = decode; > 1 = a prefill block
  int32_t group() const { return num_q_heads / num_kv_heads; }
};

// Launch-wide thresholds: used for every (sequence, KV head) whose SequenceLayer::tau_fine /
// tau_coarse is null (sequences of a batch may set them independently).
struct SelectionParams {
  float tau_fine = 0.f;    // keep a fine (or the only) level cluster iff score > tau_fine
  float tau_coarse = 0.f;  // hierarchical only: keep a coarse cluster iff score > tau_coarse
  bool hierarchical = false;
  // The pruned-cluster estimate (SequenceLayer::cluster_values) lists only the pruned non-empty
  // clusters whose score reaches this fraction of their level's threshold (score >= floor * tau);
  // the rest are dropped. 0 = every pruned non-empty cluster (docs/index_layout.md).
  float estimate_floor = 0.f;
};

// Per (sequence, KV head) selection, worst-case sized so it can live in a CUDA graph.
// Index of (b, h): bh = b * H_kv + h; per-cluster arrays are [bh * capacity + i].
struct Selection {
  int32_t* cluster_ids = nullptr;  // selected fine-cluster ids, ascending
  int32_t* row_start = nullptr;    // exclusive prefix sum of the selected clusters' sizes
  int32_t* counts = nullptr;       // [B*H_kv] number of selected clusters
  int32_t* rows = nullptr;         // [B*H_kv] total selected rows
  // [B*H_kv] centroid vectors scored: one-level K; hierarchical Kc + the non-empty children of the
  // kept coarse clusters (engine/squeeze's centroid_comparisons).
  int32_t* comparisons = nullptr;
  int32_t capacity = 0;            // >= max K over the batch

  // Pruned-cluster estimate (SequenceLayer::cluster_values); both null = no estimate in this launch.
  // Per (b, h): the clusters attended as one key each, as ids into the fine level (j < K) or the
  // coarse level (K + c): hierarchical, the pruned coarse clusters first, then the expanded but
  // pruned fine ones, each part ascending; and their count (0 for sequences without the estimate).
  int32_t* estimate_ids = nullptr;  // [B*H_kv][estimate_capacity]
  int32_t* estimated = nullptr;     // [B*H_kv]
  int32_t estimate_capacity = 0;    // >= max over the batch of K (one-level) or K + Kc (hierarchical)
  // Optional, decode (query_len 1) only: each estimated cluster's logit s·q·c + ln n (n: the keys it
  // stands for) for each query head j of the group, [B*H_kv][estimate_capacity][S] fp32 at [...][j]
  // (S = estimate_logit_stride(group); entries g..S-1 are 0), written by the decode selection (one
  // level and hierarchical) when set.
  // sparse_decode_attention then takes the estimated clusters' logits from here and reads only
  // their mean values (no centroid re-read: half the estimate's bytes; no size lookup: one
  // dependent load less per estimated row). Prefill launches neither write nor read it.
  float* estimate_logits = nullptr;

  // Squeezed bundles (decode only; kernels/bundle_selection.h): where set, each (b, h) of the
  // launch is a bundle of up to 32 members' questions on one context, its selected clusters the
  // union of the members' selections, and bit m of member_masks[bh * capacity + i] says whether
  // member m selected cluster i. Member m's query heads are m * member_group ... + member_group - 1
  // of the launch's group: for the rows of a cluster without its bit their logits are -inf (the
  // member does not attend them). The dense rows (the window) are every member's. Null: every
  // query head attends every selected cluster.
  const uint32_t* member_masks = nullptr;
  int32_t member_group = 0;
  // A squeezed bundle's estimate (one-level indexes): the estimate lists above are the union of
  // its members' (ascending fine ids), and bit m of estimate_masks[bh * estimate_capacity + i]
  // says whether member m estimates cluster i; the estimated clusters without a head's member bit
  // have logit -inf for it, as the selected ones. No estimate_logits then: the bundle scores each
  // cluster's centroid against every member's queries itself (each mean value and centroid read
  // once per bundle, where each member's own launch read its mean values: bench/kernels/NOTES.md
  // run 32). Null with member_masks: no estimate in the bundle (each member's goes beside it).
  const uint32_t* estimate_masks = nullptr;
  // With estimate_masks: ln n of each estimated cluster (n: its keys), [B*H_kv][estimate_capacity]
  // fp32, written by bundle_selections beside the masks. The attention copies a tile's sizes
  // asynchronously with its rows; looking them up in the index was two loads that stalled the warp
  // on each estimated tile (bench/kernels/NOTES.md run 34).
  const float* estimate_log_sizes = nullptr;
};

// Read-ahead's output of the attention kernels beside out and lse (null = not computed): per query
// row (b, t, hq), the most attended key among the rows of its selected clusters (the first on
// ties), as its original context position (SequenceLayer::perm; −1 when no selected row has a
// weight > 0) and its share of the head's context attention: exp(logit − LSE over the selected
// rows, the estimate and the window) — not the request's own tokens (engine/squeeze's locate_top).
struct TopKeys {
  int32_t* position = nullptr;  // [B][Lq][Hq]
  float* share = nullptr;       // [B][Lq][Hq]
  // Decode only, optional: the natural-log LSE of the scaled logits over those context rows, -inf
  // where there are none. A squeezed bundle's members (bundle_selection.h) attend their estimate
  // and window beside the bundle's selected rows; the merge needs that part's context sum for the
  // share.
  float* context_lse = nullptr;  // [B][Lq][Hq]
};

}  // namespace squeezeserve::kernels
