// kernels_bench: sparse decode and prefill (selection + attention) on synthetic clustered layers,
// timed as one CUDA graph per step, L2 flushed before every timed replay, median of the replays.
// The flush reads 256 MB (--flush write: writes them, the older method, which left ~50 MB of dirty
// lines that every timed step first wrote back to HBM); the JSON records which ("flush"). The selection step is also split per launch (select_split: each kernel of its
// graph replayed alone). Writes JSON (--out FILE). Dense baselines: sdpa_baseline.py (PyTorch SDPA flash /
// cuDNN) on the same shapes; it merges both files into the comparison table.
//
// Synthetic clustering: cluster sizes uniform in [10, 30] (mean 20 -> c = 5%), random centroids and
// queries; the threshold is bisected on the device until the kept fraction of clustered keys is
// 1 - sparsity (one global tau, so heads keep different amounts, as with calibrated thresholds).
// At 90% every config is also timed with the accurate lookup (lookup "accurate", else "paper"):
// the pruned-cluster estimate on (one key per pruned cluster; decode takes its logits from the
// selection, Selection::estimate_logits) and read-ahead (one forced position per query head,
// TopKeys out), at the same tau, and as "accurate-floor16" (only the pruned clusters scoring at
// least tau / 16 estimated); decode also as "accurate-centroids" (the estimate's keys re-read)
// and as "paper-two-level": the paper's lookup over a two-level index (8 fine clusters per coarse
// one; tau_coarse expands ~30% of the rows, tau_fine bisected to the same kept fraction), and
// "accurate-two-level": the accurate lookup over that index at the same thresholds (a pruned coarse
// cluster estimated as one key: ~3x fewer estimated keys than one level).
// Prefill: 1K-token blocks at every context, and from 128K on a 64-token question (the user's
// query after the fixed context: few row tiles, so the attention runs split-K), also timed
// unsplit (lookup "paper-unsplit") to show what the split buys, and at 90% with 4, 8 and 16 key
// ranges ("paper-splitsN", against the launch's choice) and with the warps of padding rows idle
// ("paper-no-skip-padding", PrefillLaunch::skip_padding_warps off). Decode at 90% also with one CTA per SM
// ("paper-ctas-per-sm", against the default grid of every CTA the device holds at once), and
// without programmatic dependent launch ("paper-no-pdl", "paper-two-level-no-pdl",
// "accurate-two-level-no-pdl"; kernels/launch.h), with the split's piece start charge at 0, 192
// and 384 rows ("paper-start-costN"; the default is kDefaultPieceStartRows; 0 also as
// "accurate-two-level-start-cost0"; DecodeLaunch::piece_start_rows), and with the selection's
// centroid stream on CUDA
// cores instead of tensor cores ("paper-cuda-core", "paper-two-level-cuda-core";
// SelectionLaunch::tensor_core_stream). Every
// prefill config at head_dim 128 on sm_90a also on the warp-specialized kernel ("paper-ws", and at
// 90% "accurate-ws"; PrefillKernel::kWarpSpecialized).
// Two-level decode also with each level as a centroid stream and a compaction launch instead of
// the default fused stream ("paper-two-level-unfused", "accurate-two-level-unfused";
// SelectionLaunch::fused_place off). Decode at 90% also with the grid in 2-4 waves of shorter
// ranges ("paper-wavesN", "accurate-wavesN", "accurate-two-level-waves4"; DecodeLaunch::waves), and
// the accurate lookup's parts apart: the estimate without read-ahead's top keys ("accurate-no-top",
// "accurate-two-level-no-top") and the top keys without the estimate ("accurate-no-estimate"). The
// two-level accurate rows launch as the engine does, without wide estimate tiles, but
// "accurate-two-level-wide" (DecodeLaunch::wide_estimate_tiles). At batch > 1 also the accurate
// lookup over one context for every sequence, with and without wide tiles ("accurate-one-context",
// "accurate-one-context-narrow").
// Flags: --out FILE, --quick (first 4 configs), --context N (that context only), --prefill-only,
// --decode-only, --flush read|write, --query-len L (a prefill length up to 1024: that one alone, in place of
// 1024 and 64); for profiling, --model M, --batch B, --query-len L, --lookup NAME,
// --sparsity S narrow the rows and --profile runs each once in an NVTX range instead of timing it;
// --trace FILE (a build with -DSQZ_DECODE_TRACE=ON) appends each decode row's attention phases per
// CTA, from three replays of its step after L2 flushes, to FILE (JSON lines; decode_trace.py sums
// them up).
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>
#include <random>
#include <string>
#include <vector>

#include <nvtx3/nvToolsExt.h>

#include "bench/kernels/device_layer.h"
#include "kernels/decode_attention.h"
#include "kernels/launch.h"
#include "kernels/prefill_attention.h"
#include "kernels/selection.h"

using namespace squeezeserve::kernels;
using namespace squeezeserve::kernels::bench;

namespace {

constexpr int kWindow = 100;
constexpr int kPrefillTokens = 1024;
constexpr int kQuestionTokens = 64;
constexpr int kCoarseRatio = 8;  // two-level index: fine clusters per coarse cluster

__global__ void fill_bf16(__nv_bfloat16* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 15; x *= 2246822519u; x ^= x >> 13;
    p[i] = __float2bfloat16((x & 0xffff) / 32768.f - 1.f);
  }
}
template <typename T>
T* dev_alloc(size_t n) {
  T* p = nullptr;
  CUDA_OK(cudaMalloc(&p, sizeof(T) * std::max<size_t>(n, 1)));
  return p;
}

// One synthetic context per sequence (distinct memory), dense part sized for a prefill block.
struct BenchContext {
  int hkv, d, n, k;
  __nv_bfloat16 *keys, *values, *dense_k, *dense_v;
  __nv_bfloat16* centroids;  // bf16 on the GPU (docs/index_layout.md)
  int32_t* offsets;
  // The accurate lookup's data: mean values (random: only timed), the rows in original order
  // (perm = identity) and the cluster of each position.
  __nv_bfloat16* means;
  int32_t *perm, *cluster_of_position;
  // The two-level index: every kCoarseRatio consecutive fine clusters form a coarse one (random
  // coarse centroids: only timed).
  int kc;
  __nv_bfloat16 *coarse_centroids, *coarse_means;
  int32_t* coarse_offsets;
  BenchContext(int hkv_, int d_, int n_, uint32_t seed) : hkv(hkv_), d(d_), n(n_) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> size(10, 30);
    std::vector<int32_t> off;
    std::vector<int> sizes;
    for (int total = 0; total < n;) {
      const int s = std::min(size(rng), n - total);
      sizes.push_back(s);
      total += s;
    }
    k = static_cast<int>(sizes.size());
    for (int h = 0; h < hkv; ++h) {
      std::shuffle(sizes.begin(), sizes.end(), rng);  // heads differ
      int at = 0;
      off.push_back(0);
      for (int s : sizes) off.push_back(at += s);
    }
    offsets = upload(off);
    std::vector<int32_t> order(size_t(hkv) * n), cluster(order.size());
    for (int h = 0; h < hkv; ++h) {
      for (int r = 0; r < n; ++r) order[size_t(h) * n + r] = r;
      for (int j = 0; j < k; ++j)
        for (int r = off[size_t(h) * (k + 1) + j]; r < off[size_t(h) * (k + 1) + j + 1]; ++r) cluster[size_t(h) * n + r] = j;
    }
    perm = upload(order);
    cluster_of_position = upload(cluster);
    kc = (k + kCoarseRatio - 1) / kCoarseRatio;
    std::vector<int32_t> coff;
    for (int h = 0; h < hkv; ++h)
      for (int c = 0; c <= kc; ++c) coff.push_back(std::min(c * kCoarseRatio, k));
    coarse_offsets = upload(coff);
    const size_t kv = size_t(hkv) * n * d, dense = size_t(hkv) * (kWindow + kPrefillTokens) * d;
    keys = dev_alloc<__nv_bfloat16>(kv);
    values = dev_alloc<__nv_bfloat16>(kv);
    dense_k = dev_alloc<__nv_bfloat16>(dense);
    dense_v = dev_alloc<__nv_bfloat16>(dense);
    centroids = dev_alloc<__nv_bfloat16>(size_t(hkv) * k * d);
    coarse_centroids = dev_alloc<__nv_bfloat16>(size_t(hkv) * kc * d);
    fill_bf16<<<1024, 256>>>(coarse_centroids, size_t(hkv) * kc * d, seed * 7 + 8);
    coarse_means = dev_alloc<__nv_bfloat16>(size_t(hkv) * kc * d);
    fill_bf16<<<1024, 256>>>(coarse_means, size_t(hkv) * kc * d, seed * 7 + 9);
    means = dev_alloc<__nv_bfloat16>(size_t(hkv) * k * d);
    fill_bf16<<<1024, 256>>>(means, size_t(hkv) * k * d, seed * 7 + 6);
    fill_bf16<<<1024, 256>>>(keys, kv, seed * 7 + 1);
    fill_bf16<<<1024, 256>>>(values, kv, seed * 7 + 2);
    fill_bf16<<<1024, 256>>>(dense_k, dense, seed * 7 + 3);
    fill_bf16<<<1024, 256>>>(dense_v, dense, seed * 7 + 4);
    fill_bf16<<<1024, 256>>>(centroids, size_t(hkv) * k * d, seed * 7 + 5);
    CUDA_OK(cudaGetLastError());
  }
  ~BenchContext() {
    cudaFree(keys); cudaFree(values); cudaFree(dense_k); cudaFree(dense_v); cudaFree(centroids); cudaFree(offsets);
    cudaFree(means); cudaFree(perm); cudaFree(cluster_of_position); cudaFree(coarse_centroids); cudaFree(coarse_offsets);
    cudaFree(coarse_means);
  }
  SequenceLayerBf16 view(int dense_len) const {
    SequenceLayerBf16 v;
    v.keys = reinterpret_cast<const uint16_t*>(keys);
    v.values = reinterpret_cast<const uint16_t*>(values);
    v.head_stride = int64_t(n) * d;
    v.centroids = reinterpret_cast<const uint16_t*>(centroids);
    v.offsets = offsets;
    v.num_clusters = k;
    v.dense_keys = reinterpret_cast<const uint16_t*>(dense_k);
    v.dense_values = reinterpret_cast<const uint16_t*>(dense_v);
    v.dense_head_stride = int64_t(kWindow + kPrefillTokens) * d;
    v.dense_len = dense_len;
    return v;
  }
  // The two-level index's view (the paper's lookup over it).
  SequenceLayerBf16 two_level_view(int dense_len) const {
    SequenceLayerBf16 v = view(dense_len);
    v.coarse_centroids = reinterpret_cast<const uint16_t*>(coarse_centroids);
    v.coarse_offsets = coarse_offsets;
    v.num_coarse = kc;
    return v;
  }
  // The accurate lookup's view: estimate and read-ahead (positions: device [hq]) on; over the
  // two-level index, pruned coarse clusters are estimated as one key each (their mean value).
  SequenceLayerBf16 accurate_view(int dense_len, const int32_t* read_ahead, bool two_level = false) const {
    SequenceLayerBf16 v = two_level ? two_level_view(dense_len) : view(dense_len);
    v.cluster_values = reinterpret_cast<const uint16_t*>(means);
    if (two_level) v.coarse_values = reinterpret_cast<const uint16_t*>(coarse_means);
    v.perm = perm;
    v.cluster_of_position = cluster_of_position;
    v.window_len = kWindow;
    v.read_ahead = read_ahead;
    return v;
  }
};

struct Timing { double median_us = 0, min_us = 0; };

// Reads every 16 bytes of the flush buffer; the xor is stored only if it equals a value it never
// takes on the buffer's contents (zeros), so the loads cannot be dropped and nothing is dirtied.
__global__ void read_flush_kernel(const uint4* p, size_t n, uint4* sink) {
  uint4 x = make_uint4(0, 0, 0, 0);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = p[i];
    x.x ^= v.x; x.y ^= v.y; x.z ^= v.z; x.w ^= v.w;
  }
  if (x.x == 0x9e3779b9u && x.y == 0x7f4a7c15u) *sink = x;
}

// Evicts the L2 before a timed replay: by reading (default) or writing the flush buffer.
struct L2Flush {
  void* buffer = nullptr;
  size_t bytes = 256u << 20;
  bool write = false;
  void operator()(cudaStream_t s, int i) const {
    if (write) {
      CUDA_OK(cudaMemsetAsync(buffer, i & 0xff, bytes, s));
      return;
    }
    const auto* p = static_cast<const uint4*>(buffer);
    read_flush_kernel<<<1024, 256, 0, s>>>(p, bytes / sizeof(uint4) - 1, static_cast<uint4*>(buffer) + bytes / sizeof(uint4) - 1);
    CUDA_OK(cudaGetLastError());
  }
};

// Median over replays of `graph`, each after an L2 flush that is not timed.
Timing time_graph(cudaGraphExec_t graph, cudaStream_t s, const L2Flush& flush, int reps) {
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  std::vector<double> us;
  for (int i = 0; i < reps + 3; ++i) {
    flush(s, i);
    CUDA_OK(cudaEventRecord(a, s));
    CUDA_OK(cudaGraphLaunch(graph, s));
    CUDA_OK(cudaEventRecord(b, s));
    CUDA_OK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, a, b));
    if (i >= 3) us.push_back(ms * 1e3);  // first replays warm up
  }
  std::sort(us.begin(), us.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return {us[us.size() / 2], us.front()};
}

template <typename F>
cudaGraph_t capture_graph(cudaStream_t s, F&& body) {
  cudaGraph_t g;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  body();
  CUDA_OK(cudaStreamEndCapture(s, &g));
  return g;
}

template <typename F>
cudaGraphExec_t capture(cudaStream_t s, F&& body) {
  cudaGraph_t g = capture_graph(s, body);
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, g, 0));
  CUDA_OK(cudaGraphDestroy(g));
  return exec;
}

// Kernel name from cudaFuncGetName's (Itanium-mangled) name: the last identifier of the nested
// name, e.g. "score_stream_kernel" (template arguments dropped).
std::string short_kernel_name(const char* mangled) {
  const std::string m = mangled ? mangled : "?";
  if (m.rfind("_ZN", 0) != 0) return m;
  std::string last = m;
  for (size_t i = 3; i < m.size() && std::isdigit(static_cast<unsigned char>(m[i]));) {
    size_t len = 0;
    while (i < m.size() && std::isdigit(static_cast<unsigned char>(m[i]))) len = len * 10 + (m[i++] - '0');
    last = m.substr(i, len);
    i += len;
  }
  return last;
}

struct LaunchTiming {
  std::string kernel;
  Timing t;
};

// Each kernel of a graph captured on one stream, in launch order, replayed alone (the others
// disabled in the same executable graph) after the usual L2 flush, on the buffers the full replays
// left behind. Every part carries its own launch latency, so the parts add up to more than the step.
std::vector<LaunchTiming> time_launches(cudaGraph_t graph, cudaStream_t s, const L2Flush& flush, int reps) {
  std::vector<cudaGraphNode_t> chain;
  size_t n = 1;
  cudaGraphNode_t node = nullptr;
  CUDA_OK(cudaGraphGetRootNodes(graph, &node, &n));
  while (n == 1) {  // one-stream capture: a chain
    chain.push_back(node);
#if CUDART_VERSION >= 13000
    // With the edge data: programmatic (PDL) edges refuse introspection without it.
    cudaGraphEdgeData edge{};
    CUDA_OK(cudaGraphNodeGetDependentNodes(chain.back(), nullptr, nullptr, &n));
    if (n == 1) CUDA_OK(cudaGraphNodeGetDependentNodes(chain.back(), &node, &edge, &n));
#else
    CUDA_OK(cudaGraphNodeGetDependentNodes(chain.back(), nullptr, &n));
    if (n == 1) CUDA_OK(cudaGraphNodeGetDependentNodes(chain.back(), &node, &n));
#endif
  }
  std::vector<cudaGraphNode_t> kernels;
  for (cudaGraphNode_t c : chain) {
    cudaGraphNodeType type;
    CUDA_OK(cudaGraphNodeGetType(c, &type));
    if (type == cudaGraphNodeTypeKernel) kernels.push_back(c);
  }
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  std::vector<LaunchTiming> out;
  for (cudaGraphNode_t k : kernels) {
    for (cudaGraphNode_t other : kernels) CUDA_OK(cudaGraphNodeSetEnabled(exec, other, other == k));
    cudaKernelNodeParams params{};
    CUDA_OK(cudaGraphKernelNodeGetParams(k, &params));
    const char* name = nullptr;
    if (cudaFuncGetName(&name, params.func) != cudaSuccess) name = nullptr;
    out.push_back({short_kernel_name(name), time_graph(exec, s, flush, reps)});
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  return out;
}

struct Config {
  const char* model;
  int hq, hkv, d;
  int context;  // tokens of the fixed context (clustered N = context - window)
  int batch;
  int query_len;  // 1 = decode
  bool prefill() const { return query_len > 1; }
};

}  // namespace

int main(int argc, char** argv) {
  std::string out_path = "kernels_bench.json";
  bool quick = false, prefill_only = false, decode_only = false;
  int only_context = 0;  // --context N: only that context length (profiling runs)
  // Profiling (scripts/gpu/profile_kernels.sh): --model, --batch, --query-len, --lookup and
  // --sparsity narrow the rows; --profile replays each remaining row's step once inside the NVTX
  // range "profiled step" (for `ncu --nvtx --nvtx-include`) instead of timing it, printing the
  // row's name (its JSON has no rows).
  std::string only_model, only_lookup;
  int only_batch = 0, only_query_len = 0;
  float only_sparsity = 0.f;
  bool profile = false;
  const char* trace_path = nullptr;
  L2Flush flush;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--flush") && i + 1 < argc) flush.write = !std::strcmp(argv[++i], "write");
    if (!std::strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--prefill-only")) prefill_only = true;  // skip the decode configs
    if (!std::strcmp(argv[i], "--decode-only")) decode_only = true;    // skip the prefill configs
    if (!std::strcmp(argv[i], "--context") && i + 1 < argc) only_context = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--model") && i + 1 < argc) only_model = argv[++i];
    if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) only_batch = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--query-len") && i + 1 < argc) only_query_len = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--lookup") && i + 1 < argc) only_lookup = argv[++i];
    if (!std::strcmp(argv[i], "--sparsity") && i + 1 < argc) only_sparsity = std::strtof(argv[++i], nullptr);
    if (!std::strcmp(argv[i], "--profile")) profile = true;
    if (!std::strcmp(argv[i], "--trace") && i + 1 < argc) trace_path = argv[++i];
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  if (trace_path && set_decode_trace(nullptr, 0) == cudaErrorNotSupported) {
    std::fprintf(stderr, "kernels_bench: --trace needs a build configured with -DSQZ_DECODE_TRACE=ON\n");
    return 2;
  }
  flush.buffer = dev_alloc<char>(flush.bytes);
  CUDA_OK(cudaMemset(flush.buffer, 0, flush.bytes));

  std::vector<Config> configs;
  // --context N: that length alone, any N (run 18 asked for 65536 and silently got no rows).
  const std::vector<int> contexts =
      only_context > 0 ? std::vector<int>{only_context} : std::vector<int>{32768, 131072, 524288};
  for (int ctx : contexts) {
    for (auto [model, hq, hkv] : {std::make_tuple("llama2-7b", 32, 32), std::make_tuple("llama3-8b", 32, 8)}) {
      for (int batch : {1, 8}) {
        // 8 distinct 512K MHA contexts do not fit in 80 GB: skipped (reported as missing).
        if (double(batch) * hkv * ctx * 128 * 4 > 40e9) continue;
        configs.push_back({model, hq, hkv, 128, ctx, batch, 1});
      }
      if (only_query_len > 1) {  // --query-len L: that prefill length alone (up to the dense buffers')
        configs.push_back({model, hq, hkv, 128, ctx, 1, only_query_len});
        continue;
      }
      configs.push_back({model, hq, hkv, 128, ctx, 1, kPrefillTokens});
      if (ctx >= 131072) configs.push_back({model, hq, hkv, 128, ctx, 1, kQuestionTokens});
    }
  }
  if (prefill_only || decode_only)
    configs.erase(std::remove_if(configs.begin(), configs.end(),
                                 [&](const Config& c) { return prefill_only ? !c.prefill() : c.prefill(); }),
                  configs.end());
  configs.erase(std::remove_if(configs.begin(), configs.end(),
                               [&](const Config& c) {
                                 return (!only_model.empty() && only_model != c.model) ||
                                        (only_batch != 0 && only_batch != c.batch) ||
                                        (only_query_len != 0 && only_query_len != c.query_len);
                               }),
                configs.end());
  if (quick) configs.resize(std::min<size_t>(configs.size(), 4));
  if (configs.empty() || (only_context != 0 && only_context < 4096) || only_query_len > kPrefillTokens) {
    // say so, not an empty table
    std::fprintf(stderr, "kernels_bench: no configuration matches --context (>= 4096), --model (llama2-7b, llama3-8b), "
                         "--batch (1, 8), --query-len (1, or any prefill length up to %d; by default %d and %d from 128K) and "
                         "--prefill-only / --decode-only\n",
                 kPrefillTokens, kPrefillTokens, kQuestionTokens);
    return 2;
  }

  FILE* json = std::fopen(out_path.c_str(), "w");
  std::fprintf(json, "{\"device\": \"%s\", \"sms\": %d, \"flush\": \"%s\", \"results\": [\n", prop.name,
               prop.multiProcessorCount, flush.write ? "write" : "read");
  bool first_row = true;
  std::printf("%-10s %6s %2s %-7s %4s %5s %-18s %9s %9s %9s %9s %7s %8s\n", "model", "ctx", "B", "mode", "lq", "spars",
              "lookup", "select_us", "attend_us", "total_us", "MB_moved", "TB/s", "kept");
  for (const Config& c : configs) {
    const int n = c.context - kWindow;
    const int lq = c.query_len;
    std::vector<std::unique_ptr<BenchContext>> ctxs;
    std::vector<SequenceLayerBf16> views;
    int max_k = 0;
    for (int b = 0; b < c.batch; ++b) {
      ctxs.push_back(std::make_unique<BenchContext>(c.hkv, c.d, n, 1234 + b));
      views.push_back(ctxs.back()->view(kWindow + lq));
      max_k = std::max(max_k, ctxs.back()->k);
    }
    SequenceLayerBf16* d_views = upload(views);
    AttentionShape shape;
    shape.batch = c.batch;
    shape.num_q_heads = c.hq;
    shape.num_kv_heads = c.hkv;
    shape.head_dim = c.d;
    shape.query_len = lq;
    const size_t q_n = size_t(c.batch) * lq * c.hq * c.d;
    __nv_bfloat16* q = dev_alloc<__nv_bfloat16>(q_n);
    __nv_bfloat16* out = dev_alloc<__nv_bfloat16>(q_n);
    fill_bf16<<<256, 256>>>(q, q_n, 99);
    CUDA_OK(cudaDeviceSynchronize());  // fills ran on the legacy stream; timing uses s
    const int bh = c.batch * c.hkv;
    DeviceSelection sel(bh, max_k);
    const SelectionLimits limits{max_k, 0};
    void* sws = dev_alloc<char>(selection_workspace_bytes(shape, limits));
    DecodeLaunch widest_decode;  // the largest grid any row below asks for ("-waves4")
    widest_decode.waves = 4;
    PrefillLaunch widest;  // the most key ranges any row below asks for
    widest.splits = kMaxPrefillSplits;
    void* dws = dev_alloc<char>(std::max(decode_attention_workspace_bytes(shape, widest_decode),
                                         prefill_attention_workspace_bytes(shape, widest)));
    // The decode attention's persistent tickets (DecodeLaunch::tickets), as the engine passes them.
    int32_t* tickets = dev_alloc<int32_t>(bh);
    CUDA_OK(cudaMemset(tickets, 0, sizeof(int32_t) * bh));
    int32_t* head_sync = dev_alloc<int32_t>(bh);  // the fused selection's (SelectionLaunch::head_sync)
    CUDA_OK(cudaMemset(head_sync, 0, sizeof(int32_t) * bh));
    // --sparsity S runs S alone (any value in (0, 1): a sweep separates the attention's fixed cost
    // from its cost per byte); by default 0.7 and 0.9.
    const std::vector<float> sparsities = only_sparsity > 0.f ? std::vector<float>{only_sparsity}
                                                              : std::vector<float>{0.7f, 0.9f};
    for (float sparsity : sparsities) {
      // Bisect tau (log scale) on the device until the kept fraction of clustered keys matches.
      SelectionParams params;
      double lo = -30, hi = 0;  // log(tau)
      long long kept = 0;
      std::vector<int32_t> rows;
      for (int it = 0; it < 28; ++it) {
        params.tau_fine = static_cast<float>(std::exp(0.5 * (lo + hi)));
        CUDA_OK(select_clusters(shape, d_views, q, params, limits, sel.sel, sws, nullptr, s));
        CUDA_OK(cudaStreamSynchronize(s));  // s does not synchronise with the legacy stream
        rows = download(sel.sel.rows, bh);
        kept = 0;
        for (int r : rows) kept += r;
        const double frac = double(kept) / (double(n) * bh);
        if (frac > 1 - sparsity) lo = 0.5 * (lo + hi);
        else hi = 0.5 * (lo + hi);
      }
      // One timed lookup: "paper" (views as they are) or "accurate" (estimate + read-ahead, TopKeys).
      auto run = [&](const char* lookup, const SequenceLayerBf16* lv, DeviceSelection& ls, const TopKeys& top,
                     const SelectionParams& ps, const SelectionLimits& lim, void* ws, bool split_k = true,
                     PrefillLaunch pl = {}, DecodeLaunch dl = {}, SelectionLaunch sl = {}) {
        if (!only_lookup.empty() && only_lookup != lookup) return;
        if (programmatic_launch_enabled() && !dl.tickets) dl.tickets = tickets;  // else the memset, as before PDL
        if (!sl.head_sync) sl.head_sync = head_sync;  // as the engine passes it (Buffers::selection_sync)
        auto select = [&] { CUDA_OK(select_clusters(shape, lv, q, ps, lim, ls.sel, ws, nullptr, s, sl)); };
        auto attend = [&] {
          if (c.prefill())
            CUDA_OK(sparse_prefill_attention(shape, lv, q, ls.sel, out, nullptr, split_k ? dws : nullptr, pl, s, top));
          else CUDA_OK(sparse_decode_attention(shape, lv, q, ls.sel, out, nullptr, dws, dl, s, top));
        };
        if (profile) {  // one step (after one unprofiled warm-up) inside the NVTX range
          select();
          attend();
          CUDA_OK(cudaStreamSynchronize(s));
          char name[160];
          std::snprintf(name, sizeof name, "%s %s ctx%d b%d lq%d %.1f %s", c.model, c.prefill() ? "prefill" : "decode",
                        c.context, c.batch, lq, sparsity, lookup);
          nvtxRangePushA("profiled step");  // one fixed name: `ncu --nvtx --nvtx-include "profiled step/"`
          select();
          attend();
          CUDA_OK(cudaStreamSynchronize(s));
          nvtxRangePop();
          std::printf("profiled: %s\n", name);
          return;
        }
        cudaGraph_t sel_graph = capture_graph(s, select);
        cudaGraphExec_t g_sel, g_att = capture(s, attend);
        CUDA_OK(cudaGraphInstantiate(&g_sel, sel_graph, 0));
        cudaGraphExec_t g_all = capture(s, [&] { select(); attend(); });
        const int reps = c.prefill() ? 10 : 30;
        const Timing t_sel = time_graph(g_sel, s, flush, reps);
        const Timing t_att = time_graph(g_att, s, flush, reps);
        const Timing t_all = time_graph(g_all, s, flush, reps);
        const std::vector<LaunchTiming> split = time_launches(sel_graph, s, flush, reps);
        cudaGraphExecDestroy(g_sel);
        cudaGraphExecDestroy(g_att);
        cudaGraphDestroy(sel_graph);
        long long lkept = 0, estimated = 0, scored = 0;
        for (int r : download(ls.sel.rows, bh)) lkept += r;
        for (int c : download(ls.sel.comparisons, bh)) scored += c;
        if (ls.sel.estimated)
          for (int e : download(ls.sel.estimated, bh)) estimated += e;
        // Bytes the step must move: selected K+V rows, dense part, the bf16 centroids scored, and per
        // estimated cluster its mean value and its centroid (a K+V row's worth) or, when decode
        // takes the logits from the selection, its estimate_logit_stride(g) fp32 logits.
        const bool logits = ls.sel.estimate_logits != nullptr && !c.prefill();
        const double estimate_bytes =
            double(estimated) * (logits ? c.d * 2.0 + 4.0 * estimate_logit_stride(c.hq / c.hkv) : c.d * 4.0);
        const double kv_bytes = (double(lkept) + double(bh) * (kWindow + lq)) * c.d * 2 * 2 + estimate_bytes;
        const double centroid_bytes = double(scored) * c.d * 2.0;
        const double bytes = kv_bytes + centroid_bytes + 2.0 * q_n * 2;
        const double frac = double(lkept) / (double(n) * bh);
        std::printf("%-10s %6d %2d %-7s %4d %5.2f %-18s %9.1f %9.1f %9.1f %9.1f %7.2f %8.3f\n", c.model, c.context,
                    c.batch, c.prefill() ? "prefill" : "decode", lq, sparsity, lookup, t_sel.median_us, t_att.median_us,
                    t_all.median_us, bytes / 1e6, bytes / (t_all.median_us * 1e-6) / 1e12, frac);
        std::printf("    select split (us, each launch alone):");
        for (const LaunchTiming& l : split) std::printf(" %s %.1f", l.kernel.c_str(), l.t.median_us);
        std::printf("\n");
        std::string split_json;
        for (const LaunchTiming& l : split) {
          char item[160];
          std::snprintf(item, sizeof item, "%s{\"kernel\": \"%s\", \"us\": %.2f}", split_json.empty() ? "" : ", ",
                        l.kernel.c_str(), l.t.median_us);
          split_json += item;
        }
        std::fprintf(json,
                     "%s  {\"model\": \"%s\", \"hq\": %d, \"hkv\": %d, \"d\": %d, \"context\": %d, \"batch\": %d, "
                     "\"mode\": \"%s\", \"query_len\": %d, \"sparsity\": %.4g, \"lookup\": \"%s\", "
                     "\"kept_fraction\": %.4f, \"estimated_clusters\": %lld, \"tau\": %.4e, "
                     "\"select_us\": %.2f, \"attend_us\": %.2f, \"total_us\": %.2f, \"total_min_us\": %.2f, "
                     "\"select_split\": [%s], \"bytes\": %.0f, \"centroid_bytes\": %.0f, \"tbps\": %.3f}",
                     first_row ? "" : ",\n", c.model, c.hq, c.hkv, c.d, c.context, c.batch,
                     c.prefill() ? "prefill" : "decode", lq, sparsity, lookup, frac, estimated, ps.tau_fine,
                     t_sel.median_us, t_att.median_us, t_all.median_us, t_all.min_us, split_json.c_str(), bytes,
                     centroid_bytes, bytes / (t_all.median_us * 1e-6) / 1e12);
        first_row = false;
        std::fflush(json);
        std::fflush(stdout);
        if (trace_path && !c.prefill()) {
          // The attention's phases per CTA (set_decode_trace, decode_attention.h) in three replays
          // of the whole step, each after an L2 flush, as timed above.
          constexpr int kMaxTraceCtas = 4096;
          const size_t words = size_t(kMaxTraceCtas) * kDecodeTraceEvents * 2;
          unsigned long long* d_trace = dev_alloc<unsigned long long>(words);
          FILE* tf = std::fopen(trace_path, "a");
          for (int rep = 0; rep < 3 && tf; ++rep) {
            CUDA_OK(cudaMemset(d_trace, 0, words * sizeof(unsigned long long)));
            CUDA_OK(static_cast<cudaError_t>(set_decode_trace(d_trace, kMaxTraceCtas)));
            flush(s, rep);
            CUDA_OK(cudaGraphLaunch(g_all, s));
            CUDA_OK(cudaStreamSynchronize(s));
            CUDA_OK(static_cast<cudaError_t>(set_decode_trace(nullptr, 0)));
            const std::vector<unsigned long long> t = download(d_trace, words);
            std::fprintf(tf, "{\"model\": \"%s\", \"context\": %d, \"batch\": %d, \"sparsity\": %.4g, "
                             "\"lookup\": \"%s\", \"rep\": %d, \"device\": \"%s\", \"ctas\": [",
                         c.model, c.context, c.batch, sparsity, lookup, rep, prop.name);
            bool first_cta = true;
            for (int cta = 0; cta < kMaxTraceCtas; ++cta) {
              const unsigned long long* e = t.data() + size_t(cta) * kDecodeTraceEvents * 2;
              if (e[0] == 0) continue;  // not launched (the grid is smaller)
              std::fprintf(tf, "%s[", first_cta ? "" : ", ");
              for (int k = 0; k < kDecodeTraceEvents * 2; ++k) std::fprintf(tf, "%s%llu", k ? ", " : "", e[k]);
              std::fprintf(tf, "]");
              first_cta = false;
            }
            std::fprintf(tf, "]}\n");
          }
          if (tf) std::fclose(tf);
          CUDA_OK(cudaFree(d_trace));
        }
        cudaGraphExecDestroy(g_all);  // after the trace, which replays it
      };
      run("paper", d_views, sel, TopKeys{}, params, limits, sws);
      PrefillLaunch ws_launch;  // the warp-specialized prefill kernel, where it runs
      ws_launch.kernel = PrefillKernel::kWarpSpecialized;
      const bool ws = c.prefill() && c.d == 128 && prefill_warp_specialized_available();
      if (ws) run("paper-ws", d_views, sel, TopKeys{}, params, limits, sws, true, ws_launch);
      if (c.prefill() && prefill_attention_workspace_bytes(shape, PrefillLaunch{}) > 0)
        run("paper-unsplit", d_views, sel, TopKeys{}, params, limits, sws, /*split_k=*/false);
      if (c.prefill() && lq <= 64 && sparsity > 0.85f) {
        // The question's key ranges: the launch's choice ("paper") against fixed counts.
        for (int splits : {4, 8, 16}) {
          PrefillLaunch fixed;
          fixed.splits = splits;
          run(("paper-splits" + std::to_string(splits)).c_str(), d_views, sel, TopKeys{}, params, limits, sws,
              true, fixed);
        }
        // Warps of padding rows compute too (Llama-2's 64 rows fill half of each 128-row tile;
        // by default those warps skip their products).
        PrefillLaunch no_skip;
        no_skip.skip_padding_warps = false;
        run("paper-no-skip-padding", d_views, sel, TopKeys{}, params, limits, sws, true, no_skip);
      }
      // The decode step's kernels launched one after the other as before programmatic dependent
      // launch (kernels/launch.h), and with the attention's tickets zeroed by a memset.
      SelectionLaunch cuda_core;  // the decode centroid stream on CUDA cores ("-cuda-core" rows)
      cuda_core.tensor_core_stream = false;
      auto without_pdl = [&](auto&& row) {
        set_programmatic_launch(false);
        row();
        set_programmatic_launch(true);
      };
      if (!c.prefill() && sparsity > 0.85f) {
        // The decode grid: every CTA the device holds at once ("paper") against one per SM.
        run("paper-ctas-per-sm", d_views, sel, TopKeys{}, params, limits, sws, true, {},
            DecodeLaunch{prop.multiProcessorCount});
        without_pdl([&] { run("paper-no-pdl", d_views, sel, TopKeys{}, params, limits, sws); });
        // The split's piece start charge (DecodeLaunch::piece_start_rows): none, and around the default.
        for (int rows : {0, 192, 384}) {
          DecodeLaunch charged;
          charged.piece_start_rows = rows;
          run(("paper-start-cost" + std::to_string(rows)).c_str(), d_views, sel, TopKeys{}, params, limits, sws, true,
              {}, charged);
        }
        run("paper-cuda-core", d_views, sel, TopKeys{}, params, limits, sws, true, {}, {}, cuda_core);
        // The flat split where the grid would align heads to CTAs (DecodeLaunch::align_heads:
        // batch 1); elsewhere the same launch as "paper".
        DecodeLaunch unaligned;
        unaligned.align_heads = false;
        run("paper-unaligned", d_views, sel, TopKeys{}, params, limits, sws, true, {}, unaligned);
        // The grid in waves of shorter ranges (DecodeLaunch::waves), balanced by the block scheduler.
        for (int waves : {2, 3, 4}) {
          DecodeLaunch waved;
          waved.waves = waves;
          run(("paper-waves" + std::to_string(waves)).c_str(), d_views, sel, TopKeys{}, params, limits, sws, true,
              {}, waved);
        }
      }
      if (!c.prefill() && sparsity > 0.85f && c.batch > 1) {
        // A batch of questions on one document (the product's case; the rows above give every
        // sequence its own context): sequence 0's context for all, its centroids scored once per
        // chunk for all of them (SelectionLaunch::shared_context, where the grid is large enough;
        // "-always": at any size) against once per sequence.
        const std::vector<SequenceLayerBf16> one(c.batch, views[0]);
        SequenceLayerBf16* d_one = upload(one);
        SelectionLaunch shared;
        shared.shared_context = true;
        run("paper-one-context", d_one, sel, TopKeys{}, params, limits, sws);
        run("paper-one-context-shared", d_one, sel, TopKeys{}, params, limits, sws, true, {}, {}, shared);
        shared.min_shared_sm_fraction = 0.f;
        run("paper-one-context-shared-always", d_one, sel, TopKeys{}, params, limits, sws, true, {}, {}, shared);
        cudaFree(d_one);
      }
      if (sparsity > 0.85f) {
        // The accurate lookup's read-ahead positions and top keys (flat and two-level rows below).
        std::vector<int32_t*> positions;
        std::mt19937 rng(77);
        std::uniform_int_distribution<int> pos(0, n - 1);
        for (int b = 0; b < c.batch; ++b) {
          std::vector<int32_t> p(c.hq);
          for (int32_t& x : p) x = pos(rng);
          positions.push_back(upload(p));
        }
        TopKeys top;
        top.position = dev_alloc<int32_t>(size_t(c.batch) * lq * c.hq);
        top.share = dev_alloc<float>(size_t(c.batch) * lq * c.hq);
        if (!c.prefill()) {
          // The paper's lookup over a two-level index: tau_coarse expands ~30% of the coarse clusters
          // (their children's rows, every child kept), then tau_fine is bisected as above.
          std::vector<SequenceLayerBf16> two;
          int max_kc = 0;
          for (int b = 0; b < c.batch; ++b) {
            two.push_back(ctxs[b]->two_level_view(kWindow + lq));
            max_kc = std::max(max_kc, ctxs[b]->kc);
          }
          SequenceLayerBf16* d_two = upload(two);
          const SelectionLimits two_limits{max_k, max_kc};
          void* two_ws = dev_alloc<char>(selection_workspace_bytes(shape, two_limits));
          DeviceSelection two_sel(bh, max_k);
          SelectionParams two_params;
          two_params.hierarchical = true;
          auto bisect = [&](float& tau, double target) {
            double lo2 = -30, hi2 = 0;
            for (int it = 0; it < 28; ++it) {
              tau = static_cast<float>(std::exp(0.5 * (lo2 + hi2)));
              CUDA_OK(select_clusters(shape, d_two, q, two_params, two_limits, two_sel.sel, two_ws, nullptr, s));
              CUDA_OK(cudaStreamSynchronize(s));
              long long k2 = 0;
              for (int r : download(two_sel.sel.rows, bh)) k2 += r;
              if (double(k2) / (double(n) * bh) > target) lo2 = 0.5 * (lo2 + hi2);
              else hi2 = 0.5 * (lo2 + hi2);
            }
          };
          two_params.tau_fine = 0.f;
          bisect(two_params.tau_coarse, 0.3);
          bisect(two_params.tau_fine, 1 - sparsity);
          run("paper-two-level", d_two, two_sel, TopKeys{}, two_params, two_limits, two_ws);
          without_pdl([&] { run("paper-two-level-no-pdl", d_two, two_sel, TopKeys{}, two_params, two_limits, two_ws); });
          run("paper-two-level-cuda-core", d_two, two_sel, TopKeys{}, two_params, two_limits, two_ws, true, {}, {},
              cuda_core);
          DecodeLaunch unaligned;  // as "paper-unaligned"
          unaligned.align_heads = false;
          run("paper-two-level-unaligned", d_two, two_sel, TopKeys{}, two_params, two_limits, two_ws, true, {},
              unaligned);
          SelectionLaunch unfused;  // each level as a stream and a compaction launch
          unfused.fused_place = false;
          run("paper-two-level-unfused", d_two, two_sel, TopKeys{}, two_params, two_limits, two_ws, true, {}, {},
              unfused);
          {
            // The accurate lookup over the same index and thresholds: the pruned coarse clusters
            // estimated as one key each, the pruned children of the expanded ones one key each.
            std::vector<SequenceLayerBf16> acc_two;
            for (int b = 0; b < c.batch; ++b)
              acc_two.push_back(ctxs[b]->accurate_view(kWindow + lq, positions[b], /*two_level=*/true));
            SequenceLayerBf16* d_acc_two = upload(acc_two);
            DeviceSelection acc_sel(bh, max_k, max_k + max_kc, /*logits=*/true);
            DecodeLaunch narrow;  // as the engine launches it over two levels
            narrow.wide_estimate_tiles = false;
            run("accurate-two-level", d_acc_two, acc_sel, top, two_params, two_limits, two_ws, true, {}, narrow);
            run("accurate-two-level-wide", d_acc_two, acc_sel, top, two_params, two_limits, two_ws);
            run("accurate-two-level-unfused", d_acc_two, acc_sel, top, two_params, two_limits, two_ws, true, {}, narrow,
                unfused);
            without_pdl([&] {
              run("accurate-two-level-no-pdl", d_acc_two, acc_sel, top, two_params, two_limits, two_ws, true, {}, narrow);
            });
            DecodeLaunch unaligned = narrow;  // as "paper-unaligned"
            unaligned.align_heads = false;
            run("accurate-two-level-unaligned", d_acc_two, acc_sel, top, two_params, two_limits, two_ws, true, {},
                unaligned);
            DecodeLaunch plain = narrow;
            plain.piece_start_rows = 0;
            run("accurate-two-level-start-cost0", d_acc_two, acc_sel, top, two_params, two_limits, two_ws, true, {},
                plain);
            // What the accurate lookup adds, apart: the estimate without the top keys (read-ahead's
            // kernel variant), and the grid in 4 waves (DecodeLaunch::waves).
            run("accurate-two-level-no-top", d_acc_two, acc_sel, TopKeys{}, two_params, two_limits, two_ws, true, {},
                narrow);
            DecodeLaunch waved = narrow;
            waved.waves = 4;
            run("accurate-two-level-waves4", d_acc_two, acc_sel, top, two_params, two_limits, two_ws, true, {}, waved);
            cudaFree(d_acc_two);
          }
          cudaFree(two_ws);
          cudaFree(d_two);
        }
        std::vector<SequenceLayerBf16> acc_views;
        for (int b = 0; b < c.batch; ++b) acc_views.push_back(ctxs[b]->accurate_view(kWindow + lq, positions[b]));
        SequenceLayerBf16* d_acc = upload(acc_views);
        {
          DeviceSelection acc_sel(bh, max_k, max_k, /*logits=*/true);
          run("accurate", d_acc, acc_sel, top, params, limits, sws);
          if (!c.prefill()) {
            // The accurate lookup's two additions apart: the estimate without read-ahead's top keys
            // (the kernel variant without them), and the top keys without the estimate.
            run("accurate-no-top", d_acc, acc_sel, TopKeys{}, params, limits, sws);
            DecodeLaunch unaligned;  // as "paper-unaligned"
            unaligned.align_heads = false;
            run("accurate-unaligned", d_acc, acc_sel, top, params, limits, sws, true, {}, unaligned);
            DeviceSelection plain_sel(bh, max_k);
            run("accurate-no-estimate", d_acc, plain_sel, top, params, limits, sws);
            if (c.batch > 1) {
              // The product's case, a batch of questions on one document (as "paper-one-context"):
              // every sequence's estimated rows are then mean values of the same clusters. With
              // and without wide estimate tiles (DecodeLaunch::wide_estimate_tiles).
              std::vector<SequenceLayerBf16> one;
              for (int b = 0; b < c.batch; ++b) one.push_back(ctxs[0]->accurate_view(kWindow + lq, positions[b]));
              SequenceLayerBf16* d_one = upload(one);
              SelectionLaunch shared;
              shared.shared_context = true;
              run("accurate-one-context", d_one, acc_sel, top, params, limits, sws, true, {}, {}, shared);
              DecodeLaunch narrow;
              narrow.wide_estimate_tiles = false;
              run("accurate-one-context-narrow", d_one, acc_sel, top, params, limits, sws, true, {}, narrow, shared);
              cudaFree(d_one);
            }
          }
          if (ws) run("accurate-ws", d_acc, acc_sel, top, params, limits, sws, true, ws_launch);
          // The estimate floor (SelectionParams::estimate_floor): only the pruned clusters scoring
          // at least tau / 16 estimated (docs/index_layout.md "Estimate floor").
          SelectionParams floored = params;
          floored.estimate_floor = 0.0625f;
          run("accurate-floor16", d_acc, acc_sel, top, floored, limits, sws);
          if (!c.prefill()) {
            for (int waves : {2, 4}) {  // DecodeLaunch::waves, as the "paper-wavesN" rows
              DecodeLaunch waved;
              waved.waves = waves;
              run(("accurate-waves" + std::to_string(waves)).c_str(), d_acc, acc_sel, top, params, limits, sws, true,
                  {}, waved);
            }
          }
        }
        if (!c.prefill()) {
          DeviceSelection acc_sel(bh, max_k, max_k, /*logits=*/false);
          run("accurate-centroids", d_acc, acc_sel, top, params, limits, sws);
        }
        cudaFree(top.position);
        cudaFree(top.share);
        cudaFree(d_acc);
        for (int32_t* p : positions) cudaFree(p);
      }
    }
    cudaFree(sws);
    cudaFree(dws);
    cudaFree(tickets);
    cudaFree(head_sync);
    cudaFree(q);
    cudaFree(out);
    cudaFree(d_views);
    CUDA_OK(cudaDeviceSynchronize());
  }
  std::fprintf(json, "\n]}\n");
  std::fclose(json);
  return 0;
}
