#include "bench/kernels/bundle_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/kernels/device_layer.h"
#include "kernels/attention_ref.h"
#include "kernels/decode_attention.h"
#include "kernels/merge_parts_ref.h"

namespace squeezeserve::kernels::bench {
namespace {

// Groups above kMaxGroup have no selection kernel (the engine's bundles are dense: its context as
// one selected cluster, or no cluster for the own tokens), so the selection here is made on the
// host: each (sequence, KV head) keeps every cluster (`keep` 1), a random share of them, or none
// (0: the dense rows only). The launch runs on poisoned outputs; pass: ||out - ref|| / ||ref|| <=
// 1e-2, LSE max abs error <= 1e-2 (kernels_check's bounds), no NaN; and a launch of the same group
// that carries the estimate's arrays is refused (cudaErrorInvalidValue) above group 8, as is group
// kMaxDecodeGroup + 1; and the same launch with its merge deferred passes check_deferred. Two cases of groups up
// to 8 check the deferred merge there.
struct BundleCase {
  std::string name;
  int d, g, hkv;
  std::vector<int> rows;  // N per sequence
  int cluster_size, dense_len;
  float keep;
  int ctas;  // DecodeLaunch::num_ctas (0: the device's)
  bool one_wave = false;  // DecodeLaunch::one_wave_per_heads (the engine's own-tokens launch)
};

// The same launch with DecodeLaunch::defer_merge, then merge_decode_pieces, on poisoned outputs:
// (1) alone, against the reference; (2) rows permuted (a_row) and merged with a random part B
// (bf16 outputs, LSEs near the reference's, an eighth of the rows empty: -inf), against the CPU
// reference of the two-part merge (merge_parts_ref.h) over the reference attention and that B.
// Pass: the check_case bounds on both.
bool check_deferred(const AttentionShape& shape, const SequenceLayerBf16* d_views, const uint16_t* d_q,
                    const Selection& sel, void* ws, DecodeLaunch launch, const std::vector<float>& ref,
                    const std::vector<float>& ref_lse, uint64_t seed, double* rel_out, double* lse_out) {
  const int rows = shape.batch * shape.num_q_heads, d = shape.head_dim;
  launch.defer_merge = true;
  std::vector<int32_t> perm(rows);
  for (int r = 0; r < rows; ++r) perm[r] = rows - 1 - r;  // every row moved (but a middle one)
  std::vector<float> b_out = random_normal(static_cast<int64_t>(rows) * d, seed + 11, 1.f);
  const std::vector<uint16_t> b_bits = round_to_bf16(b_out);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> near(-2.f, 2.f);
  std::vector<float> b_lse(rows), want(ref.size()), want_lse(rows);
  for (int r = 0; r < rows; ++r) {
    const float a = ref_lse[perm[r]];
    b_lse[r] = r % 8 == 5 ? -INFINITY : (std::isinf(a) ? 0.f : a) + near(rng);
  }
  merge_attention_parts_ref(rows, d, ref.data(), ref_lse.data(), perm.data(), b_out.data(), b_lse.data(), want.data(),
                            want_lse.data());
  int32_t* d_perm = upload(perm);
  uint16_t* d_b = upload(b_bits);
  float* d_b_lse = upload(b_lse);
  const std::vector<uint16_t> poison(ref.size(), 0xffff);  // bf16 NaN
  uint16_t* d_out = upload(poison);
  float* d_lse = upload(std::vector<float>(rows, NAN));
  bool nan = false;
  double rel = 0, lse_err = 0;
  auto score = [&](const std::vector<float>& r_out, const std::vector<float>& r_lse) {
    const std::vector<uint16_t> bits = download(d_out, ref.size());
    const std::vector<float> lse = download(d_lse, rows);
    std::vector<float> got(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) got[i] = from_bf16_bits(bits[i]);
    rel = std::max(rel, rel_error(got, r_out, nan));
    for (int i = 0; i < rows; ++i) {
      if (std::isnan(lse[i])) nan = true;
      lse_err = std::isinf(r_lse[i]) || std::isinf(lse[i]) ? (lse[i] == r_lse[i] ? lse_err : INFINITY)
                                                           : std::max(lse_err, std::fabs(double(lse[i]) - r_lse[i]));
    }
  };
  CUDA_OK(sparse_decode_attention(shape, d_views, d_q, sel, nullptr, nullptr, ws, launch, nullptr));
  CUDA_OK(merge_decode_pieces(shape, launch, ws, rows, nullptr, nullptr, nullptr, d_out, d_lse, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  score(ref, ref_lse);
  CUDA_OK(cudaMemcpy(d_out, poison.data(), 2 * poison.size(), cudaMemcpyHostToDevice));
  CUDA_OK(sparse_decode_attention(shape, d_views, d_q, sel, nullptr, nullptr, ws, launch, nullptr));
  CUDA_OK(merge_decode_pieces(shape, launch, ws, rows, d_perm, d_b, d_b_lse, d_out, d_lse, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  score(want, want_lse);
  for (void* p : std::vector<void*>{d_perm, d_b, d_b_lse, d_out, d_lse}) CUDA_OK(cudaFree(p));
  *rel_out = rel;
  *lse_out = lse_err;
  return !nan && rel <= 1e-2 && lse_err <= 1e-2;
}

bool check_case(const BundleCase& c, uint64_t seed) {
  const int batch = static_cast<int>(c.rows.size());
  AttentionShape shape;
  shape.batch = batch;
  shape.num_kv_heads = c.hkv;
  shape.num_q_heads = c.hkv * c.g;
  shape.head_dim = c.d;
  shape.query_len = 1;
  std::vector<std::unique_ptr<DeviceLayer>> layers;
  std::vector<SequenceLayerF32> host_views;
  std::vector<SequenceLayerBf16> dev_views;
  int capacity = 1;
  for (int b = 0; b < batch; ++b) {
    SyntheticSpec spec;
    spec.num_kv_heads = c.hkv;
    spec.head_dim = c.d;
    spec.num_rows = c.rows[b];
    spec.num_clusters = std::max(1, c.rows[b] / c.cluster_size);
    spec.dense_len = c.dense_len;
    spec.empty_fraction = 0.1f;
    spec.seed = seed * 1000 + b;
    layers.push_back(std::make_unique<DeviceLayer>(spec));
    host_views.push_back(layers.back()->host.view());
    dev_views.push_back(layers.back()->dev);
    capacity = std::max(capacity, spec.num_clusters);
  }
  // The host selection: kept clusters in ascending order, their rows laid end to end.
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> u(0.f, 1.f);
  const int heads = batch * c.hkv;
  std::vector<int32_t> ids(static_cast<size_t>(heads) * capacity, 0), starts(ids.size(), 0), counts(heads), rows(heads),
      cmp(heads, 0);
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < c.hkv; ++h) {
      const int x = b * c.hkv + h, k = host_views[b].num_clusters;
      const int32_t* off = host_views[b].offsets + static_cast<int64_t>(h) * (k + 1);
      int n = 0, r = 0;
      for (int j = 0; j < k; ++j) {
        if (off[j + 1] == off[j] || !(c.keep >= 1.f || u(rng) < c.keep)) continue;
        ids[static_cast<size_t>(x) * capacity + n] = j;
        starts[static_cast<size_t>(x) * capacity + n] = r;
        r += off[j + 1] - off[j];
        ++n;
      }
      counts[x] = n;
      rows[x] = r;
    }
  const Selection host_sel{ids.data(), starts.data(), counts.data(), rows.data(), cmp.data(), capacity};
  const std::vector<float> qf = random_normal(static_cast<int64_t>(batch) * shape.num_q_heads * c.d, seed + 5, 1.5f);
  std::vector<float> q = qf;
  const std::vector<uint16_t> q_bits = round_to_bf16(q);
  const size_t out_n = q.size();
  std::vector<float> ref(out_n), ref_lse(out_n / c.d);
  sparse_attention_ref(shape, host_views.data(), q.data(), host_sel, ref.data(), ref_lse.data());

  DeviceSelection dsel(heads, capacity);
  CUDA_OK(cudaMemcpy(dsel.sel.cluster_ids, ids.data(), sizeof(int32_t) * ids.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dsel.sel.row_start, starts.data(), sizeof(int32_t) * starts.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dsel.sel.counts, counts.data(), sizeof(int32_t) * heads, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dsel.sel.rows, rows.data(), sizeof(int32_t) * heads, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dsel.sel.comparisons, cmp.data(), sizeof(int32_t) * heads, cudaMemcpyHostToDevice));
  SequenceLayerBf16* d_views = upload(dev_views);
  uint16_t* d_q = upload(q_bits);
  uint16_t* d_out = upload(std::vector<uint16_t>(out_n, 0xffff));  // bf16 NaN
  float* d_lse = upload(std::vector<float>(out_n / c.d, NAN));
  DecodeLaunch launch;
  launch.num_ctas = c.ctas;
  launch.one_wave_per_heads = c.one_wave;
  launch.static_selection = c.one_wave;  // as the engine's own tokens (the split before the wait)
  void* ws = nullptr;
  CUDA_OK(cudaMalloc(&ws, decode_attention_workspace_bytes(shape, launch)));
  CUDA_OK(sparse_decode_attention(shape, d_views, d_q, dsel.sel, d_out, d_lse, ws, launch, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<uint16_t> out_bits = download(d_out, out_n);
  const std::vector<float> lse = download(d_lse, out_n / c.d);
  std::vector<float> out(out_n);
  for (size_t i = 0; i < out_n; ++i) out[i] = from_bf16_bits(out_bits[i]);
  bool nan = false;
  const double rel = rel_error(out, ref, nan);
  double lse_err = 0;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isnan(lse[i])) nan = true;
    lse_err = std::isinf(ref_lse[i]) || std::isinf(lse[i]) ? (lse[i] == ref_lse[i] ? lse_err : INFINITY)
                                                           : std::max(lse_err, std::fabs(double(lse[i]) - ref_lse[i]));
  }
  // Refused: the estimate's arrays at a group above 8, and a group above kMaxDecodeGroup.
  DeviceSelection with_estimate(heads, capacity, capacity);
  const bool refuses_estimate =
      c.g <= kMaxGroup ||  // groups up to 8 take the estimate
      sparse_decode_attention(shape, d_views, d_q, with_estimate.sel, d_out, d_lse, ws, launch, nullptr) ==
      cudaErrorInvalidValue;
  AttentionShape too_many = shape;
  too_many.num_q_heads = c.hkv * (kMaxDecodeGroup + 1);
  const bool refuses_too_many =
      sparse_decode_attention(too_many, d_views, d_q, dsel.sel, d_out, d_lse, ws, launch, nullptr) ==
      cudaErrorInvalidValue;
  double deferred_rel = 0, deferred_lse = 0;
  const bool deferred =
      check_deferred(shape, d_views, d_q, dsel.sel, ws, launch, ref, ref_lse, seed, &deferred_rel, &deferred_lse);
  int kept = 0, total = 0;
  for (int x = 0; x < heads; ++x) kept += rows[x];
  for (int b = 0; b < batch; ++b) total += c.rows[b] * c.hkv;
  const bool pass = !nan && rel <= 1e-2 && lse_err <= 1e-2 && refuses_estimate && refuses_too_many && deferred;
  std::printf("%-40s %3d %12s %10.2e %10.2e %10.2e %10.2e %8s %s\n", c.name.c_str(), c.g,
              (std::to_string(kept) + "/" + std::to_string(total)).c_str(), rel, lse_err, deferred_rel, deferred_lse,
              refuses_estimate && refuses_too_many ? "yes" : "NO", pass ? "PASS" : "FAIL");
  for (void* p : std::vector<void*>{d_views, d_q, d_out, d_lse, ws}) CUDA_OK(cudaFree(p));
  return pass;
}

}  // namespace

bool run_bundle_checks(uint64_t seed) {
  const std::vector<BundleCase> cases = {
      // name                                     d   g  hkv rows                 csz dense keep  ctas
      {"bundle d128 g16 Llama-3 x4 whole",       128, 16, 8, {9001},               1, 100, 1.f,  0},
      {"bundle d128 g16 batch2 subset",          128, 16, 2, {6007, 700},          7,  30, 0.3f, 0},
      {"bundle d64 g12 batch3 3 ctas",            64, 12, 2, {2000, 17, 900},      5,  20, 0.5f, 3},
      {"bundle d128 g9 1 cta",                   128,  9, 2, {4003},               3,  11, 0.4f, 1},
      {"bundle d64 g15 no dense rows",            64, 15, 2, {3001, 1500},         4,   0, 1.f,  0},
      {"bundle d128 g16 own tokens only",        128, 16, 4, {1000, 500},          4,  37, 0.f,  0},
      {"bundle d128 g16 many pieces",            128, 16, 1, {30011},              2,  64, 0.6f, 0},
      // Groups above 16: pairs of warps, 16 query heads each, over one stream of tiles.
      {"pair d128 g32 Llama-3 x8 whole",         128, 32, 8, {9001},               1, 100, 1.f,  0},
      {"pair d128 g24 batch2 subset",            128, 24, 2, {6007, 700},          7,  30, 0.3f, 0},
      {"pair d64 g17 batch3 3 ctas",              64, 17, 2, {2000, 17, 900},      5,  20, 0.5f, 3},
      {"pair d128 g32 1 cta",                    128, 32, 2, {4003},               3,  11, 0.4f, 1},
      {"pair d64 g29 no dense rows",              64, 29, 2, {3001, 1500},         4,   0, 1.f,  0},
      {"pair d128 g32 own tokens only",          128, 32, 4, {1000, 500},          4,  37, 0.f,  0},
      {"pair d128 g31 many pieces",              128, 31, 1, {30011},              2,  64, 0.6f, 0},
      {"d128 g4 (merge deferred as bundles)",    128,  4, 8, {20011, 300},         9,  40, 0.5f, 0},
      {"d64 g1 5 ctas",                           64,  1, 3, {3000, 1001, 77},     3,  12, 0.7f, 5},
      // The own tokens' launch: many short heads, a few CTAs each in one wave.
      {"own tokens g4 x8 one wave",              128,  4, 8, {64, 64, 64, 64, 64, 64, 64, 64}, 4, 100, 0.f, 0, true},
      {"own tokens g4 x3 one wave long",         128,  4, 8, {64, 64, 64},         4, 2000, 0.f, 0, true},
      {"one wave g4 x2 with context",             64,  4, 2, {5000, 300},          5,  60, 0.5f, 0, true},
  };
  std::printf("\n%-40s %3s %12s %10s %10s %10s %10s %8s %s\n", "case", "G", "rows", "attn_rel", "lse_err",
              "deferred", "def_lse", "refuses", "result");
  bool all = true;
  for (const BundleCase& c : cases) all &= check_case(c, seed++);
  return all;
}

}  // namespace squeezeserve::kernels::bench
