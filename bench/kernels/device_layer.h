// Host helpers of the GPU programs: CUDA error checks, bf16 rounding, and a synthetic layer
// uploaded to the device (bf16 KV and centroids) next to the fp32 copy the CPU references read (the same
// bf16-rounded values, so references and kernels see identical inputs).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include "kernels/synthetic_layer.h"

#define CUDA_OK(expr)                                                                         \
  do {                                                                                        \
    const cudaError_t err_ = static_cast<cudaError_t>(expr);                                  \
    if (err_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(err_)); \
      std::exit(2);                                                                           \
    }                                                                                         \
  } while (0)

namespace squeezeserve::kernels::bench {

inline uint16_t to_bf16_bits(float x) {
  const __nv_bfloat16 b = __float2bfloat16(x);
  return *reinterpret_cast<const uint16_t*>(&b);
}
inline float from_bf16_bits(uint16_t x) {
  return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(&x));
}
// Rounds in place to bf16 and returns the bits.
inline std::vector<uint16_t> round_to_bf16(std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    bits[i] = to_bf16_bits(v[i]);
    v[i] = from_bf16_bits(bits[i]);
  }
  return bits;
}

// ||got - ref|| / ||ref|| (the checks' error measure); sets `nan` when got has a non-finite value.
inline double rel_error(const std::vector<float>& got, const std::vector<float>& ref, bool& nan) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) nan = true;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

template <typename T>
T* upload(const std::vector<T>& v) {
  T* d = nullptr;
  CUDA_OK(cudaMalloc(&d, sizeof(T) * std::max<size_t>(1, v.size())));
  if (!v.empty()) CUDA_OK(cudaMemcpy(d, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice));
  return d;
}
template <typename T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> v(n);
  if (n) CUDA_OK(cudaMemcpy(v.data(), d, sizeof(T) * n, cudaMemcpyDeviceToHost));
  return v;
}

// A synthetic layer with its device copy. KV values are rounded to bf16 in the host copy too.
// lookup_window >= 0 also derives the lookup data (SyntheticLayer::add_lookup_data: mean values,
// rounded to bf16 like the engine's, perm, cluster_of_position) with that many window rows.
struct DeviceLayer {
  SyntheticLayer host;
  SequenceLayerBf16 dev{};
  std::vector<void*> allocations;

  explicit DeviceLayer(const SyntheticSpec& spec, int lookup_window = -1) : host(make_synthetic_layer(spec)) {
    auto kv = [&](std::vector<float>& v) {
      uint16_t* p = upload(round_to_bf16(v));
      allocations.push_back(p);
      return p;
    };
    const SequenceLayerF32 h = host.view();
    dev.keys = kv(host.keys);
    dev.values = kv(host.values);
    dev.head_stride = h.head_stride;
    dev.dense_keys = kv(host.dense_keys);
    dev.dense_values = kv(host.dense_values);
    dev.dense_head_stride = h.dense_head_stride;
    dev.dense_len = h.dense_len;
    auto i = [&](const std::vector<int32_t>& v) { int32_t* p = upload(v); allocations.push_back(p); return p; };
    // Centroids are bf16 on the GPU (docs/index_layout.md); the host copy is rounded the same way,
    // so the CPU reference scores exactly the vectors the kernels score.
    dev.centroids = kv(host.centroids);
    dev.offsets = i(host.offsets);
    dev.num_clusters = h.num_clusters;
    if (h.num_coarse > 0) {
      dev.coarse_centroids = kv(host.coarse_centroids);
      dev.coarse_offsets = i(host.coarse_offsets);
      dev.num_coarse = h.num_coarse;
    }
    if (lookup_window >= 0) {
      host.add_lookup_data(spec.seed * 31 + 7, lookup_window);  // from the bf16-rounded values
      dev.cluster_values = kv(host.cluster_values);
      if (h.num_coarse > 0) dev.coarse_values = kv(host.coarse_values);
      dev.perm = i(host.perm);
      dev.cluster_of_position = i(host.cluster_of_position);
      dev.window_len = host.window_len;
    }
  }
  ~DeviceLayer() {
    for (void* p : allocations) cudaFree(p);
  }
  DeviceLayer(const DeviceLayer&) = delete;
  DeviceLayer& operator=(const DeviceLayer&) = delete;
};

// A synthetic layer of `rows` rows a KV head in clusters of ~cluster_size rows (at least one), then
// dense_len dense rows; the other fields as SyntheticSpec's defaults.
inline SyntheticSpec layer_spec(int hkv, int head_dim, int rows, int cluster_size, int dense_len, uint64_t seed) {
  SyntheticSpec spec;
  spec.num_kv_heads = hkv;
  spec.head_dim = head_dim;
  spec.num_rows = rows;
  spec.num_clusters = std::max(1, rows / cluster_size);
  spec.dense_len = dense_len;
  spec.seed = seed;
  return spec;
}

// The engine's shared-context bundle of `members` questions (engine/shared_context_plan.h): member
// m's query head (KV head h, group head j) is the bundle's query row (h x members + m) x g + j.
// Fills, per member row, its bundle row (merge_decode_pieces' a_row) and, per bundle row, its
// member row (DecodeLaunch::q_rows).
inline void bundle_row_maps(int members, int hkv, int g, std::vector<int32_t>* a_row, std::vector<int64_t>* q_rows) {
  a_row->assign(static_cast<size_t>(members) * hkv * g, 0);
  q_rows->assign(a_row->size(), 0);
  for (int m = 0; m < members; ++m)
    for (int h = 0; h < hkv; ++h)
      for (int j = 0; j < g; ++j) {
        const int r = (m * hkv + h) * g + j, br = (h * members + m) * g + j;
        (*a_row)[r] = br;
        (*q_rows)[br] = r;
      }
}

// A host selection of one (sequence, KV head): the clusters j < K of `off` (its offsets, [K + 1])
// for which keep(j), ascending, written to ids / starts (their rows end to end); returns (clusters,
// rows).
template <typename Keep>
std::pair<int, int> pick_clusters(const int32_t* off, int K, Keep keep, int32_t* ids, int32_t* starts) {
  int n = 0, r = 0;
  for (int j = 0; j < K; ++j) {
    if (!keep(j)) continue;
    ids[n] = j;
    starts[n] = r;
    r += off[j + 1] - off[j];
    ++n;
  }
  return {n, r};
}

// Device storage behind a Selection; estimate_capacity > 0 adds the estimate's arrays (and, with
// logits, Selection::estimate_logits).
struct DeviceSelection {
  Selection sel{};
  int bh = 0;
  DeviceSelection(int num_heads, int capacity, int estimate_capacity = 0, bool logits = false) : bh(num_heads) {
    sel.capacity = capacity;
    CUDA_OK(cudaMalloc(&sel.cluster_ids, sizeof(int32_t) * num_heads * capacity));
    CUDA_OK(cudaMalloc(&sel.row_start, sizeof(int32_t) * num_heads * capacity));
    CUDA_OK(cudaMalloc(&sel.counts, sizeof(int32_t) * num_heads));
    CUDA_OK(cudaMalloc(&sel.rows, sizeof(int32_t) * num_heads));
    CUDA_OK(cudaMalloc(&sel.comparisons, sizeof(int32_t) * num_heads));
    if (estimate_capacity > 0) {
      sel.estimate_capacity = estimate_capacity;
      CUDA_OK(cudaMalloc(&sel.estimate_ids, sizeof(int32_t) * num_heads * estimate_capacity));
      CUDA_OK(cudaMalloc(&sel.estimated, sizeof(int32_t) * num_heads));
      if (logits) CUDA_OK(cudaMalloc(&sel.estimate_logits, sizeof(float) * num_heads * estimate_capacity * kMaxGroup));
    }
  }
  ~DeviceSelection() {
    cudaFree(sel.cluster_ids);
    cudaFree(sel.row_start);
    cudaFree(sel.counts);
    cudaFree(sel.rows);
    cudaFree(sel.comparisons);
    cudaFree(sel.estimate_ids);
    cudaFree(sel.estimated);
    cudaFree(sel.estimate_logits);
  }
  DeviceSelection(const DeviceSelection&) = delete;
  DeviceSelection& operator=(const DeviceSelection&) = delete;
};

}  // namespace squeezeserve::kernels::bench
