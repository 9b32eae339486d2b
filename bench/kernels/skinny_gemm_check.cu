// skinny_gemm_check: the decode step's weight products (kernels/skinny_gemm.h) against the CPU
// reference (kernels/skinny_gemm_ref.h) on random inputs, then timed at the full model's shapes
// against cuBLAS in the same run. Exit status 1 if a check fails.
//   skinny_gemm_check [--small] [--no-bench] [--no-pdl] [--seed N] [--out FILE]
// --small: the small cases only, no timing (for compute-sanitizer).
//
// Correctness, per case: the output is poisoned first (NaN) with a guard of 64 sentinel values
// after it; every output must be finite and within one bf16 ulp of the reference plus 2^-16 of
// the sum of its terms' magnitudes (the fp32 sum's order: ~1e-7 relative, far below an ulp; a
// wrong fragment or k order is off by whole terms), the guard untouched, and the workspace's
// tickets zero again after the launch. Cases: m 1..8, n and k not multiples of the tile and
// chunk (k a multiple of 8), the split-K path forced (ksplit 2, 3, 7) and chosen, bias, residual
// (also in place: residual == out). SiLU * up (silu_mul_bf16) against silu_mul_ref: poisoned,
// guarded, every element within one bf16 ulp and at least 99.9% of them the same bits.
//
// Timing (not with --small): Llama-3-8B and Llama-2-7B's products at M = 1 and 8, each over 32
// layers' own weights (the weights do not fit the L2, as in a decode step), captured in one CUDA
// graph and replayed: the median per product next to its weight bytes over the copy rate measured
// in the same run (a 2 GiB device-to-device copy), and next to cuBLAS doing the same as the
// engine's libtorch code does (cublasGemmEx; for a residual, a copy of it into the output first);
// the down projection's row includes SiLU * up before it on both sides (ours silu_mul_bf16, the
// cuBLAS side an equivalent kernel of this file: libtorch launches two); at M = 1 the smaller
// products also with the split over K forced to 1..4. Then the whole step's products, every
// layer's four and the lm_head, in one graph: ours against cuBLAS's.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench/kernels/device_layer.h"
#include "kernels/launch.h"
#include "kernels/skinny_gemm.h"
#include "kernels/skinny_gemm_ref.h"

using namespace squeezeserve::kernels;
using namespace squeezeserve::kernels::bench;

namespace {

#define CUBLAS_OK(expr)                                                                               \
  do {                                                                                                \
    const cublasStatus_t st_ = (expr);                                                                \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                                               \
      std::fprintf(stderr, "%s:%d: %s -> cublas status %d\n", __FILE__, __LINE__, #expr, static_cast<int>(st_)); \
      std::exit(2);                                                                                   \
    }                                                                                                 \
  } while (0)

constexpr uint16_t kPoison = 0x7fc0;  // bf16 NaN
constexpr uint16_t kGuard = 0x1234;
constexpr int kGuardElems = 64;

std::vector<float> random_bf16(size_t n, float scale, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  round_to_bf16(v);
  return v;
}

float bf16_ulp(float v) {
  if (v == 0.f) return std::ldexp(1.f, -133);
  int e;
  std::frexp(v, &e);
  return std::ldexp(1.f, e - 8);
}

struct CheckCase {
  int m, n, k;
  bool bias, residual, in_place;
  int ksplit;  // 0: chosen by the launcher
  bool small;
};

std::string case_name(const CheckCase& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "m%d n%d k%d%s%s%s split %s", c.m, c.n, c.k, c.bias ? " bias" : "",
                c.residual ? " residual" : "", c.in_place ? " (in place)" : "",
                c.ksplit ? std::to_string(c.ksplit).c_str() : "auto");
  return buf;
}

// One case: true when it passes. Appends a JSON object to `json`.
bool run_case(const CheckCase& c, uint64_t seed, void* workspace, cudaStream_t stream, std::string& json) {
  std::mt19937_64 rng(seed);
  const int64_t x_stride = c.k + 8 * (seed % 3);  // rows not always packed
  std::vector<float> x = random_bf16(c.m * x_stride, 1.f, rng);
  std::vector<float> w = random_bf16(int64_t{c.n} * c.k, 1.f / std::sqrt(static_cast<float>(c.k)), rng);
  std::vector<float> bias = c.bias ? random_bf16(c.n, 1.f, rng) : std::vector<float>();
  std::vector<float> residual = c.residual ? random_bf16(int64_t{c.m} * c.n, 1.f, rng) : std::vector<float>();
  std::vector<float> ref(int64_t{c.m} * c.n);
  skinny_gemm_ref(c.m, c.n, c.k, x.data(), x_stride, w.data(), c.bias ? bias.data() : nullptr,
                  c.residual ? residual.data() : nullptr, ref.data());

  uint16_t* dx = upload(round_to_bf16(x));
  uint16_t* dw = upload(round_to_bf16(w));
  uint16_t* dbias = c.bias ? upload(round_to_bf16(bias)) : nullptr;
  std::vector<uint16_t> out_init(int64_t{c.m} * c.n + kGuardElems, kGuard);
  std::fill(out_init.begin(), out_init.end() - kGuardElems, c.in_place ? uint16_t{0} : kPoison);
  if (c.in_place) {
    const std::vector<uint16_t> bits = round_to_bf16(residual);
    std::copy(bits.begin(), bits.end(), out_init.begin());
  }
  uint16_t* dout = upload(out_init);
  uint16_t* dres = c.residual && !c.in_place ? upload(round_to_bf16(residual)) : nullptr;

  SkinnyGemm g;
  g.m = c.m;
  g.n = c.n;
  g.k = c.k;
  g.x = dx;
  g.x_stride = x_stride;
  g.w = dw;
  g.bias = dbias;
  g.residual = c.in_place ? dout : dres;
  g.out = dout;
  SkinnyLaunch launch;
  launch.ksplit = c.ksplit;
  const int err = skinny_gemm(g, workspace, stream, launch);
  CUDA_OK(cudaStreamSynchronize(stream));
  const std::vector<uint16_t> got_bits = download(dout, out_init.size());
  const std::vector<int> tickets = download(static_cast<int*>(workspace), 16384);

  // The magnitude of each output's terms, for the sum-order allowance.
  int bad = 0, exact = 0, nan = 0;
  double worst = 0;
  for (int i = 0; i < c.m; ++i) {
    const float* act = x.data() + i * x_stride;
    for (int f = 0; f < c.n; ++f) {
      double mag = 0;
      for (int j = 0; j < c.k; ++j) mag += std::fabs(double{act[j]} * w[int64_t{f} * c.k + j]);
      const int64_t at = int64_t{i} * c.n + f;
      if (c.bias) mag += std::fabs(bias[f]);
      if (c.residual) mag += std::fabs(residual[at]);
      const float got = from_bf16_bits(got_bits[at]);
      if (!std::isfinite(got)) {
        ++nan;
        continue;
      }
      const double allowed = bf16_ulp(ref[at]) + std::ldexp(mag, -16);
      const double diff = std::fabs(double{got} - ref[at]);
      worst = std::max(worst, diff / allowed);
      if (diff > allowed) ++bad;
      if (diff == 0) ++exact;
    }
  }
  int guard_hit = 0;
  for (int e = 0; e < kGuardElems; ++e) guard_hit += got_bits[int64_t{c.m} * c.n + e] != kGuard;
  int tickets_left = 0;
  for (int t : tickets) tickets_left += t != 0;
  const bool pass = err == 0 && bad == 0 && nan == 0 && guard_hit == 0 && tickets_left == 0;
  const int total = c.m * c.n;
  std::printf("  %-52s %s  worst %.2f of allowed, exact %.1f%%%s%s%s%s\n", case_name(c).c_str(), pass ? "ok  " : "FAIL",
              worst, 100.0 * exact / total, err ? " launch error" : "", nan ? " non-finite outputs" : "",
              guard_hit ? " guard overwritten" : "", tickets_left ? " tickets left" : "");
  char item[400];
  std::snprintf(item, sizeof item,
                "%s\n  {\"case\": \"%s\", \"pass\": %s, \"worst_over_allowed\": %.3f, \"exact_share\": %.4f, "
                "\"bad\": %d, \"non_finite\": %d, \"guard_hit\": %d, \"tickets_left\": %d, \"launch_error\": %d}",
                json.empty() ? "" : ",", case_name(c).c_str(), pass ? "true" : "false", worst,
                double(exact) / total, bad, nan, guard_hit, tickets_left, err);
  json += item;
  for (void* p : {static_cast<void*>(dx), static_cast<void*>(dw), static_cast<void*>(dbias),
                  static_cast<void*>(dout), static_cast<void*>(dres)})
    cudaFree(p);
  return pass;
}

// silu_mul_bf16 on rows x inter (gate_up rows `stride` apart) against silu_mul_ref.
bool run_silu_case(int rows, int inter, int64_t stride, uint64_t seed, cudaStream_t stream, std::string& json) {
  std::mt19937_64 rng(seed);
  std::vector<float> gu = random_bf16(rows * stride, 3.f, rng);
  uint16_t* dgu = upload(round_to_bf16(gu));
  std::vector<uint16_t> init(int64_t{rows} * inter + kGuardElems, kGuard);
  std::fill(init.begin(), init.end() - kGuardElems, kPoison);
  uint16_t* dact = upload(init);
  const int err = silu_mul_bf16(dgu, stride, dact, rows, inter, stream);
  CUDA_OK(cudaStreamSynchronize(stream));
  const std::vector<uint16_t> got = download(dact, init.size());
  int bad = 0, exact = 0, guard_hit = 0;
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < inter; ++j) {
      const float want = silu_mul_ref(gu[i * stride + j], gu[i * stride + inter + j]);
      const float v = from_bf16_bits(got[int64_t{i} * inter + j]);
      if (!(std::fabs(v - want) <= bf16_ulp(want))) ++bad;  // NaN (poison left) counts too
      exact += v == want;
    }
  for (int e = 0; e < kGuardElems; ++e) guard_hit += got[int64_t{rows} * inter + e] != kGuard;
  const int total = rows * inter;
  const bool pass = err == 0 && bad == 0 && guard_hit == 0 && exact >= total - total / 1000;
  std::printf("  silu*up rows %d inter %d stride %lld%*s %s  exact %.2f%%%s%s\n", rows, inter,
              static_cast<long long>(stride), 20, "", pass ? "ok  " : "FAIL", 100.0 * exact / total,
              bad ? " beyond one ulp" : "", guard_hit ? " guard overwritten" : "");
  char item[300];
  std::snprintf(item, sizeof item,
                "%s\n  {\"case\": \"silu*up rows %d inter %d stride %lld\", \"pass\": %s, \"exact_share\": %.5f, "
                "\"beyond_one_ulp\": %d, \"guard_hit\": %d, \"launch_error\": %d}",
                json.empty() ? "" : ",", rows, inter, static_cast<long long>(stride), pass ? "true" : "false",
                double(exact) / total, bad, guard_hit, err);
  json += item;
  cudaFree(dgu);
  cudaFree(dact);
  return pass;
}

bool run_checks(bool small, uint64_t seed, void* workspace, cudaStream_t stream, std::string& json) {
  const std::vector<CheckCase> cases = {
      {1, 16, 8, false, false, false, 0, true},
      {1, 1, 64, false, false, false, 0, true},
      {3, 100, 72, true, false, false, 0, true},
      {8, 100, 72, false, true, false, 2, true},
      {5, 33, 200, false, true, false, 3, true},
      {8, 48, 1000, true, true, true, 7, true},
      {2, 17, 520, false, true, true, 0, true},
      {7, 4096, 4096, false, true, false, 0, false},
      {1, 4096, 4096, false, true, true, 0, false},
      {8, 6144, 4096, false, false, false, 0, false},
      {8, 4096, 14336, false, true, false, 0, false},
      {1, 4096, 11008, false, true, false, 3, false},
      {4, 32000, 4096, false, false, false, 0, false},
  };
  std::printf("skinny_gemm against skinny_gemm_ref (allowed: 1 bf16 ulp + 2^-16 of the terms' magnitudes)\n");
  json += "\"checks\": [";
  std::string items;
  bool all = true;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (small && !cases[i].small) continue;
    all &= run_case(cases[i], seed + i, workspace, stream, items);
  }
  all &= run_silu_case(1, 8, 16, seed + 100, stream, items);
  all &= run_silu_case(3, 200, 408, seed + 101, stream, items);
  if (!small) all &= run_silu_case(8, 14336, 2 * 14336, seed + 102, stream, items);
  json += items + "\n]";
  return all;
}

// ---------------------------------------------------------------------------------------------
// Timing.

__global__ void fill_bf16(__nv_bfloat16* p, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    p[i] = __float2bfloat16(scale * (static_cast<float>(h & 0xffffff) / 8388608.f - 1.f));
  }
}

// act[i][j] = bf16(bf16(silu(g)) * u) of gu [m][2k]: the cuBLAS path's SiLU * up, one kernel.
__global__ void silu_mul_kernel(const __nv_bfloat16* gu, __nv_bfloat16* act, int m, int k) {
  const int64_t n = int64_t{m} * k;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / k, j = i % k;
    const float g = __bfloat162float(gu[r * 2 * k + j]), u = __bfloat162float(gu[r * 2 * k + k + j]);
    const float s = __bfloat162float(__float2bfloat16(g / (1.f + expf(-g))));
    act[i] = __float2bfloat16(s * u);
  }
}

__nv_bfloat16* device_bf16(int64_t n, uint64_t seed, float scale, cudaStream_t stream) {
  __nv_bfloat16* p = nullptr;
  CUDA_OK(cudaMalloc(&p, sizeof(__nv_bfloat16) * std::max<int64_t>(n, 1)));
  fill_bf16<<<1024, 256, 0, stream>>>(p, n, seed, scale);
  return p;
}

// Median time of `reps` runs of `launch` on the stream (events around each; two more first, not
// counted), in ms.
double median_ms(const std::function<void()>& launch, cudaStream_t stream, int reps) {
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int r = 0; r < reps + 2; ++r) {
    CUDA_OK(cudaEventRecord(a, stream));
    launch();
    CUDA_OK(cudaEventRecord(b, stream));
    CUDA_OK(cudaEventSynchronize(b));
    float t = 0;
    CUDA_OK(cudaEventElapsedTime(&t, a, b));
    if (r >= 2) ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Median of 15 replays of a graph of what `record` launches, in ms.
double graph_ms(const std::function<void()>& record, cudaStream_t stream) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  record();
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  const double ms = median_ms([&] { CUDA_OK(cudaGraphLaunch(exec, stream)); }, stream, 15);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return ms;
}

// Device-to-device copy rate (bytes read + written per second), 2 GiB, median of 10.
double copy_rate(cudaStream_t stream) {
  const size_t bytes = size_t{2} << 30;
  void *a, *b;
  CUDA_OK(cudaMalloc(&a, bytes));
  CUDA_OK(cudaMalloc(&b, bytes));
  CUDA_OK(cudaMemsetAsync(a, 1, bytes, stream));
  const double ms =
      median_ms([&] { CUDA_OK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream)); }, stream, 10);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms * 1e-3);
}

struct Shape {
  const char* name;
  int hidden, qkv, inter, vocab;
};
constexpr Shape kShapes[] = {{"llama3-8b", 4096, 6144, 14336, 128256}, {"llama2-7b", 4096, 12288, 11008, 32000}};
constexpr int kLayers = 32;

struct Product {
  const char* name;
  int n, k;
  bool silu;  // x is SiLU * up of a [m][2k] gate_up, computed first
  bool residual;
};

// One product at M rows over `layers` weight copies: our launch or cuBLAS's (with libtorch's extra
// kernels), recorded into the stream.
struct ProductRun {
  Product p;
  int m;
  std::vector<__nv_bfloat16*> weights;
  __nv_bfloat16 *x, *act, *residual, *out;
  void* workspace;
  cublasHandle_t blas;

  void ours(cudaStream_t stream, int layer, int ksplit = 0) const {
    SkinnyGemm g;
    g.m = m;
    g.n = p.n;
    g.k = p.k;
    g.x = x;
    g.x_stride = p.k;
    if (p.silu) {
      CUDA_OK(silu_mul_bf16(x, 2 * int64_t{p.k}, act, m, p.k, stream));
      g.x = act;
    }
    g.w = weights[layer];
    g.residual = p.residual ? residual : nullptr;
    g.out = out;
    SkinnyLaunch launch;
    launch.ksplit = ksplit;
    CUDA_OK(skinny_gemm(g, workspace, stream, launch));
  }
  void cublas(cudaStream_t stream, int layer) const {
    const __nv_bfloat16* in = x;
    if (p.silu) {
      silu_mul_kernel<<<std::max(1, m * p.k / 1024), 256, 0, stream>>>(x, act, m, p.k);
      in = act;
    }
    if (p.residual)
      CUDA_OK(cudaMemcpyAsync(out, residual, sizeof(__nv_bfloat16) * m * p.n, cudaMemcpyDeviceToDevice, stream));
    const float one = 1.f, beta = p.residual ? 1.f : 0.f;
    CUBLAS_OK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, p.n, m, p.k, &one, weights[layer], CUDA_R_16BF, p.k, in,
                           CUDA_R_16BF, p.k, &beta, out, CUDA_R_16BF, p.n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
};

bool run_bench(void* workspace, cudaStream_t stream, std::string& json) {
  cublasHandle_t blas;
  CUBLAS_OK(cublasCreate(&blas));
  CUBLAS_OK(cublasSetStream(blas, stream));
  void* blas_ws;
  const size_t blas_ws_bytes = size_t{64} << 20;
  CUDA_OK(cudaMalloc(&blas_ws, blas_ws_bytes));
  CUBLAS_OK(cublasSetWorkspace(blas, blas_ws, blas_ws_bytes));
  const double rate = copy_rate(stream);
  std::printf("\ncopy rate %.2f TB/s (2 GiB device-to-device)\n", rate / 1e12);
  char buf[600];
  std::snprintf(buf, sizeof buf, "\"copy_bytes_per_s\": %.4g,\n\"products\": [", rate);
  json += buf;
  std::string items, chains;
  uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    const std::vector<Product> products = {{"qkv", s.qkv, s.hidden, false, false},
                                           {"o_proj + residual", s.hidden, s.hidden, false, true},
                                           {"gate_up", 2 * s.inter, s.hidden, false, false},
                                           {"silu*up, down + residual", s.hidden, s.inter, true, true},
                                           {"lm_head", s.vocab, s.hidden, false, false}};
    // Every layer's weights (the lm_head once), resident together for the whole-step chain.
    std::vector<std::vector<__nv_bfloat16*>> weights(products.size());
    for (size_t i = 0; i < products.size(); ++i) {
      const int copies = i + 1 == products.size() ? 1 : kLayers;
      for (int l = 0; l < copies; ++l)
        weights[i].push_back(device_bf16(int64_t{products[i].n} * products[i].k, seed++, 0.02f, stream));
    }
    const int64_t widest = 2 * int64_t{s.inter} + s.vocab;
    __nv_bfloat16* x = device_bf16(kSkinnyMaxRows * widest, seed++, 1.f, stream);
    __nv_bfloat16* act = device_bf16(kSkinnyMaxRows * widest, seed++, 1.f, stream);
    __nv_bfloat16* residual = device_bf16(kSkinnyMaxRows * widest, seed++, 1.f, stream);
    __nv_bfloat16* out = device_bf16(kSkinnyMaxRows * widest, seed++, 1.f, stream);
    for (const int m : {1, 8}) {
      std::vector<ProductRun> runs;
      for (size_t i = 0; i < products.size(); ++i)
        runs.push_back({products[i], m, weights[i], x, act, residual, out, workspace, blas});
      std::printf("%s, M = %d: per product, median of a graph of %d layers' launches\n", s.name, m, kLayers);
      std::printf("  %-26s %10s %10s %9s %9s %9s\n", "product", "ours us", "cuBLAS us", "bytes us", "ours/lim",
                  "ours/cuBLAS");
      for (const ProductRun& r : runs) {
        const int copies = static_cast<int>(r.weights.size());
        const double ours = graph_ms([&] { for (int l = 0; l < copies; ++l) r.ours(stream, l); }, stream) / copies;
        const double theirs = graph_ms([&] { for (int l = 0; l < copies; ++l) r.cublas(stream, l); }, stream) / copies;
        const double bytes = 2.0 * r.p.n * r.p.k;
        // The copy rate counts bytes read and written, as full_model_bench.py's: the weights' bytes at it.
        const double limit_ms = bytes / rate * 1e3;
        std::printf("  %-26s %10.1f %10.1f %9.1f %9.2f %9.2f\n", r.p.name, ours * 1e3, theirs * 1e3, limit_ms * 1e3,
                    ours / limit_ms, ours / theirs);
        std::snprintf(buf, sizeof buf,
                      "%s\n  {\"shape\": \"%s\", \"m\": %d, \"product\": \"%s\", \"n\": %d, \"k\": %d, \"ours_us\": %.2f, "
                      "\"cublas_us\": %.2f, \"weight_bytes\": %.0f, \"limit_us\": %.2f, \"ours_over_limit\": %.3f, "
                      "\"cublas_over_limit\": %.3f, \"ours_over_cublas\": %.3f}",
                      items.empty() ? "" : ",", s.name, m, r.p.name, r.p.n, r.p.k, ours * 1e3, theirs * 1e3, bytes,
                      limit_ms * 1e3, ours / limit_ms, theirs / limit_ms, ours / theirs);
        items += buf;
        // The split over K, where the launcher chose to split: each forced from 1 to 4.
        if (m == 1 && r.p.n <= 2 * s.hidden) {
          std::printf("    ksplit 1..4:");
          for (int ks = 1; ks <= 4; ++ks)
            std::printf(" %.1f", graph_ms([&] { for (int l = 0; l < copies; ++l) r.ours(stream, l, ks); }, stream) /
                                     copies * 1e3);
          std::printf(" us\n");
        }
      }
      // The whole step's products in order, every layer then the lm_head.
      auto chain = [&](bool mine) {
        return graph_ms([&] {
          for (int l = 0; l < kLayers; ++l)
            for (size_t i = 0; i + 1 < runs.size(); ++i) mine ? runs[i].ours(stream, l) : runs[i].cublas(stream, l);
          mine ? runs.back().ours(stream, 0) : runs.back().cublas(stream, 0);
        }, stream);
      };
      double bytes = 0;
      for (const ProductRun& r : runs) bytes += 2.0 * r.p.n * r.p.k * r.weights.size();
      const double ours = chain(true), theirs = chain(false), limit_ms = bytes / rate * 1e3;
      std::printf("  %-26s %10.3f %10.3f %9.3f %9.2f %9.2f   (ms: the step's %.2f GB of weights)\n", "whole step", ours,
                  theirs, limit_ms, ours / limit_ms, ours / theirs, bytes / 1e9);
      std::snprintf(buf, sizeof buf,
                    "%s\n  {\"shape\": \"%s\", \"m\": %d, \"ours_ms\": %.4f, \"cublas_ms\": %.4f, \"weight_bytes\": %.0f, "
                    "\"limit_ms\": %.4f, \"ours_over_limit\": %.3f, \"cublas_over_limit\": %.3f, \"ours_over_cublas\": %.3f}",
                    chains.empty() ? "" : ",", s.name, m, ours, theirs, bytes, limit_ms, ours / limit_ms,
                    theirs / limit_ms, ours / theirs);
      chains += buf;
    }
    for (auto& per : weights)
      for (__nv_bfloat16* p : per) cudaFree(p);
    for (void* p : {static_cast<void*>(x), static_cast<void*>(act), static_cast<void*>(residual), static_cast<void*>(out)})
      cudaFree(p);
  }
  json += items + "\n],\n\"whole_step\": [" + chains + "\n]";
  cudaFree(blas_ws);
  cublasDestroy(blas);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  bool small = false, bench = true;
  std::string out_path;
  uint64_t seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--small") small = true, bench = false;
    else if (arg == "--no-bench") bench = false;
    else if (arg == "--no-pdl") set_programmatic_launch(false);
    else if (arg == "--out" && i + 1 < argc) out_path = argv[++i];
    else if (arg == "--seed" && i + 1 < argc) seed = std::stoull(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--small] [--no-bench] [--no-pdl] [--seed N] [--out FILE]\n", argv[0]);
      return 2;
    }
  }
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  std::printf("device %s (sm_%d%d, %d SMs), seed %llu, PDL %s\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, static_cast<unsigned long long>(seed),
              programmatic_launch_enabled() ? "on" : "off");
  void* workspace;
  CUDA_OK(cudaMalloc(&workspace, kSkinnyGemmWorkspaceBytes));
  CUDA_OK(cudaMemset(workspace, 0, kSkinnyGemmWorkspaceBytes));
  std::string checks, timings;
  bool all = run_checks(small, seed, workspace, stream, checks);
  if (bench) all &= run_bench(workspace, stream, timings);
  if (!out_path.empty()) {
    FILE* f = std::fopen(out_path.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", out_path.c_str());
      return 2;
    }
    std::fprintf(f, "{\"device\": \"%s\", \"seed\": %llu, \"pdl\": %s,\n%s%s%s,\n\"result\": \"%s\"}\n", prop.name,
                 static_cast<unsigned long long>(seed), programmatic_launch_enabled() ? "true" : "false",
                 checks.c_str(), bench ? ",\n" : "", timings.c_str(), all ? "ALL PASS" : "SOME FAILED");
    std::fclose(f);
  }
  std::printf("%s\n", all ? "ALL PASS" : "SOME FAILED");
  cudaFree(workspace);
  CUDA_OK(cudaStreamDestroy(stream));
  return all ? 0 : 1;
}
