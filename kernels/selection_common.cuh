// Internal to the selection sources (not a public header): the problem every pass reads, the scratch
// layout, and the entry point of each path. Contract: selection.h; reference: selection_ref.cc.
//   selection.cu               host launcher: validation, scratch layout, which path runs
//   selection_decode.cu        R = Lq * g <= 8 query rows (decode), flat or two-level: per level one
//                              centroid stream + one chunked, single-pass compaction
//   selection_place.cuh        that compaction's steps (verdict, look-back, lists), shared by its
//                              kernel and the two-level children's fused stream
//   selection_tensor_core.cu   flat index, R > 8 rows (prefill blocks): the scoring GEMMs on tensor cores
//   selection_lse_wgmma.cu     its first GEMM (the LSE partials) on Hopper's wgmma
//   selection_generic.cu       CUDA-core passes for any level (two-level prefill blocks), plus the
//                              log-denominator merge and the ordered compaction the tensor-core path reuses
// Problem of one (sequence b, KV head h): R = Lq * g query rows (row r = token r / g, group member
// r % g) against the candidates of a level. Scores are fp32, denominators max-shifted. The cap on
// log p-hat (kMaxLogScore) bites only at the children level (fine centroids over the coarse
// denominator); with a level's own denominator log p-hat <= 0 (the decode path caps every level).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda_common.cuh"
#include "kernels/selection.h"
#include "kernels/softmax_state.cuh"

namespace squeezeserve::kernels::detail {

// CTA shape of the CUDA-core passes and the decode path: 8 warps.
constexpr int kTile = 32;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kTile / kWarps;  // 4

// Decode path (selection_decode.cu): candidates per centroid-stream CTA, per compaction CTA.
constexpr int kStreamChunk = 256;                    // 8 warps x 32
constexpr int kMaxSharedSequences = 8;               // per centroid-stream CTA (SelectionLaunch::shared_context)
constexpr int kMaxFastRows = 8;
constexpr int kSelectPer = 4;                        // candidates per compaction thread
constexpr int kSelectChunk = kThreads * kSelectPer;  // candidates per compaction CTA

// Tensor-core path (selection_tensor_core.cu): candidates per strip (one CTA of pass C).
constexpr int kTcWarps = 8;
constexpr int kTcThreads = kTcWarps * 32;
constexpr int kTcPerWarp = 32;                   // candidates per warp (4 n-tiles of 8)
constexpr int kTcStrip = kTcWarps * kTcPerWarp;  // 256

// Which clusters a level's candidates are. kChildren: the fine clusters under the kept coarse
// clusters, numbered consecutively in coarse order (the coarse compaction writes their ids).
enum class Level : int { kFlat = 0, kCoarse = 1, kChildren = 2 };

struct LevelArgs {
  Level level;
  // kChildren only: per bh, the fine cluster id of each candidate ([bh][capacity], written by the
  // coarse level's compaction) and how many there are.
  const int32_t* children;
  const int32_t* num_candidates;
  int capacity;
};

struct ProblemArgs {
  const SequenceLayerBf16* seqs;
  const __nv_bfloat16* q;  // [B][Lq][Hq][D]
  int lq, hq, hkv, g;
  float scale;
};

// Threshold of KV head h of sequence s at a level: the sequence's per-head array when it has one
// (SequenceLayer::tau_fine / tau_coarse, device memory), else the launch-wide SelectionParams value.
__device__ __forceinline__ float head_tau(const SequenceLayerBf16& s, const SelectionParams& params, bool coarse,
                                          int h) {
  if (coarse) return s.tau_coarse ? s.tau_coarse[h] : params.tau_coarse;
  return s.tau_fine ? s.tau_fine[h] : params.tau_fine;
}

// One (sequence, KV head)'s view of a level: what every path reads of its candidates.
struct HeadLevel {
  const __nv_bfloat16* centroids;  // this head's, of the level (children: the fine level); bf16
  const int32_t* fine_off;         // [K+1] of this head
  const int32_t* coarse_off;       // [Kc+1] of this head (null for one-level indexes)
  int num_candidates;              // candidates scored at this level for this bh
  const int32_t* children;         // kChildren: fine cluster id of each candidate
};

__device__ __forceinline__ HeadLevel head_level(const ProblemArgs& p, const LevelArgs& l, int b, int h, int d) {
  const SequenceLayerBf16& s = p.seqs[b];
  HeadLevel v{};
  v.fine_off = s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1);
  v.coarse_off = s.coarse_offsets ? s.coarse_offsets + static_cast<int64_t>(h) * (s.num_coarse + 1) : nullptr;
  if (l.level == Level::kCoarse) {
    v.centroids = as_bf16(s.coarse_centroids) + static_cast<int64_t>(h) * s.num_coarse * d;
    v.num_candidates = s.num_coarse;
  } else {
    v.centroids = as_bf16(s.centroids) + static_cast<int64_t>(h) * s.num_clusters * d;
    v.num_candidates = s.num_clusters;
  }
  if (l.level == Level::kChildren) {
    const int bh = b * p.hkv + h;
    v.num_candidates = l.num_candidates[bh];
    v.children = l.children + static_cast<int64_t>(bh) * l.capacity;
  }
  return v;
}

// Cluster id of candidate i (< num_candidates): one load for a child (it was a binary search over
// the kept coarse clusters, ~12 dependent loads, in every candidate tile and compaction step).
__device__ __forceinline__ int candidate_cluster(const HeadLevel& v, Level level, int i) {
  return level == Level::kChildren ? v.children[i] : i;
}

// Keys a cluster stands for: fine sizes, or the sum over a coarse cluster's contiguous children.
__device__ __forceinline__ int cluster_size(const HeadLevel& v, Level level, int c) {
  if (level == Level::kCoarse) return v.fine_off[v.coarse_off[c + 1]] - v.fine_off[v.coarse_off[c]];
  return v.fine_off[c + 1] - v.fine_off[c];
}

// Fine clusters under coarse cluster c (the candidates its keeping adds to the children level).
__device__ __forceinline__ int num_children(const HeadLevel& v, int c) { return v.coarse_off[c + 1] - v.coarse_off[c]; }

// Flags of a level's candidates (generic and tensor-core paths): bit 0 = kept (score above the
// threshold, or forced by read-ahead), bit 1 = live (a non-empty cluster: it was scored), bit 2 =
// live, not kept and at or above the estimate floor (estimated when the estimate is on).
constexpr uint8_t kFlagKeep = 1, kFlagLive = 2, kFlagEstimate = 4;

// Whether a live, not kept candidate with this score is one of the estimate's
// (SelectionParams::estimate_floor of its level's threshold tau).
__device__ __forceinline__ bool above_estimate_floor(float score, float tau, const SelectionParams& params) {
  return score >= params.estimate_floor * tau;
}

__device__ __forceinline__ uint8_t candidate_flags(bool live, bool keep, float score, float tau,
                                                   const SelectionParams& params) {
  const bool estimate = live && !keep && above_estimate_floor(score, tau, params);
  return (live ? kFlagLive : 0) | (keep ? kFlagKeep : 0) | (estimate ? kFlagEstimate : 0);
}

// Whether the pruned-cluster estimate runs for sequence s in a launch writing `out`.
__device__ __forceinline__ bool estimate_on(const SequenceLayerBf16& s, const Selection& out) {
  return out.estimated != nullptr && s.cluster_values != nullptr;
}

// Whether this launch writes Selection::estimate_logits: decode (one query row per group member).
__device__ __forceinline__ bool estimate_logits_on(const Selection& out, const ProblemArgs& p) {
  return out.estimate_logits != nullptr && p.lq == 1;
}

// Read-ahead: the clusters of KV head h of sequence s kept whatever their score, one per query
// head of the group (SequenceLayer::read_ahead), -1 = none; at the coarse level their parents.
// Every thread computes the same values (a few loads per CTA). With `coarse`, whole warps call it,
// converged.
struct ForcedClusters {
  int id[kMaxGroup];

  __device__ __forceinline__ void load(const SequenceLayerBf16& s, int h, int g, bool coarse) {
    const int K = s.num_clusters;
    const int32_t* off = s.offsets + static_cast<int64_t>(h) * (K + 1);
    const int n = s.read_ahead ? off[K] : 0;
#pragma unroll
    for (int j = 0; j < kMaxGroup; ++j) {
      int c = -1;
      const int pos = j < g && s.read_ahead ? s.read_ahead[h * g + j] : -1;
      if (pos >= 0 && pos < n) c = s.cluster_of_position[static_cast<int64_t>(h) * n + pos];
      id[j] = c;
    }
    if (coarse) to_coarse_parents(s.coarse_offsets + static_cast<int64_t>(h) * (s.num_coarse + 1), s.num_coarse, g);
  }

  // Each fine id becomes the coarse cluster whose children [coff[i], coff[i + 1]) hold it: the
  // last i < Kc with coff[i] <= id (empty coarse clusters repeat an offset). The warp's lanes split
  // into one group of `span` lanes per member, each group a span-ary search: ceil(log_span Kc)
  // rounds of one load per lane (5 for Kc ~ 5K at g = 4) where a binary search per member took
  // ~13 dependent loads on the coarse compaction's critical path (NOTES.md run 13).
  __device__ __forceinline__ void to_coarse_parents(const int32_t* coff, int Kc, int g) {
    const int lane = threadIdx.x & 31;
    const int span = 32 >> (32 - __clz(max(g, 1) - 1));  // 32 / (g rounded up to a power of two)
    const int j = lane / span, r = lane % span;
    const unsigned group_bits = span == 32 ? 0xffffffffu : ((1u << span) - 1) << (j * span);
    int c = -1;
#pragma unroll
    for (int m = 0; m < kMaxGroup; ++m)
      if (m == j) c = id[m];
    // The parent lies in [lo, lo + len), and coff[lo] <= c. Every lane runs the same rounds
    // (`width` bounds every group's len), so the ballots stay converged.
    int lo = 0, len = Kc;
    for (int width = Kc; width > 1; width = (width + span - 1) / span) {
      const int stride = (len + span - 1) / span, at = lo + r * stride;
      const bool le = c >= 0 && len > 1 && at < lo + len && __ldg(coff + at) <= c;
      const unsigned mine = __ballot_sync(0xffffffffu, le) & group_bits;
      if (len > 1 && mine) {
        const int k = 31 - __clz(mine) - j * span;  // the group's last lane whose offset is <= c
        lo += k * stride;
        len = min(stride, len - k * stride);
      }
    }
#pragma unroll
    for (int m = 0; m < kMaxGroup; ++m) {
      const int parent = __shfl_sync(0xffffffffu, lo, min(m * span, 31));
      if (id[m] >= 0) id[m] = parent;
    }
  }

  __device__ __forceinline__ bool contains(int c) const {
    bool hit = false;
#pragma unroll
    for (int j = 0; j < kMaxGroup; ++j) hit |= id[j] == c;
    return hit;
  }
};

// Tensor-core path (selection_tensor_core.cu, selection_lse_wgmma.cu): the query row (token t,
// group member j) at tile row r: token-major (r = t*g + j, pass A) when member_rows == 0, else
// member-major with member_rows rows per member (r = j*member_rows + t, pass C). False for
// padding rows.
__device__ __forceinline__ bool tc_query_row(const ProblemArgs& p, int r, int member_rows, int& t, int& j) {
  if (member_rows == 0) {
    t = r / p.g;
    j = r % p.g;
    return r < p.lq * p.g;
  }
  j = r / member_rows;
  t = r % member_rows;
  return j < p.g && t < p.lq;
}

// The flat level's verdict on its candidates (pass C of the tensor-core path): candidate c < K of
// (b, h) with group score `score` gets its flags (kept: above the head's threshold or forced by
// read-ahead; candidate_flags) and, when asked, its score.
struct FlatVerdict {
  const int32_t* off;
  float tau;
  bool read_ahead;
  ForcedClusters forced;

  __device__ __forceinline__ FlatVerdict(const SequenceLayerBf16& s, const SelectionParams& params, int h, int g)
      : off(s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1)),
        tau(head_tau(s, params, false, h)),
        read_ahead(s.read_ahead != nullptr) {
    if (read_ahead) forced.load(s, h, g, /*coarse=*/false);
  }
  __device__ __forceinline__ void write(int c, float score, const SelectionParams& params, int64_t at, uint8_t* flags,
                                        float* scores) const {
    const bool live = off[c + 1] > off[c];
    const bool keep = live && (score > tau || (read_ahead && forced.contains(c)));
    flags[at] = candidate_flags(live, keep, score, tau, params);
    if (scores) scores[at] = live ? score : neg_inf();
  }
};

inline size_t align_up(size_t x) { return (x + 255) & ~size_t{255}; }

// Scratch layout; every buffer is sized for the worst case so launches never depend on data.
struct Workspace {
  int rows, level_capacity, tiles_a, chunks_a;
  bool store_z;
  float2* partials;
  float* logden;
  float* z;
  uint8_t* flags;
  // Hierarchical: the children level's cluster ids [bh][cap] (written by the coarse level's
  // compaction) and their count [bh].
  int32_t *children, *num_candidates;
  // Decode path (rows <= kMaxFastRows): z [bh][cap][fast_r]; LSE partials [bh][chunks][fast_r] of
  // the flat level (fast_chunks of kStreamChunk) or the coarse one (coarse_chunks); per compaction
  // chunk [bh][select_chunks] its totals (kept, their rows or children, live but not kept) packed
  // with the flag that publishes them to the head's later chunks in one 64-bit word (zeroed by the
  // level's centroid stream; selection_decode.cu, pack_totals); coarse_estimated [bh]: the coarse
  // level's estimated clusters (the children's estimate list starts after them).
  int fast_r, fast_chunks, coarse_chunks, select_chunks;
  unsigned long long* chunk_words;
  // The same words for the children level's fused stream (SelectionLaunch::fused_place), one
  // per chunk of kStreamChunk candidates: [bh][fast_chunks], zeroed by the coarse level's stream.
  unsigned long long* children_words;
  // The coarse level's fused stream: each chunk's totals [bh][coarse_chunks], written and read
  // behind its barrier (no flags).
  int4* coarse_totals;
  int32_t* coarse_estimated;
  // Tensor-core path (rows > kMaxFastRows, flat): strips of kTcStrip candidates, grouped into
  // tc_chunks chunks of tc_strips_per_chunk so its partials stay under the same ~64 MB cap.
  int tc_strips, tc_strips_per_chunk, tc_chunks;
  float* fast_z;
  float2* fast_partials;
  size_t bytes;

  Workspace(const AttentionShape& s, const SelectionLimits& lim, void* base) {
    const int bh = s.batch * s.num_kv_heads;
    rows = s.query_len * s.group();
    level_capacity = std::max(lim.max_clusters, lim.max_coarse);
    const int tiles = (level_capacity + kTile - 1) / kTile;
    // Pass 1 writes one (m, s) per row per chunk: keep that under ~64 MB for prefill blocks.
    const long long max_chunks = std::max(1LL, (64LL << 20) / (8LL * bh * rows));
    tiles_a = static_cast<int>(std::max(1LL, (tiles + max_chunks - 1) / max_chunks));
    chunks_a = (tiles + tiles_a - 1) / tiles_a;
    store_z = rows <= kTile;
    tc_strips = (level_capacity + kTcStrip - 1) / kTcStrip;
    tc_strips_per_chunk = static_cast<int>(std::max(1LL, (tc_strips + max_chunks - 1) / max_chunks));
    tc_chunks = (tc_strips + tc_strips_per_chunk - 1) / tc_strips_per_chunk;
    size_t off = 0;
    auto take = [&](size_t n) { const size_t at = off; off += align_up(n); return static_cast<char*>(base) + at; };
    partials = reinterpret_cast<float2*>(take(sizeof(float2) * bh * std::max(chunks_a, tc_chunks) * rows));
    logden = reinterpret_cast<float*>(take(sizeof(float) * bh * rows));
    z = store_z ? reinterpret_cast<float*>(take(sizeof(float) * bh * rows * level_capacity)) : nullptr;
    flags = reinterpret_cast<uint8_t*>(take(size_t(bh) * level_capacity));
    children = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * bh * level_capacity));
    num_candidates = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * bh));
    fast_r = rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : rows <= kMaxFastRows ? 8 : 0;
    fast_chunks = (std::max(level_capacity, 1) + kStreamChunk - 1) / kStreamChunk;
    coarse_chunks = (std::max(lim.max_coarse, 1) + kStreamChunk - 1) / kStreamChunk;
    select_chunks = (std::max(level_capacity, 1) + kSelectChunk - 1) / kSelectChunk;
    auto take_ints = [&](size_t n) { return fast_r ? reinterpret_cast<int32_t*>(take(sizeof(int32_t) * n)) : nullptr; };
    fast_z = fast_r ? reinterpret_cast<float*>(take(sizeof(float) * bh * level_capacity * fast_r)) : nullptr;
    fast_partials = fast_r ? reinterpret_cast<float2*>(take(sizeof(float2) * bh * fast_chunks * fast_r)) : nullptr;
    chunk_words = fast_r ? reinterpret_cast<unsigned long long*>(take(sizeof(unsigned long long) * bh * select_chunks))
                         : nullptr;
    children_words = fast_r ? reinterpret_cast<unsigned long long*>(take(sizeof(unsigned long long) * bh * fast_chunks))
                            : nullptr;
    coarse_totals = fast_r ? reinterpret_cast<int4*>(take(sizeof(int4) * bh * coarse_chunks)) : nullptr;
    coarse_estimated = take_ints(bh);
    bytes = off;
  }
};

// ---- the paths (each launches on `stream` and leaves error checks to the caller) --------------

// selection_decode.cu: ws.fast_r > 0, flat or hierarchical.
template <int D>
void run_decode_selection(const AttentionShape& s, const ProblemArgs& p, const SelectionParams& params,
                          const Workspace& ws, const Selection& out, float* scores_out, const SelectionLaunch& launch,
                          cudaStream_t stream);

// selection_tensor_core.cu: flat index, rows > kMaxFastRows.
template <int D>
void run_tensor_core_selection(const AttentionShape& s, const ProblemArgs& p, const SelectionParams& params,
                               const Workspace& ws, const Selection& out, float* scores_out, cudaStream_t stream);

// selection_lse_wgmma.cu: the tensor-core path's pass A on wgmma, chunks of chunk_tiles x 64
// candidates (their partials at chunk index < ws.tc_chunks). False (nothing launched) where the
// device or the build has no wgmma.
template <int D>
bool launch_lse_wgmma(const AttentionShape& s, const ProblemArgs& p, const Workspace& ws, int chunk_tiles,
                      cudaStream_t stream);

// selection_generic.cu: any index on CUDA cores (used for hierarchical prefill blocks). Returns the error
// of its kernel attribute call.
template <int D>
cudaError_t run_generic_selection(const AttentionShape& s, const ProblemArgs& p, const SelectionParams& params,
                                  const SelectionLimits& lim, const Workspace& ws, const Selection& out,
                                  float* scores_out, cudaStream_t stream);

// selection_generic.cu, shared with the tensor-core path: the per-row log denominators from chunk
// partials (tiles_per_chunk tiles of kTile candidates per chunk), and the ordered compaction of a
// level's flags (grid (H_kv, B)).
void launch_log_denominators(const AttentionShape& s, const ProblemArgs& p, const LevelArgs& l, int tiles_per_chunk,
                             int num_chunks, const float2* partials, float* logden, cudaStream_t stream);
// Coarse level: children_out [bh][capacity] and num_candidates_out [bh] define the children level.
template <int D>
void launch_compact(const AttentionShape& s, const ProblemArgs& p, const LevelArgs& l, const uint8_t* flags,
                    int capacity, const Selection& out, int32_t* children_out,
                    int32_t* num_candidates_out, cudaStream_t stream);

}  // namespace squeezeserve::kernels::detail
