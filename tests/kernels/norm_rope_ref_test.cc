// The CPU references of the fused RMSNorm and RoPE (kernels/norm_rope_ref.h) against the formulas
// computed in double, with bf16 rounding done independently of round_to_bf16 (frexp + nearbyint).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/norm_rope_ref.h"

namespace squeezeserve::kernels {
namespace {

// Nearest value with 8 significant bits, ties to even (the default rounding mode of nearbyint).
double Bf16(double v) {
  if (v == 0 || !std::isfinite(v)) return v;
  int exponent;
  std::frexp(v, &exponent);  // |v| in [2^(exponent-1), 2^exponent)
  const double scale = std::ldexp(1.0, 8 - exponent);
  return std::nearbyint(v * scale) / scale;
}

// One unit in the last place of a bf16 value v != 0.
double Bf16Ulp(double v) {
  int exponent;
  std::frexp(v, &exponent);
  return std::ldexp(1.0, exponent - 8);
}

// Normal values scaled by `scale`, rounded to bf16 (the kernels' inputs are bf16).
std::vector<float> RandomBf16(size_t n, double scale, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(Bf16(normal(rng)));
  return v;
}

TEST(RoundToBf16, MatchesFrexpRounding) {
  std::mt19937_64 rng(2);
  std::normal_distribution<float> normal(0.f, 100.f);
  for (int i = 0; i < 100000; ++i) {
    const float x = normal(rng);
    EXPECT_EQ(round_to_bf16(x), static_cast<float>(Bf16(x))) << x;
  }
  // Exact ties: 1 + 2^-8 lies between 1 and 1 + 2^-7 and goes to the even one (1); 1 + 3 * 2^-8 up.
  EXPECT_EQ(round_to_bf16(1.f + 0x1p-8f), 1.f);
  EXPECT_EQ(round_to_bf16(1.f + 3 * 0x1p-8f), 1.f + 0x1p-6f);
  EXPECT_TRUE(std::isnan(round_to_bf16(NAN)));
  EXPECT_EQ(round_to_bf16(INFINITY), INFINITY);
}

// The reference's fp32 sum and rsqrt differ from double in the last fp32 bits, which moves
// bf16(normed) by one bf16 ulp where it sits at a rounding boundary (rarely). The output then moves
// by |weight| times that ulp, plus its own rounding: up to 2 ulps of the output when normed's ulp is
// relatively coarser (normed just above a power of two, the output just below one).
TEST(RmsNormRef, MatchesDoubleFormula) {
  struct Shape {
    int rows, hidden;
    float eps;
  };
  for (const Shape& s : {Shape{7, 385, 1e-5f}, Shape{3, 4096, 1e-6f}, Shape{1, 64, 1e-5f}}) {
    const size_t n = static_cast<size_t>(s.rows) * s.hidden;
    std::vector<float> x = RandomBf16(n, 1.0, s.hidden);
    // Rows of other magnitudes: tiny (eps matters), large, and all zeros.
    for (int i = 0; i < s.hidden; ++i) {
      if (s.rows > 1) x[s.hidden + i] = round_to_bf16(x[s.hidden + i] * 1e-3f);
      if (s.rows > 2) x[2 * s.hidden + i] = round_to_bf16(x[2 * s.hidden + i] * 300.f);
      if (s.rows > 3) x[3 * s.hidden + i] = 0.f;
    }
    const std::vector<float> weight = RandomBf16(s.hidden, 0.5, s.hidden + 1);
    std::vector<float> out(n, NAN);
    rms_norm_ref(x.data(), weight.data(), out.data(), s.rows, s.hidden, s.eps);
    int differing = 0;
    for (int r = 0; r < s.rows; ++r) {
      double sum = 0;
      for (int i = 0; i < s.hidden; ++i) sum += static_cast<double>(x[r * s.hidden + i]) * x[r * s.hidden + i];
      const double inv_rms = 1.0 / std::sqrt(sum / s.hidden + s.eps);
      for (int i = 0; i < s.hidden; ++i) {
        const size_t k = static_cast<size_t>(r) * s.hidden + i;
        const double normed = Bf16(x[k] * inv_rms);
        const double want = Bf16(weight[i] * normed);
        if (out[k] == want) continue;
        ASSERT_LE(std::abs(out[k] - want), std::abs(weight[i]) * Bf16Ulp(normed) + Bf16Ulp(want))
            << "row " << r << " i " << i;
        ++differing;
      }
    }
    EXPECT_LE(static_cast<size_t>(differing), n / 100) << s.hidden;
  }
}

// Every product of two bf16 values is exact in fp32, and rounding the fp32 sum of two bf16 terms to
// bf16 equals rounding their exact sum: the reference must equal the double formula bit for bit.
TEST(RopeRef, MatchesDoubleFormula) {
  struct Shape {
    int tokens, heads, head_dim, row_padding, token_major_heads;
  };
  for (const Shape& s : {Shape{5, 3, 64, 0, 0}, Shape{9, 2, 128, 40, 0}, Shape{1, 7, 128, 0, 0}, Shape{3, 1, 6, 2, 0},
                         Shape{9, 7, 128, 40, 4}, Shape{5, 3, 64, 0, 3}, Shape{3, 2, 6, 2, 1}}) {
    const int64_t stride = int64_t{s.heads} * s.head_dim + s.row_padding;
    const std::vector<float> in = RandomBf16(static_cast<size_t>(s.tokens) * stride, 2.0, s.head_dim + s.tokens);
    // cos/sin of real angles (position t, frequencies spread as RoPE's), rounded to bf16 as the engine does.
    std::vector<float> cos(static_cast<size_t>(s.tokens) * s.head_dim), sin(cos.size());
    const int half = s.head_dim / 2;
    for (int t = 0; t < s.tokens; ++t) {
      for (int i = 0; i < s.head_dim; ++i) {
        const double angle = (t + 1000) * std::pow(10000.0, -static_cast<double>(i % half) / half);
        cos[t * s.head_dim + i] = static_cast<float>(Bf16(std::cos(angle)));
        sin[t * s.head_dim + i] = static_cast<float>(Bf16(std::sin(angle)));
      }
    }
    std::vector<float> out(static_cast<size_t>(s.heads) * s.tokens * s.head_dim, NAN);
    rope_ref(in.data(), out.data(), cos.data(), sin.data(), s.tokens, s.heads, s.head_dim, stride,
             s.token_major_heads);
    // Where head h of token t lies: the first heads token-major [tokens][token_major][D], the rest [heads][tokens][D].
    const int tm = s.token_major_heads;
    auto at = [&](int h, int t) {
      return static_cast<size_t>(h < tm ? t * tm + h : s.tokens * tm + (h - tm) * s.tokens + t) * s.head_dim;
    };
    for (int h = 0; h < s.heads; ++h) {
      for (int t = 0; t < s.tokens; ++t) {
        const float* x = &in[t * stride + h * s.head_dim];
        for (int i = 0; i < s.head_dim; ++i) {
          const double rotated = i < half ? -static_cast<double>(x[i + half]) : x[i - half];
          const double want = Bf16(Bf16(x[i] * static_cast<double>(cos[t * s.head_dim + i])) +
                                   Bf16(rotated * sin[t * s.head_dim + i]));
          ASSERT_EQ(out[at(h, t) + i], want)
              << "head " << h << " token " << t << " i " << i << " head_dim " << s.head_dim;
        }
      }
    }
  }
}

}  // namespace
}  // namespace squeezeserve::kernels
