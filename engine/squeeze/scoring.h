// The estimated attention weight of a cluster (docs/index_layout.md), shared by calibration and
// query-time selection so both use exactly the same numerics. All in fp32, s = softmax scale:
//   z_j = s·q·c_j,   logden = logsumexp_j (z_j + log n_j) over non-empty clusters,
//   p̂_j = exp(z_j − logden)  — the estimated weight of EACH key of cluster j.
// logsumexp is max-shifted, and empty clusters (n_j = 0) are −inf before both the max and the sum,
// so huge logits give finite results (the authors' unshifted exp gave NaN there).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace squeezeserve::squeeze {

// log p̂ is capped here before exp. With the fine level's own denominator p̂ <= 1 anyway; with the
// coarse denominator (hierarchical) a fine centroid can score far above its coarse parent, and
// with huge logits exp would overflow to inf (and so would τ). Kernels must apply the same cap.
inline constexpr float kMaxLogScore = 40.0f;

// Query heads grouped by KV head (Llama repeat_kv order: KV head h serves query heads
// h·G … h·G+G−1) and by selection group:
//   shared    (one selection for all T tokens, prefill as the authors do): [H_kv, 1, G·T, D]
//   per-token (one selection per token, decode):                          [H_kv, T, G, D]
// The third dimension is always ordered (G, tokens of the group).
at::Tensor GroupQueries(const at::Tensor& queries, int64_t num_kv_heads, bool per_token);

// Inverse of GroupQueries for per-query-head results [H_kv, T', G·Tg, X] -> [H_q, T, X].
at::Tensor UngroupQueries(const at::Tensor& grouped, int64_t group_size, bool per_token);

// z = s·q·c for grouped queries [H_kv, T', M, D] and centroids [H_kv, K, D] (or per-selection
// centroids [H_kv, T', K, D]); empty clusters (sizes [H_kv, K] or [H_kv, T', K] == 0) get −inf.
// Returns [H_kv, T', M, K].
at::Tensor CentroidLogits(const at::Tensor& grouped_queries, const at::Tensor& centroids, const at::Tensor& sizes,
                          double scale);

// logden = logsumexp_j (z_j + log n_j) over the last dim: [H_kv, T', M, K] -> [H_kv, T', M].
at::Tensor LogDenominator(const at::Tensor& logits, const at::Tensor& sizes);

// Cluster score of a selection group: p̂ = exp(z − logden) averaged over the group's tokens per
// query head, then the max over the GQA group (a KV head keeps a cluster if any of its query heads
// would). logits [H_kv, T', G·Tg, K], logden [H_kv, T', G·Tg] -> [H_kv, T', K].
at::Tensor GroupScore(const at::Tensor& logits, const at::Tensor& logden, int64_t group_size);

// The pruned-cluster estimate's logits (docs/index_layout.md "Pruned-cluster estimate"): a cluster
// as ONE key standing for its n keys, z + log n; −inf where `kept` (and for empty clusters, whose z
// is −inf). z [H_kv, T', M, C] (CentroidLogits); sizes, kept [H_kv, T', C].
at::Tensor PrunedClusterLogits(const at::Tensor& z, const at::Tensor& sizes, const at::Tensor& kept);

// 1/sqrt(D) unless `scale` > 0.
double SoftmaxScale(double scale, int64_t head_dim);

}  // namespace squeezeserve::squeeze
