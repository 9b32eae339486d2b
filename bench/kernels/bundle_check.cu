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
#include "kernels/bundle_selection.h"
#include "kernels/bundle_selection_ref.h"
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

// Max relative error of bf16 outputs against out and max abs error of lse against ref_lse
// (infinities must match); nan: any NaN seen.
void score_against(const uint16_t* d_out, const float* d_lse, const std::vector<float>& ref,
                   const std::vector<float>& ref_lse, bool& nan, double* rel, double* lse_err) {
  const std::vector<uint16_t> bits = download(d_out, ref.size());
  const std::vector<float> lse = download(d_lse, ref_lse.size());
  std::vector<float> got(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) got[i] = from_bf16_bits(bits[i]);
  *rel = std::max(*rel, rel_error(got, ref, nan));
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isnan(lse[i])) nan = true;
    *lse_err = std::isinf(ref_lse[i]) || std::isinf(lse[i])
                   ? (lse[i] == ref_lse[i] ? *lse_err : INFINITY)
                   : std::max(*lse_err, std::fabs(double(lse[i]) - ref_lse[i]));
  }
}

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
    score_against(d_out, d_lse, r_out, r_lse, nan, &rel, &lse_err);
  };
  CUDA_OK(sparse_decode_attention(shape, d_views, d_q, sel, nullptr, nullptr, ws, launch, nullptr));
  const bool masked = sel.member_masks != nullptr;  // a squeezed bundles' launch: its variant's grid
  CUDA_OK(merge_decode_pieces(shape, launch, ws, rows, nullptr, nullptr, nullptr, d_out, d_lse, nullptr, nullptr, {},
                              nullptr, masked));
  CUDA_OK(cudaDeviceSynchronize());
  score(ref, ref_lse);
  CUDA_OK(cudaMemcpy(d_out, poison.data(), 2 * poison.size(), cudaMemcpyHostToDevice));
  CUDA_OK(sparse_decode_attention(shape, d_views, d_q, sel, nullptr, nullptr, ws, launch, nullptr));
  CUDA_OK(merge_decode_pieces(shape, launch, ws, rows, d_perm, d_b, d_b_lse, d_out, d_lse, nullptr, nullptr, {},
                              nullptr, masked));
  CUDA_OK(cudaDeviceSynchronize());
  score(want, want_lse);
  for (void* p : std::vector<void*>{d_perm, d_b, d_b_lse, d_out, d_lse}) CUDA_OK(cudaFree(p));
  *rel_out = rel;
  *lse_out = lse_err;
  return !nan && rel <= 1e-2 && lse_err <= 1e-2;
}

// A case's inputs: its synthetic layers, the host selection (each (sequence, KV head) keeps every
// cluster, a random share or none; kept clusters ascending, their rows end to end) and the same
// on the device.
struct CaseData {
  AttentionShape shape;
  std::vector<std::unique_ptr<DeviceLayer>> layers;
  std::vector<SequenceLayerF32> host_views;
  std::vector<SequenceLayerBf16> dev_views;
  std::vector<int32_t> ids, starts, counts, rows, cmp;
  int capacity = 1;
  std::unique_ptr<DeviceSelection> dsel;
  SequenceLayerBf16* d_views = nullptr;

  CaseData(const BundleCase& c, uint64_t seed) {
    const int batch = static_cast<int>(c.rows.size());
    shape.batch = batch;
    shape.num_kv_heads = c.hkv;
    shape.num_q_heads = c.hkv * c.g;
    shape.head_dim = c.d;
    shape.query_len = 1;
    for (int b = 0; b < batch; ++b) {
      SyntheticSpec spec = layer_spec(c.hkv, c.d, c.rows[b], c.cluster_size, c.dense_len, seed * 1000 + b);
      spec.empty_fraction = 0.1f;
      layers.push_back(std::make_unique<DeviceLayer>(spec));
      host_views.push_back(layers.back()->host.view());
      dev_views.push_back(layers.back()->dev);
      capacity = std::max(capacity, spec.num_clusters);
    }
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::uniform_real_distribution<float> u(0.f, 1.f);
    const int heads = batch * c.hkv;
    ids.assign(static_cast<size_t>(heads) * capacity, 0);
    starts.assign(ids.size(), 0);
    counts.assign(heads, 0);
    rows.assign(heads, 0);
    cmp.assign(heads, 0);
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < c.hkv; ++h) {
        const int x = b * c.hkv + h, k = host_views[b].num_clusters;
        const int32_t* off = host_views[b].offsets + static_cast<int64_t>(h) * (k + 1);
        const auto [n, r] = pick_clusters(
            off, k, [&](int j) { return off[j + 1] != off[j] && (c.keep >= 1.f || u(rng) < c.keep); },
            &ids[static_cast<size_t>(x) * capacity], &starts[static_cast<size_t>(x) * capacity]);
        counts[x] = n;
        rows[x] = r;
      }
    dsel = std::make_unique<DeviceSelection>(heads, capacity);
    CUDA_OK(cudaMemcpy(dsel->sel.cluster_ids, ids.data(), sizeof(int32_t) * ids.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dsel->sel.row_start, starts.data(), sizeof(int32_t) * starts.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dsel->sel.counts, counts.data(), sizeof(int32_t) * heads, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dsel->sel.rows, rows.data(), sizeof(int32_t) * heads, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dsel->sel.comparisons, cmp.data(), sizeof(int32_t) * heads, cudaMemcpyHostToDevice));
    d_views = upload(dev_views);
  }
  ~CaseData() { cudaFree(d_views); }
  CaseData(const CaseData&) = delete;
  CaseData& operator=(const CaseData&) = delete;

  Selection host_sel() { return {ids.data(), starts.data(), counts.data(), rows.data(), cmp.data(), capacity}; }
  // The CPU reference over queries q (float, bf16-rounded): out [rows][D], lse [rows].
  void reference(const std::vector<float>& q, std::vector<float>* out, std::vector<float>* lse) {
    out->assign(q.size(), 0.f);
    lse->assign(q.size() / shape.head_dim, 0.f);
    const Selection sel = host_sel();
    sparse_attention_ref(shape, host_views.data(), q.data(), sel, out->data(), lse->data());
  }
};

bool check_case(const BundleCase& c, uint64_t seed) {
  CaseData data(c, seed);
  const AttentionShape& shape = data.shape;
  const int heads = shape.batch * c.hkv, capacity = data.capacity;
  const std::vector<int32_t>& rows = data.rows;
  const SequenceLayerBf16* d_views = data.d_views;
  const DeviceSelection& dsel = *data.dsel;
  std::vector<float> q = random_normal(static_cast<int64_t>(shape.batch) * shape.num_q_heads * c.d, seed + 5, 1.5f);
  const std::vector<uint16_t> q_bits = round_to_bf16(q);
  const size_t out_n = q.size();
  std::vector<float> ref, ref_lse;
  data.reference(q, &ref, &ref_lse);

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
  bool nan = false;
  double rel = 0, lse_err = 0;
  score_against(d_out, d_lse, ref, ref_lse, nan, &rel, &lse_err);
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
  for (int b = 0; b < shape.batch; ++b) total += c.rows[b] * c.hkv;
  const bool pass = !nan && rel <= 1e-2 && lse_err <= 1e-2 && refuses_estimate && refuses_too_many && deferred;
  std::printf("%-40s %3d %12s %10.2e %10.2e %10.2e %10.2e %8s %s\n", c.name.c_str(), c.g,
              (std::to_string(kept) + "/" + std::to_string(total)).c_str(), rel, lse_err, deferred_rel, deferred_lse,
              refuses_estimate && refuses_too_many ? "yes" : "NO", pass ? "PASS" : "FAIL");
  for (void* p : std::vector<void*>{d_q, d_out, d_lse, ws}) CUDA_OK(cudaFree(p));
  return pass;
}

// The engine's dense bundles (engine/kernel_attention.cc): `members` questions' context in one
// bundle launch (G = g x members, merge deferred, DecodeLaunch::next_beside, its query rows picked
// from the members' by DecodeLaunch::q_rows), their own tokens
// beside it on a workspace after the bundle's (one wave, tickets, DecodeLaunch::beside_previous),
// then merge_decode_pieces of the bundle's pieces (each member's rows picked by a_row) with the own
// tokens as part B, on one stream, `reps` times on poisoned outputs. Pass: the check_case bounds
// against the CPU reference of the two-part merge over the two references, and a launch beside its
// previous without a static selection, or without tickets, refused. (What it cannot show: that
// the own tokens wait long enough. Here what they read was written before the stream began; in the
// engine the queries come from the RoPE kernel two launches earlier, so the engine GPU tests
// against libtorch's logits, DenseQuestionsSharing, are that check.)
bool check_beside(int d, int g, int hkv, int members, uint64_t seed, int reps) {
  CaseData bundle({"", d, g * members, hkv, {9001}, 1, 0, 1.f, 0}, seed);
  CaseData mine({"", d, g, hkv, std::vector<int>(members, 64), 4, 100, 0.f, 0, true}, seed + 1);
  const int rows = members * hkv * g;
  std::vector<float> q = random_normal(static_cast<int64_t>(rows) * d, seed + 5, 1.5f);
  const std::vector<uint16_t> q_bits = round_to_bf16(q);
  std::vector<int32_t> a_row;
  std::vector<int64_t> q_rows;
  bundle_row_maps(members, hkv, g, &a_row, &q_rows);
  std::vector<float> q_bundle(q.size());
  for (int br = 0; br < rows; ++br)
    std::copy_n(q.begin() + q_rows[br] * d, d, q_bundle.begin() + static_cast<int64_t>(br) * d);
  std::vector<float> ctx_ref, ctx_lse, own_ref, own_lse, want(q.size()), want_lse(rows);
  bundle.reference(q_bundle, &ctx_ref, &ctx_lse);
  mine.reference(q, &own_ref, &own_lse);
  merge_attention_parts_ref(rows, d, ctx_ref.data(), ctx_lse.data(), a_row.data(), own_ref.data(), own_lse.data(),
                            want.data(), want_lse.data());

  DecodeLaunch bundled;
  bundled.defer_merge = true;
  bundled.static_selection = true;
  bundled.next_beside = true;
  int64_t* d_q_rows = upload(q_rows);
  bundled.q_rows = d_q_rows;
  DecodeLaunch beside;
  beside.one_wave_per_heads = true;
  beside.static_selection = true;
  beside.beside_previous = true;
  int32_t* d_tickets = upload(std::vector<int32_t>(members * hkv, 0));
  beside.tickets = d_tickets;
  const size_t own_at = (decode_attention_workspace_bytes(bundle.shape, bundled) + 255) / 256 * 256;
  unsigned char* ws = nullptr;
  CUDA_OK(cudaMalloc(&ws, own_at + decode_attention_workspace_bytes(mine.shape, beside)));
  uint16_t* d_q = upload(q_bits);
  int32_t* d_a_row = upload(a_row);
  const std::vector<uint16_t> poison(q.size(), 0xffff);  // bf16 NaN
  const std::vector<float> poison_lse(rows, NAN);
  uint16_t* d_own = upload(poison);
  uint16_t* d_out = upload(poison);
  float* d_own_lse = upload(poison_lse);
  float* d_lse = upload(poison_lse);
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  bool nan = false;
  double rel = 0, lse_err = 0;
  for (int rep = 0; rep < reps; ++rep) {
    for (uint16_t* p : {d_own, d_out}) CUDA_OK(cudaMemcpyAsync(p, poison.data(), 2 * poison.size(), cudaMemcpyHostToDevice, st));
    for (float* p : {d_own_lse, d_lse})
      CUDA_OK(cudaMemcpyAsync(p, poison_lse.data(), 4 * poison_lse.size(), cudaMemcpyHostToDevice, st));
    CUDA_OK(sparse_decode_attention(bundle.shape, bundle.d_views, d_q, bundle.dsel->sel, nullptr, nullptr, ws, bundled,
                                    st));
    CUDA_OK(sparse_decode_attention(mine.shape, mine.d_views, d_q, mine.dsel->sel, d_own, d_own_lse, ws + own_at,
                                    beside, st));
    CUDA_OK(merge_decode_pieces(bundle.shape, bundled, ws, rows, d_a_row, d_own, d_own_lse, d_out, d_lse, st));
    CUDA_OK(cudaStreamSynchronize(st));
    score_against(d_out, d_lse, want, want_lse, nan, &rel, &lse_err);
  }
  DecodeLaunch not_static = beside, no_tickets = beside;
  not_static.static_selection = false;
  no_tickets.tickets = nullptr;
  const bool refuses =
      sparse_decode_attention(mine.shape, mine.d_views, d_q, mine.dsel->sel, d_own, d_own_lse, ws + own_at, not_static,
                              st) == cudaErrorInvalidValue &&
      sparse_decode_attention(mine.shape, mine.d_views, d_q, mine.dsel->sel, d_own, d_own_lse, ws + own_at, no_tickets,
                              st) == cudaErrorInvalidValue;
  CUDA_OK(cudaStreamDestroy(st));
  for (void* p : std::vector<void*>{d_tickets, d_q_rows, ws, d_q, d_a_row, d_own, d_out, d_own_lse, d_lse})
    CUDA_OK(cudaFree(p));
  const bool pass = !nan && rel <= 1e-2 && lse_err <= 1e-2 && refuses;
  const std::string name = "own tokens beside a bundle d" + std::to_string(d) + " g" + std::to_string(g) + " x" +
                           std::to_string(members) + " (" + std::to_string(reps) + " reps)";
  std::printf("%-40s %3d %12s %10.2e %10.2e %10s %10s %8s %s\n", name.c_str(), g * members, "-", rel, lse_err, "-",
              "-", refuses ? "yes" : "NO", pass ? "PASS" : "FAIL");
  return pass;
}


// Squeezed bundles (kernels/bundle_selection.h): `members` questions (group g each) on one context,
// in bundles of `slots` (the last bundle's spare slots unused: -1), each member keeping a random
// share `keep` of the clusters of each KV head and estimating half of the rest. One layer: its
// dense rows are the context's window (the first `window`), then the questions' own tokens.
struct SqueezedCase {
  int d, g, hkv, members, slots, window;
  int bundles, G, K;
  std::unique_ptr<DeviceLayer> layer;
  SequenceLayerF32 host_view;
  // The members' selections (host; `dev` on the device), with the estimate's lists.
  std::vector<int32_t> ids, starts, counts, sel_rows, cmp, est_ids, estimated;
  std::unique_ptr<DeviceSelection> dev;
  // The union (host reference) and the bundles' slots.
  std::vector<int32_t> slot_of, u_ids, u_starts, u_counts, u_rows, u_cmp, u_est_ids, u_estimated;
  std::vector<uint32_t> u_masks, u_est_masks;
  std::vector<float> u_est_log_sizes;

  SqueezedCase(int d_, int g_, int hkv_, int members_, int slots_, int rows, int csz, int dense_len, float keep,
               uint64_t seed)
      : d(d_), g(g_), hkv(hkv_), members(members_), slots(slots_), window(std::min(dense_len, 5)) {
    bundles = (members + slots - 1) / slots;
    G = slots * g;
    layer = std::make_unique<DeviceLayer>(layer_spec(hkv, d, rows, csz, dense_len, seed), window);
    host_view = layer->host.view();
    K = host_view.num_clusters;
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::uniform_real_distribution<float> u(0.f, 1.f);
    const int heads = members * hkv;
    ids.assign(static_cast<size_t>(heads) * K, 0);
    starts.assign(ids.size(), 0);
    est_ids.assign(ids.size(), 0);
    counts.assign(heads, 0);
    sel_rows.assign(heads, 0);
    cmp.assign(heads, 0);
    estimated.assign(heads, 0);
    for (int x = 0; x < heads; ++x) {
      const int32_t* off = host_view.offsets + static_cast<int64_t>(x % hkv) * (K + 1);
      const float share = x % 11 == 4 ? 0.f : keep;  // some heads keep nothing
      int e = 0;
      const auto [n, r] = pick_clusters(
          off, K,
          [&](int j) {
            if (u(rng) < share) return true;
            if (off[j + 1] > off[j] && u(rng) < 0.5f) est_ids[static_cast<size_t>(x) * K + e++] = j;
            return false;
          },
          &ids[static_cast<size_t>(x) * K], &starts[static_cast<size_t>(x) * K]);
      counts[x] = n;
      sel_rows[x] = r;
      estimated[x] = e;
    }
    dev = std::make_unique<DeviceSelection>(heads, K, K);
    auto put = [](int32_t* to, const std::vector<int32_t>& v) {
      CUDA_OK(cudaMemcpy(to, v.data(), 4 * v.size(), cudaMemcpyHostToDevice));
    };
    put(dev->sel.cluster_ids, ids);
    put(dev->sel.row_start, starts);
    put(dev->sel.counts, counts);
    put(dev->sel.rows, sel_rows);
    put(dev->sel.comparisons, cmp);
    put(dev->sel.estimate_ids, est_ids);
    put(dev->sel.estimated, estimated);
    slot_of.assign(static_cast<size_t>(bundles) * slots, -1);
    for (int m = 0; m < members; ++m) slot_of[m] = m;
    const int uh = bundles * hkv;
    u_ids.assign(static_cast<size_t>(uh) * K, -5);
    u_starts.assign(u_ids.size(), -5);
    u_counts.assign(uh, -5);
    u_rows.assign(uh, -5);
    u_cmp.assign(uh, 0);
    u_masks.assign(u_ids.size(), 0xdeadbeefu);
    u_est_ids.assign(u_ids.size(), -5);
    u_estimated.assign(uh, -5);
    u_est_masks.assign(u_ids.size(), 0xdeadbeefu);
    u_est_log_sizes.assign(u_ids.size(), NAN);
    const std::vector<SequenceLayerF32> views(bundles, host_view);
    bundle_selections_ref(BundleMembers{slot_of.data(), bundles, slots}, hkv, views.data(), host_members(true),
                          host_union(false, true), u_masks.data(), u_est_masks.data(), u_est_log_sizes.data());
  }
  Selection host_members(bool estimate) {
    Selection s{ids.data(), starts.data(), counts.data(), sel_rows.data(), cmp.data(), K};
    if (estimate) {
      s.estimate_ids = est_ids.data();
      s.estimated = estimated.data();
      s.estimate_capacity = K;
    }
    return s;
  }
  // `estimate`: the bundles' estimate (the union of the members' lists, Selection::estimate_masks).
  Selection host_union(bool masked, bool estimate = false) {
    Selection s{u_ids.data(), u_starts.data(), u_counts.data(), u_rows.data(), u_cmp.data(), K};
    if (masked) {
      s.member_masks = u_masks.data();
      s.member_group = g;
    }
    if (estimate) {
      s.estimate_ids = u_est_ids.data();
      s.estimated = u_estimated.data();
      s.estimate_capacity = K;
      if (masked) {
        s.estimate_masks = u_est_masks.data();
        s.estimate_log_sizes = u_est_log_sizes.data();
      }
    }
    return s;
  }
  AttentionShape bundle_shape() const {
    AttentionShape s;
    s.batch = bundles;
    s.num_kv_heads = hkv;
    s.num_q_heads = hkv * G;
    s.head_dim = d;
    return s;
  }
  // The bundles' view: the context's clustered rows and its window (`with_own`: every dense row).
  SequenceLayerBf16 bundle_view(bool with_own) const {
    SequenceLayerBf16 v = layer->dev;
    if (!with_own) v.dense_len = window;
    return v;
  }
};

// bundle_selections on the device against bundle_selections_ref (every array equal, the estimate
// lists' union included, on poisoned outputs), then the masked decode launch (group slots x g,
// Selection::member_masks) over the union and every dense row on poisoned outputs against the CPU
// reference with the masks (tests/kernels/bundle_selection_ref_test.cc proves it each member's own
// attention), with read-ahead's top keys (positions equal, shares within 1e-3 absolute), with the
// merge deferred (check_deferred), and with the estimate in the bundle (Selection::estimate_masks:
// out, LSE, top keys). Pass: check_case's bounds, and a masked launch with the estimate's arrays
// but no estimate masks, or a member group not dividing the group, refused.
bool check_squeezed_union(const char* name, SqueezedCase& c, uint64_t seed) {
  const int heads = c.bundles * c.hkv, d = c.d;
  int32_t* d_slots = upload(c.slot_of);
  SequenceLayerBf16* d_views = upload(std::vector<SequenceLayerBf16>(c.bundles, c.bundle_view(true)));
  DeviceSelection dunion(heads, c.K, c.K);
  uint32_t* d_masks = upload(std::vector<uint32_t>(c.u_masks.size(), 0xdeadbeefu));
  uint32_t* d_est_masks = upload(std::vector<uint32_t>(c.u_masks.size(), 0xdeadbeefu));
  float* d_est_log_sizes = upload(std::vector<float>(c.u_masks.size(), NAN));
  const std::vector<int32_t> poison(c.u_ids.size(), -9);
  for (int32_t* p : {dunion.sel.cluster_ids, dunion.sel.row_start, dunion.sel.estimate_ids})
    CUDA_OK(cudaMemcpy(p, poison.data(), 4 * poison.size(), cudaMemcpyHostToDevice));
  CUDA_OK(bundle_selections(BundleMembers{d_slots, c.bundles, c.slots}, c.hkv, d_views, c.dev->sel, dunion.sel,
                            d_masks, d_est_masks, d_est_log_sizes, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  bool union_equal = download(dunion.sel.counts, heads) == c.u_counts && download(dunion.sel.rows, heads) == c.u_rows &&
                     download(dunion.sel.estimated, heads) == c.u_estimated;
  const std::vector<int32_t> g_ids = download(dunion.sel.cluster_ids, c.u_ids.size()),
                             g_starts = download(dunion.sel.row_start, c.u_ids.size()),
                             g_est_ids = download(dunion.sel.estimate_ids, c.u_ids.size());
  const std::vector<uint32_t> g_masks = download(d_masks, c.u_masks.size()),
                              g_est_masks = download(d_est_masks, c.u_masks.size());
  const std::vector<float> g_est_log_sizes = download(d_est_log_sizes, c.u_masks.size());
  for (int x = 0; x < heads && union_equal; ++x) {
    for (int i = 0; i < c.u_counts[x]; ++i) {
      const size_t at = static_cast<size_t>(x) * c.K + i;
      union_equal &= g_ids[at] == c.u_ids[at] && g_starts[at] == c.u_starts[at] && g_masks[at] == c.u_masks[at];
    }
    for (int i = 0; i < c.u_estimated[x]; ++i) {
      const size_t at = static_cast<size_t>(x) * c.K + i;
      union_equal &= g_est_ids[at] == c.u_est_ids[at] && g_est_masks[at] == c.u_est_masks[at] &&
                     (g_est_log_sizes[at] == c.u_est_log_sizes[at] ||  // an empty cluster's -inf
                      std::fabs(g_est_log_sizes[at] - c.u_est_log_sizes[at]) <=
                          1e-6f * (1.f + std::fabs(c.u_est_log_sizes[at])));
    }
  }

  const AttentionShape shape = c.bundle_shape();
  Selection dev_masked = dunion.sel;
  dev_masked.member_masks = d_masks;
  dev_masked.member_group = c.g;
  Selection dev_estimating = dev_masked;  // the estimate in the bundle
  dev_estimating.estimate_masks = d_est_masks;
  dev_estimating.estimate_log_sizes = d_est_log_sizes;
  dev_masked.estimate_ids = nullptr;
  dev_masked.estimated = nullptr;
  std::vector<float> q = random_normal(static_cast<int64_t>(c.bundles) * shape.num_q_heads * d, seed + 5, 1.5f);
  const std::vector<uint16_t> q_bits = round_to_bf16(q);
  const int out_rows = c.bundles * shape.num_q_heads;
  std::vector<float> ref(q.size()), ref_lse(out_rows), ref_share(out_rows);
  std::vector<int32_t> ref_pos(out_rows);
  const std::vector<SequenceLayerF32> host_views(c.bundles, c.host_view);
  sparse_attention_ref(shape, host_views.data(), q.data(), c.host_union(true), ref.data(), ref_lse.data(),
                       TopKeys{ref_pos.data(), ref_share.data()});
  uint16_t* d_q = upload(q_bits);
  uint16_t* d_out = upload(std::vector<uint16_t>(q.size(), 0xffff));
  float* d_lse = upload(std::vector<float>(out_rows, NAN));
  int32_t* d_pos = upload(std::vector<int32_t>(out_rows, -7));
  float* d_share = upload(std::vector<float>(out_rows, NAN));
  DecodeLaunch launch;
  void* ws = nullptr;
  CUDA_OK(cudaMalloc(&ws, decode_attention_workspace_bytes(shape, launch)));
  CUDA_OK(sparse_decode_attention(shape, d_views, d_q, dev_masked, d_out, d_lse, ws, launch, nullptr,
                                  TopKeys{d_pos, d_share}));
  CUDA_OK(cudaDeviceSynchronize());
  bool nan = false;
  double rel = 0, lse_err = 0, deferred_rel = 0, deferred_lse = 0, share_err = 0;
  score_against(d_out, d_lse, ref, ref_lse, nan, &rel, &lse_err);
  bool top_equal = true;
  const std::vector<int32_t> pos = download(d_pos, out_rows);
  const std::vector<float> share = download(d_share, out_rows);
  for (int r = 0; r < out_rows; ++r) {
    top_equal &= pos[r] == ref_pos[r];
    share_err = std::max(share_err, std::fabs(double(share[r]) - ref_share[r]));
  }
  const bool deferred =
      check_deferred(shape, d_views, d_q, dev_masked, ws, launch, ref, ref_lse, seed, &deferred_rel, &deferred_lse);
  // The estimate in the bundle: each member's estimated clusters (mean values, centroids scored by
  // the bundle) beside its selected rows, on poisoned outputs.
  std::vector<float> est_ref(q.size()), est_ref_lse(out_rows), est_ref_share(out_rows);
  std::vector<int32_t> est_ref_pos(out_rows);
  sparse_attention_ref(shape, host_views.data(), q.data(), c.host_union(true, true), est_ref.data(), est_ref_lse.data(),
                       TopKeys{est_ref_pos.data(), est_ref_share.data()});
  CUDA_OK(cudaMemcpy(d_out, std::vector<uint16_t>(q.size(), 0xffff).data(), 2 * q.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_pos, std::vector<int32_t>(out_rows, -7).data(), 4 * out_rows, cudaMemcpyHostToDevice));
  CUDA_OK(sparse_decode_attention(shape, d_views, d_q, dev_estimating, d_out, d_lse, ws, launch, nullptr,
                                  TopKeys{d_pos, d_share}));
  CUDA_OK(cudaDeviceSynchronize());
  double est_rel = 0, est_lse = 0;
  score_against(d_out, d_lse, est_ref, est_ref_lse, nan, &est_rel, &est_lse);
  const std::vector<int32_t> est_pos = download(d_pos, out_rows);
  const std::vector<float> est_share = download(d_share, out_rows);
  for (int r = 0; r < out_rows; ++r) {
    top_equal &= est_pos[r] == est_ref_pos[r];
    share_err = std::max(share_err, std::fabs(double(est_share[r]) - est_ref_share[r]));
  }
  // Refused: the estimate's arrays beside the masks without the estimate's masks, or without its
  // sizes; a member group that does not divide the group.
  Selection masked_estimate = dev_estimating, unsized_estimate = dev_estimating;
  masked_estimate.estimate_masks = nullptr;
  unsized_estimate.estimate_log_sizes = nullptr;
  Selection bad_group = dev_masked;
  bad_group.member_group = c.G + 1;
  const bool refuses =
      sparse_decode_attention(shape, d_views, d_q, masked_estimate, d_out, d_lse, ws, launch, nullptr) ==
          cudaErrorInvalidValue &&
      sparse_decode_attention(shape, d_views, d_q, unsized_estimate, d_out, d_lse, ws, launch, nullptr) ==
          cudaErrorInvalidValue &&
      sparse_decode_attention(shape, d_views, d_q, bad_group, d_out, d_lse, ws, launch, nullptr) == cudaErrorInvalidValue;
  long long asked = 0, read = 0;
  for (int32_t r : c.sel_rows) asked += r;
  for (int32_t r : c.u_rows) read += r;
  const bool pass = union_equal && !nan && rel <= 1e-2 && lse_err <= 1e-2 && est_rel <= 1e-2 && est_lse <= 1e-2 &&
                    top_equal && share_err <= 1e-3 && deferred && refuses;
  std::printf("%-40s %3d %12s %10.2e %10.2e %10.2e %10.2e %8s %s  (union %s, top %s, share %.1e; estimate "
              "in the bundle %.2e, lse %.2e)\n",
              name, c.G, (std::to_string(read) + "/" + std::to_string(asked)).c_str(), rel, lse_err, deferred_rel,
              deferred_lse, refuses ? "yes" : "NO", pass ? "PASS" : "FAIL", union_equal ? "equal" : "DIFFERS",
              top_equal ? "equal" : "DIFFERS", share_err, est_rel, est_lse);
  for (void* p :
       std::vector<void*>{d_slots, d_views, d_masks, d_est_masks, d_est_log_sizes, d_q, d_out, d_lse, d_pos, d_share, ws})
    CUDA_OK(cudaFree(p));
  return pass;
}

// The members' whole attention as the engine would run it: part A, the bundles' masked launch over
// the union and the window (merge deferred, top keys), reading each member's query rows through
// DecodeLaunch::q_rows; part B, the members' own launch over their estimated clusters and own
// tokens only (no selected rows, TopKeys::context_lse); then merge_decode_pieces of A with B and
// the top keys. `estimate_in_bundle`: the estimate goes in part A (the union of the members'
// lists, Selection::estimate_masks), part B holds the own tokens only. On poisoned outputs, against
// the CPU reference of each member alone over its selection, estimate, window and own tokens: out
// and LSE within check_case's bounds, top key positions equal, shares within 1e-3.
bool check_squeezed_two_parts(const char* name, SqueezedCase& c, uint64_t seed, bool estimate_in_bundle) {
  const int d = c.d, hq = c.hkv * c.g, rows = c.members * hq;
  AttentionShape each;
  each.batch = c.members;
  each.num_kv_heads = c.hkv;
  each.num_q_heads = hq;
  each.head_dim = d;
  std::vector<float> q = random_normal(static_cast<int64_t>(rows) * d, seed + 7, 1.5f);
  const std::vector<uint16_t> q_bits = round_to_bf16(q);
  std::vector<float> want(q.size()), want_lse(rows), want_share(rows);
  std::vector<int32_t> want_pos(rows);
  const std::vector<SequenceLayerF32> member_views(c.members, c.host_view);
  sparse_attention_ref(each, member_views.data(), q.data(), c.host_members(true), want.data(), want_lse.data(),
                       TopKeys{want_pos.data(), want_share.data()});
  // Row maps: member row (b, h, j) <-> bundle row (k, h, slot, j); a spare slot's rows read row 0
  // (computed, never read).
  const AttentionShape bundled = c.bundle_shape();
  std::vector<int64_t> q_rows(static_cast<size_t>(c.bundles) * bundled.num_q_heads, 0);
  std::vector<int32_t> a_row(rows);
  for (int b = 0; b < c.members; ++b)
    for (int h = 0; h < c.hkv; ++h)
      for (int j = 0; j < c.g; ++j) {
        const int k = b / c.slots, m = b % c.slots, r = (b * c.hkv + h) * c.g + j;
        const int br = (k * c.hkv + h) * c.G + m * c.g + j;
        a_row[r] = br;
        q_rows[br] = r;
      }
  int32_t* d_slots = upload(c.slot_of);
  SequenceLayerBf16* d_bundle_views = upload(std::vector<SequenceLayerBf16>(c.bundles, c.bundle_view(false)));
  SequenceLayerBf16 own = c.layer->dev;  // part B: the own tokens after the window, no window
  own.dense_keys += static_cast<int64_t>(c.window) * d;
  own.dense_values += static_cast<int64_t>(c.window) * d;
  own.dense_len -= c.window;
  own.window_len = 0;
  SequenceLayerBf16* d_own_views = upload(std::vector<SequenceLayerBf16>(c.members, own));
  DeviceSelection dunion(c.bundles * c.hkv, c.K, c.K);
  uint32_t* d_masks = upload(std::vector<uint32_t>(c.u_masks.size(), 0u));
  uint32_t* d_est_masks = upload(std::vector<uint32_t>(c.u_masks.size(), 0u));
  float* d_est_log_sizes = upload(std::vector<float>(c.u_masks.size(), NAN));
  int32_t* d_zeros = upload(std::vector<int32_t>(c.members * c.hkv, 0));
  int64_t* d_q_rows = upload(q_rows);
  int32_t* d_a_row = upload(a_row);
  uint16_t* d_q = upload(q_bits);
  const std::vector<uint16_t> poison(q.size(), 0xffff);
  uint16_t* d_b = upload(poison);
  uint16_t* d_out = upload(poison);
  float* d_b_lse = upload(std::vector<float>(rows, NAN));
  float* d_b_ctx = upload(std::vector<float>(rows, NAN));
  float* d_lse = upload(std::vector<float>(rows, NAN));
  int32_t* d_pos = upload(std::vector<int32_t>(rows, -7));
  float* d_share = upload(std::vector<float>(rows, NAN));
  DecodeLaunch a_launch;
  a_launch.defer_merge = true;
  a_launch.q_rows = d_q_rows;
  DecodeLaunch b_launch;
  const size_t b_at = (decode_attention_workspace_bytes(bundled, a_launch) + 255) / 256 * 256;
  unsigned char* ws = nullptr;
  CUDA_OK(cudaMalloc(&ws, b_at + decode_attention_workspace_bytes(each, b_launch)));
  Selection a_sel = dunion.sel;
  a_sel.member_masks = d_masks;
  a_sel.member_group = c.g;
  Selection b_sel = c.dev->sel;  // the estimate's lists (or none); no selected rows
  b_sel.counts = d_zeros;
  b_sel.rows = d_zeros;
  if (estimate_in_bundle) {
    a_sel.estimate_masks = d_est_masks;
    a_sel.estimate_log_sizes = d_est_log_sizes;
    b_sel.estimate_ids = nullptr;
    b_sel.estimated = nullptr;
  } else {
    a_sel.estimate_ids = nullptr;
    a_sel.estimated = nullptr;
  }
  const TopKeys top{d_pos, d_share};
  CUDA_OK(bundle_selections(BundleMembers{d_slots, c.bundles, c.slots}, c.hkv, d_bundle_views, c.dev->sel, dunion.sel,
                            d_masks, estimate_in_bundle ? d_est_masks : nullptr,
                            estimate_in_bundle ? d_est_log_sizes : nullptr, nullptr));
  CUDA_OK(sparse_decode_attention(bundled, d_bundle_views, d_q, a_sel, nullptr, nullptr, ws, a_launch, nullptr, top));
  CUDA_OK(sparse_decode_attention(each, d_own_views, d_q, b_sel, d_b, d_b_lse, ws + b_at, b_launch, nullptr,
                                  TopKeys{nullptr, nullptr, d_b_ctx}));
  CUDA_OK(merge_decode_pieces(bundled, a_launch, ws, rows, d_a_row, d_b, d_b_lse, d_out, d_lse, nullptr,
                              d_bundle_views, top, d_b_ctx, /*masked=*/true));
  CUDA_OK(cudaDeviceSynchronize());
  bool nan = false;
  double rel = 0, lse_err = 0, share_err = 0;
  score_against(d_out, d_lse, want, want_lse, nan, &rel, &lse_err);
  int top_diff = 0;
  const std::vector<int32_t> pos = download(d_pos, rows);
  const std::vector<float> share = download(d_share, rows);
  for (int r = 0; r < rows; ++r) {
    top_diff += pos[r] != want_pos[r];
    share_err = std::max(share_err, std::fabs(double(share[r]) - want_share[r]));
  }
  const bool pass = !nan && rel <= 1e-2 && lse_err <= 1e-2 && top_diff == 0 && share_err <= 1e-3;
  std::printf("%-40s %3d %12s %10.2e %10.2e %10s %10s %8s %s  (top %d/%d differ, share %.1e)\n", name, c.G, "-", rel,
              lse_err, "-", "-", "-", pass ? "PASS" : "FAIL", top_diff, rows, share_err);
  for (void* p : std::vector<void*>{d_slots, d_bundle_views, d_own_views, d_masks, d_est_masks, d_est_log_sizes, d_zeros, d_q_rows,
                                    d_a_row, d_q, d_b, d_out, d_b_lse, d_b_ctx, d_lse, d_pos, d_share, ws})
    CUDA_OK(cudaFree(p));
  return pass;
}

bool check_squeezed_bundle(const char* name, int d, int g, int hkv, int members, int slots, int rows, int csz,
                           int dense_len, float keep, uint64_t seed) {
  SqueezedCase c(d, g, hkv, members, slots, rows, csz, dense_len, keep, seed);
  const bool union_ok = check_squeezed_union(name, c, seed);
  const bool beside = check_squeezed_two_parts((std::string(name) + ", two parts").c_str(), c, seed, false);
  return check_squeezed_two_parts((std::string(name) + ", estimate in A").c_str(), c, seed, true) && beside && union_ok;
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
  all &= check_beside(128, 4, 8, 8, seed++, 20);  // Llama-3's batch of 8: one bundle, the pair kernel
  all &= check_beside(64, 2, 4, 3, seed++, 20);   // D = 64, a bundle of G 6 (the variant of groups up to 8)
  // Squeezed bundles: the rows (read/asked) are the union's against the members' own.
  //                              name                                 d   g hkv  mem slots  rows csz dense keep
  all &= check_squeezed_bundle("squeezed Llama-3 x8 (pair)",          128, 4, 8,   8,  8,  9001, 19, 16, 0.12f, seed++);
  all &= check_squeezed_bundle("squeezed Llama-2 x8 (g8, top keys)",  128, 1, 4,   8,  8,  5003, 21, 16, 0.12f, seed++);
  all &= check_squeezed_bundle("squeezed g4 x4 (high) 2 bundles",     128, 4, 2,   7,  4,  3001,  9,  5, 0.3f,  seed++);
  all &= check_squeezed_bundle("squeezed d64 g3 x2 (top keys) odd",    64, 3, 3,   5,  2,  1999,  7,  3, 0.5f,  seed++);
  all &= check_squeezed_bundle("squeezed d64 g1 x32 (pair) all kept",  64, 1, 2,  32, 32,  2047, 11,  8, 1.f,   seed++);
  all &= check_squeezed_bundle("squeezed d128 g2 x5 none kept",       128, 2, 2,   5,  5,   777,  5,  4, 0.f,   seed++);
  all &= check_squeezed_bundle("squeezed d128 g4 x8 large K",         128, 4, 1,   8,  8, 40000,  3, 16, 0.1f,  seed++);
  return all;
}

}  // namespace squeezeserve::kernels::bench
