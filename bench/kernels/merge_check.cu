#include "bench/kernels/merge_check.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bench/kernels/device_layer.h"
#include "kernels/merge_parts.h"
#include "kernels/merge_parts_ref.h"

namespace squeezeserve::kernels::bench {
namespace {

// Random parts (bf16 outputs, LSEs over a wide range, some rows with an empty part A, B or both,
// whose outputs are NaN: never read), merged on the GPU into poisoned outputs and on the CPU from
// the same bf16 values. Pass: ||out - ref|| / ||ref|| <= 1e-2 (one bf16 rounding of the output),
// LSE abs error <= 1e-4 relative to max(1, |ref|), rows with both parts empty exactly 0 and -inf,
// no NaN anywhere.
struct MergeCase {
  std::string name;
  int rows, head_dim;
  bool permuted;  // part A's rows through a_row (the shared-context layout), else row r
  bool with_lse;
};

bool check_case(const MergeCase& c, uint64_t seed) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> lse_of(-30.f, 30.f);
  std::uniform_int_distribution<int> kind(0, 9);
  const size_t n = static_cast<size_t>(c.rows) * c.head_dim;
  std::vector<float> a_out(n), b_out(n), a_lse(c.rows), b_lse(c.rows);
  std::vector<int32_t> a_row(c.rows);
  for (int r = 0; r < c.rows; ++r) a_row[r] = c.permuted ? (r * 7 + 5) % c.rows : r;
  for (float& x : a_out) x = normal(rng);
  for (float& x : b_out) x = normal(rng);
  for (int r = 0; r < c.rows; ++r) {
    const int k = kind(rng);  // 0: A empty, 1: B empty, 2: both, 3: equal LSEs, else random
    a_lse[a_row[r]] = k == 0 || k == 2 ? kNegInf : lse_of(rng);
    b_lse[r] = k == 1 || k == 2 ? kNegInf : k == 3 ? a_lse[a_row[r]] : lse_of(rng);
  }
  const std::vector<uint16_t> a_bits = round_to_bf16(a_out), b_bits = round_to_bf16(b_out);
  // An empty part's output is not read: NaN there must not reach the result.
  std::vector<uint16_t> a_dev = a_bits, b_dev = b_bits;
  const uint16_t nan_bits = to_bf16_bits(NAN);
  for (int r = 0; r < c.rows; ++r) {
    if (std::isinf(a_lse[a_row[r]]))
      for (int d = 0; d < c.head_dim; ++d) a_dev[static_cast<size_t>(a_row[r]) * c.head_dim + d] = nan_bits;
    if (std::isinf(b_lse[r]))
      for (int d = 0; d < c.head_dim; ++d) b_dev[static_cast<size_t>(r) * c.head_dim + d] = nan_bits;
  }
  std::vector<float> want(n), want_lse(c.rows);
  merge_attention_parts_ref(c.rows, c.head_dim, a_out.data(), a_lse.data(), c.permuted ? a_row.data() : nullptr,
                            b_out.data(), b_lse.data(), want.data(), want_lse.data());
  uint16_t* d_a = upload(a_dev);
  uint16_t* d_b = upload(b_dev);
  float* d_a_lse = upload(a_lse);
  float* d_b_lse = upload(b_lse);
  int32_t* d_row = upload(a_row);
  uint16_t* d_out = upload(std::vector<uint16_t>(n, nan_bits));
  float* d_lse = upload(std::vector<float>(c.rows, NAN));
  CUDA_OK(merge_attention_parts(c.rows, c.head_dim, d_a, d_a_lse, c.permuted ? d_row : nullptr, d_b, d_b_lse, d_out,
                                c.with_lse ? d_lse : nullptr, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<uint16_t> got = download(d_out, n);
  const std::vector<float> got_lse = download(d_lse, c.rows);
  double err = 0, ref = 0, lse_err = 0;
  bool pass = true;
  for (int r = 0; r < c.rows; ++r) {
    const bool empty = std::isinf(want_lse[r]);
    for (int d = 0; d < c.head_dim; ++d) {
      const size_t i = static_cast<size_t>(r) * c.head_dim + d;
      const float x = from_bf16_bits(got[i]);
      pass &= !std::isnan(x) && (!empty || x == 0.f);
      err += (x - want[i]) * (x - want[i]);
      ref += want[i] * want[i];
    }
    if (!c.with_lse) {
      pass &= std::isnan(got_lse[r]);  // lse null: nothing written
    } else if (empty) {
      pass &= got_lse[r] == kNegInf;
    } else {
      lse_err = std::max(lse_err, std::fabs(static_cast<double>(got_lse[r]) - want_lse[r]) /
                                      std::max(1.0, std::fabs(static_cast<double>(want_lse[r]))));
    }
  }
  const double rel = std::sqrt(err / std::max(ref, 1e-30));
  pass &= rel <= 1e-2 && lse_err <= 1e-4;
  std::printf("%-36s %6d %4d %10.2e %10.2e %s\n", c.name.c_str(), c.rows, c.head_dim, rel, lse_err,
              pass ? "PASS" : "FAIL");
  for (void* p : std::vector<void*>{d_a, d_b, d_a_lse, d_b_lse, d_row, d_out, d_lse}) CUDA_OK(cudaFree(p));
  return pass;
}

}  // namespace

bool run_merge_checks(uint64_t seed) {
  const std::vector<MergeCase> cases = {
      {"merge d128 Llama-3 batch8 permuted", 8 * 32, 128, true, true},
      {"merge d64 rows37 permuted no lse", 37, 64, true, false},
      {"merge d128 rows1", 1, 128, false, true},
      {"merge d96 rows1001", 1001, 96, false, true},  // several CTAs, a partial last one, D not a power of 2
      {"merge d256 rows9 permuted", 9, 256, true, true},
  };
  std::printf("\n%-36s %6s %4s %10s %10s %s\n", "case", "rows", "D", "out_rel", "lse_err", "result");
  bool all = true;
  for (const MergeCase& c : cases) all &= check_case(c, seed++);
  return all;
}

}  // namespace squeezeserve::kernels::bench
