// The shared-context bundle launch alone (engine/kernel_attention.h "Shared context"): eight dense
// questions decoding on one stored context, launched as the engine launches them (bundles of
// 32 / G questions' query heads, one sequence each; before, 16 / G) and as before bundles (one
// sequence per question), each timed alone with the L2 flushed; the bundles also with their merge deferred
// (DecodeLaunch::defer_merge + merge_decode_pieces), one question alone (batch 1's launch), the
// own tokens' launch (96 rows a question) on one wave, 16 CTAs a head and the device's grid, and
// the engine's whole layer at batch 8 with the own tokens before or beside the bundle
// (time_layer). The engine's step profile shows only the sum;
// this shows whether a change to the bundles moves their launch (bench/kernels/NOTES.md run 25:
// the bundles are bound by their tail, not by DRAM, which Nsight Compute over this program shows:
// `ncu --kernel-name regex:decode_kernel --metrics gpu__time_duration.sum,dram__bytes_read.sum`).
//   bundle_bench [--context N] [--ctas N] [--out FILE] [--trace] [--squeezed F]
// --squeezed F (default 0.12; 0: none): also the squeezed questions' attention at batch 8 (kernels/
// bundle_selection.h), each question keeping a random share F of the clusters (~20 rows each) of
// each KV head, independently (as on this repo's random-weight checkpoints): one sequence per
// question over its own rows (the engine's today) against the union of their selections
// (bundle_selections) and one masked bundle launch over it, the union's time also alone.
// --ctas N: every launch on N CTAs (DecodeLaunch::num_ctas) instead of the device's (fewer, longer
// pieces per head: fewer partials to merge, fewer warps streaming).
// --trace (a build configured with -DSQZ_DECODE_TRACE=ON): each row's per-CTA phases from the
// decode kernel's trace (kernels/decode_attention.h set_decode_trace): when the CTAs finish
// streaming, how long the partials and the heads' merges take, when the last one ends (the
// squeezed rows too: their decode launch of the last rep).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/kernels/device_layer.h"
#include "kernels/bundle_selection.h"
#include "kernels/decode_attention.h"

namespace squeezeserve::kernels::bench {
namespace {

constexpr int kQuestions = 8;
constexpr int kReps = 20;
constexpr size_t kFlushBytes = size_t{256} << 20;  // past the L2 of an H100 / H200
constexpr int kMaxTracedCtas = 4096;

struct Row {
  const char* model;
  int hkv, g_model;
  const char* layout;
  int sequences, group;  // the launch: sequences of `group` query heads per KV head
  bool deferred;         // DecodeLaunch::defer_merge, then merge_decode_pieces (timed together)
  int rows = 0;          // rows a sequence (0: --context)
  int ctas = -1;         // DecodeLaunch::num_ctas (-1: --ctas)
  bool one_wave = false; // DecodeLaunch::one_wave_per_heads
};

// A select-all dense selection of `heads` heads of n rows each (the engine's context as cluster 0), or
// of none (n = 0: the own tokens' launch attends the dense rows alone).
struct DenseHeads {
  DeviceSelection dev;
  const Selection& sel() const { return dev.sel; }
  DenseHeads(int heads, int n) : dev(heads, 1) {
    const std::vector<int32_t> zeros(heads, 0), counts(heads, n > 0 ? 1 : 0), rows(heads, n);
    CUDA_OK(cudaMemcpy(dev.sel.cluster_ids, zeros.data(), 4 * heads, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dev.sel.row_start, zeros.data(), 4 * heads, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dev.sel.counts, counts.data(), 4 * heads, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dev.sel.rows, rows.data(), 4 * heads, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dev.sel.comparisons, zeros.data(), 4 * heads, cudaMemcpyHostToDevice));
  }
};

// A dense layer of `rows` rows a KV head at D = 128: the engine's dense bundle reads its context as
// one selected cluster; the own tokens are their own launch (no dense rows).
SyntheticSpec dense_layer_spec(int hkv, int rows, uint64_t seed) { return layer_spec(hkv, 128, rows, rows, 0, seed); }

double quantile(std::vector<double> v, double f) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(f * (v.size() - 1))];
}

// Phases per CTA (decode_attention.cu DECODE_TRACE: 0 start, 2 split done, 3 first piece
// streamed, 4 its partial written, 5 its merge done, 6 end), relative to the first CTA's start.
void print_trace(const std::vector<unsigned long long>& tr, int ctas) {
  auto at = [&](int c, int e) { return tr[(static_cast<size_t>(c) * kDecodeTraceEvents + e) * 2]; };
  unsigned long long t0 = ~0ull, t_end = 0;
  for (int c = 0; c < ctas; ++c)
    if (at(c, 0) != 0) t0 = std::min(t0, at(c, 0)), t_end = std::max(t_end, at(c, 6));
  std::vector<double> started, split, streamed, partial, merge, end;
  for (int c = 0; c < ctas; ++c) {
    if (at(c, 0) == 0 || at(c, 3) == 0) continue;  // no piece
    started.push_back((at(c, 0) - t0) / 1e3);
    split.push_back((at(c, 2) - at(c, 0)) / 1e3);
    streamed.push_back((at(c, 3) - t0) / 1e3);
    partial.push_back((at(c, 4) - at(c, 3)) / 1e3);
    merge.push_back((at(c, 5) - at(c, 4)) / 1e3);
    end.push_back((at(c, 6) - t0) / 1e3);
  }
  std::printf("    trace (us): %zu CTAs with a piece; started last %.1f; split median %.1f; streamed median %.1f, "
              "last %.1f; partial median %.1f; merge longest %.1f; end median %.1f, p75 %.1f, p90 %.1f, last %.1f "
              "(span %.1f)\n",
              streamed.size(), quantile(started, 1), quantile(split, 0.5), quantile(streamed, 0.5),
              quantile(streamed, 1), quantile(partial, 0.5),
              quantile(merge, 1), quantile(end, 0.5), quantile(end, 0.75), quantile(end, 0.9), quantile(end, 1),
              (t_end - t0) / 1e3);
}


// Random selections of `questions` sequences x hkv heads keeping a share `keep` of the clusters of
// `view` (host offsets), ascending; returns the rows each (sequence, head) selected. Where `dev`
// has the estimate's arrays, every pruned non-empty cluster is estimated (estimate floor 0), with
// random logits.
std::vector<int32_t> random_squeezed(const SequenceLayerF32& view, int questions, int hkv, float keep, uint64_t seed,
                                     DeviceSelection* dev) {
  const int K = view.num_clusters;
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<int32_t> ids(static_cast<size_t>(questions) * hkv * K, 0), starts(ids.size(), 0),
      counts(questions * hkv), rows(questions * hkv), zeros(questions * hkv, 0);
  std::vector<int32_t> est_ids(ids.size(), 0), estimated(counts.size(), 0);
  for (int x = 0; x < questions * hkv; ++x) {
    const int32_t* off = view.offsets + static_cast<int64_t>(x % hkv) * (K + 1);
    int e = 0;
    const auto [n, r] = pick_clusters(
        off, K,
        [&](int j) {
          if (u(rng) < keep) return true;
          if (off[j + 1] > off[j]) est_ids[static_cast<size_t>(x) * K + e++] = j;
          return false;
        },
        &ids[static_cast<size_t>(x) * K], &starts[static_cast<size_t>(x) * K]);
    counts[x] = n;
    rows[x] = r;
    estimated[x] = e;
  }
  if (dev->sel.estimate_ids != nullptr) {
    CUDA_OK(cudaMemcpy(dev->sel.estimate_ids, est_ids.data(), 4 * est_ids.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dev->sel.estimated, estimated.data(), 4 * estimated.size(), cudaMemcpyHostToDevice));
    const std::vector<float> logits = random_normal(static_cast<int64_t>(est_ids.size()) * kMaxGroup, seed + 1);
    CUDA_OK(cudaMemcpy(dev->sel.estimate_logits, logits.data(), 4 * logits.size(), cudaMemcpyHostToDevice));
  }
  CUDA_OK(cudaMemcpy(dev->sel.cluster_ids, ids.data(), 4 * ids.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dev->sel.row_start, starts.data(), 4 * starts.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dev->sel.counts, counts.data(), 4 * counts.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dev->sel.rows, rows.data(), 4 * rows.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dev->sel.comparisons, zeros.data(), 4 * zeros.size(), cudaMemcpyHostToDevice));
  return rows;
}

// The squeezed questions of one layer at batch 8 (see --squeezed): "own rows" (one sequence per
// question), "union alone" (bundle_selections of one bundle of 8), "union + bundle of 8" (it, the
// masked launch of that bundle, G = 8 g, merge deferred, and merge_decode_pieces, as the engine's
// dense bundles), "unions + 2 bundles of 4" (G = 4 g: a single warp's 16 query rows at Llama-3's
// group, where 32 take pairs of warps) and "unions + 4 bundles of 2" (G = 2 g: 8 query rows at
// Llama-3's group, no more MMA work than a question's own); then the same with the pruned-cluster
// estimate (every pruned non-empty cluster, as the default lookup with estimate floor 0): each
// question's own launch with its estimate logits (the wide tiles), against the bundles with the
// estimate in them (Selection::estimate_masks: each cluster's centroid and mean value read once
// per bundle). One stream, L2 flushed before each rep, median us; prints and appends JSON rows
// with the rows read (the unions', or the questions' own added up; estimated clusters not counted).
// trace_buf (--trace): each layout's decode launch of its last rep traced (print_trace: whether
// some CTAs stream much longer than the median, e.g. those holding a head's estimated rows).
void time_squeezed(const char* model, int hkv, int g, int context, float keep, void* flush, FILE* json,
                   unsigned long long* trace_buf) {
  const DeviceLayer layer(layer_spec(hkv, 128, context, 20, 0, 5), /*lookup_window=*/0);
  const SequenceLayerF32 host_view = layer.host.view();
  const int K = host_view.num_clusters;
  DeviceSelection own(kQuestions * hkv, K, K, /*logits=*/true), un(4 * hkv, K, K);
  const std::vector<int32_t> own_rows = random_squeezed(host_view, kQuestions, hkv, keep, 17, &own);
  uint32_t* d_est_masks = upload(std::vector<uint32_t>(static_cast<size_t>(4 * hkv) * K, 0u));
  float* d_est_log_sizes = upload(std::vector<float>(static_cast<size_t>(4 * hkv) * K, 0.f));
  std::vector<int32_t> slots(kQuestions);
  for (int m = 0; m < kQuestions; ++m) slots[m] = m;
  int32_t* d_slots = upload(slots);  // one bundle of 8, or (the same array) two of 4 or four of 2
  uint32_t* d_masks = upload(std::vector<uint32_t>(static_cast<size_t>(4 * hkv) * K, 0u));
  SequenceLayerBf16* d_views = upload(std::vector<SequenceLayerBf16>(kQuestions, layer.dev));
  // Each question on its own, then one bundle of 8, two of 4, four of 2.
  AttentionShape each{}, bundles[3]{};
  each.batch = kQuestions;
  each.num_kv_heads = hkv;
  each.num_q_heads = hkv * g;
  each.head_dim = 128;
  for (int i = 0; i < 3; ++i) {
    bundles[i].batch = 1 << i;
    bundles[i].num_kv_heads = hkv;
    bundles[i].num_q_heads = hkv * g * (kQuestions >> i);
    bundles[i].head_dim = 128;
  }
  std::vector<float> q = random_normal(static_cast<int64_t>(kQuestions) * hkv * g * 128, 9, 1.f);
  uint16_t* d_q = upload(round_to_bf16(q));
  uint16_t* d_out = upload(std::vector<uint16_t>(q.size(), 0));
  float* d_lse = upload(std::vector<float>(q.size() / 128, 0.f));
  DecodeLaunch launch, deferred;
  deferred.defer_merge = true;
  void* ws = nullptr;
  CUDA_OK(cudaMalloc(&ws, std::max({decode_attention_workspace_bytes(each, launch),
                                    decode_attention_workspace_bytes(bundles[0], deferred),
                                    decode_attention_workspace_bytes(bundles[1], deferred),
                                    decode_attention_workspace_bytes(bundles[2], deferred)})));
  Selection masked = un.sel, estimating = un.sel, plain = own.sel;
  masked.member_masks = estimating.member_masks = d_masks;
  masked.member_group = estimating.member_group = g;
  masked.estimate_ids = masked.estimated = nullptr;
  estimating.estimate_masks = d_est_masks;
  estimating.estimate_log_sizes = d_est_log_sizes;
  plain.estimate_ids = plain.estimated = nullptr;
  plain.estimate_logits = nullptr;
  const BundleMembers members[3] = {{d_slots, 1, kQuestions}, {d_slots, 2, kQuestions / 2}, {d_slots, 4, kQuestions / 4}};
  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  constexpr int kKinds = 5;
  const char* layouts[] = {"squeezed, own rows",          "squeezed, union alone",
                           "squeezed, union + bundle of 8", "squeezed, unions + 2 bundles of 4",
                           "squeezed, unions + 4 bundles of 2",
                           "estimate, own rows",          "estimate, union alone",
                           "estimate, union + bundle of 8", "estimate, unions + 2 bundles of 4",
                           "estimate, unions + 4 bundles of 2"};
  const int rows_out = kQuestions * hkv * g;
  for (int layout = 0; layout < 2 * kKinds; ++layout) {
    const int kind = layout % kKinds;
    const bool est = layout >= kKinds;
    const int split = kind >= 2 ? kind - 2 : 0;  // bundles of 8 >> split
    const AttentionShape& shape = bundles[split];
    std::vector<double> us;
    for (int rep = 0; rep < kReps + 3; ++rep) {
      CUDA_OK(cudaMemsetAsync(flush, rep, kFlushBytes));
      const bool traced = trace_buf != nullptr && rep == kReps + 2;
      CUDA_OK(cudaEventRecord(e0));
      if (kind == 0) {
        if (traced) CUDA_OK(set_decode_trace(trace_buf, kMaxTracedCtas));
        CUDA_OK(sparse_decode_attention(each, d_views, d_q, est ? own.sel : plain, d_out, d_lse, ws, launch, nullptr));
        if (traced) CUDA_OK(set_decode_trace(nullptr, 0));
      } else {
        CUDA_OK(bundle_selections(members[split], hkv, d_views, est ? own.sel : plain, un.sel,
                                  d_masks, est ? d_est_masks : nullptr, est ? d_est_log_sizes : nullptr, nullptr));
        if (kind >= 2) {
          if (traced) CUDA_OK(set_decode_trace(trace_buf, kMaxTracedCtas));
          CUDA_OK(sparse_decode_attention(shape, d_views, d_q, est ? estimating : masked, nullptr, nullptr, ws, deferred,
                                          nullptr));
          if (traced) CUDA_OK(set_decode_trace(nullptr, 0));
          CUDA_OK(merge_decode_pieces(shape, deferred, ws, rows_out, nullptr, nullptr, nullptr, d_out, d_lse, nullptr,
                                      nullptr, {}, nullptr, /*masked=*/true));
        }
      }
      CUDA_OK(cudaEventRecord(e1));
      CUDA_OK(cudaEventSynchronize(e1));
      float ms = 0;
      CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
      if (rep >= 3) us.push_back(1e3 * ms);
    }
    long long rows_read = 0;
    if (kind == 0) {
      for (int32_t r : own_rows) rows_read += r;
    } else {
      for (int32_t r : download(un.sel.rows, (1 << split) * hkv)) rows_read += r;
    }
    const double bytes = 2.0 * 128 * 2 * rows_read, median = quantile(us, 0.5);
    const int seqs = kind == 0 ? kQuestions : 1 << split, group = g * kQuestions / seqs;
    std::printf("%-10s %-33s %4d %3d %10.1f %10.1f %10.2f  (%.3f of the context's rows)\n", model, layouts[layout],
                seqs, group, median, quantile(us, 0),
                kind == 1 ? 0.0 : bytes / (median * 1e-6) / 1e12,
                double(rows_read) / (double(context) * hkv));
    std::fprintf(json,
                 ",\n  {\"model\": \"%s\", \"layout\": \"%s\", \"sequences\": %d, \"group\": %d, \"rows\": %d, "
                 "\"keep\": %.3f, \"rows_read\": %lld, \"median_us\": %.2f, \"min_us\": %.2f}",
                 model, layouts[layout], seqs, group, context, keep, rows_read,
                 median, quantile(us, 0));
    if (trace_buf != nullptr && kind != 1) {
      print_trace(download(trace_buf, static_cast<size_t>(kMaxTracedCtas) * kDecodeTraceEvents * 2), kMaxTracedCtas);
      CUDA_OK(cudaMemset(trace_buf, 0, sizeof(unsigned long long) * kMaxTracedCtas * kDecodeTraceEvents * 2));
    }
  }
  CUDA_OK(cudaEventDestroy(e0));
  CUDA_OK(cudaEventDestroy(e1));
  for (void* p : std::vector<void*>{d_slots, d_masks, d_est_masks, d_est_log_sizes, d_views, d_q, d_out, d_lse, ws})
    CUDA_OK(cudaFree(p));
}

}  // namespace
// The engine's attention of one layer at batch 8, Llama-3-8B (engine/kernel_attention.cc): the 8
// dense questions' bundle over the context (32 query heads a KV head, merge deferred), their own
// tokens (96 rows each; here a selected cluster, as the rows above), then merge_decode_pieces with
// the own tokens as part B. "before": the own tokens first, then the bundle over a gathered copy
// of the queries (the engine's gather kernel, 3.5 us, not included), each launch waiting for the
// one before; "beside": the bundle reading the questions' rows through DecodeLaunch::q_rows, then
// the own tokens beside it on a workspace of their own (DecodeLaunch::next_beside /
// beside_previous). One stream, L2 flushed, the three launches timed together; us per rep.
std::vector<double> time_layer(const DeviceLayer& context, int context_rows, const DeviceLayer& own_tokens, bool beside,
                               int ctas, void* flush) {
  constexpr int kHkv = 8, kG = 4, kD = 128, kRows = kQuestions * kHkv * kG;
  AttentionShape bundled{}, own{};
  bundled.batch = 1;
  bundled.num_kv_heads = own.num_kv_heads = kHkv;
  bundled.num_q_heads = kHkv * kG * kQuestions;
  own.batch = kQuestions;
  own.num_q_heads = kHkv * kG;
  bundled.head_dim = own.head_dim = kD;
  bundled.query_len = own.query_len = 1;
  const DenseHeads context_sel(kHkv, context_rows), own_sel(kQuestions * kHkv, 96);
  SequenceLayerBf16* d_context = upload(std::vector<SequenceLayerBf16>{context.dev});
  SequenceLayerBf16* d_own_views = upload(std::vector<SequenceLayerBf16>(kQuestions, own_tokens.dev));
  std::vector<int32_t> a_row;
  std::vector<int64_t> q_rows;
  bundle_row_maps(kQuestions, kHkv, kG, &a_row, &q_rows);
  std::vector<float> q = random_normal(static_cast<int64_t>(kRows) * kD, 11, 1.f);
  const std::vector<uint16_t> q_bits = round_to_bf16(q);
  std::vector<uint16_t> gathered(q_bits.size());
  for (int br = 0; br < kRows; ++br) std::copy_n(q_bits.begin() + q_rows[br] * kD, kD, gathered.begin() + br * kD);
  uint16_t* d_q = upload(q_bits);
  uint16_t* d_q_gathered = upload(gathered);
  int64_t* d_q_rows = upload(q_rows);
  int32_t* d_a_row = upload(a_row);
  int32_t* d_tickets = upload(std::vector<int32_t>(kQuestions * kHkv, 0));
  uint16_t* d_own_out = upload(std::vector<uint16_t>(q.size(), 0));
  uint16_t* d_out = upload(std::vector<uint16_t>(q.size(), 0));
  float* d_own_lse = upload(std::vector<float>(kRows, 0.f));
  DecodeLaunch bundle_launch, own_launch;
  bundle_launch.num_ctas = ctas;
  bundle_launch.defer_merge = true;
  bundle_launch.static_selection = true;
  own_launch.one_wave_per_heads = true;
  own_launch.static_selection = true;
  own_launch.tickets = d_tickets;
  if (beside) {
    bundle_launch.next_beside = true;
    bundle_launch.q_rows = d_q_rows;
    own_launch.beside_previous = true;
  }
  const size_t own_at = (decode_attention_workspace_bytes(bundled, bundle_launch) + 255) / 256 * 256;
  unsigned char* ws = nullptr;
  CUDA_OK(cudaMalloc(&ws, own_at + decode_attention_workspace_bytes(own, own_launch)));
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  std::vector<double> us;
  for (int rep = 0; rep < kReps + 3; ++rep) {  // 3 warm-up reps
    CUDA_OK(cudaMemsetAsync(flush, rep, kFlushBytes, st));
    CUDA_OK(cudaEventRecord(e0, st));
    auto own_launch_now = [&] {
      CUDA_OK(sparse_decode_attention(own, d_own_views, d_q, own_sel.sel(), d_own_out, d_own_lse, ws + own_at,
                                      own_launch, st));
    };
    if (!beside) own_launch_now();
    CUDA_OK(sparse_decode_attention(bundled, d_context, beside ? d_q : d_q_gathered, context_sel.sel(), nullptr, nullptr,
                                    ws, bundle_launch, st));
    if (beside) own_launch_now();
    CUDA_OK(merge_decode_pieces(bundled, bundle_launch, ws, kRows, d_a_row, d_own_out, d_own_lse, d_out, nullptr, st));
    CUDA_OK(cudaEventRecord(e1, st));
    CUDA_OK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
    if (rep >= 3) us.push_back(1e3 * ms);
  }
  CUDA_OK(cudaEventDestroy(e0));
  CUDA_OK(cudaEventDestroy(e1));
  CUDA_OK(cudaStreamDestroy(st));
  for (void* p : std::vector<void*>{d_context, d_own_views, d_q, d_q_gathered, d_q_rows, d_a_row, d_tickets, d_own_out,
                                    d_out, d_own_lse, ws})
    CUDA_OK(cudaFree(p));
  return us;
}

}  // namespace squeezeserve::kernels::bench

int main(int argc, char** argv) {
  using namespace squeezeserve::kernels;
  using namespace squeezeserve::kernels::bench;
  int context = 33000, ctas = 0;
  std::string out_path = "bundle_bench.json";
  bool trace = false;
  float squeezed = 0.12f;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--context") && i + 1 < argc) context = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--ctas") && i + 1 < argc) ctas = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
    else if (!std::strcmp(argv[i], "--trace")) trace = true;
    else if (!std::strcmp(argv[i], "--squeezed") && i + 1 < argc) squeezed = std::strtof(argv[++i], nullptr);
    else {
      std::fprintf(stderr, "usage: bundle_bench [--context N >= 1024] [--ctas N >= 0] [--out FILE] [--trace] "
                           "[--squeezed F in [0, 1]]\n");
      return 2;
    }
  }
  if (context < 1024 || ctas < 0 || ctas > kMaxTracedCtas || !(squeezed >= 0.f && squeezed <= 1.f)) {
    std::fprintf(stderr, "bundle_bench: --context must be at least 1024 and --ctas 0 (the device's) to %d\n",
                 kMaxTracedCtas);
    return 2;
  }
  unsigned long long* trace_buf = nullptr;
  if (trace) {
    if (set_decode_trace(nullptr, 0) == cudaErrorNotSupported) {
      std::fprintf(stderr, "bundle_bench: --trace needs a build configured with -DSQZ_DECODE_TRACE=ON\n");
      return 2;
    }
    CUDA_OK(cudaMalloc(&trace_buf, sizeof(unsigned long long) * kMaxTracedCtas * kDecodeTraceEvents * 2));
    CUDA_OK(cudaMemset(trace_buf, 0, sizeof(unsigned long long) * kMaxTracedCtas * kDecodeTraceEvents * 2));
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  void* flush = nullptr;
  CUDA_OK(cudaMalloc(&flush, kFlushBytes));

  // The engine's bundles: 32 / G questions each (kernel_attention.cc kMaxBundleGroup): "one bundle
  // of 8" (pairs of warps, 32 query heads a KV head); before, 16 / G ("bundles", two for Llama-3).
  // "merged after": the bundles' launch with its merge deferred to merge_decode_pieces (the engine's
  // since run 26); "one question": batch 1's dense launch, for comparison.
  const std::vector<Row> rows = {
      {"llama3-8b", 8, 4, "bundles, merged in", 2, 16, false},
      {"llama3-8b", 8, 4, "bundles, merged after", 2, 16, true},
      {"llama3-8b", 8, 4, "one bundle alone", 1, 16, false},
      {"llama3-8b", 8, 4, "one bundle of 8, after", 1, 32, true},
      {"llama3-8b", 8, 4, "one bundle of 8, in", 1, 32, false},
      {"llama3-8b", 8, 4, "one sequence each", kQuestions, 4, false},
      {"llama3-8b", 8, 4, "one question", 1, 4, false},
      {"llama2-7b", 32, 1, "bundles, merged in", 1, 8, false},
      {"llama2-7b", 32, 1, "bundles, merged after", 1, 8, true},
      {"llama2-7b", 32, 1, "one sequence each", kQuestions, 1, false},
      {"llama2-7b", 32, 1, "one question", 1, 1, false},
      // The own tokens' launch (the engine's, before the bundles'): 8 questions of 96 rows each.
      {"llama3-8b", 8, 4, "own tokens, one wave", kQuestions, 4, false, 96, 0, true},
      {"llama3-8b", 8, 4, "own tokens, 16 a head", kQuestions, 4, false, 96, 16 * kQuestions * 8},
      {"llama3-8b", 8, 4, "own tokens, device grid", kQuestions, 4, false, 96, 0},
  };
  FILE* json = std::fopen(out_path.c_str(), "w");
  if (json == nullptr) {
    std::fprintf(stderr, "bundle_bench: cannot write %s\n", out_path.c_str());
    return 2;
  }
  std::fprintf(json, "{\"device\": \"%s\", \"context\": %d, \"questions\": %d, \"ctas\": %d, \"rows\": [\n",
               prop.name, context, kQuestions, ctas);
  std::printf("%s, %d context rows, %d dense questions; each launch alone, L2 flushed, median of %d\n", prop.name,
              context, kQuestions, kReps);
  std::printf("%-10s %-22s %4s %3s %10s %10s %10s\n", "model", "layout", "seqs", "G", "median us", "min us",
              "TB/s once");
  const char* last_model = "";
  int last_rows = 0;
  DeviceLayer* layer = nullptr;
  for (size_t r = 0; r < rows.size(); ++r) {
    const Row& row = rows[r];
    const int n = row.rows > 0 ? row.rows : context;
    if (std::strcmp(row.model, last_model) != 0 || n != last_rows) {  // one context per model: the questions share it
      delete layer;
      layer = new DeviceLayer(dense_layer_spec(row.hkv, n, 3));
      last_model = row.model;
      last_rows = n;
    }
    AttentionShape shape;
    shape.batch = row.sequences;
    shape.num_kv_heads = row.hkv;
    shape.num_q_heads = row.hkv * row.group;
    shape.head_dim = 128;
    shape.query_len = 1;
    const int heads = row.sequences * row.hkv;
    std::vector<SequenceLayerBf16> views(row.sequences, layer->dev);  // every sequence: the same KV
    const DenseHeads sel(heads, n);
    SequenceLayerBf16* d_views = upload(views);
    std::vector<float> q = random_normal(static_cast<int64_t>(heads) * row.group * 128, 7 + r, 1.f);
    uint16_t* d_q = upload(round_to_bf16(q));
    uint16_t* d_out = upload(std::vector<uint16_t>(q.size(), 0));
    float* d_lse = upload(std::vector<float>(q.size() / 128, 0.f));
    DecodeLaunch launch;  // the engine's bundles: the default grid and split
    launch.num_ctas = row.ctas >= 0 ? row.ctas : ctas;
    launch.defer_merge = row.deferred;
    launch.one_wave_per_heads = row.one_wave;
    void* ws = nullptr;
    CUDA_OK(cudaMalloc(&ws, decode_attention_workspace_bytes(shape, launch)));
    cudaEvent_t e0, e1;
    CUDA_OK(cudaEventCreate(&e0));
    CUDA_OK(cudaEventCreate(&e1));
    std::vector<double> us;
    for (int rep = 0; rep < kReps + 3; ++rep) {  // 3 warm-up launches
      CUDA_OK(cudaMemsetAsync(flush, rep, kFlushBytes));
      const bool traced = trace && rep == kReps + 2;
      if (traced) CUDA_OK(set_decode_trace(trace_buf, kMaxTracedCtas));
      CUDA_OK(cudaEventRecord(e0));
      CUDA_OK(sparse_decode_attention(shape, d_views, d_q, sel.sel(), d_out, d_lse, ws, launch, nullptr));
      if (row.deferred) {
        CUDA_OK(merge_decode_pieces(shape, launch, ws, heads * row.group, nullptr, nullptr, nullptr, d_out, d_lse,
                                    nullptr));
      }
      CUDA_OK(cudaEventRecord(e1));
      CUDA_OK(cudaEventSynchronize(e1));
      if (traced) CUDA_OK(set_decode_trace(nullptr, 0));
      float ms = 0;
      CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
      if (rep >= 3) us.push_back(1e3 * ms);
    }
    const double kv_bytes = 2.0 * n * row.hkv * 128 * 2;  // K and V of one layer, once
    const double median = quantile(us, 0.5), best = quantile(us, 0);
    std::printf("%-10s %-22s %4d %3d %10.1f %10.1f %10.2f\n", row.model, row.layout, row.sequences, row.group, median,
                best, kv_bytes / (median * 1e-6) / 1e12);
    std::fprintf(json,
                 "%s  {\"model\": \"%s\", \"layout\": \"%s\", \"sequences\": %d, \"group\": %d, \"rows\": %d, "
                 "\"median_us\": %.2f, \"min_us\": %.2f, \"kv_bytes_once\": %.0f}",
                 r ? ",\n" : "", row.model, row.layout, row.sequences, row.group, n, median, best, kv_bytes);
    if (trace) {
      print_trace(download(trace_buf, static_cast<size_t>(kMaxTracedCtas) * kDecodeTraceEvents * 2), kMaxTracedCtas);
      CUDA_OK(cudaMemset(trace_buf, 0, sizeof(unsigned long long) * kMaxTracedCtas * kDecodeTraceEvents * 2));
    }
    CUDA_OK(cudaEventDestroy(e0));
    CUDA_OK(cudaEventDestroy(e1));
    for (void* p : std::vector<void*>{d_views, d_q, d_out, d_lse, ws}) CUDA_OK(cudaFree(p));
  }
  delete layer;
  // The engine's layer at batch 8, before and beside (time_layer), alternated twice.
  {
    const DeviceLayer context_layer(dense_layer_spec(8, context, 3)), own_layer(dense_layer_spec(8, 96, 4));
    for (int round = 0; round < 2; ++round)
      for (const bool beside : {false, true}) {
        const std::vector<double> us = time_layer(context_layer, context, own_layer, beside, ctas, flush);
        const char* layout = beside ? "layer b8, own beside" : "layer b8, own before";
        const double median = quantile(us, 0.5), best = quantile(us, 0);
        std::printf("%-10s %-22s %4d %3d %10.1f %10.1f %10s\n", "llama3-8b", layout, kQuestions, 4, median, best, "-");
        std::fprintf(json,
                     ",\n  {\"model\": \"llama3-8b\", \"layout\": \"%s\", \"sequences\": %d, \"group\": 4, "
                     "\"rows\": %d, \"round\": %d, \"median_us\": %.2f, \"min_us\": %.2f}",
                     layout, kQuestions, context, round, median, best);
      }
  }
  if (squeezed > 0.f) {
    time_squeezed("llama3-8b", 8, 4, context, squeezed, flush, json, trace_buf);
    time_squeezed("llama2-7b", 32, 1, context, squeezed, flush, json, trace_buf);
  }
  std::fprintf(json, "\n]}\n");
  std::fclose(json);
  CUDA_OK(cudaFree(flush));
  if (trace_buf) CUDA_OK(cudaFree(trace_buf));
  return 0;
}
