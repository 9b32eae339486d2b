// The CPU reference of the two-part merge (kernels/merge_parts_ref.h) against softmax attention over
// the union of the parts' keys, computed in double: the identity the shared-context decode rests on.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/merge_parts_ref.h"

namespace squeezeserve::kernels::testing {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Softmax attention of q over keys [from, to) (scale 1/sqrt(D)), normalized, and its LSE; zeros and
// -inf for no keys.
void attend(const std::vector<double>& q, const std::vector<std::vector<double>>& keys,
            const std::vector<std::vector<double>>& values, size_t from, size_t to, std::vector<double>* out,
            double* lse) {
  const size_t d = q.size();
  out->assign(d, 0.0);
  if (from >= to) {
    *lse = -std::numeric_limits<double>::infinity();
    return;
  }
  std::vector<double> s(to - from);
  double m = -std::numeric_limits<double>::infinity();
  for (size_t j = from; j < to; ++j) {
    double dot = 0;
    for (size_t i = 0; i < d; ++i) dot += q[i] * keys[j][i];
    s[j - from] = dot / std::sqrt(static_cast<double>(d));
    m = std::max(m, s[j - from]);
  }
  double sum = 0;
  for (size_t j = from; j < to; ++j) {
    const double p = std::exp(s[j - from] - m);
    sum += p;
    for (size_t i = 0; i < d; ++i) (*out)[i] += p * values[j][i];
  }
  for (double& x : *out) x /= sum;
  *lse = m + std::log(sum);
}

// rows query rows, each with its own keys; row r's keys [0, split_r) are part A (stored at row
// a_row[r] of A), [split_r, n_r) part B. Some rows have an empty A, some an empty B, one both.
TEST(MergePartsRefTest, EqualsAttentionOverTheUnion) {
  for (const int head_dim : {64, 128, 6}) {
    std::mt19937 rng(static_cast<uint32_t>(head_dim));
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_int_distribution<int> count(0, 40);
    const int rows = 23;
    std::vector<int32_t> a_row(rows);
    for (int r = 0; r < rows; ++r) a_row[r] = (r * 7 + 3) % rows;  // a permutation (7 is prime to 23)
    std::vector<float> a_out(rows * head_dim, NAN), a_lse(rows), b_out(rows * head_dim, NAN), b_lse(rows);
    std::vector<std::vector<double>> want(rows);
    std::vector<double> want_lse(rows);
    for (int r = 0; r < rows; ++r) {
      const int n_a = r == 0 || r == 5 ? 0 : count(rng), n_b = r == 0 || r == 9 ? 0 : count(rng);
      std::vector<double> q(head_dim);
      for (double& x : q) x = 2 * normal(rng);
      std::vector<std::vector<double>> keys(n_a + n_b, std::vector<double>(head_dim)), values = keys;
      for (auto* m : {&keys, &values})
        for (auto& row : *m)
          for (double& x : row) x = normal(rng);
      std::vector<double> part;
      double lse = 0;
      attend(q, keys, values, 0, n_a, &part, &lse);
      a_lse[a_row[r]] = n_a == 0 ? kNegInf : static_cast<float>(lse);
      for (int i = 0; i < head_dim && n_a > 0; ++i) a_out[a_row[r] * head_dim + i] = static_cast<float>(part[i]);
      attend(q, keys, values, n_a, n_a + n_b, &part, &lse);
      b_lse[r] = n_b == 0 ? kNegInf : static_cast<float>(lse);
      for (int i = 0; i < head_dim && n_b > 0; ++i) b_out[r * head_dim + i] = static_cast<float>(part[i]);
      attend(q, keys, values, 0, n_a + n_b, &want[r], &want_lse[r]);
    }
    std::vector<float> out(rows * head_dim, NAN), lse(rows, NAN);
    merge_attention_parts_ref(rows, head_dim, a_out.data(), a_lse.data(), a_row.data(), b_out.data(), b_lse.data(),
                              out.data(), lse.data());
    for (int r = 0; r < rows; ++r) {
      if (std::isinf(want_lse[r])) {
        EXPECT_EQ(lse[r], kNegInf) << "row " << r;
      } else {
        EXPECT_NEAR(lse[r], want_lse[r], 1e-4) << "row " << r << " D " << head_dim;
      }
      for (int i = 0; i < head_dim; ++i) {
        ASSERT_NEAR(out[r * head_dim + i], want[r][i], 1e-5) << "row " << r << " dim " << i << " D " << head_dim;
      }
    }
  }
}

}  // namespace
}  // namespace squeezeserve::kernels::testing
