#include "bench/kernels/read_ahead_check.h"

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench/kernels/device_layer.h"
#include "kernels/read_ahead.h"
#include "kernels/read_ahead_ref.h"

namespace squeezeserve::kernels::bench {
namespace {

// Integer rule, same inputs: the GPU's advanced cursors must equal the reference's exactly. Each
// case runs twice into poisoned cursors (every value must be written; the current cursor must stay
// as it was, so a CUDA graph's capture, which runs a step twice, advances once), and once in place.
struct CursorCase {
  std::string name;
  int batch, query_len, num_q_heads;
  int without;  // this sequence has no cursor (next == nullptr): its memory stays untouched
};

constexpr int32_t kPoison = 0x7eadbeef;

bool check_case(const CursorCase& c, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<int> pos(-1, 100000), age(0, 5), pick(0, 5);
  const size_t heads = static_cast<size_t>(c.batch) * c.num_q_heads;
  const size_t rows = heads * c.query_len;
  std::vector<int32_t> next(heads), ages(heads), position(rows);
  std::vector<float> share(rows);
  ReadAheadRule rule;
  for (size_t i = 0; i < heads; ++i) {
    next[i] = pick(rng) == 0 ? -1 : pos(rng);
    ages[i] = age(rng);
  }
  for (size_t i = 0; i < rows; ++i) {
    position[i] = pos(rng);
    const int kind = pick(rng);
    share[i] = kind == 0 ? rule.min_share : kind < 3 ? 0.9f : 0.05f;
  }
  int32_t* d_cur = upload(next);
  int32_t* d_age = upload(ages);
  const std::vector<int32_t> poison(heads, kPoison);
  int32_t* d_next_out = upload(poison);
  int32_t* d_age_out = upload(poison);
  int32_t* d_position = upload(position);
  float* d_share = upload(share);
  std::vector<ReadAheadCursor> cursors(c.batch), advanced(c.batch), host_cursors(c.batch), host_advanced(c.batch);
  std::vector<int32_t> want_next(poison), want_age(poison);
  for (int b = 0; b < c.batch; ++b) {
    if (b == c.without) continue;
    const size_t at = static_cast<size_t>(b) * c.num_q_heads;
    cursors[b] = {d_cur + at, d_age + at};
    advanced[b] = {d_next_out + at, d_age_out + at};
    host_cursors[b] = {next.data() + at, ages.data() + at};
    host_advanced[b] = {want_next.data() + at, want_age.data() + at};
  }
  ReadAheadCursor* d_cursors = upload(cursors);
  ReadAheadCursor* d_advanced = upload(advanced);
  const TopKeys top{d_position, d_share};
  advance_read_ahead_ref(c.batch, c.query_len, c.num_q_heads, host_cursors.data(), host_advanced.data(),
                         TopKeys{position.data(), share.data()}, rule);
  bool pass = true;
  int mismatches = 0;
  for (int run = 0; run < 2; ++run) {
    CUDA_OK(advance_read_ahead(c.batch, c.query_len, c.num_q_heads, d_cursors, d_advanced, top, rule, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<int32_t> got_next = download(d_next_out, heads), got_age = download(d_age_out, heads);
    for (size_t i = 0; i < heads; ++i) mismatches += got_next[i] != want_next[i] || got_age[i] != want_age[i];
    pass &= download(d_cur, heads) == next && download(d_age, heads) == ages;  // only read
  }
  // In place (advanced == cursors): the same values land in the current cursor.
  CUDA_OK(advance_read_ahead(c.batch, c.query_len, c.num_q_heads, d_cursors, d_cursors, top, rule, nullptr));
  const std::vector<int32_t> in_place_next = download(d_cur, heads), in_place_age = download(d_age, heads);
  for (size_t i = 0; i < heads; ++i) {
    const bool untouched = static_cast<int>(i) / c.num_q_heads == c.without;
    mismatches += untouched ? in_place_next[i] != next[i] || in_place_age[i] != ages[i]
                            : in_place_next[i] != want_next[i] || in_place_age[i] != want_age[i];
  }
  pass &= mismatches == 0;
  std::printf("%-36s %10zu %10d %s\n", c.name.c_str(), heads, mismatches, pass ? "PASS" : "FAIL");
  for (void* p : std::vector<void*>{d_cur, d_age, d_next_out, d_age_out, d_position, d_share, d_cursors, d_advanced}) {
    CUDA_OK(cudaFree(p));
  }
  return pass;
}

}  // namespace

bool run_read_ahead_checks(uint64_t seed) {
  const std::vector<CursorCase> cases = {
      {"cursor decode batch3 h32", 3, 1, 32, 1},
      {"cursor decode batch8 h24", 8, 1, 24, -1},
      {"cursor prefill lq37 h12", 1, 37, 12, -1},
      {"cursor prefill lq5 batch2 h7", 2, 5, 7, 0},
      {"cursor decode batch300 h32", 300, 1, 32, 17},  // several blocks of 128 threads
  };
  std::printf("\n%-36s %10s %10s %s\n", "case", "heads", "mismatch", "result");
  bool all = true;
  for (const CursorCase& c : cases) all &= check_case(c, seed++);
  return all;
}

}  // namespace squeezeserve::kernels::bench
