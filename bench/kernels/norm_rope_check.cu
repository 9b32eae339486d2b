#include "bench/kernels/norm_rope_check.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/kernels/device_layer.h"
#include "kernels/norm_rope.h"
#include "kernels/norm_rope_ref.h"

namespace squeezeserve::kernels::bench {
namespace {

// RMSNorm: the GPU sums squares in another fp32 order and rsqrtf is approximate, so bf16(normed)
// can land one bf16 ulp away where it sits at a rounding boundary (rarely). Such flips come in
// groups: a bf16 input has 128 mantissas, so a row of 384 repeats each ~3 times and one unlucky
// mantissa moves all its copies (seen on an H100: 3 of 384 off, one by more than an ulp, because
// |w| > 1). Pass: every output within what one ulp of bf16(normed) explains, |w| ulp(normed) +
// ulp(out) (at most ~1.2% relative; max_rel is printed), and >= 97% bit-exact, which a systematic
// error (another rounding mode, a wrong eps) breaks but a few flipped mantissas do not.
// RoPE: the same fp32 products and bf16 roundings in the same order: bit-exact.

struct NormCase {
  std::string name;
  int rows, hidden;
};
struct RopeCase {
  std::string name;
  int tokens, heads, head_dim, row_padding;  // input row stride = heads * head_dim + row_padding
  int token_major_heads = 0;                 // rope_bf16's (the engine's: the query heads)
};
struct ElementwiseResult {
  size_t elements = 0, exact = 0, within_ulp = 0;
  double max_rel = 0;
  bool pass = true;
};

// One bf16 ulp at |v| (8 significant bits); v = 0 gets the ulp of 2^-126's binade, i.e. tiny.
double bf16_ulp(double v) {
  int exponent;
  std::frexp(v == 0 ? 0x1p-126 : v, &exponent);
  return std::ldexp(1.0, exponent - 8);
}

std::vector<float> gpu_output(const uint16_t* d, size_t n) {
  const std::vector<uint16_t> bits = download(d, n);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = from_bf16_bits(bits[i]);
  return out;
}

ElementwiseResult check_rms_norm(const NormCase& c, uint64_t seed) {
  const size_t n = size_t(c.rows) * c.hidden;
  const float eps = 1e-5f;
  std::vector<float> x = random_normal(int64_t(n), seed);
  // Rows of other magnitudes: eps matters on the small ones.
  for (int r = 1; r < c.rows; r += 3) {
    for (int i = 0; i < c.hidden; ++i) x[size_t(r) * c.hidden + i] *= r % 2 ? 1e-3f : 300.f;
  }
  std::vector<float> weight = random_normal(c.hidden, seed + 1);
  for (float& w : weight) w = 1.f + 0.5f * w;
  uint16_t* d_x = upload(round_to_bf16(x));
  uint16_t* d_w = upload(round_to_bf16(weight));
  uint16_t* d_out = nullptr;
  CUDA_OK(cudaMalloc(&d_out, sizeof(uint16_t) * n));
  CUDA_OK(cudaMemset(d_out, 0xff, sizeof(uint16_t) * n));  // bf16 0xffff = NaN
  CUDA_OK(rms_norm_bf16(d_x, d_w, d_out, c.rows, c.hidden, eps, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> out = gpu_output(d_out, n);
  std::vector<float> ref(n);
  rms_norm_ref(x.data(), weight.data(), ref.data(), c.rows, c.hidden, eps);

  ElementwiseResult res;
  res.elements = n;
  for (int r = 0; r < c.rows; ++r) {
    // The reference's bf16(normed) of this row, for the bound (same sum as rms_norm_ref).
    const float* xr = &x[size_t(r) * c.hidden];
    double sum = 0.0;
    for (int i = 0; i < c.hidden; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float inv_rms = 1.f / std::sqrt(static_cast<float>(sum) * (1.f / c.hidden) + eps);
    for (int i = 0; i < c.hidden; ++i) {
      const size_t k = size_t(r) * c.hidden + i;
      const double diff = std::abs(double(out[k]) - ref[k]);
      if (!std::isfinite(out[k])) res.pass = false;
      res.exact += out[k] == ref[k];
      res.within_ulp += diff <= bf16_ulp(ref[k]);
      res.max_rel = std::max(res.max_rel, diff / std::max(std::abs(double(ref[k])), 1e-30));
      const double normed = kernels::round_to_bf16(xr[i] * inv_rms);  // the scalar one (norm_rope_ref.h)
      if (!(diff <= std::abs(weight[i]) * bf16_ulp(normed) + bf16_ulp(ref[k]))) res.pass = false;
    }
  }
  if (res.exact < 0.97 * n) res.pass = false;
  cudaFree(d_x);
  cudaFree(d_w);
  cudaFree(d_out);
  return res;
}

ElementwiseResult check_rope(const RopeCase& c, uint64_t seed) {
  const int64_t stride = int64_t(c.heads) * c.head_dim + c.row_padding;
  std::vector<float> in = random_normal(c.tokens * stride, seed, 2.f);
  // cos/sin as the engine computes them: fp32 angles of positions from a random start, then bf16.
  const int half = c.head_dim / 2;
  const int start = static_cast<int>(seed % 30000);
  std::vector<float> cos(size_t(c.tokens) * c.head_dim), sin(cos.size());
  for (int t = 0; t < c.tokens; ++t) {
    for (int i = 0; i < c.head_dim; ++i) {
      const float angle = float(start + t) * std::pow(10000.f, -float(i % half) / half);
      cos[size_t(t) * c.head_dim + i] = std::cos(angle);
      sin[size_t(t) * c.head_dim + i] = std::sin(angle);
    }
  }
  uint16_t* d_in = upload(round_to_bf16(in));
  uint16_t* d_cos = upload(round_to_bf16(cos));
  uint16_t* d_sin = upload(round_to_bf16(sin));
  const size_t n = size_t(c.heads) * c.tokens * c.head_dim;
  uint16_t* d_out = nullptr;
  CUDA_OK(cudaMalloc(&d_out, sizeof(uint16_t) * n));
  CUDA_OK(cudaMemset(d_out, 0xff, sizeof(uint16_t) * n));  // bf16 0xffff = NaN
  CUDA_OK(rope_bf16(d_in, d_out, d_cos, d_sin, c.tokens, c.heads, c.head_dim, stride, c.token_major_heads, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> out = gpu_output(d_out, n);
  std::vector<float> ref(n);
  rope_ref(in.data(), ref.data(), cos.data(), sin.data(), c.tokens, c.heads, c.head_dim, stride, c.token_major_heads);

  ElementwiseResult res;
  res.elements = n;
  for (size_t k = 0; k < n; ++k) {
    const double diff = std::abs(double(out[k]) - ref[k]);
    res.exact += out[k] == ref[k];
    res.within_ulp += diff <= bf16_ulp(ref[k]);
    res.max_rel = std::max(res.max_rel, diff / std::max(std::abs(double(ref[k])), 1e-30));
  }
  res.pass = res.exact == n;  // NaN (the poison) never compares equal
  cudaFree(d_in);
  cudaFree(d_cos);
  cudaFree(d_sin);
  cudaFree(d_out);
  return res;
}

}  // namespace

bool run_norm_rope_checks(uint64_t seed) {
  // hidden 385: the scalar (unvectorized) RMSNorm path; row_padding: q/k read out of a wider row.
  const std::vector<NormCase> norms = {
      {"rms_norm h4096 rows1", 1, 4096}, {"rms_norm h4096 rows37", 37, 4096}, {"rms_norm h384 rows257", 257, 384},
      {"rms_norm h384 rows1", 1, 384},   {"rms_norm h385 rows5", 5, 385},     {"rms_norm h8192 rows3", 3, 8192},
  };
  const std::vector<RopeCase> ropes = {
      {"rope d128 h32 t1", 1, 32, 128, 0},      {"rope d128 h8 t37 padded", 37, 8, 128, 256},
      {"rope d64 h12 t257", 257, 12, 64, 0},    {"rope d64 h3 t5 padded", 5, 3, 64, 7},
      {"rope d128 h32 t1001", 1001, 32, 128, 0},
      // The engine's q and k in one pass: Llama-3's 32 + 8 heads, the query heads token-major.
      {"rope d128 h40 t8 q token-major", 8, 40, 128, 1024, 32},
      {"rope d64 h12 t257 q token-major", 257, 12, 64, 0, 9},
      {"rope d128 h3 t5 all token-major", 5, 3, 128, 0, 3},
  };
  std::printf("\n%-30s %10s %10s %10s %10s %s\n", "case", "elements", "exact", "<=1ulp", "max_rel", "result");
  bool all = true;
  auto print = [&](const std::string& name, const ElementwiseResult& r) {
    all &= r.pass;
    std::printf("%-30s %10zu %9.4f%% %9.4f%% %10.2e %s\n", name.c_str(), r.elements, 100.0 * r.exact / r.elements,
                100.0 * r.within_ulp / r.elements, r.max_rel, r.pass ? "PASS" : "FAIL");
  };
  for (const NormCase& c : norms) print(c.name, check_rms_norm(c, seed++));
  for (const RopeCase& c : ropes) print(c.name, check_rope(c, seed++));
  return all;
}

}  // namespace squeezeserve::kernels::bench
