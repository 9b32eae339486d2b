// Centroid scoring + selection kernels. Contract: selection.h, reference: selection_ref.cc.
//
// Problem of one (sequence b, KV head h): R = Lq * g query rows (row r = token r / g, group member
// r % g) against the candidates of a level. Scores are fp32, denominators max-shifted.
// Every kernel tiles 32 candidates (one per lane) x 32 query rows (four per warp, 8 warps).
#include <algorithm>

#include "kernels/cuda_common.cuh"
#include "kernels/mma.cuh"
#include "kernels/selection.h"

namespace squeezeserve::kernels {
namespace detail {
namespace {

constexpr int kTile = 32;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kTile / kWarps;  // 4

// Which clusters a level's candidates are. kChildren: the fine clusters under the kept coarse
// clusters, numbered consecutively (candidate i -> kept coarse s with child_prefix[s] <= i).
enum class Level : int { kFlat = 0, kCoarse = 1, kChildren = 2 };

struct LevelArgs {
  Level level;
  // kChildren only: per bh, the kept coarse ids, the exclusive prefix of their child counts, and
  // how many there are; n_candidates = total children.
  const int32_t* kept_coarse;
  const int32_t* child_prefix;
  const int32_t* num_kept;
  const int32_t* num_candidates;
  int coarse_capacity;
};

struct ProblemArgs {
  const SequenceLayerBf16* seqs;
  const __nv_bfloat16* q;  // [B][Lq][Hq][D]
  int lq, hq, hkv, g;
  float scale;
};

struct HeadLevel {
  const __nv_bfloat16* centroids;  // of this head and level (bf16, docs/index_layout.md)
  const int32_t* fine_off;    // [K+1] of this head
  const int32_t* coarse_off;  // [Kc+1] of this head (null for one-level indexes)
  int num_level;              // clusters in the level (K or Kc)
  int num_candidates;         // candidates scored at this level for this bh
  int kept;                   // kChildren: number of kept coarse clusters
  const int32_t* kept_coarse;
  const int32_t* child_prefix;
};

template <int D>
__device__ HeadLevel head_level(const ProblemArgs& p, const LevelArgs& l, int b, int h) {
  const SequenceLayerBf16& s = p.seqs[b];
  HeadLevel v{};
  v.fine_off = s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1);
  v.coarse_off = s.coarse_offsets ? s.coarse_offsets + static_cast<int64_t>(h) * (s.num_coarse + 1) : nullptr;
  if (l.level == Level::kCoarse) {
    v.centroids = as_bf16(s.coarse_centroids) + static_cast<int64_t>(h) * s.num_coarse * D;
    v.num_level = v.num_candidates = s.num_coarse;
  } else {
    v.centroids = as_bf16(s.centroids) + static_cast<int64_t>(h) * s.num_clusters * D;
    v.num_level = v.num_candidates = s.num_clusters;
  }
  if (l.level == Level::kChildren) {
    const int bh = b * p.hkv + h;
    v.num_candidates = l.num_candidates[bh];
    v.kept = l.num_kept[bh];
    v.kept_coarse = l.kept_coarse + static_cast<int64_t>(bh) * l.coarse_capacity;
    v.child_prefix = l.child_prefix + static_cast<int64_t>(bh) * l.coarse_capacity;
  }
  return v;
}

// Cluster id of candidate i (< num_candidates).
__device__ int candidate_cluster(const HeadLevel& v, Level level, int i) {
  if (level != Level::kChildren) return i;
  int lo = 0, hi = v.kept;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (v.child_prefix[mid] <= i) lo = mid;
    else hi = mid;
  }
  return v.coarse_off[v.kept_coarse[lo]] + (i - v.child_prefix[lo]);
}

// Keys a cluster stands for: fine sizes, or the sum over a coarse cluster's contiguous children.
__device__ int cluster_size(const HeadLevel& v, Level level, int c) {
  if (level == Level::kCoarse) return v.fine_off[v.coarse_off[c + 1]] - v.fine_off[v.coarse_off[c]];
  return v.fine_off[c + 1] - v.fine_off[c];
}

// Threshold of KV head h of sequence s at a level: the sequence's per-head array when it has one
// (SequenceLayer::tau_fine / tau_coarse, device memory), else the launch-wide SelectionParams value.
__device__ __forceinline__ float head_tau(const SequenceLayerBf16& s, const SelectionParams& params, bool coarse,
                                          int h) {
  if (coarse) return s.tau_coarse ? s.tau_coarse[h] : params.tau_coarse;
  return s.tau_fine ? s.tau_fine[h] : params.tau_fine;
}

template <int D>
struct TileSmem {
  static constexpr int kStride = D + 4;  // float4-aligned rows; lane l starts at bank 4l: no conflicts
  float c[kTile * kStride];              // candidate centroids
  float q[kTile * kStride];              // query rows
  float log_size[kTile];                 // log n_c, -inf for empty / out of range
  int cluster[kTile];
};

// Loads candidates [c0, c0+32) of the level into smem (ids, log sizes, centroid rows).
template <int D>
__device__ void load_candidate_tile(TileSmem<D>& sm, const HeadLevel& v, Level level, int c0, bool centroids) {
  const int tid = threadIdx.x;
  if (tid < kTile) {
    const int i = c0 + tid;
    const int c = i < v.num_candidates ? candidate_cluster(v, level, i) : -1;
    const int n = c >= 0 ? cluster_size(v, level, c) : 0;
    sm.cluster[tid] = c;
    sm.log_size[tid] = n > 0 ? __logf(static_cast<float>(n)) : neg_inf();
  }
  __syncthreads();
  if (!centroids) return;
  for (int e = tid; e < kTile * D / 8; e += kThreads) {  // 8 bf16 (16 B) per copy, widened to fp32
    const int row = e / (D / 8), col = (e % (D / 8)) * 8;
    const int c = sm.cluster[row];
    uint4 raw = make_uint4(0u, 0u, 0u, 0u);
    if (c >= 0) raw = __ldg(reinterpret_cast<const uint4*>(v.centroids + static_cast<int64_t>(c) * D + col));
    bf16x8_to_float(raw, &sm.c[row * TileSmem<D>::kStride + col]);
  }
}

// Loads query rows [r0, r0+32) of (b, h) as fp32.
template <int D>
__device__ void load_query_tile(TileSmem<D>& sm, const ProblemArgs& p, int b, int h, int r0) {
  const int rows = p.lq * p.g;
  for (int e = threadIdx.x; e < kTile * D / 8; e += kThreads) {
    const int row = e / (D / 8), col = (e % (D / 8)) * 8;
    const int r = r0 + row;
    float* dst = &sm.q[row * TileSmem<D>::kStride + col];
    if (r < rows) {
      const int t = r / p.g, j = r % p.g;
      const uint4 raw = *reinterpret_cast<const uint4*>(
          p.q + ((static_cast<int64_t>(b) * p.lq + t) * p.hq + h * p.g + j) * D + col);
      bf16x8_to_float(raw, dst);
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) dst[k] = 0.f;
    }
  }
}

// z[i] = scale * q_{warp + 8i} . c_{lane} for the tile in smem.
template <int D>
__device__ void tile_logits(const TileSmem<D>& sm, float scale, float (&z)[kRowsPerWarp]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) z[i] = 0.f;
#pragma unroll 8
  for (int k = 0; k < D; k += 4) {
    const float4 c = *reinterpret_cast<const float4*>(&sm.c[lane * TileSmem<D>::kStride + k]);
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const float4 q = *reinterpret_cast<const float4*>(&sm.q[(warp + kWarps * i) * TileSmem<D>::kStride + k]);
      z[i] += q.x * c.x + q.y * c.y + q.z * c.z + q.w * c.w;
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) z[i] *= scale;
}

// Pass 1 (flat or coarse level): per chunk of candidates, per query row, the LSE partial
// (max, sum of n_c * exp(z - max)) over the chunk's non-empty clusters. Optionally stores z for
// pass 2 (decode: R <= 32 rows, so z is tiny next to the centroids it saves re-reading).
// grid (chunks, H_kv, B); dynamic smem = TileSmem + R float2.
template <int D>
__global__ void __launch_bounds__(kThreads) lse_partials_kernel(ProblemArgs p, LevelArgs l, int tiles_per_chunk,
                                                                int num_chunks, float2* partials, float* z_out,
                                                                int z_capacity) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  TileSmem<D>& sm = *reinterpret_cast<TileSmem<D>*>(smem_raw);
  float2* row_state = reinterpret_cast<float2*>(smem_raw + sizeof(TileSmem<D>));
  const int b = blockIdx.z, h = blockIdx.y, chunk = blockIdx.x, bh = b * p.hkv + h;
  const HeadLevel v = head_level<D>(p, l, b, h);
  const int rows = p.lq * p.g, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int first = chunk * tiles_per_chunk * kTile;
  if (first >= v.num_candidates) return;  // chunks past this sequence's level are never read
  for (int r = threadIdx.x; r < rows; r += kThreads) row_state[r] = make_float2(neg_inf(), 0.f);
  for (int t = 0; t < tiles_per_chunk; ++t) {
    const int c0 = first + t * kTile;
    if (c0 >= v.num_candidates) break;
    __syncthreads();  // previous tile fully consumed
    load_candidate_tile<D>(sm, v, l.level, c0, true);
    for (int r0 = 0; r0 < rows; r0 += kTile) {
      load_query_tile<D>(sm, p, b, h, r0);
      __syncthreads();
      float z[kRowsPerWarp];
      tile_logits<D>(sm, p.scale, z);
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int r = r0 + warp + kWarps * i;
        if (r >= rows) continue;  // warp-uniform
        if (z_out && c0 + lane < v.num_candidates)
          z_out[(static_cast<int64_t>(bh) * rows + r) * z_capacity + c0 + lane] = z[i];
        const float x = sm.log_size[lane] == neg_inf() ? neg_inf() : z[i] + sm.log_size[lane];
        const float2 part = warp_lse_reduce(make_float2(x, x == neg_inf() ? 0.f : 1.f));
        if (lane == 0) row_state[r] = lse_merge(row_state[r], part);  // row r is owned by this warp
      }
      __syncthreads();
    }
  }
  __syncthreads();
  for (int r = threadIdx.x; r < rows; r += kThreads)
    partials[(static_cast<int64_t>(bh) * num_chunks + chunk) * rows + r] = row_state[r];
}

// Pass 1b: log denominators, one warp per query row, chunks merged in a fixed tree order.
// grid (H_kv, B).
__global__ void __launch_bounds__(kThreads) log_denominator_kernel(ProblemArgs p, LevelArgs l, int tiles_per_chunk,
                                                                   int num_chunks, const float2* partials,
                                                                   float* logden) {
  const int b = blockIdx.y, h = blockIdx.x, bh = b * p.hkv + h;
  const SequenceLayerBf16& s = p.seqs[b];
  const int num = l.level == Level::kCoarse ? s.num_coarse : s.num_clusters;
  const int used = min(num_chunks, (num + tiles_per_chunk * kTile - 1) / (tiles_per_chunk * kTile));
  const int rows = p.lq * p.g, lane = threadIdx.x & 31;
  for (int r = threadIdx.x >> 5; r < rows; r += kWarps) {
    float2 acc = make_float2(neg_inf(), 0.f);
    for (int c = lane; c < used; c += 32) acc = lse_merge(acc, partials[(static_cast<int64_t>(bh) * num_chunks + c) * rows + r]);
    acc = warp_lse_reduce(acc);
    if (lane == 0) logden[static_cast<int64_t>(bh) * rows + r] = acc.y > 0.f ? acc.x + __logf(acc.y) : neg_inf();
  }
}

// Pass 2: group score of each candidate, score = max_j mean_t exp(z - logden), and its keep flag
// (score > the head's threshold of the level: coarse for Level::kCoarse, else fine).
// Row r = t*g + j; with g | 8 the rows warp w sees all have j = w % g, so each thread sums one
// group member and warps are combined in a fixed order (deterministic).
// grid (chunks, H_kv, B).
template <int D>
__global__ void __launch_bounds__(kThreads) flags_kernel(ProblemArgs p, LevelArgs l, int tiles_per_chunk,
                                                         SelectionParams params, const float* logden,
                                                         const float* z_in, int z_capacity, uint8_t* flags,
                                                         float* scores, int capacity) {
  __shared__ __align__(16) TileSmem<D> sm;
  __shared__ float partial[kWarps][kTile];
  const int b = blockIdx.z, h = blockIdx.y, bh = b * p.hkv + h;
  const HeadLevel v = head_level<D>(p, l, b, h);
  const int rows = p.lq * p.g, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* ld = logden + static_cast<int64_t>(bh) * rows;
  const float tau = head_tau(p.seqs[b], params, l.level == Level::kCoarse, h);
  for (int t = 0; t < tiles_per_chunk; ++t) {
    const int c0 = (blockIdx.x * tiles_per_chunk + t) * kTile;
    if (c0 >= v.num_candidates) break;
    __syncthreads();
    load_candidate_tile<D>(sm, v, l.level, c0, z_in == nullptr);
    float acc = 0.f;
    for (int r0 = 0; r0 < rows; r0 += kTile) {
      float z[kRowsPerWarp];
      if (z_in) {
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) {
          const int r = r0 + warp + kWarps * i;
          z[i] = r < rows && c0 + lane < v.num_candidates
                     ? z_in[(static_cast<int64_t>(bh) * rows + r) * z_capacity + c0 + lane] : 0.f;
        }
      } else {
        load_query_tile<D>(sm, p, b, h, r0);
        __syncthreads();
        tile_logits<D>(sm, p.scale, z);
      }
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int r = r0 + warp + kWarps * i;
        if (r < rows && sm.log_size[lane] != neg_inf()) acc += __expf(z[i] - ld[r]);
      }
      if (!z_in) __syncthreads();
    }
    partial[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && c0 + lane < v.num_candidates) {
      float best = neg_inf();
      for (int j = 0; j < p.g; ++j) {
        float sum = 0.f;
        for (int w = j; w < kWarps; w += p.g) sum += partial[w][lane];
        best = fmaxf(best, sum / p.lq);
      }
      const bool live = sm.log_size[lane] != neg_inf();
      const int64_t at = static_cast<int64_t>(bh) * capacity + c0 + lane;
      flags[at] = live && best > tau;
      if (scores) scores[at] = live ? best : neg_inf();
    }
  }
}

// Block-wide exclusive scan of (a, b) pairs over 1024 threads; returns the block totals.
__device__ int2 block_exclusive_scan(int2 x, int2& total) {
  __shared__ int2 warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int2 inc = x;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int a = __shfl_up_sync(0xffffffffu, inc.x, o), c = __shfl_up_sync(0xffffffffu, inc.y, o);
    if (lane >= o) inc.x += a, inc.y += c;
  }
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    int2 w = warp_sums[lane];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int a = __shfl_up_sync(0xffffffffu, w.x, o), c = __shfl_up_sync(0xffffffffu, w.y, o);
      if (lane >= o) w.x += a, w.y += c;
    }
    warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  total = warp_sums[31];
  const int2 before = warp > 0 ? warp_sums[warp - 1] : make_int2(0, 0);
  __syncthreads();  // warp_sums is reused by the next call
  return make_int2(before.x + inc.x - x.x, before.y + inc.y - x.y);
}

// Pass 3: ordered compaction of the flags of one (b, h). Final level: selected ids, their row
// starts, counts, rows, comparisons. Coarse level: kept coarse ids and the prefix of their child
// counts, which define the candidates of the children level. grid (H_kv, B), 1024 threads.
template <int D>
__global__ void __launch_bounds__(1024) compact_kernel(ProblemArgs p, LevelArgs l, const uint8_t* flags, int capacity,
                                                       Selection out, int32_t* kept_out, int32_t* prefix_out,
                                                       int32_t* num_kept_out, int32_t* num_candidates_out) {
  const int b = blockIdx.y, h = blockIdx.x, bh = b * p.hkv + h;
  const HeadLevel v = head_level<D>(p, l, b, h);
  const bool coarse = l.level == Level::kCoarse;
  // Each thread owns kPer consecutive candidates per step, so one block scan covers 8192 of them.
  constexpr int kPer = 8;
  int count = 0, rows = 0;
  for (int base = 0; base < v.num_candidates; base += 1024 * kPer) {
    int cluster[kPer], weight[kPer];
    int2 mine = make_int2(0, 0);
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int i = base + threadIdx.x * kPer + e;
      const bool keep = i < v.num_candidates && flags[static_cast<int64_t>(bh) * capacity + i];
      cluster[e] = keep ? candidate_cluster(v, l.level, i) : -1;
      weight[e] = !keep ? 0
                  : coarse ? v.coarse_off[cluster[e] + 1] - v.coarse_off[cluster[e]]
                           : v.fine_off[cluster[e] + 1] - v.fine_off[cluster[e]];
      mine.x += keep;
      mine.y += weight[e];
    }
    int2 total;
    int2 at = block_exclusive_scan(mine, total);
    at.x += count;
    at.y += rows;
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      if (cluster[e] < 0) continue;
      const int64_t slot = static_cast<int64_t>(bh) * (coarse ? capacity : out.capacity) + at.x;
      (coarse ? kept_out : out.cluster_ids)[slot] = cluster[e];
      (coarse ? prefix_out : out.row_start)[slot] = at.y;
      ++at.x;
      at.y += weight[e];
    }
    count += total.x;
    rows += total.y;
  }
  if (threadIdx.x != 0) return;
  if (coarse) {
    num_kept_out[bh] = count;
    num_candidates_out[bh] = rows;
  } else {
    out.counts[bh] = count;
    out.rows[bh] = rows;
    out.comparisons[bh] = l.level == Level::kChildren ? p.seqs[b].num_coarse + v.num_candidates : v.num_candidates;
  }
}


// ---- decode fast path: flat index, R = Lq * g <= 8 query rows -----------------------------------
// Decode selection is a pure stream over the level's bf16 centroids (2D bytes each), so it must run
// at DRAM speed with every warp loading. Three launches replace the general path's four:
//  K1 score_stream_kernel, grid (ceil(K / 256), H_kv, B), 8 warps x 32 centroids per CTA. A
//     centroid row is read by L = D/8 lanes, 16 B each (a warp covers 32/L centroids per load) and
//     each lane keeps kUnroll loads in flight. The R dot products of a centroid are summed over its
//     L lanes by a halving butterfly: R-1 + log2(L/R) shuffles instead of R*log2(L) (8 vs 32 for
//     R = 8, L = 16); afterwards the lane's high bits say which row it holds. Outputs: z = s*q.c in
//     fp32, candidate-major [bh][cap][R] (4R bytes per 2D read, coalesced for K1 and K2), and one
//     LSE partial (max, sum n_c*exp(z - max)) per row per CTA.
//  K2a select_chunk_kernel, grid (ceil(K / 1024), H_kv, B): every CTA merges the head's K1
//     partials into the log denominators (the same fixed order in every CTA, so all agree bit for
//     bit), scores and thresholds its 1024 candidates (z is L2-resident: 3.4 MB for all heads at
//     512K) and compacts them in candidate order into a chunk-local list (ids, local row starts)
//     plus the chunk's totals (clusters, rows).
//  K2b place_chunk_kernel, same grid: sums the totals of the chunks before its own (integers: exact
//     in any order) and copies its chunk's list to that offset of the output; the head's last
//     chunk writes counts / rows / comparisons.
// The output is the one ordered compaction a single CTA per head would produce (that was K2 until
// run 3: 8 CTAs for 8 KV heads left 124 SMs idle and took ~80 us at GQA 512K). No N-sized pass, no
// host round trip, no atomics.
constexpr int kStreamChunk = 256;  // candidates per K1 CTA: 8 warps x 32
constexpr int kMaxFastRows = 8;
constexpr int kSelectPer = 4;                          // candidates per K2a thread
constexpr int kSelectChunk = kThreads * kSelectPer;    // candidates per K2a / K2b CTA

template <int R>
__host__ __device__ constexpr int log2_rows() { return R == 1 ? 0 : R == 2 ? 1 : R == 4 ? 2 : 3; }

// Butterfly sum of v[0..R) over the L lanes of a centroid; returns the full sum of row
// sum_s bit_s(lane) * R >> (s+1), with bit_s = lane & (L >> (s+1)).
template <int R, int L>
__device__ __forceinline__ float butterfly_rows(float (&v)[R], int lane) {
#pragma unroll
  for (int half = R / 2, o = L / 2; half >= 1; half /= 2, o /= 2) {
    const bool upper = (lane & o) != 0;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const float send = upper ? v[i] : v[i + half];  // the half the partner keeps
      const float keep = upper ? v[i + half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
    }
  }
  float x = v[0];
#pragma unroll
  for (int o = (L >> log2_rows<R>()) / 2; o >= 1; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <int D, int R>
__global__ void __launch_bounds__(kThreads) score_stream_kernel(ProblemArgs p, int num_chunks, int z_capacity,
                                                                float* z_out, float2* partials) {
  constexpr int L = D / 8, CPW = 32 / L;
  constexpr int kPerWarp = kStreamChunk / kWarps;
  constexpr int kSteps = kPerWarp / CPW;
  constexpr int kUnroll = 4;
  constexpr int kLogR = log2_rows<R>();
  static_assert(R <= L, "butterfly needs at least R lanes per centroid");
  __shared__ float log_size[kStreamChunk];
  __shared__ float2 red[kWarps * CPW][R];
  const int b = blockIdx.z, h = blockIdx.y, chunk = blockIdx.x, bh = b * p.hkv + h;
  const SequenceLayerBf16& s = p.seqs[b];
  const int K = s.num_clusters;
  const int c_first = chunk * kStreamChunk;
  if (c_first >= K) return;  // past this sequence's K (sequences of a batch differ); never read
  const int rows = p.lq * p.g;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, sub = lane % L, slot = lane / L;
  const __nv_bfloat16* cent = as_bf16(s.centroids) + static_cast<int64_t>(h) * K * D;
  const int warp_first = c_first + warp * kPerWarp;

  // Issue the first centroid loads before anything else: they are the long pole.
  uint4 raw[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int c = warp_first + u * CPW + slot;
    raw[u] = c < K ? __ldg(reinterpret_cast<const uint4*>(cent + static_cast<int64_t>(c) * D + sub * 8))
                   : make_uint4(0u, 0u, 0u, 0u);
  }
  {
    const int32_t* off = s.offsets + static_cast<int64_t>(h) * (K + 1);
    const int c = c_first + tid;
    const int n = c < K ? off[c + 1] - off[c] : 0;
    log_size[tid] = n > 0 ? __logf(static_cast<float>(n)) : neg_inf();
  }
  // This lane's 8 dims of every query row (rows >= `rows` are zero padding).
  float q[R][8];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    uint4 qr = make_uint4(0u, 0u, 0u, 0u);
    if (r < rows) {
      const int t = r / p.g, j = r % p.g;
      qr = *reinterpret_cast<const uint4*>(p.q + ((static_cast<int64_t>(b) * p.lq + t) * p.hq + h * p.g + j) * D + sub * 8);
    }
    bf16x8_to_float(qr, q[r]);
  }
  int my_row = 0;
#pragma unroll
  for (int st = 0; st < kLogR; ++st)
    if (lane & (L >> (st + 1))) my_row += R >> (st + 1);
  const bool owner = (sub & ((L >> kLogR) - 1)) == 0;  // one owner lane per (centroid slot, row)
  float run_m = neg_inf(), run_s = 0.f;
  __syncthreads();  // log_size

#pragma unroll 1
  for (int st0 = 0; st0 < kSteps; st0 += kUnroll) {
    uint4 cur[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) cur[u] = raw[u];
    if (st0 + kUnroll < kSteps) {  // next group in flight while this one is reduced
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = warp_first + (st0 + kUnroll + u) * CPW + slot;
        raw[u] = c < K ? __ldg(reinterpret_cast<const uint4*>(cent + static_cast<int64_t>(c) * D + sub * 8))
                       : make_uint4(0u, 0u, 0u, 0u);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = warp_first + (st0 + u) * CPW + slot;
      float k[8];
      bf16x8_to_float(cur[u], k);
      float v[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float acc = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc = fmaf(q[r][e], k[e], acc);
        v[r] = acc;
      }
      const float z = butterfly_rows<R, L>(v, lane) * p.scale;
      if (owner && c < K) {
        z_out[(static_cast<int64_t>(bh) * z_capacity + c) * R + my_row] = z;
        const float x = z + log_size[c - c_first];
        if (my_row < rows && x != neg_inf()) {  // online (max, sum) of n_c * exp(z)
          if (x > run_m) {
            run_s = run_s * __expf(run_m - x) + 1.f;
            run_m = x;
          } else {
            run_s += __expf(x - run_m);
          }
        }
      }
    }
  }
  if (owner) red[warp * CPW + slot][my_row] = make_float2(run_m, run_s);
  __syncthreads();
  if (tid < R && tid < rows) {  // fixed merge order: deterministic
    float2 acc = make_float2(neg_inf(), 0.f);
    for (int i = 0; i < kWarps * CPW; ++i) acc = lse_merge(acc, red[i][tid]);
    partials[(static_cast<int64_t>(bh) * num_chunks + chunk) * R + tid] = acc;
  }
}

// Log denominators of the R rows of (b, h) from the K1 partials, into smem (warp r merges row r;
// rows <= kMaxFastRows = kWarps). Fixed order: lane-strided, then the warp tree.
template <int R>
__device__ void fast_log_denominators(int bh, int K, int rows, int num_chunks, const float2* partials,
                                      float (&logden)[R]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int used = (K + kStreamChunk - 1) / kStreamChunk;
  if (warp >= rows) return;
  float2 acc = make_float2(neg_inf(), 0.f);
  for (int c = lane; c < used; c += 32)
    acc = lse_merge(acc, partials[(static_cast<int64_t>(bh) * num_chunks + c) * R + warp]);
  acc = warp_lse_reduce(acc);
  if (lane == 0) logden[warp] = acc.y > 0.f ? acc.x + __logf(acc.y) : neg_inf();
}

// The R logits of one candidate (z[bh][i][R], written by K1: read through L2, not L1).
template <int R>
__device__ __forceinline__ void load_logits(const float* zi, float (&z)[R]) {
  if constexpr (R == 1) {
    z[0] = __ldcg(zi);
  } else if constexpr (R == 2) {
    const float2 v = __ldcg(reinterpret_cast<const float2*>(zi));
    z[0] = v.x, z[1] = v.y;
  } else {
#pragma unroll
    for (int k = 0; k < R; k += 4) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(zi + k));
      z[k] = v.x, z[k + 1] = v.y, z[k + 2] = v.z, z[k + 3] = v.w;
    }
  }
}

// score = max over group members j of the mean over tokens of p(row t*g + j). member[r] = r % g
// (-1 past the rows) is computed once per thread, so no integer modulo runs per candidate; each
// member's sum runs in ascending r (the order of the CPU reference and of earlier versions).
template <int R>
__device__ __forceinline__ float group_score(const float (&pr)[R], const int (&member)[R], int g, float inv_lq) {
  float best = neg_inf();
#pragma unroll
  for (int j = 0; j < R; ++j) {
    if (j >= g) break;
    float sum = 0.f;
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (member[r] == j) sum += pr[r];
    best = fmaxf(best, sum * inv_lq);
  }
  return best;
}

// Warp-inclusive scan of (clusters, rows) pairs.
__device__ __forceinline__ int2 warp_inclusive_scan(int2 v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int x = __shfl_up_sync(0xffffffffu, v.x, o), y = __shfl_up_sync(0xffffffffu, v.y, o);
    if (lane >= o) v.x += x, v.y += y;
  }
  return v;
}

// Ordered exclusive scan of a K2a CTA's (keep, rows) pairs, candidate e * 256 + tid owning x[e]:
// returns in at[e] the pair's position among the chunk's kept candidates (and rows before it), and
// the chunk's totals. One warp scan per e, then warp 0 scans the 32 warp sums in (e, warp) order.
__device__ int2 chunk_exclusive_scan(const int2 (&x)[kSelectPer], int2 (&at)[kSelectPer]) {
  static_assert(kSelectPer * kWarps == 32, "warp 0 scans one warp sum per lane");
  __shared__ int2 base[kSelectPer * kWarps];
  __shared__ int2 total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int e = 0; e < kSelectPer; ++e) {
    const int2 inc = warp_inclusive_scan(x[e]);
    at[e] = make_int2(inc.x - x[e].x, inc.y - x[e].y);
    if (lane == 31) base[e * kWarps + warp] = inc;
  }
  __syncthreads();
  if (warp == 0) {
    const int2 sum = base[lane];
    const int2 inc = warp_inclusive_scan(sum);
    base[lane] = make_int2(inc.x - sum.x, inc.y - sum.y);
    if (lane == 31) total = inc;
  }
  __syncthreads();
#pragma unroll
  for (int e = 0; e < kSelectPer; ++e) {
    at[e].x += base[e * kWarps + warp].x;
    at[e].y += base[e * kWarps + warp].y;
  }
  return total;
}

// K2a. grid (select chunks, H_kv, B), 256 threads; thread tid owns candidates
// first + e * 256 + tid (each warp load reads 32 consecutive candidates). `capacity` (the level
// capacity) is the per-head stride of z, of the chunk lists and of `scores`.
template <int R>
__global__ void __launch_bounds__(kThreads) select_chunk_kernel(ProblemArgs p, SelectionParams params,
                                                                 int num_stream_chunks, int capacity,
                                                                 const float* z, const float2* partials,
                                                                 int32_t* local_ids, int32_t* local_starts,
                                                                 int2* chunk_totals, int num_select_chunks,
                                                                 float* scores) {
  __shared__ float logden[R];
  const int b = blockIdx.z, h = blockIdx.y, chunk = blockIdx.x, bh = b * p.hkv + h;
  const SequenceLayerBf16& s = p.seqs[b];
  const int K = s.num_clusters, rows = p.lq * p.g;
  const int first = chunk * kSelectChunk;
  if (first >= K) return;  // past this sequence's K: K2b never reads this chunk
  const int32_t* off = s.offsets + static_cast<int64_t>(h) * (K + 1);

  // Every candidate load of the CTA first, then the (small) denominator merge under their latency.
  int lo[kSelectPer], hi[kSelectPer];
  float zz[kSelectPer][R];
#pragma unroll
  for (int e = 0; e < kSelectPer; ++e) {
    const int i = first + e * kThreads + threadIdx.x;
    const bool in = i < K;
    lo[e] = in ? __ldg(off + i) : 0;
    hi[e] = in ? __ldg(off + i + 1) : 0;
#pragma unroll
    for (int r = 0; r < R; ++r) zz[e][r] = 0.f;
    if (in) load_logits<R>(z + (static_cast<int64_t>(bh) * capacity + i) * R, zz[e]);
  }
  fast_log_denominators<R>(bh, K, rows, num_stream_chunks, partials, logden);
  int member[R];  // group member of row r = t * g + j, -1 for padding rows
#pragma unroll
  for (int r = 0; r < R; ++r) member[r] = r < rows ? r % p.g : -1;
  const float inv_lq = 1.f / static_cast<float>(p.lq);
  const float tau = head_tau(s, params, false, h);
  __syncthreads();  // logden

  int2 keep[kSelectPer];  // (1, rows) of a kept candidate, else (0, 0)
#pragma unroll
  for (int e = 0; e < kSelectPer; ++e) {
    const int i = first + e * kThreads + threadIdx.x;
    float pr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) pr[r] = member[r] >= 0 ? __expf(zz[e][r] - logden[r]) : 0.f;
    const float best = group_score<R>(pr, member, p.g, inv_lq);
    const int n = hi[e] - lo[e];
    const bool live = i < K && n > 0;
    if (scores && i < K) scores[static_cast<int64_t>(bh) * capacity + i] = live ? best : neg_inf();
    keep[e] = live && best > tau ? make_int2(1, n) : make_int2(0, 0);
  }
  int2 at[kSelectPer];
  const int2 total = chunk_exclusive_scan(keep, at);
  const int64_t list = static_cast<int64_t>(bh) * capacity + first;  // the chunk's slice of the lists
#pragma unroll
  for (int e = 0; e < kSelectPer; ++e) {
    if (!keep[e].x) continue;
    local_ids[list + at[e].x] = first + e * kThreads + threadIdx.x;
    local_starts[list + at[e].x] = at[e].y;
  }
  if (threadIdx.x == 0) chunk_totals[static_cast<int64_t>(bh) * num_select_chunks + chunk] = total;
}

// Sum of an int2 over the CTA (integer: exact in any order). Result valid in every thread.
__device__ int2 block_sum(int2 v) {
  __shared__ int2 warp_sum[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    v.x += __shfl_xor_sync(0xffffffffu, v.x, o);
    v.y += __shfl_xor_sync(0xffffffffu, v.y, o);
  }
  if (lane == 0) warp_sum[warp] = v;
  __syncthreads();
  int2 sum = make_int2(0, 0);
#pragma unroll
  for (int w = 0; w < kWarps; ++w) sum.x += warp_sum[w].x, sum.y += warp_sum[w].y;
  return sum;
}

// K2b. grid (select chunks, H_kv, B), 256 threads. A head with K = 0 has no K2a chunk; its chunk 0
// still runs here and writes the zero counts.
__global__ void __launch_bounds__(kThreads) place_chunk_kernel(ProblemArgs p, int list_capacity,
                                                               const int32_t* local_ids, const int32_t* local_starts,
                                                               const int2* chunk_totals, int num_select_chunks,
                                                               Selection out) {
  const int b = blockIdx.z, h = blockIdx.y, chunk = blockIdx.x, bh = b * p.hkv + h;
  const int K = p.seqs[b].num_clusters;
  const int used = (K + kSelectChunk - 1) / kSelectChunk;
  const int last = max(used, 1) - 1;
  if (chunk > last) return;
  const int2* totals = chunk_totals + static_cast<int64_t>(bh) * num_select_chunks;
  int2 mine = make_int2(0, 0);
  for (int c = threadIdx.x; c < chunk; c += kThreads) mine = make_int2(mine.x + totals[c].x, mine.y + totals[c].y);
  const int2 before = block_sum(mine);  // clusters and rows selected by the chunks before this one
  const int2 own = chunk < used ? totals[chunk] : make_int2(0, 0);
  const int64_t src = static_cast<int64_t>(bh) * list_capacity + static_cast<int64_t>(chunk) * kSelectChunk;
  const int64_t dst = static_cast<int64_t>(bh) * out.capacity + before.x;
  for (int i = threadIdx.x; i < own.x; i += kThreads) {
    out.cluster_ids[dst + i] = local_ids[src + i];
    out.row_start[dst + i] = before.y + local_starts[src + i];
  }
  if (chunk == last && threadIdx.x == 0) {
    out.counts[bh] = before.x + own.x;
    out.rows[bh] = before.y + own.y;
    out.comparisons[bh] = K;
  }
}

// ---- prefill blocks, flat index (R = Lq * g > 8 rows): tensor-core scoring ---------------------
// The logits of a (sequence, KV head) are a GEMM: Z = Q C^T with Q [R x D] (packed rows
// r = t*g + j, as everywhere in this file) and C [K x D], bf16 in, fp32 accumulate (mma.sync
// m16n8k16: bf16 x bf16 products are exact in fp32, so only the summation order differs from the
// CPU reference). R*K*D is ~3.4 GFLOP per head at 1K tokens x 512K, far too much for the CUDA-core
// tiles above (31.6 ms at 512K), and Z (R*K fp32 = 107 MB per head) is too large to keep, so the
// GEMM runs twice:
//  A tc_lse_kernel: per strip of 256 candidates and every query row, the LSE partial
//    (max, sum n_c*exp(z - max)) over the strip; per-row partials of the strips of a chunk are
//    merged in place (same CTA, fixed order), one float2 per (chunk, row) goes out.
//  (log_denominator_kernel merges the chunks, as for the general path.)
//  C tc_flags_kernel: the same GEMM, p = exp(z - logden_r), summed over the rows of each group
//    member in registers, max over members / Lq = score; flag = score > the head's tau_fine.
// Then compact_kernel. CTA = 8 warps, each owning 32 candidates whose B fragments (centroid rows)
// stay in registers (64 regs at D = 128) for the whole pass; query rows stream through smem in
// 64-row tiles (cp.async, double buffered; Q of a head is L2-resident: 256 KB at 1K tokens) and
// each warp reads them with ldmatrix. One 16-row A fragment feeds 4 mma (4 n-tiles of 8
// candidates), so smem traffic stays below the tensor-core rate. Softmax math in the log2 domain
// (ex2 + one FMA per logit).
constexpr int kTcWarps = 8;
constexpr int kTcThreads = kTcWarps * 32;
constexpr int kTcPerWarp = 32;                      // candidates per warp (4 n-tiles of 8)
constexpr int kTcStrip = kTcWarps * kTcPerWarp;     // 256 candidates per strip
constexpr int kTcRows = 64;                         // query rows per smem tile (4 m16 sub-tiles)
constexpr float kTcLog2e = 1.4426950408889634f;
constexpr float kTcLn2 = 0.6931471805599453f;

template <int D>
struct TcSmem {
  static constexpr int kStride = D + 8;  // bf16; ldmatrix rows land in distinct banks
  __nv_bfloat16 q[2][kTcRows * kStride];
  float row_in[2][kTcRows];              // pass C: log2 denominators of the tile's rows (+inf = padding)
  float log2_size[kTcStrip];             // pass A: log2 n_c, -inf for empty / past K
  float2 red[kTcWarps][kTcRows];         // pass A: per-warp (max2, sum) of the tile's rows
};

// Async copy of query rows [r0, r0 + 64) of (b, h) into stage `buf` (zero rows past R).
template <int D>
__device__ __forceinline__ void tc_load_q(TcSmem<D>& sm, int buf, const ProblemArgs& p, int b, int h, int r0) {
  const int rows = p.lq * p.g;
  for (int c = threadIdx.x; c < kTcRows * D / 8; c += kTcThreads) {
    const int row = c / (D / 8), col = (c % (D / 8)) * 8, r = r0 + row;
    const __nv_bfloat16* src = p.q;
    int bytes = 0;
    if (r < rows) {
      src = p.q + ((static_cast<int64_t>(b) * p.lq + r / p.g) * p.hq + h * p.g + r % p.g) * D + col;
      bytes = 16;
    }
    cp_async_16(&sm.q[buf][row * TcSmem<D>::kStride + col], src, bytes);
  }
}

// B fragments of this warp's 32 candidates (candidate = c0 + n*8 + lane/4; dims 2*(lane%4)..+1
// and +8 of every k-chunk): read straight from global (each centroid once per CTA), zero past K.
template <int D>
__device__ __forceinline__ void tc_load_b(uint32_t (&bf)[4][D / 16][2], const __nv_bfloat16* cent, int c0, int K) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < 4; ++n) {
    const int c = c0 + n * 8 + (lane >> 2);
    const uint32_t* row = reinterpret_cast<const uint32_t*>(cent + static_cast<int64_t>(c) * D) + (lane & 3);
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      bf[n][kc][0] = c < K ? __ldg(row + kc * 8) : 0u;
      bf[n][kc][1] = c < K ? __ldg(row + kc * 8 + 4) : 0u;
    }
  }
}

// acc[n][e] = q_row . c_col for the warp's 16-row sub-tile `sub` of stage `buf`:
// row sub*16 + lane/4 + 8*(e/2), candidate n*8 + 2*(lane%4) + e%2 of the warp's 32.
template <int D>
__device__ __forceinline__ void tc_tile(const TcSmem<D>& sm, int buf, int sub, const uint32_t (&bf)[4][D / 16][2],
                                        float (&acc)[4][4]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.f;
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    uint32_t a[4];
    ldmatrix_x4(a, &sm.q[buf][(sub * 16 + (lane & 15)) * TcSmem<D>::kStride + kc * 16 + (lane >> 4) * 8]);
#pragma unroll
    for (int n = 0; n < 4; ++n) mma_bf16_16816(acc[n], a, bf[n][kc][0], bf[n][kc][1]);
  }
}

// Pass A. grid (chunks, H_kv, B); a chunk is strips_per_chunk strips of 256 candidates.
template <int D>
__global__ void __launch_bounds__(kTcThreads) tc_lse_kernel(ProblemArgs p, int strips_per_chunk, int num_chunks,
                                                            float2* partials) {
  __shared__ __align__(16) TcSmem<D> sm;
  const int b = blockIdx.z, h = blockIdx.y, chunk = blockIdx.x, bh = b * p.hkv + h;
  const SequenceLayerBf16& s = p.seqs[b];
  const int K = s.num_clusters, rows = p.lq * p.g;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const __nv_bfloat16* cent = as_bf16(s.centroids) + static_cast<int64_t>(h) * K * D;
  const int32_t* off = s.offsets + static_cast<int64_t>(h) * (K + 1);
  const float scale2 = p.scale * kTcLog2e;
  const int num_row_tiles = (rows + kTcRows - 1) / kTcRows;
  float2* out = partials + (static_cast<int64_t>(bh) * num_chunks + chunk) * rows;

  for (int st = 0; st < strips_per_chunk; ++st) {
    const int c_first = (chunk * strips_per_chunk + st) * kTcStrip;
    if (c_first >= K) break;  // uniform: past this sequence's K
    __syncthreads();          // previous strip done with smem
    tc_load_q<D>(sm, 0, p, b, h, 0);
    cp_async_commit();
    {
      const int c = c_first + tid;
      const int n = c < K ? off[c + 1] - off[c] : 0;
      sm.log2_size[tid] = n > 0 ? __log2f(static_cast<float>(n)) : neg_inf();
    }
    uint32_t bf[4][D / 16][2];
    tc_load_b<D>(bf, cent, c_first + warp * kTcPerWarp, K);
    __syncthreads();  // log2_size visible
    float ls[4][2];   // log2 n_c of this thread's 8 candidate columns
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) ls[n][e] = sm.log2_size[warp * kTcPerWarp + n * 8 + 2 * (lane & 3) + e];

    for (int rt = 0; rt < num_row_tiles; ++rt) {
      const int buf = rt & 1;
      if (rt + 1 < num_row_tiles) tc_load_q<D>(sm, buf ^ 1, p, b, h, (rt + 1) * kTcRows);
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();  // stage buf landed for all threads
#pragma unroll 1
      for (int sub = 0; sub < kTcRows / 16; ++sub) {
        float acc[4][4];
        tc_tile<D>(sm, buf, sub, bf, acc);
        float m[2] = {neg_inf(), neg_inf()};
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            acc[n][e] = ls[n][e & 1] == neg_inf() ? neg_inf() : fmaf(acc[n][e], scale2, ls[n][e & 1]);
            m[e >> 1] = fmaxf(m[e >> 1], acc[n][e]);
          }
        float sum[2] = {0.f, 0.f};
#pragma unroll
        for (int i = 0; i < 2; ++i) {  // a row's 32 columns live in the 4 lanes of a quad
          m[i] = fmaxf(m[i], __shfl_xor_sync(0xffffffffu, m[i], 1));
          m[i] = fmaxf(m[i], __shfl_xor_sync(0xffffffffu, m[i], 2));
        }
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (m[e >> 1] != neg_inf()) sum[e >> 1] += exp2f(acc[n][e] - m[e >> 1]);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], 1);
          sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], 2);
          if ((lane & 3) == 0) sm.red[warp][sub * 16 + (lane >> 2) + 8 * i] = make_float2(m[i], sum[i]);
        }
      }
      __syncthreads();  // red complete; stage buf free for the load issued next iteration
      if (tid < kTcRows && rt * kTcRows + tid < rows) {  // merge warps in a fixed order
        const int r = rt * kTcRows + tid;
        float2 acc = st > 0 ? out[r] : make_float2(neg_inf(), 0.f);
#pragma unroll
        for (int w = 0; w < kTcWarps; ++w) {
          const float2 x = sm.red[w][tid];
          acc = lse_merge(acc, make_float2(x.x == neg_inf() ? x.x : x.x * kTcLn2, x.y));  // log2 -> natural
        }
        out[r] = acc;
      }
    }
  }
  cp_async_wait<0>();
}

// Pass C. grid (strips, H_kv, B), one strip of 256 candidates per CTA.
template <int D>
__global__ void __launch_bounds__(kTcThreads) tc_flags_kernel(ProblemArgs p, SelectionParams params,
                                                              const float* logden, uint8_t* flags, float* scores,
                                                              int capacity) {
  __shared__ __align__(16) TcSmem<D> sm;
  const int b = blockIdx.z, h = blockIdx.y, bh = b * p.hkv + h;
  const SequenceLayerBf16& s = p.seqs[b];
  const int K = s.num_clusters, rows = p.lq * p.g, G = p.g;
  const int c_first = blockIdx.x * kTcStrip;
  if (c_first >= K) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const __nv_bfloat16* cent = as_bf16(s.centroids) + static_cast<int64_t>(h) * K * D;
  const int32_t* off = s.offsets + static_cast<int64_t>(h) * (K + 1);
  const float scale2 = p.scale * kTcLog2e;
  const float* ld = logden + static_cast<int64_t>(bh) * rows;
  const int num_row_tiles = (rows + kTcRows - 1) / kTcRows;

  // Q tile plus its rows' log denominators in log2 units (row_in = logden * log2e).
  auto load = [&](int buf, int r0) {
    tc_load_q<D>(sm, buf, p, b, h, r0);
    if (tid < kTcRows) {
      const int r = r0 + tid;
      const float l = r < rows ? ld[r] : neg_inf();
      // Rows past R and rows without any non-empty cluster contribute nothing: +inf.
      sm.row_in[buf][tid] = l == neg_inf() ? __int_as_float(0x7f800000) : l * kTcLog2e;
    }
  };
  load(0, 0);
  cp_async_commit();
  uint32_t bf[4][D / 16][2];
  tc_load_b<D>(bf, cent, c_first + warp * kTcPerWarp, K);
  // Thread's rows within a 16-row sub-tile are lane/4 and lane/4 + 8: both group member
  // (lane/4) % G (G | 8, tiles start at multiples of 64), so per-member sums need no bookkeeping.
  float colsum[4][2] = {};
  for (int rt = 0; rt < num_row_tiles; ++rt) {
    const int buf = rt & 1;
    if (rt + 1 < num_row_tiles) load(buf ^ 1, (rt + 1) * kTcRows);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
#pragma unroll 1
    for (int sub = 0; sub < kTcRows / 16; ++sub) {
      float acc[4][4];
      tc_tile<D>(sm, buf, sub, bf, acc);
      const float l0 = sm.row_in[buf][sub * 16 + (lane >> 2)], l1 = sm.row_in[buf][sub * 16 + (lane >> 2) + 8];
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) colsum[n][e & 1] += exp2f(fmaf(acc[n][e], scale2, -((e >> 1) ? l1 : l0)));
    }
    __syncthreads();  // stage buf is refilled by the next iteration's load
  }
  cp_async_wait<0>();
  // Sum over the lanes holding the same member (lane/4 equal mod G), then max over members.
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float x = colsum[n][e];
      for (int o = 16; o >= 4 * G; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
      for (int o = 4; o < 4 * G; o <<= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
      colsum[n][e] = x;
    }
  if (lane < 4) {
    const float inv_lq = 1.f / static_cast<float>(p.lq);
    const float tau = head_tau(s, params, false, h);
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = c_first + warp * kTcPerWarp + n * 8 + 2 * lane + e;
        if (c >= K) continue;
        const bool live = off[c + 1] > off[c];
        const float score = colsum[n][e] * inv_lq;
        const int64_t at = static_cast<int64_t>(bh) * capacity + c;
        flags[at] = live && score > tau;
        if (scores) scores[at] = live ? score : neg_inf();
      }
  }
}

// ---- host side ---------------------------------------------------------------------------------

size_t align_up(size_t x) { return (x + 255) & ~size_t{255}; }

// Scratch layout; every buffer is sized for the worst case so launches never depend on data.
struct Workspace {
  int rows, level_capacity, tiles_a, chunks_a;
  bool store_z;
  float2* partials;
  float* logden;
  float* z;
  uint8_t* flags;
  int32_t *kept, *prefix, *num_kept, *num_candidates;
  // Decode fast path (rows <= kMaxFastRows): z [bh][cap][fast_r], partials [bh][fast_chunks][fast_r],
  // chunk_totals [bh][select_chunks]; its chunk-local lists reuse kept / prefix (general path only).
  int fast_r, fast_chunks, select_chunks;
  int2* chunk_totals;
  // Tensor-core prefill path (rows > kMaxFastRows, flat): strips of kTcStrip candidates, grouped
  // into tc_chunks chunks of tc_strips_per_chunk so its partials stay under the same ~64 MB cap.
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
    kept = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * bh * level_capacity));
    prefix = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * bh * level_capacity));
    num_kept = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * bh));
    num_candidates = reinterpret_cast<int32_t*>(take(sizeof(int32_t) * bh));
    fast_r = rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : rows <= kMaxFastRows ? 8 : 0;
    fast_chunks = (std::max(lim.max_clusters, 1) + kStreamChunk - 1) / kStreamChunk;
    select_chunks = (std::max(lim.max_clusters, 1) + kSelectChunk - 1) / kSelectChunk;
    fast_z = fast_r ? reinterpret_cast<float*>(take(sizeof(float) * bh * level_capacity * fast_r)) : nullptr;
    fast_partials = fast_r ? reinterpret_cast<float2*>(take(sizeof(float2) * bh * fast_chunks * fast_r)) : nullptr;
    chunk_totals = fast_r ? reinterpret_cast<int2*>(take(sizeof(int2) * bh * select_chunks)) : nullptr;
    bytes = off;
  }
};

// Decode fast path: K1, K2a, K2b (see "decode fast path" above).
template <int D, int R>
cudaError_t run_fast_selection(const AttentionShape& s, const ProblemArgs& p, const SelectionParams& params,
                               const Workspace& ws, const Selection& out, float* scores_out, cudaStream_t stream) {
  score_stream_kernel<D, R><<<dim3(ws.fast_chunks, s.num_kv_heads, s.batch), kThreads, 0, stream>>>(
      p, ws.fast_chunks, ws.level_capacity, ws.fast_z, ws.fast_partials);
  const dim3 chunks(ws.select_chunks, s.num_kv_heads, s.batch);
  select_chunk_kernel<R><<<chunks, kThreads, 0, stream>>>(p, params, ws.fast_chunks, ws.level_capacity, ws.fast_z,
                                                         ws.fast_partials, ws.kept, ws.prefix, ws.chunk_totals,
                                                         ws.select_chunks, scores_out);
  place_chunk_kernel<<<chunks, kThreads, 0, stream>>>(p, ws.level_capacity, ws.kept, ws.prefix, ws.chunk_totals,
                                                      ws.select_chunks, out);
  return cudaGetLastError();
}

template <int D>
cudaError_t run_selection(const AttentionShape& s, const SequenceLayerBf16* seqs, const void* q,
                          const SelectionParams& params, const SelectionLimits& lim, const Selection& out,
                          void* workspace, float* scores_out, cudaStream_t stream) {
  Workspace ws(s, lim, workspace);
  const ProblemArgs p{seqs, static_cast<const __nv_bfloat16*>(q), s.query_len, s.num_q_heads, s.num_kv_heads,
                      s.group(), 1.f / sqrtf(static_cast<float>(D))};
  const int bh = s.batch * s.num_kv_heads;
  if (!params.hierarchical && ws.fast_r > 0) {
    switch (ws.fast_r) {
      case 1: return run_fast_selection<D, 1>(s, p, params, ws, out, scores_out, stream);
      case 2: return run_fast_selection<D, 2>(s, p, params, ws, out, scores_out, stream);
      case 4: return run_fast_selection<D, 4>(s, p, params, ws, out, scores_out, stream);
      default: return run_fast_selection<D, 8>(s, p, params, ws, out, scores_out, stream);
    }
  }
  if (!params.hierarchical) {  // prefill block (rows > kMaxFastRows), flat: tensor-core passes
    const dim3 heads(s.num_kv_heads, s.batch);
    const LevelArgs flat{Level::kFlat, nullptr, nullptr, nullptr, nullptr, 0};
    tc_lse_kernel<D><<<dim3(ws.tc_chunks, s.num_kv_heads, s.batch), kTcThreads, 0, stream>>>(
        p, ws.tc_strips_per_chunk, ws.tc_chunks, ws.partials);
    log_denominator_kernel<<<heads, kThreads, 0, stream>>>(p, flat, ws.tc_strips_per_chunk * (kTcStrip / kTile),
                                                           ws.tc_chunks, ws.partials, ws.logden);
    tc_flags_kernel<D><<<dim3(ws.tc_strips, s.num_kv_heads, s.batch), kTcThreads, 0, stream>>>(
        p, params, ws.logden, ws.flags, scores_out, ws.level_capacity);
    compact_kernel<D><<<heads, 1024, 0, stream>>>(p, flat, ws.flags, ws.level_capacity, out, ws.kept, ws.prefix,
                                                 ws.num_kept, ws.num_candidates);
    return cudaGetLastError();
  }
  const int tiles = (ws.level_capacity + kTile - 1) / kTile;
  // Pass 2 recomputes logits for prefill blocks: give each CTA several tiles but keep ~4 waves.
  const int tiles_c = ws.store_z ? 1 : std::max(1, tiles * bh / (4 * 132));
  const int chunks_c = (tiles + tiles_c - 1) / tiles_c;
  const size_t smem_a = sizeof(TileSmem<D>) + sizeof(float2) * ws.rows;
  cudaError_t err = cudaFuncSetAttribute(lse_partials_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem_a));
  if (err != cudaSuccess) return err;
  const dim3 heads(s.num_kv_heads, s.batch);

  // First level: flat, or coarse for a hierarchical index.
  const LevelArgs first{params.hierarchical ? Level::kCoarse : Level::kFlat, nullptr, nullptr, nullptr, nullptr, 0};
  lse_partials_kernel<D><<<dim3(ws.chunks_a, s.num_kv_heads, s.batch), kThreads, smem_a, stream>>>(
      p, first, ws.tiles_a, ws.chunks_a, ws.partials, ws.z, ws.level_capacity);
  log_denominator_kernel<<<heads, kThreads, 0, stream>>>(p, first, ws.tiles_a, ws.chunks_a, ws.partials, ws.logden);
  flags_kernel<D><<<dim3(chunks_c, s.num_kv_heads, s.batch), kThreads, 0, stream>>>(
      p, first, tiles_c, params, ws.logden, ws.z, ws.level_capacity, ws.flags,
      params.hierarchical ? nullptr : scores_out, ws.level_capacity);
  compact_kernel<D><<<heads, 1024, 0, stream>>>(p, first, ws.flags, ws.level_capacity, out, ws.kept, ws.prefix,
                                               ws.num_kept, ws.num_candidates);
  if (!params.hierarchical) return cudaGetLastError();

  // Children of the kept coarse clusters, scored with the coarse denominator (never the others).
  const LevelArgs children{Level::kChildren, ws.kept, ws.prefix, ws.num_kept, ws.num_candidates, ws.level_capacity};
  const int fine_tiles = (lim.max_clusters + kTile - 1) / kTile;
  const int tiles_f = ws.store_z ? 1 : std::max(1, fine_tiles * bh / (4 * 132));
  flags_kernel<D><<<dim3((fine_tiles + tiles_f - 1) / tiles_f, s.num_kv_heads, s.batch), kThreads, 0, stream>>>(
      p, children, tiles_f, params, ws.logden, nullptr, 0, ws.flags, scores_out, ws.level_capacity);
  compact_kernel<D><<<heads, 1024, 0, stream>>>(p, children, ws.flags, ws.level_capacity, out, nullptr, nullptr,
                                               nullptr, nullptr);
  return cudaGetLastError();
}

}  // namespace
}  // namespace detail

size_t selection_workspace_bytes(const AttentionShape& shape, const SelectionLimits& limits) {
  return detail::Workspace(shape, limits, nullptr).bytes;
}

int select_clusters(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                    const SelectionParams& params, const SelectionLimits& limits, const Selection& out,
                    void* workspace, float* scores_out, void* stream) {
  const int g = shape.group();
  if ((g != 1 && g != 2 && g != 4 && g != 8) || shape.query_len * g > 16384 || shape.num_q_heads != g * shape.num_kv_heads)
    return cudaErrorInvalidValue;
  if (params.hierarchical && limits.max_coarse <= 0) return cudaErrorInvalidValue;
  const auto st = static_cast<cudaStream_t>(stream);
  switch (shape.head_dim) {
    case 64: return detail::run_selection<64>(shape, seqs, q, params, limits, out, workspace, scores_out, st);
    case 128: return detail::run_selection<128>(shape, seqs, q, params, limits, out, workspace, scores_out, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace squeezeserve::kernels
