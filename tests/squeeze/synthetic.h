// Synthetic keys, values and queries for the squeeze tests (all CPU, seeded).
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>

namespace squeezeserve::squeeze::synth {

inline at::Generator Rng(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

// `gen` is a handle: copies share the state.
inline at::Tensor Randn(at::IntArrayRef sizes, at::Generator gen) {
  return at::randn(sizes, gen, at::TensorOptions().dtype(at::kFloat));
}

// Points around `num_planted` random unit directions per head (noise `spread`), scaled by a norm
// drawn in [0.5, 2)·scale. Returns points [H, N, D]; planted[h, n] = the direction of point n.
struct Planted {
  at::Tensor points;
  at::Tensor planted;
};
inline Planted PlantedClusters(int64_t H, int64_t N, int64_t D, int64_t num_planted, double spread, double scale,
                               uint64_t seed) {
  at::Generator gen = Rng(seed);
  at::Tensor dirs = Randn({H, num_planted, D}, gen);
  dirs = dirs / dirs.norm(2, {-1}, true);
  at::Tensor planted = at::randint(num_planted, {H, N}, gen, at::TensorOptions().dtype(at::kLong));
  at::Tensor centers = dirs.gather(1, planted.unsqueeze(-1).expand({H, N, D}));
  at::Tensor noisy = centers + spread * Randn({H, N, D}, gen) / std::sqrt(static_cast<double>(D));
  at::Tensor norms = 0.5 + 1.5 * at::rand({H, N, 1}, gen, at::TensorOptions().dtype(at::kFloat));
  return {noisy / noisy.norm(2, {-1}, true) * norms * scale, planted};
}

// Plain dense attention of queries [H_q, T, D] over keys/values [H_kv, S, D] (GQA by repeat).
inline std::pair<at::Tensor, at::Tensor> DenseAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t G = q.size(0) / k.size(0);
  const at::Tensor kr = k.repeat_interleave(G, 0), vr = v.repeat_interleave(G, 0);
  const at::Tensor logits = at::matmul(q, kr.transpose(1, 2)) / std::sqrt(static_cast<double>(q.size(2)));
  return {at::matmul(at::softmax(logits, -1), vr), at::logsumexp(logits, {-1})};
}

}  // namespace squeezeserve::squeeze::synth
