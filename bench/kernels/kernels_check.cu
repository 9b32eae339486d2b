// kernels_check: every CUDA kernel against its CPU reference on fresh random inputs.
// Outputs are poisoned (NaN / -1) before each launch; a failure exits non-zero. Prints a table.
//
// Selection: GPU and CPU selections must agree except for clusters whose score lies within
// rounding (relative 2e-3) of the threshold of their (sequence, KV head) (fp32 sums run in another
// order). Read-ahead cases: every forced cluster is selected. Estimate cases: the estimated lists
// agree with the CPU's up to the same threshold clusters (and, with an estimate floor, one-level
// clusters within rounding of floor x threshold), and (one level, no floor) selected + estimated =
// the non-empty clusters. Attention: the CPU reference runs on the GPU's own selection (estimate
// lists included), and ||out - ref|| / ||ref|| <= 1e-2 (bf16 inputs, bf16 output, bf16 P in the
// P V products), LSE max abs error <= 1e-2, no NaN. Top keys (read-ahead cases): the position of
// every query row equals the reference's unless both are rows with shares within 2e-3 relative
// (a near tie), and |share - ref| <= 1e-3 + 1e-3 * ref.
// Fused RMSNorm / RoPE: a second table (norm_rope_check.cu); read-ahead's cursor: a third
// (read_ahead_check.cu); groups above 8 (the engine's shared-context bundles), the deferred merge
// (merge_decode_pieces, with a part B), the own tokens' one-wave grid and their launch beside the
// bundle's: a fourth (bundle_check.cu).
// Every case runs in a child process of its own (the parent never touches CUDA), so that a kernel
// fault (sticky for its context) fails that case only and the later ones still report.
// Flags: --small (the compute-sanitizer subset), --no-fork, --filter TEXT, --seed N,
// --cuda-core-stream (the decode selection's centroid stream on CUDA cores instead of tensor cores;
// there a launch never shares the stream, so `var` compares two per-sequence launches),
// --unfused-place (two-level decode: each level as a centroid stream and a compaction launch, instead
// of the default, each stream placing its own chunks).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench/kernels/bundle_check.h"
#include "bench/kernels/device_layer.h"
#include "bench/kernels/norm_rope_check.h"
#include "bench/kernels/read_ahead_check.h"
#include "kernels/attention_ref.h"
#include "kernels/decode_attention.h"
#include "kernels/prefill_attention.h"
#include "kernels/selection.h"
#include "kernels/selection_ref.h"

using namespace squeezeserve::kernels;
using namespace squeezeserve::kernels::bench;

namespace {

// The selection launch every case starts from: the defaults, or (--cuda-core-stream) the decode
// centroid stream on CUDA cores, or (--unfused-place) the two-level decode's levels as two launches
// each, so that every kernel is held to the same references.
SelectionLaunch g_base_launch;

struct Case {
  std::string name;
  int d, g, hkv, lq;
  std::vector<int> rows;  // N per sequence (batch = rows.size())
  int cluster_size;       // mean keys per fine cluster (K = N / cluster_size)
  int coarse_ratio;       // fine clusters per coarse cluster; 0 = one level
  int dense_extra;        // dense rows before the query block
  float empty_fraction;
  float tau_scale;        // tau = tau_scale / N_max (uniform weight = 1/N); <0: -1 (all), >1e3: 2 (none)
  bool use_prefill_kernel = false;  // run a one-token block through the prefill kernel
  bool per_head_tau = false;  // even sequences get random per-KV-head thresholds (SequenceLayer::tau_*)
  int decode_ctas = 0;        // DecodeLaunch::num_ctas (0 = the default grid)
  // Pruned-cluster estimate / read-ahead (with TopKeys): 0 off, 1 every sequence, 2 even sequences
  // only (one launch mixes sequences with and without).
  int estimate = 0, read_ahead = 0;
  bool logits = false;  // Selection::estimate_logits (decode: the estimate's logits from the selection)
  float estimate_floor = 0.f;  // SelectionParams::estimate_floor
  int piece_start_rows = -1;   // DecodeLaunch::piece_start_rows (-1 = the default)
  bool align_heads = true;     // DecodeLaunch::align_heads
};

// The flat split where the default grid aligns heads to CTAs (few heads: DecodeLaunch::align_heads).
Case unaligned(Case c) {
  c.align_heads = false;
  return c;
}

Case with_floor(Case c, float floor) {
  c.estimate_floor = floor;
  return c;
}

Case with_start_cost(Case c, int rows) {
  c.piece_start_rows = rows;
  return c;
}

Case with_lookup(Case c, int estimate, int read_ahead, bool logits = false) {
  c.estimate = estimate;
  c.read_ahead = read_ahead;
  c.logits = logits;
  return c;
}

struct Result {
  std::string name;
  double sel_mismatch = 0, attn_rel = 0, lse_err = 0;
  int selected = 0, candidates = 0, comparisons_ok = 1;
  long long estimated = -1, estimate_diff = 0;  // -1: estimate off
  int forced = 0, forced_missing = 0;           // read-ahead clusters, and those not selected
  int top_rows = 0, top_mismatch = 0;           // read-ahead's top keys: rows checked, unexplained
  double share_err = 0;
  double logit_err = 0;  // Selection::estimate_logits against the CPU's, where the lists agree
  double unsplit_rel = -1;  // prefill: the unsplit launch's attn_rel (INFINITY when any check failed); -1 decode
  double skip_rel = -1;     // prefill: with PrefillLaunch::skip_padding_warps (split as chosen)
  double ws_rel = -1;       // prefill, D = 128 on sm_90a: the warp-specialized kernel, split as chosen, and unsplit
  int variant_diff = -1;    // decode selection, B > 1: words that differ, shared vs per-sequence stream; -1 n/a
  int chained_diff = -1;    // decode: output words that differ, chained steps vs the checked launch (+1000 per
                            // ticket or head counter left non-zero); -1 n/a
  bool pass = true;
};

// Per-head thresholds of a sequence: host copies (the CPU views point at them) and device copies.
struct PerHeadTau {
  std::vector<std::vector<float>> host;
  std::vector<float*> dev;
  PerHeadTau() = default;
  PerHeadTau(const PerHeadTau&) = delete;
  PerHeadTau& operator=(const PerHeadTau&) = delete;
  ~PerHeadTau() {
    for (float* p : dev) cudaFree(p);
  }
  // [hkv] values: `launch_wide` times a log-uniform factor in [1/8, 8], so heads keep very different
  // shares; points both views at them.
  void attach(int hkv, float launch_wide, std::mt19937& rng, const float*& host_view, const float*& dev_view) {
    std::uniform_real_distribution<float> log2_factor(-3.f, 3.f);
    std::vector<float> tau(hkv);
    for (float& t : tau) t = launch_wide * std::exp2(log2_factor(rng));
    dev.push_back(upload(tau));
    host.push_back(std::move(tau));  // moving keeps the buffer: host_view stays valid
    host_view = host.back().data();
    dev_view = dev.back();
  }
};

// Fine threshold the selection applies to (sequence view v, KV head h).
float fine_tau(const SequenceLayerF32& v, const SelectionParams& params, int h) {
  return v.tau_fine ? v.tau_fine[h] : params.tau_fine;
}

// Read-ahead positions of one sequence: per query head a random clustered position, some -1 and
// some in the window (>= N, never a cluster).
std::vector<int32_t> read_ahead_positions(int hq, int n, std::mt19937& rng) {
  std::vector<int32_t> p(hq);
  std::uniform_int_distribution<int> pos(0, n - 1), kind(0, 9);
  for (int32_t& x : p) {
    const int k = kind(rng);
    x = k == 0 ? -1 : k == 1 ? n + k : pos(rng);
  }
  return p;
}

Result run_case(const Case& c, uint64_t seed) {
  Result res;
  res.name = c.name;
  const int batch = static_cast<int>(c.rows.size());
  AttentionShape shape;
  shape.batch = batch;
  shape.num_kv_heads = c.hkv;
  shape.num_q_heads = c.hkv * c.g;
  shape.head_dim = c.d;
  shape.query_len = c.lq;
  std::vector<std::unique_ptr<DeviceLayer>> layers;
  std::vector<SequenceLayerF32> host_views;
  std::vector<SequenceLayerBf16> dev_views;
  std::vector<std::vector<int32_t>> positions(batch);  // read-ahead, host
  std::vector<int32_t*> dev_positions;
  std::mt19937 lookup_rng(static_cast<uint32_t>(seed) + 29);
  const bool lookup = c.estimate || c.read_ahead;
  int max_k = 1, max_kc = 0, max_n = 1;
  for (int b = 0; b < batch; ++b) {
    SyntheticSpec spec = layer_spec(c.hkv, c.d, c.rows[b], c.cluster_size, c.dense_extra + c.lq, seed * 1000 + b);
    spec.num_coarse = c.coarse_ratio ? std::max(1, spec.num_clusters / c.coarse_ratio) : 0;
    spec.empty_fraction = c.empty_fraction;
    // The window: the dense rows before the block (the block's tokens are the request's own).
    layers.push_back(std::make_unique<DeviceLayer>(spec, lookup ? c.dense_extra : -1));
    host_views.push_back(layers.back()->host.view());
    dev_views.push_back(layers.back()->dev);
    if (c.estimate == 0 || (c.estimate == 2 && b % 2)) host_views[b].cluster_values = nullptr, dev_views[b].cluster_values = nullptr;
    if (c.read_ahead == 1 || (c.read_ahead == 2 && b % 2 == 0)) {
      positions[b] = read_ahead_positions(shape.num_q_heads, spec.num_rows, lookup_rng);
      dev_positions.push_back(upload(positions[b]));
      host_views[b].read_ahead = positions[b].data();
      dev_views[b].read_ahead = dev_positions.back();
    }
    max_k = std::max(max_k, spec.num_clusters);
    max_kc = std::max(max_kc, spec.num_coarse);
    max_n = std::max(max_n, spec.num_rows);
  }
  SelectionParams params;
  params.hierarchical = c.coarse_ratio > 0;
  params.tau_fine = c.tau_scale < 0 ? -1.f : c.tau_scale > 1e3f ? 2.f : c.tau_scale / max_n;
  params.tau_coarse = c.tau_scale < 0 ? -1.f : c.tau_scale > 1e3f ? 2.f : 1.f / max_n;
  params.estimate_floor = c.estimate_floor;
  PerHeadTau per_head;
  if (c.per_head_tau) {  // odd sequences keep the launch-wide thresholds: both kinds in one launch
    std::mt19937 rng(static_cast<uint32_t>(seed) + 13);
    for (int b = 0; b < batch; b += 2) {
      per_head.attach(c.hkv, params.tau_fine, rng, host_views[b].tau_fine, dev_views[b].tau_fine);
      if (params.hierarchical)
        per_head.attach(c.hkv, params.tau_coarse, rng, host_views[b].tau_coarse, dev_views[b].tau_coarse);
    }
  }
  SequenceLayerBf16* d_views = upload(dev_views);
  std::vector<float> q = random_normal(int64_t{batch} * c.lq * shape.num_q_heads * c.d, seed + 7);
  uint16_t* d_q = upload(round_to_bf16(q));
  const SelectionLimits limits{max_k, max_kc};
  const int bh = batch * c.hkv;

  // ---- selection ----
  const int est_cap = c.estimate ? max_k + max_kc : 0;
  DeviceSelection dsel(bh, max_k, est_cap, c.logits);
  void* ws = nullptr;
  CUDA_OK(cudaMalloc(&ws, selection_workspace_bytes(shape, limits)));
  float* d_scores = nullptr;
  CUDA_OK(cudaMalloc(&d_scores, sizeof(float) * bh * std::max(max_k, max_kc)));
  CUDA_OK(cudaMemset(dsel.sel.cluster_ids, 0xff, sizeof(int32_t) * bh * max_k));
  CUDA_OK(cudaMemset(dsel.sel.counts, 0xff, sizeof(int32_t) * bh));
  CUDA_OK(cudaMemset(dsel.sel.rows, 0xff, sizeof(int32_t) * bh));
  CUDA_OK(cudaMemset(dsel.sel.comparisons, 0xff, sizeof(int32_t) * bh));
  if (est_cap) {
    CUDA_OK(cudaMemset(dsel.sel.estimate_ids, 0xff, sizeof(int32_t) * bh * est_cap));
    CUDA_OK(cudaMemset(dsel.sel.estimated, 0xff, sizeof(int32_t) * bh));
  }
  if (dsel.sel.estimate_logits)  // NaN: a logit the selection failed to write poisons the output
    CUDA_OK(cudaMemset(dsel.sel.estimate_logits, 0xff, sizeof(float) * bh * est_cap * kMaxGroup));
  // The launch's head counters (SelectionLaunch::head_sync), zero before the first launch and left
  // zero by every one (checked after the last; a count left over fails the case as `chain`).
  SelectionLaunch base_launch = g_base_launch;
  CUDA_OK(cudaMalloc(&base_launch.head_sync, sizeof(int32_t) * bh));
  CUDA_OK(cudaMemset(base_launch.head_sync, 0, sizeof(int32_t) * bh));
  CUDA_OK(select_clusters(shape, d_views, d_q, params, limits, dsel.sel, ws, d_scores, nullptr, base_launch));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<int32_t> g_ids = download(dsel.sel.cluster_ids, size_t(bh) * max_k);
  const std::vector<int32_t> g_start = download(dsel.sel.row_start, size_t(bh) * max_k);
  const std::vector<int32_t> g_counts = download(dsel.sel.counts, bh);
  const std::vector<int32_t> g_rows = download(dsel.sel.rows, bh);
  const std::vector<int32_t> g_cmp = download(dsel.sel.comparisons, bh);

  std::vector<int32_t> g_est_ids, g_est;
  std::vector<float> g_logits;
  if (est_cap) {
    g_est_ids = download(dsel.sel.estimate_ids, size_t(bh) * est_cap);
    g_est = download(dsel.sel.estimated, bh);
  }
  const bool check_logits = dsel.sel.estimate_logits != nullptr && c.lq == 1;  // decode writes them
  if (check_logits) g_logits = download(dsel.sel.estimate_logits, size_t(bh) * est_cap * kMaxGroup);

  // Launch variants of the decode selection must agree bit for bit (the same arithmetic in the same
  // order): on a batch whose sequences all have sequence 0's index, the shared centroid stream
  // against the per-sequence one.
  if (c.lq * c.g <= 8) {
    const size_t n_scores = size_t(bh) * std::max(max_k, max_kc);
    // Runs `views` with launch a and with launch b; the words of their outputs that differ.
    auto differing_words = [&](const SequenceLayerBf16* views, const SelectionLaunch& a, const SelectionLaunch& b) {
      DeviceSelection sa(bh, max_k, est_cap, c.logits), sb(bh, max_k, est_cap, c.logits);
      float *scores_a = nullptr, *scores_b = nullptr;
      CUDA_OK(cudaMalloc(&scores_a, sizeof(float) * n_scores));
      CUDA_OK(cudaMalloc(&scores_b, sizeof(float) * n_scores));
      CUDA_OK(cudaMemset(scores_a, 0xff, sizeof(float) * n_scores));  // unscored entries stay equal
      CUDA_OK(cudaMemset(scores_b, 0xff, sizeof(float) * n_scores));
      CUDA_OK(cudaMemset(ws, 0xff, selection_workspace_bytes(shape, limits)));
      CUDA_OK(select_clusters(shape, views, d_q, params, limits, sa.sel, ws, scores_a, nullptr, a));
      CUDA_OK(cudaMemset(ws, 0x7f, selection_workspace_bytes(shape, limits)));
      CUDA_OK(select_clusters(shape, views, d_q, params, limits, sb.sel, ws, scores_b, nullptr, b));
      CUDA_OK(cudaDeviceSynchronize());
      auto words = [](const auto& x, const auto& y) {
        int n = 0;
        for (size_t i = 0; i < x.size(); ++i) n += std::memcmp(&x[i], &y[i], sizeof(x[i])) != 0;
        return n;
      };
      // Lists up to a's counts (past them each launch leaves what was there).
      auto lists = [&](const std::vector<int32_t>& counts, int cap, int per, const auto& x, const auto& y) {
        int n = 0;
        for (int h = 0; h < bh; ++h)
          for (size_t i = size_t(h) * cap * per, e = i + size_t(std::clamp(counts[h], 0, cap)) * per; i < e; ++i)
            n += std::memcmp(&x[i], &y[i], sizeof(x[i])) != 0;
        return n;
      };
      const std::vector<int32_t> counts = download(sa.sel.counts, bh);
      const size_t list_n = size_t(bh) * max_k;
      int n = words(counts, download(sb.sel.counts, bh)) + words(download(sa.sel.rows, bh), download(sb.sel.rows, bh)) +
              words(download(sa.sel.comparisons, bh), download(sb.sel.comparisons, bh)) +
              words(download(scores_a, n_scores), download(scores_b, n_scores)) +
              lists(counts, max_k, 1, download(sa.sel.cluster_ids, list_n), download(sb.sel.cluster_ids, list_n)) +
              lists(counts, max_k, 1, download(sa.sel.row_start, list_n), download(sb.sel.row_start, list_n));
      if (est_cap) {
        const std::vector<int32_t> est = download(sa.sel.estimated, bh);
        const size_t est_n = size_t(bh) * est_cap;
        n += words(est, download(sb.sel.estimated, bh)) +
             lists(est, est_cap, 1, download(sa.sel.estimate_ids, est_n), download(sb.sel.estimate_ids, est_n));
        if (sa.sel.estimate_logits && c.lq == 1)
          n += lists(est, est_cap, estimate_logit_stride(c.g), download(sa.sel.estimate_logits, est_n * kMaxGroup),
                     download(sb.sel.estimate_logits, est_n * kMaxGroup));
      }
      cudaFree(scores_a);
      cudaFree(scores_b);
      return n;
    };
    if (batch > 1) {
      const std::vector<SequenceLayerBf16> same(batch, dev_views[0]);
      SequenceLayerBf16* d_same = upload(same);
      SelectionLaunch shared = base_launch;
      shared.shared_context = true;
      shared.min_shared_sm_fraction = 0.f;  // these grids are small: share at any size
      res.variant_diff = differing_words(d_same, base_launch, shared);
      cudaFree(d_same);
    }
  }

  std::vector<int32_t> r_ids(size_t(bh) * max_k), r_start(r_ids.size()), r_counts(bh), r_rows(bh), r_cmp(bh);
  std::vector<int32_t> r_est_ids(size_t(bh) * std::max(est_cap, 1)), r_est(bh);
  std::vector<float> r_logits(check_logits ? size_t(bh) * est_cap * kMaxGroup : 0);
  Selection rsel{r_ids.data(), r_start.data(), r_counts.data(), r_rows.data(), r_cmp.data(), max_k};
  if (est_cap) rsel.estimate_ids = r_est_ids.data(), rsel.estimated = r_est.data(), rsel.estimate_capacity = est_cap;
  if (check_logits) rsel.estimate_logits = r_logits.data();
  select_clusters_ref(shape, host_views.data(), q.data(), params, rsel);

  // Set difference, forgiving only clusters on the threshold. The GPU scores are in candidate
  // order; for a one-level index candidate = cluster id.
  const std::vector<float> g_scores = download(d_scores, size_t(bh) * std::max(max_k, max_kc));
  int mismatches = 0, unexplained = 0;
  bool garbage = false;  // out-of-range counts or ids: the attention reference cannot run on them
  for (int x = 0; x < bh; ++x) {
    const int b = x / c.hkv, h = x % c.hkv;
    const float tau = fine_tau(host_views[b], params, h);
    if (g_counts[x] < 0 || g_counts[x] > host_views[b].num_clusters) {  // garbage: nothing below is safe to read
      ++unexplained, garbage = true;
      continue;
    }
    std::vector<int> a(g_ids.begin() + int64_t(x) * max_k, g_ids.begin() + int64_t(x) * max_k + g_counts[x]);
    if (std::any_of(a.begin(), a.end(), [&](int id) { return id < 0 || id >= host_views[b].num_clusters; })) {
      ++unexplained, garbage = true;
      continue;
    }
    std::vector<int> r(r_ids.begin() + int64_t(x) * max_k, r_ids.begin() + int64_t(x) * max_k + r_counts[x]);
    std::vector<int> diff;
    std::set_symmetric_difference(a.begin(), a.end(), r.begin(), r.end(), std::back_inserter(diff));
    mismatches += static_cast<int>(diff.size());
    for (int id : diff) {
      const float s = params.hierarchical ? NAN : g_scores[int64_t(x) * std::max(max_k, max_kc) + id];
      if (!(std::abs(s - tau) <= 2e-3f * std::abs(tau))) ++unexplained;
    }
    // Row bookkeeping must be self-consistent with the ids the GPU chose.
    const int32_t* off = host_views[b].offsets + int64_t(h) * (host_views[b].num_clusters + 1);
    int run = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (g_start[int64_t(x) * max_k + i] != run) ++unexplained;
      run += off[a[i] + 1] - off[a[i]];
    }
    if (run != g_rows[x]) ++unexplained;
    if (g_cmp[x] != r_cmp[x] && diff.empty()) res.comparisons_ok = 0;
    res.selected += std::max(0, g_counts[x]);
    res.candidates += host_views[b].num_clusters;
    // Read-ahead: the cluster of every forced position is selected.
    if (host_views[b].read_ahead) {
      const int rows_n = off[host_views[b].num_clusters];
      for (int j = 0; j < c.g; ++j) {
        const int pos = host_views[b].read_ahead[h * c.g + j];
        if (pos < 0 || pos >= rows_n) continue;
        const int cl = host_views[b].cluster_of_position[int64_t(h) * rows_n + pos];
        ++res.forced;
        if (!std::binary_search(a.begin(), a.end(), cl)) ++res.forced_missing;
      }
    }
    // The estimate: the lists agree but for the clusters the selections disagree on; one level,
    // every non-empty cluster is either selected or estimated.
    if (est_cap) {
      if (res.estimated < 0) res.estimated = 0;
      res.estimated += std::max(0, g_est[x]);
      if (g_est[x] < 0 || g_est[x] > est_cap) {
        ++unexplained, garbage = true;
        continue;
      }
      std::vector<int> ge(g_est_ids.begin() + int64_t(x) * est_cap, g_est_ids.begin() + int64_t(x) * est_cap + g_est[x]);
      const int id_limit = host_views[b].num_clusters + (params.hierarchical ? host_views[b].num_coarse : 0);
      if (std::any_of(ge.begin(), ge.end(), [&](int id) { return id < 0 || id >= id_limit; })) {
        ++unexplained, garbage = true;
        continue;
      }
      std::vector<int> re(r_est_ids.begin() + int64_t(x) * est_cap, r_est_ids.begin() + int64_t(x) * est_cap + r_est[x]);
      // One level: a cluster scoring within rounding of the estimate floor may be on either list.
      auto near_floor = [&](int id) {
        if (params.hierarchical || params.estimate_floor <= 0.f || id >= host_views[b].num_clusters) return false;
        const float s = g_scores[int64_t(x) * std::max(max_k, max_kc) + id], f = params.estimate_floor * tau;
        return std::abs(s - f) <= 2e-3f * std::abs(f);
      };
      // Same selection and no cluster on the floor: the very same list, in order.
      const bool floor_ties = std::any_of(ge.begin(), ge.end(), near_floor) || std::any_of(re.begin(), re.end(), near_floor);
      if (diff.empty() && !floor_ties && ge != re) res.estimate_diff += 1000;
      // The decode selection's logits of the estimated clusters (group members < g), same lists only.
      for (int e = 0; check_logits && ge == re && e < g_est[x]; ++e)
        for (int j = 0; j < c.g; ++j) {
          const size_t at = (size_t(x) * est_cap + e) * estimate_logit_stride(c.g) + j;
          const double err = std::abs(double(g_logits[at]) - r_logits[at]) / (1.0 + std::abs(double(r_logits[at])));
          res.logit_err = std::isfinite(g_logits[at]) ? std::max(res.logit_err, err) : INFINITY;
        }
      std::sort(ge.begin(), ge.end());
      std::sort(re.begin(), re.end());
      std::vector<int> ediff;
      std::set_symmetric_difference(ge.begin(), ge.end(), re.begin(), re.end(), std::back_inserter(ediff));
      for (int id : ediff)
        if (!std::binary_search(diff.begin(), diff.end(), id) && !near_floor(id)) ++res.estimate_diff;
      if (!params.hierarchical && host_views[b].cluster_values && params.estimate_floor == 0.f) {
        int non_empty = 0;
        for (int j = 0; j < host_views[b].num_clusters; ++j) non_empty += off[j + 1] > off[j];
        if (g_counts[x] + g_est[x] != non_empty) res.estimate_diff += 1000;
      }
      if (!host_views[b].cluster_values && g_est[x] != 0) res.estimate_diff += 1000;
    }
  }
  res.sel_mismatch = mismatches;
  if (unexplained > 0 || !res.comparisons_ok || res.forced_missing > 0 || res.estimate_diff > 0 || !(res.logit_err <= 1e-4) ||
      res.variant_diff > 0)
    res.pass = false;
  if (garbage) {
    std::fprintf(stderr, "%s: out-of-range selection counts or ids; attention not checked\n", c.name.c_str());
    res.attn_rel = res.lse_err = INFINITY;
    return res;
  }

  // ---- attention, on the GPU's selection for both sides ----
  const size_t out_n = size_t(batch) * c.lq * shape.num_q_heads * c.d;
  std::vector<float> ref(out_n), ref_lse(out_n / c.d);
  std::vector<int32_t> ids = g_ids, starts = g_start, counts = g_counts, rows = g_rows, cmp = g_cmp;
  std::vector<int32_t> est_ids = g_est_ids, est = g_est;
  Selection gsel{ids.data(), starts.data(), counts.data(), rows.data(), cmp.data(), max_k};
  if (est_cap) gsel.estimate_ids = est_ids.data(), gsel.estimated = est.data(), gsel.estimate_capacity = est_cap;
  std::vector<int32_t> ref_position(out_n / c.d, -9);
  std::vector<float> ref_share(out_n / c.d, NAN);
  const TopKeys h_top = c.read_ahead ? TopKeys{ref_position.data(), ref_share.data()} : TopKeys{};
  sparse_attention_ref(shape, host_views.data(), q.data(), gsel, ref.data(), ref_lse.data(), h_top);

  uint16_t* d_out = nullptr;
  float* d_lse = nullptr;
  CUDA_OK(cudaMalloc(&d_out, sizeof(uint16_t) * out_n));
  CUDA_OK(cudaMalloc(&d_lse, sizeof(float) * out_n / c.d));
  TopKeys d_top;
  if (c.read_ahead) {
    CUDA_OK(cudaMalloc(&d_top.position, sizeof(int32_t) * out_n / c.d));
    CUDA_OK(cudaMalloc(&d_top.share, sizeof(float) * out_n / c.d));
  }
  // One launch on poisoned outputs, checked against the reference: the relative output error, and
  // the LSE and top-key columns of the result. Prefill: the key ranges split as the launch chooses
  // (`split`: these small grids split) or unsplit (no workspace); `skip`: skip_padding_warps; `ws`:
  // the warp-specialized kernel.
  struct AttentionCheck {
    double rel = 0, lse_err = 0, share_err = 0;
    int top_rows = 0, top_mismatch = 0;
    bool pass = true;
  };
  auto check_attention = [&](bool split, bool skip = false, bool ws = false) {
    AttentionCheck r;
    CUDA_OK(cudaMemset(d_out, 0xff, sizeof(uint16_t) * out_n));  // bf16 0xffff = NaN
    CUDA_OK(cudaMemset(d_lse, 0xff, sizeof(float) * out_n / c.d));
    if (c.read_ahead) {
      CUDA_OK(cudaMemset(d_top.position, 0x7f, sizeof(int32_t) * out_n / c.d));  // poison: a huge position
      CUDA_OK(cudaMemset(d_top.share, 0xff, sizeof(float) * out_n / c.d));
    }
    void* dws = nullptr;
    if (c.lq == 1 && !c.use_prefill_kernel) {
      DecodeLaunch launch{c.decode_ctas};
      launch.piece_start_rows = c.piece_start_rows;
      launch.align_heads = c.align_heads;
      launch.wide_estimate_tiles = c.coarse_ratio == 0;  // as the engine: flat indexes only
      CUDA_OK(cudaMalloc(&dws, decode_attention_workspace_bytes(shape, launch)));
      CUDA_OK(sparse_decode_attention(shape, d_views, d_q, dsel.sel, d_out, d_lse, dws, launch, nullptr, d_top));
    } else {
      PrefillLaunch launch;
      launch.skip_padding_warps = skip;
      launch.kernel = ws ? PrefillKernel::kWarpSpecialized : PrefillKernel::kMmaSync;
      const size_t bytes = split ? prefill_attention_workspace_bytes(shape, launch) : 0;
      if (bytes) CUDA_OK(cudaMalloc(&dws, bytes));
      CUDA_OK(sparse_prefill_attention(shape, d_views, d_q, dsel.sel, d_out, d_lse, dws, launch, nullptr, d_top));
    }
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(dws);
    const std::vector<uint16_t> out_bits = download(d_out, out_n);
    const std::vector<float> lse = download(d_lse, out_n / c.d);
    std::vector<float> out(out_n);
    for (size_t i = 0; i < out_n; ++i) out[i] = from_bf16_bits(out_bits[i]);
    if (c.read_ahead) {
      const std::vector<int32_t> position = download(d_top.position, out_n / c.d);
      const std::vector<float> share = download(d_top.share, out_n / c.d);
      for (size_t i = 0; i < position.size(); ++i) {
        ++r.top_rows;
        const double err = std::abs(double(share[i]) - ref_share[i]);
        r.share_err = std::isfinite(share[i]) ? std::max(r.share_err, err) : INFINITY;
        const bool share_ok = err <= 1e-3 + 1e-3 * ref_share[i];
        const bool near_tie = position[i] >= 0 && ref_position[i] >= 0 && err <= 2e-3 * ref_share[i];
        if (!share_ok || (position[i] != ref_position[i] && !near_tie)) ++r.top_mismatch;
      }
    }
    bool nan = false;
    r.rel = rel_error(out, ref, nan);
    for (size_t i = 0; i < lse.size(); ++i) {
      if (std::isnan(lse[i])) nan = true;
      if (std::isinf(ref_lse[i]) || std::isinf(lse[i])) {
        if (lse[i] != ref_lse[i]) r.lse_err = INFINITY;
        continue;
      }
      r.lse_err = std::max(r.lse_err, static_cast<double>(std::abs(lse[i] - ref_lse[i])));
    }
    r.pass = !nan && r.rel <= 1e-2 && r.lse_err <= 1e-2 && r.top_mismatch == 0;
    return r;
  };
  const AttentionCheck chosen = check_attention(/*split=*/true);
  res.attn_rel = chosen.rel;
  res.lse_err = chosen.lse_err;
  res.top_rows = chosen.top_rows;
  res.top_mismatch = chosen.top_mismatch;
  res.share_err = chosen.share_err;
  if (!chosen.pass) res.pass = false;
  if (c.lq == 1 && !c.use_prefill_kernel) {
    // The decode step as the engine chains it (kernels/launch.h): selection then attention, two
    // steps on one stream with no host synchronisation, the attention on persistent tickets
    // (DecodeLaunch::tickets, zero only before the first step) and, on sm_90+, every kernel
    // launched while the previous one still runs. The output must equal the checked launch's
    // (the memset path, fully serialised) bit for bit, and the tickets must be zero again.
    const std::vector<uint16_t> expect = download(d_out, out_n);
    DecodeLaunch chained{c.decode_ctas};
    chained.piece_start_rows = c.piece_start_rows;
    chained.align_heads = c.align_heads;
    chained.wide_estimate_tiles = c.coarse_ratio == 0;
    CUDA_OK(cudaMalloc(&chained.tickets, sizeof(int32_t) * bh));
    CUDA_OK(cudaMemset(chained.tickets, 0, sizeof(int32_t) * bh));
    void* dws = nullptr;
    CUDA_OK(cudaMalloc(&dws, decode_attention_workspace_bytes(shape, chained)));
    DeviceSelection csel(bh, max_k, est_cap, c.logits);
    cudaStream_t st = nullptr;
    CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    CUDA_OK(cudaDeviceSynchronize());  // the memsets above ran on the legacy stream
    for (int step = 0; step < 2; ++step) {
      CUDA_OK(cudaMemsetAsync(d_out, 0xff, sizeof(uint16_t) * out_n, st));  // NaN where a step fails to write
      CUDA_OK(select_clusters(shape, d_views, d_q, params, limits, csel.sel, ws, nullptr, st, base_launch));
      CUDA_OK(sparse_decode_attention(shape, d_views, d_q, csel.sel, d_out, d_lse, dws, chained, st, d_top));
    }
    CUDA_OK(cudaStreamSynchronize(st));
    const std::vector<uint16_t> got = download(d_out, out_n);
    res.chained_diff = 0;
    for (size_t i = 0; i < out_n; ++i) res.chained_diff += got[i] != expect[i];
    for (int t : download(chained.tickets, bh)) res.chained_diff += t != 0 ? 1000 : 0;
    for (int t : download(base_launch.head_sync, bh)) res.chained_diff += t != 0 ? 1000 : 0;
    if (res.chained_diff != 0) res.pass = false;
    cudaStreamDestroy(st);
    cudaFree(dws);
    cudaFree(chained.tickets);
  }
  if (c.lq > 1 || c.use_prefill_kernel) {  // the prefill kernel unsplit, and skipping padding warps
    const AttentionCheck unsplit = check_attention(/*split=*/false);
    res.unsplit_rel = unsplit.pass ? unsplit.rel : INFINITY;
    const AttentionCheck skip = check_attention(/*split=*/true, /*skip=*/true);
    res.skip_rel = skip.pass ? skip.rel : INFINITY;
    if (!unsplit.pass || !skip.pass) res.pass = false;
    if (c.d == 128 && prefill_warp_specialized_available()) {
      const AttentionCheck ws = check_attention(/*split=*/true, false, /*ws=*/true);
      const AttentionCheck ws_one = check_attention(/*split=*/false, false, /*ws=*/true);
      res.ws_rel = ws.pass && ws_one.pass ? std::max(ws.rel, ws_one.rel) : INFINITY;
      if (!ws.pass || !ws_one.pass) res.pass = false;
    }
  }

  cudaFree(d_top.position);
  cudaFree(d_top.share);
  cudaFree(d_out);
  cudaFree(d_lse);
  cudaFree(ws);
  cudaFree(base_launch.head_sync);
  cudaFree(d_scores);
  cudaFree(d_q);
  cudaFree(d_views);
  for (int32_t* p : dev_positions) cudaFree(p);
  return res;
}

// Runs `body` (which prints its own result line) in a child process; true when it returned true.
// A child that dies (a CUDA error exits through CUDA_OK, a fault by signal) is reported here.
// --no-fork (under compute-sanitizer) runs it in this process.
bool g_fork = true;
template <typename F>
bool isolated(F&& body) {
  std::fflush(stdout);
  if (!g_fork) return body();
  const pid_t pid = fork();
  if (pid == 0) {
    const bool ok = body();
    std::fflush(stdout);
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) {
    std::printf("CHILD FAILED TO RUN\n");
    return false;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) <= 1) return WEXITSTATUS(status) == 0;
  if (WIFSIGNALED(status)) std::printf("CRASH (signal %d)\n", WTERMSIG(status));
  else std::printf("ERROR (exit %d; the CUDA error is on stderr)\n", WEXITSTATUS(status));
  std::fflush(stdout);
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  bool small = false;  // --small: the compute-sanitizer subset
  std::string filter;  // --filter TEXT: only the cases whose name contains TEXT (to iterate on one)
  for (int i = 1; i < argc; ++i) {
    small |= std::string(argv[i]) == "--small";
    if (std::string(argv[i]) == "--no-fork") g_fork = false;
    if (std::string(argv[i]) == "--cuda-core-stream") g_base_launch.tensor_core_stream = false;
    if (std::string(argv[i]) == "--unfused-place") g_base_launch.fused_place = false;
    if (std::string(argv[i]) == "--filter" && i + 1 < argc) filter = argv[i + 1];
  }
  // Flat decode cases (but the one-cluster one) have K > 1024 (several selection chunks per head)
  // and an odd K on some sequence.
  std::vector<Case> cases = {
      // name                          d   g  hkv lq  rows per sequence      csz coarse dense empty tau
      {"decode d128 g1",               128, 1, 4, 1, {9005},                  4, 0, 37, 0.1f, 1.f},
      {"decode d128 g4 batch3",        128, 4, 2, 1, {3077, 1501, 64},        3, 0, 5, 0.1f, 1.f},
      {"decode d64 g8 batch2",          64, 8, 2, 1, {4099, 333},             2, 0, 100, 0.2f, 1.5f},
      {"decode d128 g4 hier",          128, 4, 2, 1, {3001, 1200},           20, 8, 100, 0.1f, 1.5f},
      {"decode d64 g1 hier",            64, 1, 3, 1, {999},                  10, 5, 3, 0.3f, 1.f},
      {"decode empty selection",       128, 4, 2, 1, {2503, 700},             2, 0, 9, 0.1f, 1e9f},
      {"decode all selected",           64, 1, 2, 1, {4103},                  2, 0, 1, 0.3f, -1.f},
      {"decode one huge cluster",      128, 8, 1, 1, {20000},            20000, 0, 100, 0.f, -1.f},
      {"decode batch8 d128 g4",        128, 4, 8, 1, {20000, 9000, 17, 4096, 30011, 100, 2500, 12345}, 9, 0, 100, 0.05f, 2.f},
      {"decode batch12 d128 g8", 128, 8, 2, 1, {20000, 9000, 17, 4096, 30011, 100, 2500, 12345, 777, 5000, 3001, 64}, 9, 0, 100, 0.05f, 2.f},
      {"decode batch10 d128 g4 hier", 128, 4, 2, 1, {12007, 3000, 4001, 900, 2500, 7000, 333, 12001, 5003, 1200}, 5, 8, 100, 0.1f, 1.5f},
      {"decode batch17 d64 g2", 64, 2, 2, 1, {9001, 40, 50, 60, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400, 1500, 1600}, 3, 0, 30, 0.1f, 1.f},
      {"decode batch9 d128 g1 hier", 128, 1, 4, 1, {30011, 3000, 4001, 900, 2500, 7000, 333, 12001, 5003}, 4, 6, 50, 0.1f, 1.f},
      {"prefill d128 g1 lq100",        128, 1, 2, 100, {1000, 433},          20, 0, 50, 0.1f, 1.f},
      {"prefill d64 g4 lq37 hier",      64, 4, 2, 37, {2500},                20, 6, 100, 0.1f, 1.f},
      {"prefill d128 g8 empty sel",    128, 8, 1, 128, {800},                20, 0, 100, 0.1f, 1e9f},
      {"prefill d128 g4 lq1",          128, 4, 2, 1, {2703},                  2, 0, 10, 0.1f, 1.f, true},
      {"prefill d128 g4 lq257 all",    128, 4, 2, 257, {3000, 77},           20, 0, 100, 0.2f, -1.f},
      {"prefill d64 g2 lq64 batch2",    64, 2, 4, 64, {1500, 2100},          25, 0, 0, 0.1f, 1.f},
      // 6 query rows: the decode (fast) selection path with 2 padding rows and a 3-token mean.
      {"prefill d64 g2 lq3 fast sel",   64, 2, 2, 3, {4103, 900},             2, 0, 20, 0.1f, 1.f},
      // Per-KV-head thresholds on sequences 0, 2, ...; the others use the launch-wide ones.
      {"decode d128 g4 per-head tau",  128, 4, 8, 1, {20011, 5003, 700},      9, 0, 100, 0.1f, 1.f, false, true},
      {"decode d128 g1 per-head tau",  128, 1, 8, 1, {9007, 4001},            4, 0, 20, 0.1f, 1.f, false, true},
      {"prefill d128 g4 lq64 per-head", 128, 4, 4, 64, {3001, 1200},          5, 0, 50, 0.1f, 1.f, false, true},
      {"decode d128 g4 hier per-head", 128, 4, 4, 1, {6007, 3000},            5, 8, 100, 0.1f, 1.5f, false, true},
      // Every decode (D, G) pair; different N per sequence.
      {"decode d64 g4 batch3",          64, 4, 2, 1, {5003, 1200, 40},         3, 0, 30, 0.1f, 1.f},
      {"decode d128 g8 batch3",        128, 8, 2, 1, {6007, 2100, 300},        5, 0, 50, 0.1f, 1.f},
      {"decode d128 g2 batch2",        128, 2, 4, 1, {8009, 3005},             4, 0, 20, 0.1f, 1.f},
      {"decode d64 g2 empty selection", 64, 2, 2, 1, {3004, 500},              3, 0, 7, 0.1f, 1e9f},
      // Few CTAs: long per-warp ranges over 2-row clusters (the segment window is reloaded every
      // ~60 rows), CTA ranges spanning several heads, a 17-row sequence inside one range.
      {"decode d64 g4 3 ctas",          64, 4, 4, 1, {9001, 2002, 17},         2, 0, 40, 0.2f, 1.f, false, false, 3},
      {"decode d128 g1 1 cta",         128, 1, 4, 1, {6003, 100},              2, 0, 10, 0.1f, 1.f, false, false, 1},
      {"decode d128 g8 2 ctas all",    128, 8, 1, 1, {20014},                  3, 0, 100, 0.1f, -1.f, false, false, 2},
      // Groups that do not divide 8 (the shipped small model has 3, Qwen2-7B 7) and 6, on every
      // selection path (decode stream, tensor-core prefill with members crossing 64-row tiles,
      // generic hierarchical) and both attention kernels, at both head dims.
      {"decode d64 g3",                 64, 3, 4, 1, {5003, 1200},             3, 0, 30, 0.1f, 1.f},
      {"decode d128 g3 hier",          128, 3, 2, 1, {4001, 900},             10, 6, 50, 0.1f, 1.5f},
      {"decode d128 g6",               128, 6, 2, 1, {6007, 333},              4, 0, 20, 0.1f, 1.f},
      {"decode d64 g6 hier",            64, 6, 2, 1, {3001},                  10, 5, 40, 0.2f, 1.5f},
      {"decode d128 g7 batch3",        128, 7, 4, 1, {9001, 2002, 17},         3, 0, 40, 0.1f, 1.f},
      {"decode d64 g7 2 ctas",          64, 7, 2, 1, {4003, 700},              2, 0, 10, 0.1f, 1.f, false, false, 2},
      {"prefill d128 g3 lq100",        128, 3, 2, 100, {1500, 433},           20, 0, 50, 0.1f, 1.f},
      {"prefill d64 g3 lq2 fast sel",   64, 3, 2, 2, {2003},                   3, 0, 10, 0.1f, 1.f},
      {"prefill d64 g6 lq37 hier",      64, 6, 2, 37, {2500},                 20, 6, 100, 0.1f, 1.f},
      {"prefill d128 g7 lq33",         128, 7, 1, 33, {3001},                 20, 0, 60, 0.1f, 1.f},
      {"prefill d64 g7 lq70 per-head",  64, 7, 2, 70, {2001, 800},            10, 0, 30, 0.1f, 1.f, false, true},
      {"prefill d128 g6 lq1",          128, 6, 2, 1, {2703},                   2, 0, 10, 0.1f, 1.f, true},
      // Pruned-cluster estimate (est) and read-ahead with TopKeys (ra) on every selection path and
      // both kernels: 1 = every sequence, 2 = even sequences only (mixed in one launch).
      with_lookup({"decode d128 g4 est batch3",   128, 4, 2, 1, {3077, 1501, 64},         3, 0, 5, 0.1f, 1.f}, 1, 0),
      with_lookup({"decode d64 g3 est ra batch2",  64, 3, 4, 1, {5003, 1200},             3, 0, 30, 0.1f, 1.f}, 1, 1),
      with_lookup({"decode d128 g8 hier est ra",  128, 8, 2, 1, {4001, 900},             10, 6, 50, 0.1f, 1.5f}, 1, 1),
      with_lookup({"decode d64 g1 hier est",       64, 1, 3, 1, {999},                   10, 5, 3, 0.3f, 1.f}, 1, 0),
      with_lookup({"decode d128 g7 est ra 3 ctas", 128, 7, 2, 1, {9001, 2002, 17},        2, 0, 40, 0.1f, 1.f, false, false, 3}, 1, 1),
      with_lookup({"decode d128 g4 mixed batch4", 128, 4, 2, 1, {6007, 333, 2500, 1200},  4, 0, 20, 0.1f, 1.f}, 2, 2),
      with_lookup({"decode d64 g2 est ra all sel",  64, 2, 2, 1, {3004, 500},              3, 0, 7, 0.1f, -1.f}, 1, 1),
      with_lookup({"decode d128 g4 est ra none sel", 128, 4, 2, 1, {2503, 700},           2, 0, 9, 0.1f, 1e9f}, 1, 1),
      with_lookup({"decode d128 g4 hier est per-head", 128, 4, 4, 1, {6007, 3000},        5, 8, 100, 0.1f, 1.5f, false, true}, 1, 1),
      with_lookup({"decode d64 g6 est ra batch8",   64, 6, 2, 1, {4000, 9000, 17, 2048, 3001, 100, 2500, 777}, 9, 0, 60, 0.05f, 2.f}, 1, 1),
      with_lookup({"prefill d128 g4 lq64 est ra", 128, 4, 2, 64, {3001, 1200},            5, 0, 50, 0.1f, 1.f}, 1, 1),
      with_lookup({"prefill d64 g3 lq100 hier est ra", 64, 3, 2, 100, {2500},            20, 6, 100, 0.1f, 1.f}, 1, 1),
      with_lookup({"prefill d64 g2 lq3 fast est ra", 64, 2, 2, 3, {4103, 900},            2, 0, 20, 0.1f, 1.f}, 1, 1),
      with_lookup({"prefill d128 g6 lq37 mixed per-head", 128, 6, 2, 37, {2001, 800},    10, 0, 30, 0.1f, 1.f, false, true}, 2, 2),
      with_lookup({"prefill d128 g7 lq1 est ra",  128, 7, 2, 1, {2703},                   2, 0, 10, 0.1f, 1.f, true}, 1, 1),
      with_lookup({"prefill d128 g8 lq128 est none sel", 128, 8, 1, 128, {800},          20, 0, 100, 0.1f, 1e9f}, 1, 1),
      // Beyond one 2048-row resolver chunk of the prefill kernel: thousands of selected segments
      // (1-3 rows) and estimated clusters spanning several chunks, and one segment spanning ten.
      with_lookup({"prefill d128 g4 lq64 est ra chunks", 128, 4, 2, 64, {20011, 5003},   2, 0, 50, 0.1f, 1.5f}, 1, 1),
      with_lookup({"prefill d64 g3 lq40 hier est chunks", 64, 3, 2, 40, {12007},          3, 4, 30, 0.1f, 1.f}, 1, 0),
      {"prefill d128 g1 lq50 all chunks", 128, 1, 2, 50, {9001, 4100},                     2, 0, 20, 0.1f, -1.f},
      // The warp-specialized kernel's paths (ws_rel): one consumer (64 rows) over a two-level index
      // with the estimate and top keys; two consumers over hundreds of tiles (the stage ring wraps
      // many times; chunks of 2048 rows; split ranges).
      with_lookup({"prefill d128 g1 lq64 hier est ra", 128, 1, 2, 64, {6007, 2500},       8, 4, 40, 0.1f, 1.f}, 1, 1),
      {"prefill d128 g2 lq100 long",   128, 2, 2, 100, {24001, 7001},                        3, 0, 64, 0.1f, 1.f},
      {"prefill d64 g2 lq17 huge cluster", 64, 2, 1, 17, {20000},                      20000, 0, 30, 0.f, -1.f},
      // The same with Selection::estimate_logits: decode takes the estimate's logits from the
      // selection (fast path and hierarchical children); prefill must ignore them.
      with_lookup({"decode d128 g4 est logits batch3", 128, 4, 2, 1, {3077, 1501, 64},   3, 0, 5, 0.1f, 1.f}, 1, 0, true),
      with_lookup({"decode d64 g3 est ra logits",   64, 3, 4, 1, {5003, 1200},            3, 0, 30, 0.1f, 1.f}, 1, 1, true),
      with_lookup({"decode d128 g8 hier est ra logits", 128, 8, 2, 1, {4001, 900},       10, 6, 50, 0.1f, 1.5f}, 1, 1, true),
      with_lookup({"decode d64 g1 hier est logits", 64, 1, 3, 1, {999},                  10, 5, 3, 0.3f, 1.f}, 1, 0, true),
      with_lookup({"decode d128 g7 est logits 3 ctas", 128, 7, 2, 1, {9001, 2002, 17},    2, 0, 40, 0.1f, 1.f, false, false, 3}, 1, 1, true),
      with_lookup({"decode d128 g6 mixed logits batch4", 128, 6, 2, 1, {6007, 333, 2500, 1200}, 4, 0, 20, 0.1f, 1.f}, 2, 2, true),
      with_lookup({"decode d64 g5 hier per-head logits", 64, 5, 2, 1, {4000, 2000},       6, 8, 60, 0.1f, 1.5f, false, true}, 1, 1, true),
      with_lookup({"decode d64 g2 est ra logits batch2", 64, 2, 3, 1, {5003, 777},       3, 0, 20, 0.1f, 1.f}, 1, 1, true),
      with_lookup({"decode d128 g1 est logits batch2", 128, 1, 4, 1, {9001, 2002},       3, 0, 30, 0.1f, 1.f}, 1, 0, true),
      with_lookup({"prefill d128 g4 lq64 est ra logits", 128, 4, 2, 64, {3001, 1200},     5, 0, 50, 0.1f, 1.f}, 1, 1, true),
      // Two-level decode past one chunk at both levels (coarse: several 256-centroid stream CTAs
      // and 1024-candidate compaction CTAs; children: thousands of candidates over several chunks),
      // sequences of different sizes in one launch, everything kept (every coarse cluster expanded).
      with_lookup({"decode d128 g4 hier chunks batch2", 128, 4, 2, 1, {40003, 9001},     2, 4, 50, 0.1f, 1.f}, 1, 1, true),
      with_lookup({"decode d64 g1 hier chunks all",  64, 1, 2, 1, {30011},                3, 6, 20, 0.1f, -1.f}, 1, 0, true),
      with_lookup({"decode d128 g7 hier chunks mixed", 128, 7, 2, 1, {25007, 333, 12001},  2, 5, 40, 0.1f, 1.5f, false, true}, 2, 2, true),
      // Dozens of compaction chunks per head (the look-back's lanes take several chunks each): one
      // level, and two levels with everything kept (75000 children candidates, 74 chunks).
      {"decode d64 g2 many chunks",     64, 2, 2, 1, {140001, 3001},            2, 0, 20, 0.1f, 1.f},
      with_lookup({"decode d128 g4 hier many chunks all", 128, 4, 1, 1, {150001},    2, 4, 30, 0.1f, -1.f}, 1, 0, true),
      // Every coarse cluster pruned: no children candidates, the estimate is the coarse level's alone.
      with_lookup({"decode d128 g4 hier est none sel", 128, 4, 2, 1, {4001, 900},    10, 6, 50, 0.1f, 1e9f}, 1, 0, true),
      // A head of more pieces than the attention's merge stages in shared memory at once (25 at
      // D = 128 and G = 8, 27 at D = 64): ~157 pieces in 7 batches, ~235 in 9 (with the top key).
      {"decode d128 g8 many pieces all", 128, 8, 1, 1, {20014},                 3, 0, 100, 0.1f, -1.f},
      with_lookup({"decode d64 g8 est ra many pieces", 64, 8, 1, 1, {30011},        3, 0, 40, 0.1f, -1.f}, 1, 1, true),
      // Several waves of CTAs (as DecodeLaunch::waves gives): ~290 rows each, more CTAs than fit.
      with_lookup({"decode batch4 d128 g4 ra 1100 ctas", 128, 4, 2, 1, {40009, 40009, 40009, 40009}, 3, 0, 40, 0.1f, -1.f, false, false, 1100}, 0, 1),
      // The estimate floor (SelectionParams::estimate_floor): only pruned clusters scoring at least
      // that fraction of the threshold are estimated, on every selection path (decode stream, both
      // levels; tensor-core prefill; generic two-level prefill; the stream for small blocks).
      with_floor(with_lookup({"decode d128 g4 est floor", 128, 4, 2, 1, {9001, 2002},        3, 0, 30, 0.1f, 1.f}, 1, 0, true), 0.0625f),
      with_floor(with_lookup({"decode d64 g1 est ra floor batch2", 64, 1, 3, 1, {5003, 777}, 3, 0, 20, 0.1f, 1.f}, 1, 1, true), 0.25f),
      with_floor(with_lookup({"decode d128 g4 hier est floor", 128, 4, 2, 1, {20011},        2, 4, 30, 0.1f, 1.f}, 1, 1, true), 0.0625f),
      with_floor(with_lookup({"prefill d128 g4 lq64 est ra floor", 128, 4, 2, 64, {3001, 1200}, 5, 0, 50, 0.1f, 1.f}, 1, 1), 0.0625f),
      with_floor(with_lookup({"prefill d64 g3 lq40 hier est floor", 64, 3, 2, 40, {12007},   3, 4, 30, 0.1f, 1.f}, 1, 0), 0.25f),
      with_floor(with_lookup({"prefill d64 g2 lq3 fast est floor", 64, 2, 2, 3, {4103, 900}, 2, 0, 20, 0.1f, 1.f}, 1, 1), 0.0625f),
      // The split's piece start charge (DecodeLaunch::piece_start_rows): the plain equal split; a
      // charge of a quarter of each small CTA's range (ranges that only meet a charge have no piece
      // of that head); a charge of one row; many heads on few CTAs (4 * CTAs <= heads: no charge).
      with_start_cost({"decode batch17 d64 g2 plain split", 64, 2, 2, 1, {9001, 40, 50, 60, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400, 1500, 1600}, 3, 0, 30, 0.1f, 1.f}, 0),
      with_start_cost({"decode batch10 d128 g4 hier 7 ctas charged", 128, 4, 2, 1, {12007, 3000, 4001, 900, 2500, 7000, 333, 12001, 5003, 1200}, 5, 8, 100, 0.1f, 1.5f, false, false, 7}, 1 << 20),
      with_start_cost(with_lookup({"decode d128 g7 est ra 5 ctas charged", 128, 7, 2, 1, {9001, 2002, 17}, 2, 0, 40, 0.1f, 1.f, false, false, 5}, 1, 1, true), 1 << 20),
      with_start_cost({"decode d64 g4 3 ctas charge 1", 64, 4, 4, 1, {9001, 2002, 17},    2, 0, 40, 0.2f, 1.f, false, false, 3}, 1),
      with_start_cost({"decode batch17 d64 g2 4 ctas charged", 64, 2, 2, 1, {9001, 40, 50, 60, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400, 1500, 1600}, 3, 0, 30, 0.1f, 1.f, false, false, 4}, 1 << 20),
      // Heads aligned to CTAs (the default grid over few heads, DecodeLaunch::align_heads: every
      // case above without a CTA count) and the flat split over the same many-CTA grid.
      unaligned(with_lookup({"decode d128 g4 est ra unaligned", 128, 4, 2, 1, {20011, 4001}, 2, 0, 30, 0.1f, 1.f}, 1, 1, true)),
      unaligned(with_lookup({"decode d64 g1 hier est unaligned", 64, 1, 3, 1, {9001}, 3, 5, 20, 0.1f, 1.f}, 1, 0, true)),
      // The estimate's rows spread over CTAs: few CTAs, so each head's estimate spans several of
      // them, and many, so most ranges are shorter than a head.
      with_lookup({"decode d128 g4 hier est ra 3 ctas", 128, 4, 2, 1, {20011, 4001}, 2, 4, 30, 0.1f, 1.f, false, false, 3}, 1, 1, true),
      with_lookup({"decode d64 g3 est 7 ctas", 64, 3, 2, 1, {9001, 2002, 17}, 2, 0, 40, 0.1f, 1.f, false, false, 7}, 1, 0, true),
      with_lookup({"decode batch6 d128 g8 est ra logits", 128, 8, 1, 1, {6007, 333, 2500, 1200, 50, 9001}, 3, 0, 20, 0.1f, 1.f}, 2, 2, true),
      with_lookup({"decode batch6 d64 g1 hier est logits", 64, 1, 2, 1, {6007, 333, 2500, 1200, 50, 9001}, 3, 5, 20, 0.1f, 1.f}, 1, 0, true),
  };
  if (small) {  // compute-sanitizer: one case per path and feature, small shapes
    const std::vector<std::string> names = {
        "decode d128 g4 batch3", "decode d128 g4 hier", "prefill d64 g4 lq37 hier", "prefill d64 g2 lq3 fast sel",
        "decode d128 g4 per-head tau", "decode d128 g4 hier per-head", "decode d64 g4 batch3", "decode d64 g4 3 ctas",
        "decode d128 g8 2 ctas all", "decode d64 g3", "prefill d128 g7 lq33", "decode d64 g6 hier",
        "decode d128 g8 hier est ra", "decode d128 g7 est ra 3 ctas", "decode d128 g4 mixed batch4",
        "prefill d128 g4 lq64 est ra", "prefill d64 g3 lq100 hier est ra", "prefill d128 g6 lq37 mixed per-head",
        "decode d128 g8 hier est ra logits", "decode d128 g7 est logits 3 ctas", "prefill d64 g2 lq17 huge cluster",
        "prefill d64 g3 lq40 hier est chunks", "decode d128 g4 hier chunks batch2", "decode d128 g4 est floor",
        "decode d128 g8 many pieces all", "decode d64 g3 est ra logits", "prefill d128 g4 lq64 est ra floor",
        "prefill d128 g1 lq64 hier est ra", "decode d64 g2 many chunks",
        "decode batch10 d128 g4 hier 7 ctas charged", "decode d128 g7 est ra 5 ctas charged",
        "decode d128 g4 hier est ra 3 ctas", "decode d128 g4 est ra unaligned"};
    std::vector<Case> picked;
    for (const Case& c : cases)
      if (std::find(names.begin(), names.end(), c.name) != names.end()) picked.push_back(c);
    cases = picked;
  }
  if (!filter.empty())
    cases.erase(std::remove_if(cases.begin(), cases.end(),
                               [&](const Case& c) { return c.name.find(filter) == std::string::npos; }),
                cases.end());
  // Columns: est = clusters estimated (GPU) and est_diff (estimate lists not explained by the
  // selection difference); logit = max relative error of Selection::estimate_logits (decode logits
  // cases); forced = read-ahead clusters missing from the selection / forced; top = top-key rows
  // failing the check / rows, share_err = max |share - ref|. Prefill rows run split-K as the launch
  // chooses (these small grids split); one_rel = attn_rel of the same launch unsplit, ws_rel the
  // warp-specialized kernel's (the worse of split and unsplit; D = 128 on sm_90a), skip_rel with
  // skip_padding_warps (inf: one of that launch's checks failed); attn_rel runs without it. var =
  // decode selections of B > 1 only: the words that differ between the shared and the
  // per-sequence centroid stream over one index, 0 to pass. chain = decode only: the output words
  // that differ between two chained steps (selection, attention on persistent tickets; PDL on
  // sm_90+) and the checked launch, plus 1000 per ticket left non-zero; 0 to pass.
  std::printf("%-40s %2s %12s %8s %8s %5s %8s %9s %9s %9s %9s %9s %8s %11s %9s %4s %4s %5s %s\n", "case", "B",
              "sel/cand", "sel_diff", "est", "e_dif", "logit", "attn_rel", "one_rel", "skip_rel", "ws_rel", "lse_err",
              "forced", "top", "share_err", "cmp", "var", "chain", "result");
  bool all = true;
  uint64_t seed = std::random_device{}();
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--seed") seed = std::stoull(argv[i + 1]);  // to replay a run
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  for (const Case& c : cases) {
    std::printf("%-40s ", c.name.c_str());  // before the run: a crash still names its case
    const uint64_t case_seed = seed++;
    all &= isolated([&] {
      const Result r = run_case(c, case_seed);
      char frac[32], est[24], forced[24], top[24], one[24], skip[24], ws[24], var[24], chain[24];
      std::snprintf(frac, sizeof frac, "%d/%d", r.selected, r.candidates);
      std::snprintf(est, sizeof est, r.estimated < 0 ? "-" : "%lld", r.estimated);
      std::snprintf(forced, sizeof forced, "%d/%d", r.forced_missing, r.forced);
      std::snprintf(top, sizeof top, "%d/%d", r.top_mismatch, r.top_rows);
      std::snprintf(one, sizeof one, r.unsplit_rel < 0 ? "-" : "%.2e", r.unsplit_rel);
      std::snprintf(skip, sizeof skip, r.skip_rel < 0 ? "-" : "%.2e", r.skip_rel);
      std::snprintf(ws, sizeof ws, r.ws_rel < 0 ? "-" : "%.2e", r.ws_rel);
      std::snprintf(var, sizeof var, r.variant_diff < 0 ? "-" : "%d", r.variant_diff);
      std::snprintf(chain, sizeof chain, r.chained_diff < 0 ? "-" : "%d", r.chained_diff);
      std::printf("%2zu %12s %8.0f %8s %5lld %8.1e %9.2e %9s %9s %9s %9.2e %8s %11s %9.2e %4s %4s %5s %s\n",
                  c.rows.size(), frac, r.sel_mismatch, est, r.estimate_diff, r.logit_err, r.attn_rel, one, skip, ws,
                  r.lse_err, forced, top, r.share_err, r.comparisons_ok ? "ok" : "BAD", var, chain,
                  r.pass ? "PASS" : "FAIL");
      return r.pass;
    });
  }
  all &= isolated([&] { return run_norm_rope_checks(seed); });
  all &= isolated([&] { return run_read_ahead_checks(seed + 1000); });
  all &= isolated([&] { return run_bundle_checks(seed + 3000); });
  std::printf("%s\n", all ? "ALL PASS" : "SOME FAILED");
  return all ? 0 : 1;
}
