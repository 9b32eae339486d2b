// Plain C++ description of the inputs and outputs shared by the CUDA kernels and their CPU
// references. No CUDA types here: the engine's CPU build includes this header.
//
// Layout: docs/index_layout.md. One `SequenceLayer` describes one sequence's view of one layer:
// the cluster-sorted clustered part with its index, plus the dense part (window + the request's own
// tokens). Sequences of a batch may point at different contexts (different N, K, dense lengths).
#pragma once

#include <cstdint>

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
};

using SequenceLayerF32 = SequenceLayer<float>;
using SequenceLayerBf16 = SequenceLayer<uint16_t>;

// log p-hat = z - logden is capped here before exp (docs/index_layout.md, "Constants"): with its
// own level's denominator p-hat <= 1 anyway; a fine centroid scored over the coarse denominator
// (hierarchical) can exceed it by far, and exp would overflow to inf.
constexpr float kMaxLogScore = 40.f;

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
};

// Per (sequence, KV head) selection, worst-case sized so it can live in a CUDA graph.
// Index of (b, h): bh = b * H_kv + h; per-cluster arrays are [bh * capacity + i].
struct Selection {
  int32_t* cluster_ids = nullptr;  // selected fine-cluster ids, ascending
  int32_t* row_start = nullptr;    // exclusive prefix sum of the selected clusters' sizes
  int32_t* counts = nullptr;       // [B*H_kv] number of selected clusters
  int32_t* rows = nullptr;         // [B*H_kv] total selected rows
  int32_t* comparisons = nullptr;  // [B*H_kv] centroid vectors scored (coarse + fine candidates)
  int32_t capacity = 0;            // >= max K over the batch
};

}  // namespace squeezeserve::kernels
