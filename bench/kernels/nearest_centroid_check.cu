// nearest_centroid_check: the nearest-centroid kernels (kernels/nearest_centroid.h) against the CPU
// reference on random inputs, then timed at the ingest's sizes against cuBLAS in the same run.
// Prints the tables and the timings as one JSON object; --out FILE gets every check as JSON too.
// Exit status 1 if a check fails.
//   nearest_centroid_check [--small] [--no-bench] [--kernel mma_sync|wgmma|auto] [--seed N] [--out FILE]
// --small: the small cases only, no timing (for compute-sanitizer). --kernel: that kernel only (run
// each in its own process to keep one kernel's fault from hiding the other's results).
//
// Correctness, per case and per kernel (mma_sync; wgmma where the device and build have it; auto):
// outputs are poisoned first (labels -1, best NaN); every label must lie in [0, k); the chosen
// centroid's exact score (double, on the same bf16 inputs) must be within kTolerance of the
// reference's best, and the returned best within kTolerance of that exact score. The inputs are
// bf16, so every product is exact in fp32 and the kernels' scores differ from the exact ones only
// by fp32 summation order (~1e-6 at these magnitudes): kTolerance = 1e-3 is generous, yet far below
// the gap to a typical second-best centroid (the brief's 1e-2 would let a wrong runner-up pass).
// Exact-label cases: duplicated centroids (the first copy must win: exact ties go to the smallest
// index) and one-hot points and centroids (scores 0 or 1, no rounding at all; a wrong fragment
// layout shows up as a permutation, printed for the first mismatches).
//
// Timing: H = 8, D = 128, N = 131072 and 524288, K = N / 20 (the ingest's 5%), per kernel, next to
// (1) the FLOPs at 700 TFLOP/s and at the bf16 GEMM rate cuBLAS reaches in this run (8192^3), and
// (2) cuBLAS computing the same [N x K] scores per head (bf16 out, in chunks: what the libtorch
// path does before its max). A sample of points per head is checked against the reference too.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/kernels/device_layer.h"
#include "kernels/nearest_centroid.h"
#include "kernels/nearest_centroid_ref.h"

using namespace squeezeserve::kernels;
using namespace squeezeserve::kernels::bench;

namespace {

constexpr double kTolerance = 1e-3;

#define CUBLAS_OK(expr)                                                             \
  do {                                                                              \
    const cublasStatus_t st_ = (expr);                                              \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                             \
      std::fprintf(stderr, "%s:%d: %s -> cublas status %d\n", __FILE__, __LINE__, #expr, \
                   static_cast<int>(st_));                                          \
      std::exit(2);                                                                 \
    }                                                                               \
  } while (0)

struct KernelChoice {
  const char* name;
  NearestCentroidKernel kernel;
};
const KernelChoice kAllKernels[] = {{"mma_sync", NearestCentroidKernel::kMmaSync},
                                    {"wgmma", NearestCentroidKernel::kWgmma},
                                    {"auto", NearestCentroidKernel::kAuto}};
std::vector<KernelChoice> kernels_to_run;  // --kernel, or all three

// ---------------------------------------------------------------------------------------------
// Problems (host, float copies of bf16 values).

struct Problem {
  int heads = 1, k = 1, d = 128;
  int64_t n = 1;
  std::vector<float> x, centroids, half_norms;  // bf16-valued x and centroids
  std::vector<int> first_copy;                  // [heads * k] where set: the label must be a first copy
  bool exact = false;                           // labels must equal the reference's
};

std::vector<float> random_unit_rows(int64_t rows, int d, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(rows * d);
  for (int64_t r = 0; r < rows; ++r) {
    double norm = 0;
    for (int e = 0; e < d; ++e) norm += std::pow(v[r * d + e] = normal(rng), 2);
    for (int e = 0; e < d; ++e) v[r * d + e] /= static_cast<float>(std::sqrt(norm));
  }
  return v;
}

void set_half_norms(Problem& p) {
  p.half_norms.resize(static_cast<size_t>(p.heads) * p.k);
  for (size_t j = 0; j < p.half_norms.size(); ++j) {
    double sq = 0;
    for (int e = 0; e < p.d; ++e) sq += std::pow(static_cast<double>(p.centroids[j * p.d + e]), 2);
    p.half_norms[j] = static_cast<float>(0.5 * sq);
  }
}

// Centroids: random directions at radius U(0.5, 1) (means of unit vectors). Points: unit vectors,
// either independent of the centroids (noise > 1: many near-ties) or a random centroid plus
// Gaussian noise of that size per element, normalized (clustered, like keys).
Problem make_problem(int heads, int64_t n, int k, int d, float noise, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p;
  p.heads = heads;
  p.n = n;
  p.k = k;
  p.d = d;
  p.centroids = random_unit_rows(static_cast<int64_t>(heads) * k, d, rng);
  std::uniform_real_distribution<float> radius(0.5f, 1.f);
  for (int64_t j = 0; j < static_cast<int64_t>(heads) * k; ++j) {
    const float r = radius(rng);
    for (int e = 0; e < d; ++e) p.centroids[j * d + e] *= r;
  }
  if (noise > 1.f) {
    p.x = random_unit_rows(static_cast<int64_t>(heads) * n, d, rng);
  } else {
    std::uniform_int_distribution<int> pick(0, k - 1);
    std::normal_distribution<float> gauss(0.f, noise);
    p.x.resize(static_cast<size_t>(heads) * n * d);
    for (int h = 0; h < heads; ++h)
      for (int64_t i = 0; i < n; ++i) {
        const float* c = &p.centroids[(static_cast<int64_t>(h) * k + pick(rng)) * d];
        float* xi = &p.x[(h * n + i) * d];
        double norm = 0;
        for (int e = 0; e < d; ++e) norm += std::pow(xi[e] = c[e] + gauss(rng), 2);
        for (int e = 0; e < d; ++e) xi[e] /= static_cast<float>(std::sqrt(norm));
      }
  }
  round_to_bf16(p.x);
  round_to_bf16(p.centroids);
  set_half_norms(p);
  return p;
}

// Every centroid of a k0-centroid problem repeated `copies` times, copies shuffled over [0, k).
Problem make_duplicates(int heads, int64_t n, int k0, int copies, int d, uint64_t seed) {
  Problem base = make_problem(heads, n, k0, d, 0.1f, seed);
  Problem p = base;
  p.k = k0 * copies;
  p.centroids.assign(static_cast<size_t>(heads) * p.k * d, 0.f);
  p.first_copy.assign(static_cast<size_t>(heads) * p.k, -1);
  std::mt19937_64 rng(seed + 1);
  for (int h = 0; h < heads; ++h) {
    std::vector<int> source(p.k);
    for (int j = 0; j < p.k; ++j) source[j] = j % k0;
    std::shuffle(source.begin(), source.end(), rng);
    std::vector<int> first(k0, -1);
    for (int j = 0; j < p.k; ++j) {
      std::copy_n(&base.centroids[(static_cast<int64_t>(h) * k0 + source[j]) * d], d,
                  &p.centroids[(static_cast<int64_t>(h) * p.k + j) * d]);
      if (first[source[j]] < 0) first[source[j]] = j;
      p.first_copy[h * p.k + j] = first[source[j]];
    }
  }
  set_half_norms(p);
  return p;
}

// Arbitrary half norms (the contract accepts any finite values): U(-0.5, 0.5).
Problem make_random_norms(int heads, int64_t n, int k, int d, uint64_t seed) {
  Problem p = make_problem(heads, n, k, d, 2.f, seed);
  std::mt19937_64 rng(seed + 7);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  for (float& v : p.half_norms) v = u(rng);
  return p;
}

// Points e_sigma(i), centroids e_pi(j) (pi a permutation of the first k of d axes), half norms 0:
// point i's label is pi^-1(sigma(i)), or 0 (all scores 0) when its axis has no centroid.
Problem make_one_hot(int64_t n, int k, int d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p;
  p.n = n;
  p.k = k;
  p.d = d;
  p.exact = true;
  std::vector<int> axes(d);
  std::iota(axes.begin(), axes.end(), 0);
  std::shuffle(axes.begin(), axes.end(), rng);
  p.centroids.assign(static_cast<size_t>(k) * d, 0.f);
  for (int j = 0; j < k; ++j) p.centroids[static_cast<size_t>(j) * d + axes[j]] = 1.f;
  p.x.assign(static_cast<size_t>(n) * d, 0.f);
  std::uniform_int_distribution<int> axis(0, d - 1);
  for (int64_t i = 0; i < n; ++i) p.x[i * d + axis(rng)] = 1.f;
  p.half_norms.assign(k, 0.f);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Reference (one thread per head) and comparison.

struct Labels {
  std::vector<int64_t> labels;
  std::vector<float> best;
};

Labels reference(const Problem& p) {
  Labels r{std::vector<int64_t>(p.heads * p.n), std::vector<float>(p.heads * p.n)};
  std::vector<std::thread> threads;
  for (int h = 0; h < p.heads; ++h)
    threads.emplace_back([&, h] {
      nearest_centroid_ref(&p.x[h * p.n * p.d], &p.centroids[static_cast<int64_t>(h) * p.k * p.d],
                           &p.half_norms[static_cast<int64_t>(h) * p.k], 1, p.n, p.k, p.d, &r.labels[h * p.n],
                           &r.best[h * p.n]);
    });
  for (std::thread& t : threads) t.join();
  return r;
}

struct Comparison {
  int64_t points = 0, label_diff = 0, violations = 0;
  double max_gap = 0, max_best_err = 0;
  std::string first_violation;
  bool pass() const { return violations == 0; }
};

// `index[i]` is point i's row in the GPU output (sampled checks); identity when empty.
Comparison compare(const Problem& p, const Labels& ref, const Labels& got, const std::vector<int64_t>& index = {}) {
  Comparison c;
  for (int h = 0; h < p.heads; ++h) {
    for (int64_t i = 0; i < p.n; ++i) {
      const int64_t row = h * p.n + i;
      const int64_t out = index.empty() ? row : index[row];
      const int64_t label = got.labels[out];
      const float best = got.best.empty() ? NAN : got.best[out];
      ++c.points;
      std::string why;
      if (label < 0 || label >= p.k) {
        why = "label out of range";
      } else {
        const double exact = centroid_score_ref(&p.x[row * p.d], &p.centroids[(h * p.k + label) * p.d],
                                                p.half_norms[h * p.k + label], p.d);
        const double gap = static_cast<double>(ref.best[row]) - exact;
        c.max_gap = std::max(c.max_gap, gap);
        if (label != ref.labels[row]) ++c.label_diff;
        if (gap > kTolerance) why = "chosen centroid's score below the best";
        if (!got.best.empty()) {
          const double err = std::abs(best - exact);
          c.max_best_err = std::max(c.max_best_err, std::isnan(err) ? INFINITY : err);
          if (!(err <= kTolerance)) why = "best is not the chosen centroid's score";
        }
        if (p.exact && label != ref.labels[row]) why = "label differs (exact case)";
        if (!p.first_copy.empty() && p.first_copy[h * p.k + label] != label) why = "a later copy of a tie won";
      }
      if (!why.empty()) {
        if (c.violations < 5) {
          char line[256];
          std::snprintf(line, sizeof line, "\n    head %d point %lld: %s (gpu label %lld best %.6g, ref label %lld best %.6g)",
                        h, static_cast<long long>(i), why.c_str(), static_cast<long long>(label), best,
                        static_cast<long long>(ref.labels[row]), ref.best[row]);
          c.first_violation += line;
        }
        ++c.violations;
      }
    }
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Device buffers of a problem, and one poisoned launch.

struct DeviceProblem {
  uint16_t *x = nullptr, *centroids = nullptr;
  float *half_norms = nullptr, *best = nullptr;
  int64_t* labels = nullptr;
  int heads = 1, k = 1, d = 128;
  int64_t n = 1;
  DeviceProblem() = default;
  DeviceProblem(const DeviceProblem&) = delete;
  DeviceProblem& operator=(const DeviceProblem&) = delete;
  ~DeviceProblem() {
    cudaFree(x);
    cudaFree(centroids);
    cudaFree(half_norms);
    cudaFree(best);
    cudaFree(labels);
  }
  void allocate_outputs() {
    CUDA_OK(cudaMalloc(&labels, sizeof(int64_t) * heads * n));
    CUDA_OK(cudaMalloc(&best, sizeof(float) * heads * n));
  }
};

void upload_problem(const Problem& p, DeviceProblem& dev) {
  auto bits = [](const std::vector<float>& v) {
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = to_bf16_bits(v[i]);  // exact: v is bf16-valued
    return b;
  };
  dev.heads = p.heads;
  dev.n = p.n;
  dev.k = p.k;
  dev.d = p.d;
  dev.x = upload(bits(p.x));
  dev.centroids = upload(bits(p.centroids));
  dev.half_norms = upload(p.half_norms);
  dev.allocate_outputs();
}

// Returns the kernel's status; outputs are poisoned first (labels -1, best NaN: all bits set).
int launch(const KernelChoice& kc, const DeviceProblem& dev, bool with_best, cudaStream_t stream) {
  CUDA_OK(cudaMemsetAsync(dev.labels, 0xff, sizeof(int64_t) * dev.heads * dev.n, stream));
  CUDA_OK(cudaMemsetAsync(dev.best, 0xff, sizeof(float) * dev.heads * dev.n, stream));
  return nearest_centroid_bf16_with(kc.kernel, dev.x, dev.centroids, dev.half_norms, dev.heads, dev.n, dev.k, dev.d,
                                    dev.labels, with_best ? dev.best : nullptr, stream);
}

Labels download_outputs(const DeviceProblem& dev, bool with_best) {
  Labels got{download(dev.labels, static_cast<size_t>(dev.heads * dev.n)), {}};
  if (with_best) got.best = download(dev.best, static_cast<size_t>(dev.heads * dev.n));
  return got;
}

// ---------------------------------------------------------------------------------------------
// Correctness cases.

struct Case {
  std::string name;
  std::function<Problem(uint64_t)> make;
  bool small;             // part of --small
  bool with_best = true;  // false: best = nullptr
};

std::string json_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
  return out;
}

bool run_checks(bool small, uint64_t seed, cudaStream_t stream, std::string& json) {
  const std::vector<Case> cases = {
      {"tiny n1 k1 d128", [](uint64_t s) { return make_problem(1, 1, 1, 128, 0.1f, s); }, true},
      {"k1 d64 n777 h3", [](uint64_t s) { return make_problem(3, 777, 1, 64, 0.1f, s); }, true},
      {"k37 d128 n1000 h2", [](uint64_t s) { return make_problem(2, 1000, 37, 128, 0.1f, s); }, true},
      {"one tile k64 d128 n513", [](uint64_t s) { return make_problem(1, 513, 64, 128, 0.1f, s); }, true},
      {"two tiles k128 d64 n3000 h2", [](uint64_t s) { return make_problem(2, 3000, 128, 64, 0.1f, s); }, true},
      {"three tiles k192 d128 n3000 h2", [](uint64_t s) { return make_problem(2, 3000, 192, 128, 0.1f, s); }, true},
      {"k300 d64 n4099 h2", [](uint64_t s) { return make_problem(2, 4099, 300, 64, 0.1f, s); }, true},
      {"k1029 d128 n2500 h4", [](uint64_t s) { return make_problem(4, 2500, 1029, 128, 0.1f, s); }, false},
      {"k>n k2000 d128 n300", [](uint64_t s) { return make_problem(1, 300, 2000, 128, 0.1f, s); }, false},
      {"uniform k4096 d128 n2048 h8", [](uint64_t s) { return make_problem(8, 2048, 4096, 128, 2.f, s); }, false},
      {"uniform k777 d64 n3001 h2", [](uint64_t s) { return make_problem(2, 3001, 777, 64, 2.f, s); }, true},
      {"ties 3x100 d128 n1500 h2", [](uint64_t s) { return make_duplicates(2, 1500, 100, 3, 128, s); }, true},
      {"ties 2x333 d64 n2000", [](uint64_t s) { return make_duplicates(1, 2000, 333, 2, 64, s); }, false},
      {"random norms k500 d64 n1200 h2", [](uint64_t s) { return make_random_norms(2, 1200, 500, 64, s); }, true},
      {"random norms k130 d128 n999 h3", [](uint64_t s) { return make_random_norms(3, 999, 130, 128, s); }, false},
      {"one-hot k128 d128 n700", [](uint64_t s) { return make_one_hot(700, 128, 128, s); }, true},
      {"one-hot k64 d64 n300", [](uint64_t s) { return make_one_hot(300, 64, 64, s); }, true},
      {"one-hot k100 d128 n257", [](uint64_t s) { return make_one_hot(257, 100, 128, s); }, true},
      {"no best k65 d128 n600", [](uint64_t s) { return make_problem(1, 600, 65, 128, 0.1f, s); }, true, false},
  };
  std::printf("%-34s %-9s %8s %6s %4s %3s %10s %10s %10s %s\n", "case", "kernel", "n", "k", "d", "h", "label_diff",
              "max_gap", "best_err", "result");
  bool all = true;
  json += "\"checks\": [";  // a JSON array body
  bool first_json = true;
  for (const Case& c : cases) {
    if (small && !c.small) continue;
    const Problem p = c.make(seed++);
    const Labels ref = reference(p);
    DeviceProblem dev;
    upload_problem(p, dev);
    for (const KernelChoice& kc : kernels_to_run) {
      const int status = launch(kc, dev, c.with_best, stream);
      std::string result;
      Comparison cmp;
      if (status == cudaErrorNotSupported && kc.kernel == NearestCentroidKernel::kWgmma) {
        result = "unavailable";
      } else {
        CUDA_OK(status);
        CUDA_OK(cudaStreamSynchronize(stream));
        cmp = compare(p, ref, download_outputs(dev, c.with_best));
        result = cmp.pass() ? "PASS" : "FAIL";
        all &= cmp.pass();
      }
      std::printf("%-34s %-9s %8lld %6d %4d %3d %10lld %10.2e %10.2e %s%s\n", c.name.c_str(), kc.name,
                  static_cast<long long>(p.n), p.k, p.d, p.heads, static_cast<long long>(cmp.label_diff), cmp.max_gap,
                  cmp.max_best_err, result.c_str(), cmp.first_violation.c_str());
      char item[512];
      std::snprintf(item, sizeof item,
                    "%s\n  {\"case\": \"%s\", \"kernel\": \"%s\", \"n\": %lld, \"k\": %d, \"d\": %d, \"heads\": %d, "
                    "\"label_diff\": %lld, \"violations\": %lld, \"max_gap\": %.3e, \"max_best_err\": %.3e, "
                    "\"result\": \"%s\"}",
                    first_json ? "" : ",", c.name.c_str(), kc.name, static_cast<long long>(p.n), p.k, p.d, p.heads,
                    static_cast<long long>(cmp.label_diff), static_cast<long long>(cmp.violations), cmp.max_gap,
                    cmp.max_best_err, result.c_str());
      json += item;
      first_json = false;
    }
  }
  json += "\n]";
  return all;
}

// ---------------------------------------------------------------------------------------------
// Timing at the ingest's sizes.

__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [-scale, scale): rows of D such values have norm ~ scale * sqrt(D / 3).
__global__ void fill_uniform_bf16(__nv_bfloat16* out, int64_t count, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float u = static_cast<float>(splitmix64(seed ^ (static_cast<uint64_t>(i) * 0x2545f4914f6cdd1dull)) >> 40) *
                    (1.f / 16777216.f);
    out[i] = __float2bfloat16(scale * (2.f * u - 1.f));
  }
}

__global__ void half_norms_kernel(const __nv_bfloat16* c, float* half_norms, int64_t rows, int d) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (row >= rows) return;
  float sq = 0.f;
  for (int e = 0; e < d; ++e) {
    const float v = __bfloat162float(c[row * d + e]);
    sq += v * v;
  }
  half_norms[row] = 0.5f * sq;
}

struct Timing {
  double median_ms = 0, min_ms = 0;
};

Timing time_ms(const std::function<void()>& run, int reps, cudaStream_t stream) {
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  run();  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    CUDA_OK(cudaEventRecord(start, stream));
    run();
    CUDA_OK(cudaEventRecord(stop, stream));
    CUDA_OK(cudaEventSynchronize(stop));
    float t = 0;
    CUDA_OK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

// The bf16 GEMM rate cuBLAS reaches here (8192^3, fp32 accumulate, bf16 out), TFLOP/s.
double cublas_rate_tflops(cublasHandle_t blas, cudaStream_t stream) {
  const int m = 8192;
  __nv_bfloat16 *a, *b, *c;
  const size_t bytes = sizeof(__nv_bfloat16) * m * m;
  CUDA_OK(cudaMalloc(&a, bytes));
  CUDA_OK(cudaMalloc(&b, bytes));
  CUDA_OK(cudaMalloc(&c, bytes));
  fill_uniform_bf16<<<1024, 256, 0, stream>>>(a, int64_t{m} * m, 1, 1.f);
  fill_uniform_bf16<<<1024, 256, 0, stream>>>(b, int64_t{m} * m, 2, 1.f);
  const float one = 1.f, zero = 0.f;
  const Timing t = time_ms(
      [&] {
        CUBLAS_OK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, m, m, m, &one, a, CUDA_R_16BF, m, b, CUDA_R_16BF, m,
                               &zero, c, CUDA_R_16BF, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      },
      10, stream);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return 2.0 * m * m * m / (t.median_ms * 1e-3) / 1e12;
}

bool run_bench(uint64_t seed, cudaStream_t stream, std::string& json) {
  cublasHandle_t blas;
  CUBLAS_OK(cublasCreate(&blas));
  CUBLAS_OK(cublasSetStream(blas, stream));
  const double rate = cublas_rate_tflops(blas, stream);
  std::printf("\ncuBLAS bf16 GEMM 8192^3: %.1f TFLOP/s\n", rate);
  char head[128];
  std::snprintf(head, sizeof head, "\"cublas_gemm_8192_tflops\": %.1f,\n\"timings\": [", rate);
  json += head;

  bool all = true;
  const int heads = 8, d = 128;
  const int64_t sizes[] = {131072, 524288};
  for (size_t si = 0; si < 2; ++si) {
    const int64_t n = sizes[si];
    const int k = static_cast<int>(n / 20);
    const double flop = 2.0 * heads * n * k * d;
    const double at_700 = flop / 700e12 * 1e3, at_rate = flop / (rate * 1e12) * 1e3;  // ms
    const int reps = n > 200000 ? 3 : 5;
    DeviceProblem dev;
    dev.heads = heads;
    dev.n = n;
    dev.k = k;
    dev.d = d;
    CUDA_OK(cudaMalloc(&dev.x, sizeof(uint16_t) * heads * n * d));
    CUDA_OK(cudaMalloc(&dev.centroids, sizeof(uint16_t) * heads * k * d));
    CUDA_OK(cudaMalloc(&dev.half_norms, sizeof(float) * heads * k));
    dev.allocate_outputs();
    auto* xb = reinterpret_cast<__nv_bfloat16*>(dev.x);
    auto* cb = reinterpret_cast<__nv_bfloat16*>(dev.centroids);
    fill_uniform_bf16<<<4096, 256, 0, stream>>>(xb, int64_t{heads} * n * d, seed + 11 * si, std::sqrt(3.f / d));
    fill_uniform_bf16<<<4096, 256, 0, stream>>>(cb, int64_t{heads} * k * d, seed + 11 * si + 1, 0.8f * std::sqrt(3.f / d));
    half_norms_kernel<<<(heads * k + 255) / 256, 256, 0, stream>>>(cb, dev.half_norms, int64_t{heads} * k, d);
    CUDA_OK(cudaGetLastError());
    CUDA_OK(cudaStreamSynchronize(stream));

    // cuBLAS: the same scores, [chunk x K] per head in bf16 (column-major C = centroids · x^T).
    const int64_t chunk = std::min<int64_t>(n, ((int64_t{1} << 31) / (int64_t{heads} * k)) / 256 * 256);
    __nv_bfloat16* scores;
    CUDA_OK(cudaMalloc(&scores, sizeof(__nv_bfloat16) * heads * chunk * k));
    const float one = 1.f, zero = 0.f;
    const Timing blas_t = time_ms(
        [&] {
          for (int64_t start = 0; start < n; start += chunk) {
            const int rows = static_cast<int>(std::min(chunk, n - start));
            CUBLAS_OK(cublasGemmStridedBatchedEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, k, rows, d, &one, cb, CUDA_R_16BF, d,
                                                 int64_t{k} * d, xb + start * d, CUDA_R_16BF, d, n * d, &zero, scores,
                                                 CUDA_R_16BF, k, int64_t{k} * chunk, heads, CUBLAS_COMPUTE_32F,
                                                 CUBLAS_GEMM_DEFAULT));
          }
        },
        reps, stream);
    cudaFree(scores);

    // Sampled check of every kernel: 64 points per head against the reference.
    Problem sample;
    sample.heads = heads;
    sample.n = 64;
    sample.k = k;
    sample.d = d;
    std::vector<int64_t> index(heads * sample.n);
    std::mt19937_64 rng(seed + si);
    std::uniform_int_distribution<int64_t> pick(0, n - 1);
    std::vector<uint16_t> row(d);
    for (int h = 0; h < heads; ++h)
      for (int64_t i = 0; i < sample.n; ++i) {
        const int64_t point = pick(rng);
        index[h * sample.n + i] = h * n + point;
        CUDA_OK(cudaMemcpy(row.data(), dev.x + (h * n + point) * d, sizeof(uint16_t) * d, cudaMemcpyDeviceToHost));
        for (int e = 0; e < d; ++e) sample.x.push_back(from_bf16_bits(row[e]));
      }
    const std::vector<uint16_t> cbits = download(dev.centroids, static_cast<size_t>(heads) * k * d);
    sample.centroids.resize(cbits.size());
    for (size_t i = 0; i < cbits.size(); ++i) sample.centroids[i] = from_bf16_bits(cbits[i]);
    sample.half_norms = download(dev.half_norms, static_cast<size_t>(heads) * k);
    const Labels sample_ref = reference(sample);

    std::string kernels_json;
    for (const KernelChoice& kc : kernels_to_run) {
      const int status = launch(kc, dev, true, stream);
      if (status == cudaErrorNotSupported && kc.kernel == NearestCentroidKernel::kWgmma) continue;
      CUDA_OK(status);
      CUDA_OK(cudaStreamSynchronize(stream));
      const Comparison cmp = compare(sample, sample_ref, download_outputs(dev, true), index);
      all &= cmp.pass();
      std::printf("N=%lld K=%d %-9s sampled check (%lld points): label_diff %lld, max_gap %.2e, best_err %.2e: %s%s\n",
                  static_cast<long long>(n), k, kc.name, static_cast<long long>(cmp.points),
                  static_cast<long long>(cmp.label_diff), cmp.max_gap, cmp.max_best_err, cmp.pass() ? "PASS" : "FAIL",
                  cmp.first_violation.c_str());
      const Timing t = time_ms(
          [&] {
            CUDA_OK(nearest_centroid_bf16_with(kc.kernel, dev.x, dev.centroids, dev.half_norms, heads, n, k, d,
                                               dev.labels, dev.best, stream));
          },
          reps, stream);
      std::printf("N=%lld K=%d %-9s %9.3f ms (min %.3f)  %6.1f TFLOP/s  %.2fx the FLOPs at 700 TFLOP/s, %.2fx "
                  "cuBLAS's scores\n",
                  static_cast<long long>(n), k, kc.name, t.median_ms, t.min_ms, flop / (t.median_ms * 1e-3) / 1e12,
                  t.median_ms / at_700, t.median_ms / blas_t.median_ms);
      char item[512];
      std::snprintf(item, sizeof item,
                    "%s\"%s\": {\"median_ms\": %.3f, \"min_ms\": %.3f, \"tflops\": %.1f, \"over_700_time\": %.3f, "
                    "\"over_measured_rate_time\": %.3f, \"over_cublas_scores\": %.3f, "
                    "\"sampled_check\": {\"points\": %lld, \"label_diff\": %lld, \"max_gap\": %.3e, \"result\": \"%s\"}}",
                    kernels_json.empty() ? "" : ", ", kc.name, t.median_ms, t.min_ms, flop / (t.median_ms * 1e-3) / 1e12,
                    t.median_ms / at_700, t.median_ms / at_rate, t.median_ms / blas_t.median_ms,
                    static_cast<long long>(cmp.points),
                    static_cast<long long>(cmp.label_diff), cmp.max_gap, cmp.pass() ? "PASS" : "FAIL");
      kernels_json += item;
    }

    std::printf("N=%lld K=%d cuBLAS scores (bf16 out, %lld-row chunks) %.3f ms; FLOPs at 700 TFLOP/s %.3f ms, at the "
                "measured %.0f TFLOP/s %.3f ms\n",
                static_cast<long long>(n), k, static_cast<long long>(chunk), blas_t.median_ms, at_700, rate, at_rate);
    char item[4096];
    std::snprintf(item, sizeof item,
                  "%s\n  {\"n\": %lld, \"k\": %d, \"heads\": %d, \"d\": %d, \"gflop\": %.1f, \"kernels\": {%s}, "
                  "\"cublas_scores_bf16_ms\": %.3f, \"cublas_chunk_rows\": %lld, \"matmul_ms_at_700_tflops\": %.3f, "
                  "\"matmul_ms_at_measured_rate\": %.3f}",
                  si ? "," : "", static_cast<long long>(n), k, heads, d, flop / 1e9, kernels_json.c_str(),
                  blas_t.median_ms, static_cast<long long>(chunk), at_700, at_rate);
    json += item;
  }
  json += "\n]";
  cublasDestroy(blas);
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  bool small = false, bench = true;
  std::string out_path, only;
  uint64_t seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--small") small = true, bench = false;
    else if (arg == "--no-bench") bench = false;
    else if (arg == "--out" && i + 1 < argc) out_path = argv[++i];
    else if (arg == "--kernel" && i + 1 < argc) only = argv[++i];
    else if (arg == "--seed" && i + 1 < argc) seed = std::stoull(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--small] [--no-bench] [--kernel mma_sync|wgmma|auto] [--seed N] [--out FILE]\n",
                   argv[0]);
      return 2;
    }
  }
  for (const KernelChoice& kc : kAllKernels)
    if (only.empty() || only == kc.name) kernels_to_run.push_back(kc);
  if (kernels_to_run.empty()) {
    std::fprintf(stderr, "unknown kernel %s\n", only.c_str());
    return 2;
  }
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  std::printf("device %s (sm_%d%d, %d SMs), seed %llu\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              static_cast<unsigned long long>(seed));

  // stdout: the tables, then the timings as JSON; --out: everything (every check too) as JSON.
  const std::string header = "{\"device\": \"" + json_escape(prop.name) + "\", \"seed\": " + std::to_string(seed);
  std::string checks_json, bench_json;
  bool all = run_checks(small, seed, stream, checks_json);
  if (bench) all &= run_bench(seed, stream, bench_json);
  const std::string result = ",\n\"result\": \"" + std::string(all ? "ALL PASS" : "SOME FAILED") + "\"}\n";
  if (bench) std::printf("\n%s,\n%s%s", header.c_str(), bench_json.c_str(), result.c_str());
  if (!out_path.empty()) {
    FILE* f = std::fopen(out_path.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", out_path.c_str());
      return 2;
    }
    std::fprintf(f, "%s,\n%s%s%s%s", header.c_str(), checks_json.c_str(), bench ? ",\n" : "", bench_json.c_str(),
                 result.c_str());
    std::fclose(f);
  }
  std::printf("%s\n", all ? "ALL PASS" : "SOME FAILED");
  CUDA_OK(cudaStreamDestroy(stream));
  return all ? 0 : 1;
}
