// Helpers shared by the tests that compare a CUDA path with libtorch on the same tiny bf16 model
// (kernel_path_test.cc, fused_ops_test.cc).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "tests/engine/tiny_checkpoint.h"

namespace squeezeserve::testing {

// ‖got − want‖ / ‖want‖ in float64 on the CPU.
inline double RelativeError(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kCPU, at::kDouble), w = want.to(at::kCPU, at::kDouble);
  return (g - w).norm().item<double>() / std::max(1e-12, w.norm().item<double>());
}

// A 2-layer model small enough to build in milliseconds, with the given attention shape.
inline TinyModelSpec SmallModelSpec(int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                    uint32_t seed) {
  TinyModelSpec spec;
  spec.hidden_size = hidden;
  spec.intermediate_size = 256;
  spec.num_layers = 2;
  spec.num_heads = heads;
  spec.num_kv_heads = kv_heads;
  spec.head_dim = head_dim;
  spec.vocab_size = 128;
  spec.max_position_embeddings = 4096;
  spec.seed = seed;
  return spec;
}

}  // namespace squeezeserve::testing
