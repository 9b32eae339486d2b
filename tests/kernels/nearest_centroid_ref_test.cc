// The CPU nearest-centroid reference (kernels/nearest_centroid_ref.h) against its definitions: the
// Euclidean argmin it stands for (with half_norms = ½‖c‖²), ties to the smallest index, k = 1,
// NaN / −inf scores, several heads, n not a multiple of the GPU's 256-point tile, d = 64 and 128.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "kernels/nearest_centroid_ref.h"

namespace squeezeserve::kernels {
namespace {

// Unit rows around `k` random directions (what the ingest clusters: L2-normalized keys).
struct Problem {
  int heads, k, d;
  int64_t n;
  std::vector<float> x, centroids, half_norms;
};

std::vector<float> UnitRows(int64_t rows, int d, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(rows * d);
  for (int64_t r = 0; r < rows; ++r) {
    double norm = 0;
    for (int e = 0; e < d; ++e) norm += std::pow(v[r * d + e] = normal(rng), 2);
    for (int e = 0; e < d; ++e) v[r * d + e] /= static_cast<float>(std::sqrt(norm));
  }
  return v;
}

Problem MakeProblem(int heads, int64_t n, int k, int d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p{heads, k, d, n, {}, {}, {}};
  // Means of unit vectors lie inside the sphere, at different radii (so ½‖c‖² matters).
  p.centroids = UnitRows(static_cast<int64_t>(heads) * k, d, rng);
  std::uniform_real_distribution<float> radius(0.5f, 1.f);
  for (int64_t j = 0; j < static_cast<int64_t>(heads) * k; ++j) {
    const float r = radius(rng);
    for (int e = 0; e < d; ++e) p.centroids[j * d + e] *= r;
  }
  // Points: a random centroid plus noise, normalized.
  std::uniform_int_distribution<int> pick(0, k - 1);
  std::normal_distribution<float> noise(0.f, 0.05f);
  p.x.resize(static_cast<size_t>(heads) * n * d);
  for (int h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      const float* c = &p.centroids[(static_cast<int64_t>(h) * k + pick(rng)) * d];
      float* xi = &p.x[(static_cast<int64_t>(h) * n + i) * d];
      double norm = 0;
      for (int e = 0; e < d; ++e) norm += std::pow(xi[e] = c[e] + noise(rng), 2);
      for (int e = 0; e < d; ++e) xi[e] /= static_cast<float>(std::sqrt(norm));
    }
  }
  p.half_norms.resize(static_cast<size_t>(heads) * k);
  for (int64_t j = 0; j < static_cast<int64_t>(heads) * k; ++j) {
    double sq = 0;
    for (int e = 0; e < d; ++e) sq += static_cast<double>(p.centroids[j * d + e]) * p.centroids[j * d + e];
    p.half_norms[j] = static_cast<float>(0.5 * sq);
  }
  return p;
}

struct Output {
  std::vector<int64_t> labels;
  std::vector<float> best;
};

Output Assign(const Problem& p) {
  Output o{std::vector<int64_t>(p.heads * p.n, -1), std::vector<float>(p.heads * p.n, NAN)};
  nearest_centroid_ref(p.x.data(), p.centroids.data(), p.half_norms.data(), p.heads, p.n, p.k, p.d, o.labels.data(),
                       o.best.data());
  return o;
}

class NearestCentroidRef : public ::testing::TestWithParam<std::tuple<int, int64_t, int, int>> {};

// With half_norms = ½‖c‖², the label is the centroid nearest in Euclidean distance (computed here
// independently, as a squared distance); best is the chosen centroid's score.
TEST_P(NearestCentroidRef, IsTheEuclideanArgmin) {
  const auto [heads, n, k, d] = GetParam();
  const Problem p = MakeProblem(heads, n, k, d, 1000 * n + k + d);
  const Output o = Assign(p);
  int64_t compared = 0;
  for (int h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = &p.x[(h * n + i) * d];
      double first = INFINITY, second = INFINITY;
      int64_t nearest = -1;
      for (int j = 0; j < k; ++j) {
        const float* c = &p.centroids[(static_cast<int64_t>(h) * k + j) * d];
        double dist = 0;
        for (int e = 0; e < d; ++e) dist += std::pow(static_cast<double>(xi[e]) - c[e], 2);
        if (dist < first) {
          second = first;
          first = dist;
          nearest = j;
        } else if (dist < second) {
          second = dist;
        }
      }
      const int64_t label = o.labels[h * n + i];
      ASSERT_GE(label, 0);
      ASSERT_LT(label, k);
      // ½‖x − c‖² = ½‖x‖² − score: the two forms round differently, so near-ties may differ.
      if (second - first > 1e-9) {
        EXPECT_EQ(label, nearest) << "head " << h << " point " << i;
        ++compared;
      }
      const double chosen = centroid_score_ref(xi, &p.centroids[(static_cast<int64_t>(h) * k + label) * d],
                                               p.half_norms[h * k + label], d);
      EXPECT_NEAR(o.best[h * n + i], chosen, 1e-6 * (1 + std::abs(chosen)));
    }
  }
  EXPECT_GT(compared, heads * n * 9 / 10);  // near-ties stay rare
}

// heads, n, k, d: n = 1, k = 1, k > n, n not a multiple of 256, both head sizes.
INSTANTIATE_TEST_SUITE_P(Shapes, NearestCentroidRef,
                         ::testing::Values(std::make_tuple(1, int64_t{1}, 1, 64), std::make_tuple(2, int64_t{300}, 1, 128),
                                           std::make_tuple(3, int64_t{257}, 37, 64),
                                           std::make_tuple(2, int64_t{1000}, 129, 128),
                                           std::make_tuple(1, int64_t{5}, 70, 128)));

TEST(NearestCentroidRefTies, SmallestIndexWins) {
  // Duplicated centroids: every copy scores exactly the same, so the first copy must win.
  Problem p = MakeProblem(2, 500, 10, 128, 7);
  const int copies = 3;
  std::vector<float> centroids, half_norms;
  for (int h = 0; h < p.heads; ++h) {
    for (int r = 0; r < copies; ++r) {
      centroids.insert(centroids.end(), p.centroids.begin() + h * p.k * p.d, p.centroids.begin() + (h + 1) * p.k * p.d);
      half_norms.insert(half_norms.end(), p.half_norms.begin() + h * p.k, p.half_norms.begin() + (h + 1) * p.k);
    }
  }
  const Output once = Assign(p);
  p.centroids = centroids;
  p.half_norms = half_norms;
  p.k *= copies;
  const Output repeated = Assign(p);
  EXPECT_EQ(repeated.labels, once.labels);
  EXPECT_EQ(repeated.best, once.best);

  // Different centroids with equal scores (exact in binary): x = e0, score 0.5 − 0 = 0.75 − 0.25.
  const int d = 64;
  std::vector<float> x(d, 0.f), c(3 * d, 0.f);
  x[0] = 1.f;
  c[0 * d + 1] = 1.f;   // score −0.5
  c[1 * d + 0] = 0.75f;  // score 0.75 − 0.25 = 0.5
  c[2 * d + 0] = 0.5f;   // score 0.5 − 0 = 0.5
  const std::vector<float> hn = {0.5f, 0.25f, 0.f};
  int64_t label = -1;
  float best = 0;
  nearest_centroid_ref(x.data(), c.data(), hn.data(), 1, 1, 3, d, &label, &best);
  EXPECT_EQ(label, 1);
  EXPECT_EQ(best, 0.5f);
}

TEST(NearestCentroidRefEdges, NanIsNeverChosenAndAllInvalidGivesZero) {
  const int d = 64;
  std::vector<float> x(d, 0.f), c(3 * d, 0.f);
  x[0] = 1.f;
  c[0 * d + 0] = 1.f;  // would win (score 1 − hn)
  c[1 * d + 0] = 0.5f;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> hn = {nan, 0.f, 0.f};
  int64_t label = -1;
  float best = 0;
  nearest_centroid_ref(x.data(), c.data(), hn.data(), 1, 1, 3, d, &label, &best);
  EXPECT_EQ(label, 1);
  EXPECT_EQ(best, 0.5f);

  hn = {nan, inf, nan};
  nearest_centroid_ref(x.data(), c.data(), hn.data(), 1, 1, 3, d, &label, &best);
  EXPECT_EQ(label, 0);
  EXPECT_EQ(best, -inf);

  // best may be null.
  hn = {0.f, 0.f, 0.f};
  nearest_centroid_ref(x.data(), c.data(), hn.data(), 1, 1, 3, d, &label, nullptr);
  EXPECT_EQ(label, 0);
}

TEST(NearestCentroidRefHeads, HeadsAreIndependent) {
  // Head 1 holds head 0's centroids in reverse order: its labels are mirrored.
  Problem p = MakeProblem(1, 200, 17, 128, 3);
  Problem two = p;
  two.heads = 2;
  two.x.insert(two.x.end(), p.x.begin(), p.x.end());
  for (int j = p.k - 1; j >= 0; --j) {
    two.centroids.insert(two.centroids.end(), p.centroids.begin() + j * p.d, p.centroids.begin() + (j + 1) * p.d);
    two.half_norms.push_back(p.half_norms[j]);
  }
  const Output o = Assign(two);
  for (int64_t i = 0; i < p.n; ++i) EXPECT_EQ(o.labels[p.n + i], p.k - 1 - o.labels[i]) << i;
}

}  // namespace
}  // namespace squeezeserve::kernels
