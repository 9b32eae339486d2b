#include "engine/squeeze/scoring.h"

#include <cmath>
#include <limits>

namespace squeezeserve::squeeze {

at::Tensor GroupQueries(const at::Tensor& queries, int64_t num_kv_heads, bool per_token) {
  TORCH_CHECK(queries.dim() == 3 && queries.size(0) % num_kv_heads == 0,
              "queries must be [H_q, T, D] with H_q a multiple of H_kv");
  const int64_t G = queries.size(0) / num_kv_heads, T = queries.size(1), D = queries.size(2);
  const at::Tensor q = queries.to(at::kFloat).reshape({num_kv_heads, G, T, D});
  if (per_token) return q.permute({0, 2, 1, 3}).contiguous();  // [H_kv, T, G, D]
  return q.reshape({num_kv_heads, 1, G * T, D});
}

at::Tensor UngroupQueries(const at::Tensor& grouped, int64_t group_size, bool per_token) {
  const int64_t Hkv = grouped.size(0), X = grouped.size(3);
  if (per_token) {  // [H_kv, T, G, X]
    const int64_t T = grouped.size(1);
    return grouped.permute({0, 2, 1, 3}).reshape({Hkv * group_size, T, X});
  }
  const int64_t T = grouped.size(2) / group_size;  // [H_kv, 1, G·T, X]
  return grouped.reshape({Hkv * group_size, T, X});
}

at::Tensor CentroidLogits(const at::Tensor& grouped_queries, const at::Tensor& centroids, const at::Tensor& sizes,
                          double scale) {
  // Shared centroids broadcast over the selection groups.
  const at::Tensor c = centroids.dim() == 3 ? centroids.unsqueeze(1) : centroids;  // [H, T'|1, K, D]
  at::Tensor z = at::matmul(grouped_queries, c.to(at::kFloat).transpose(-1, -2)) * scale;
  const at::Tensor empty = (sizes.dim() == 2 ? sizes.unsqueeze(1) : sizes).unsqueeze(2) <= 0;  // [H, T'|1, 1, K]
  return z.masked_fill(empty, -std::numeric_limits<float>::infinity());
}

at::Tensor LogDenominator(const at::Tensor& logits, const at::Tensor& sizes) {
  const at::Tensor s = sizes.dim() == 2 ? sizes.unsqueeze(1) : sizes;
  // log 0 = −inf for empty clusters, whose logits are −inf already: both drop out of the sum.
  return at::logsumexp(logits + s.to(at::kFloat).log().unsqueeze(2), {-1});
}

at::Tensor GroupScore(const at::Tensor& logits, const at::Tensor& logden, int64_t group_size) {
  const int64_t H = logits.size(0), Tp = logits.size(1), M = logits.size(2), K = logits.size(3);
  // −inf − finite = −inf -> p̂ = 0. The cap keeps p̂ finite where it is not bounded by 1 (fine
  // scores over the coarse denominator under huge logits); see kMaxLogScore.
  const at::Tensor p = (logits - logden.unsqueeze(-1)).clamp_max(kMaxLogScore).exp();
  return std::get<0>(p.reshape({H, Tp, group_size, M / group_size, K}).mean(3).max(2));
}

at::Tensor PrunedClusterLogits(const at::Tensor& z, const at::Tensor& sizes, const at::Tensor& kept) {
  return (z + sizes.to(at::kFloat).log().unsqueeze(2)).masked_fill(kept.unsqueeze(2), -std::numeric_limits<float>::infinity());
}

double SoftmaxScale(double scale, int64_t head_dim) {
  return scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

}  // namespace squeezeserve::squeeze
