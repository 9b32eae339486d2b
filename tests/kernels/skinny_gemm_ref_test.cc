// The CPU reference of the decode step's weight products (kernels/skinny_gemm_ref.h): SiLU * up
// rounded twice (as libtorch's CUDA at::silu(gate).mul_(up) on bf16 tensors: fp32 math, a bf16
// result per op; its CPU bf16 silu rounds differently, so the GPU's is emulated in fp32 here), and
// the product x W^T + bias + residual with W stored [n][k] and rows of x at a stride, against
// libtorch.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/norm_rope_ref.h"
#include "kernels/skinny_gemm_ref.h"

namespace squeezeserve::kernels {
namespace {

std::vector<float> RandomBf16(size_t n, float scale, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = round_to_bf16(normal(rng));
  return v;
}

at::Tensor Tensor(const std::vector<float>& v, at::IntArrayRef shape) {
  return at::from_blob(const_cast<float*>(v.data()), shape, at::kFloat).clone();
}

// bf16(bf16(silu(g)) * u) in double with both roundings: the same bits but where fp32's silu and
// the double one fall on different sides of a rounding edge (rare).
TEST(SkinnyGemmRef, SiluMulRoundsTwice) {
  const int n = 100000;
  const std::vector<float> gate = RandomBf16(n, 4.f, 1), up = RandomBf16(n, 2.f, 2);
  int exact = 0;
  for (int i = 0; i < n; ++i) {
    const double silu = gate[i] / (1.0 + std::exp(-static_cast<double>(gate[i])));
    const float want = round_to_bf16(round_to_bf16(static_cast<float>(silu)) * up[i]);
    const float got = silu_mul_ref(gate[i], up[i]);
    exact += got == want;
    ASSERT_LE(std::fabs(got - want), std::fabs(want) * 0x1p-7f + 1e-30f) << gate[i] << " " << up[i];
  }
  EXPECT_GE(exact, n - n / 1000);
}

// m rows of x at a stride wider than k, bias and residual, against libtorch in fp32 rounded once;
// x is also SiLU * up of a gate_up (silu_mul_ref per element against libtorch's CUDA rounding,
// emulated in fp32 ops).
TEST(SkinnyGemmRef, ProductMatchesLibtorch) {
  const int m = 3, n = 37, k = 72;
  const int64_t stride = k + 8;
  for (const bool silu : {false, true}) {
    std::vector<float> x = RandomBf16(m * stride, 1.f, 3);
    const std::vector<float> gate_up = RandomBf16(m * 2 * k, 2.f, 7);
    if (silu) {
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < k; ++j) x[i * stride + j] = silu_mul_ref(gate_up[i * 2 * k + j], gate_up[i * 2 * k + k + j]);
    }
    const std::vector<float> w = RandomBf16(n * k, 0.1f, 4), bias = RandomBf16(n, 1.f, 5),
                             residual = RandomBf16(m * n, 1.f, 6);
    std::vector<float> got(m * n);
    skinny_gemm_ref(m, n, k, x.data(), stride, w.data(), bias.data(), residual.data(), got.data());

    at::Tensor rows = at::from_blob(x.data(), {m, k}, {stride, 1}, at::kFloat);
    if (silu) {  // libtorch's CUDA rounding, in fp32 ops here
      const at::Tensor gu = Tensor(gate_up, {m, 2 * k});
      const at::Tensor g = gu.narrow(1, 0, k);
      const at::Tensor s = (g / (1 + at::exp(-g))).to(at::kBFloat16).to(at::kFloat);
      rows = (s * gu.narrow(1, k, k)).to(at::kBFloat16).to(at::kFloat);
    }
    const at::Tensor want = at::addmm(Tensor(residual, {m, n}) + Tensor(bias, {n}), rows, Tensor(w, {n, k}).t())
                                .to(at::kBFloat16)
                                .to(at::kFloat);
    const float* wp = want.data_ptr<float>();
    for (int i = 0; i < m * n; ++i) {
      // The same bf16 value up to the fp32 sum's order (one ulp where it sits on a rounding edge).
      EXPECT_LE(std::fabs(got[i] - wp[i]), std::fabs(wp[i]) * 0x1p-7f + 1e-6f) << (silu ? "silu " : "") << i;
    }
  }
}

TEST(SkinnyGemmRef, WithoutBiasAndResidual) {
  // x = [1, 2], W = [[1, 0], [3, -1], [0.5, 0.25]]: x W^T = [1, 1, 1].
  const std::vector<float> x = {1.f, 2.f}, w = {1.f, 0.f, 3.f, -1.f, 0.5f, 0.25f};
  std::vector<float> out(3, -7.f);
  skinny_gemm_ref(1, 3, 2, x.data(), 2, w.data(), nullptr, nullptr, out.data());
  EXPECT_EQ(out, (std::vector<float>{1.f, 1.f, 1.f}));
}

}  // namespace
}  // namespace squeezeserve::kernels
