// CUDA-core selection passes for any level (selection_common.cuh lists the paths): the prefill
// blocks of hierarchical indexes run here, and so do the log-denominator merge and the ordered
// compaction that the tensor-core path reuses. Every kernel tiles 32 candidates (one per lane) x 32
// query rows (four per warp, 8 warps).
#include "kernels/selection_common.cuh"

namespace squeezeserve::kernels::detail {
namespace {

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
  const HeadLevel v = head_level(p, l, b, h, D);
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

// Pass 1b: log denominators, one thread per query row, its chunks merged in chunk order (fixed:
// deterministic). Consecutive threads read consecutive rows of a chunk (coalesced); one warp per
// row with lanes over the chunks read a 32-byte sector per 8-byte partial and, with one CTA per
// (sequence, head), left most of the GPU idle: 0.46 ms (1.8 ms at 4K rows, Llama-3 GQA) per
// 1K-token prefill block at 512K.
// grid (ceil(rows / kThreads), H_kv, B).
__global__ void __launch_bounds__(kThreads) log_denominator_kernel(ProblemArgs p, LevelArgs l, int tiles_per_chunk,
                                                                   int num_chunks, const float2* partials,
                                                                   float* logden) {
  const int b = blockIdx.z, h = blockIdx.y, bh = b * p.hkv + h;
  const SequenceLayerBf16& s = p.seqs[b];
  const int num = l.level == Level::kCoarse ? s.num_coarse : s.num_clusters;
  const int used = min(num_chunks, (num + tiles_per_chunk * kTile - 1) / (tiles_per_chunk * kTile));
  const int rows = p.lq * p.g, r = blockIdx.x * kThreads + threadIdx.x;
  if (r >= rows) return;
  const float2* part = partials + static_cast<int64_t>(bh) * num_chunks * rows + r;
  float2 acc = make_float2(neg_inf(), 0.f);
#pragma unroll 8
  for (int c = 0; c < used; ++c) acc = lse_merge(acc, part[static_cast<int64_t>(c) * rows]);
  logden[static_cast<int64_t>(bh) * rows + r] = acc.y > 0.f ? acc.x + __logf(acc.y) : neg_inf();
}

// Pass 2: group score of each candidate, score = max_j mean_t exp(z - logden), and its flags
// (kFlagLive: non-empty; kFlagKeep: live and score > the head's threshold of the level, coarse for
// Level::kCoarse, else fine, or forced by read-ahead; kFlagEstimate: candidate_flags).
// Row r = t*g + j: each thread sums its rows' p into one slot per group member j (smem, private to
// the thread), and the warps' slots are combined in a fixed order (deterministic).
// grid (chunks, H_kv, B).
template <int D>
__global__ void __launch_bounds__(kThreads) flags_kernel(ProblemArgs p, LevelArgs l, int tiles_per_chunk,
                                                         SelectionParams params, const float* logden,
                                                         const float* z_in, int z_capacity, uint8_t* flags,
                                                         float* scores, int capacity) {
  __shared__ __align__(16) TileSmem<D> sm;
  __shared__ float partial[kWarps][kMaxGroup][kTile];
  const int b = blockIdx.z, h = blockIdx.y, bh = b * p.hkv + h;
  const HeadLevel v = head_level(p, l, b, h, D);
  const int rows = p.lq * p.g, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* ld = logden + static_cast<int64_t>(bh) * rows;
  const float tau = head_tau(p.seqs[b], params, l.level == Level::kCoarse, h);
  const bool read_ahead = p.seqs[b].read_ahead != nullptr;
  ForcedClusters forced;
  if (read_ahead && warp == 0) forced.load(p.seqs[b], h, p.g, l.level == Level::kCoarse);
  for (int t = 0; t < tiles_per_chunk; ++t) {
    const int c0 = (blockIdx.x * tiles_per_chunk + t) * kTile;
    if (c0 >= v.num_candidates) break;
    __syncthreads();
    load_candidate_tile<D>(sm, v, l.level, c0, z_in == nullptr);
    for (int j = 0; j < p.g; ++j) partial[warp][j][lane] = 0.f;
    int member[kRowsPerWarp];  // group member (r % g) of row r = r0 + warp + kWarps * i, kept up to date
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) member[i] = (warp + kWarps * i) % p.g;
    const int member_step = kTile % p.g;
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
        if (r < rows && sm.log_size[lane] != neg_inf())
          partial[warp][member[i]][lane] += __expf(fminf(z[i] - ld[r], kMaxLogScore));
        member[i] += member_step;
        if (member[i] >= p.g) member[i] -= p.g;
      }
      if (!z_in) __syncthreads();
    }
    __syncthreads();
    if (warp == 0 && c0 + lane < v.num_candidates) {
      float best = neg_inf();
      for (int j = 0; j < p.g; ++j) {
        float sum = 0.f;
        for (int w = 0; w < kWarps; ++w) sum += partial[w][j][lane];
        best = fmaxf(best, sum / p.lq);
      }
      const bool live = sm.log_size[lane] != neg_inf();
      const bool keep = live && (best > tau || (read_ahead && forced.contains(sm.cluster[lane])));
      const int64_t at = static_cast<int64_t>(bh) * capacity + c0 + lane;
      flags[at] = candidate_flags(live, keep, best, tau, params);
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
// starts, counts, rows, comparisons. Coarse level: the ids of the kept coarse clusters' children,
// in order, and their count: the candidates of the children level. With the estimate on, the
// live but not kept candidates of each level too (estimate_ids: the coarse level's as K + c
// first, then the fine ones). Prefill blocks only (decode selections write the estimate's logits:
// selection_decode.cu). grid (H_kv, B), 1024 threads.
template <int D>
__global__ void __launch_bounds__(1024) compact_kernel(ProblemArgs p, LevelArgs l, const uint8_t* flags, int capacity,
                                                       Selection out, int32_t* children_out,
                                                       int32_t* num_candidates_out) {
  const int b = blockIdx.y, h = blockIdx.x, bh = b * p.hkv + h;
  const HeadLevel v = head_level(p, l, b, h, D);
  const bool coarse = l.level == Level::kCoarse;
  const bool estimate = estimate_on(p.seqs[b], out);
  // The children's estimated clusters follow the coarse level's (written by its compaction).
  const int estimate_base = estimate && l.level == Level::kChildren ? out.estimated[bh] : 0;
  int32_t* estimate_ids = estimate ? out.estimate_ids + static_cast<int64_t>(bh) * out.estimate_capacity : nullptr;
  // Each thread owns kPer consecutive candidates per step, so one block scan covers 8192 of them:
  // x = kept + (pruned << 16) never carries, y = rows of the kept ones.
  constexpr int kPer = 8;
  int count = 0, rows = 0, pruned = 0;
  for (int base = 0; base < v.num_candidates; base += 1024 * kPer) {
    int cluster[kPer], weight[kPer];
    bool kept[kPer];
    int2 mine = make_int2(0, 0);
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int i = base + threadIdx.x * kPer + e;
      const uint8_t f = i < v.num_candidates ? flags[static_cast<int64_t>(bh) * capacity + i] : 0;
      kept[e] = f & kFlagKeep;
      const bool dropped = f & kFlagEstimate;  // live, not kept, above the floor: estimated (when on)
      cluster[e] = kept[e] || (dropped && estimate) ? candidate_cluster(v, l.level, i) : -1;
      weight[e] = !kept[e] ? 0 : coarse ? num_children(v, cluster[e]) : cluster_size(v, l.level, cluster[e]);
      mine.x += static_cast<int>(kept[e]) + (static_cast<int>(dropped) << 16);
      mine.y += weight[e];
    }
    int2 total;
    const int2 at = block_exclusive_scan(mine, total);
    int kept_at = count + (at.x & 0xffff), pruned_at = pruned + (at.x >> 16), row_at = rows + at.y;
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      if (cluster[e] < 0) continue;
      if (kept[e]) {
        if (coarse) {  // its children are candidates row_at .. row_at + weight - 1
          int32_t* to = children_out + static_cast<int64_t>(bh) * capacity + row_at;
          for (int k = 0; k < weight[e]; ++k) to[k] = v.coarse_off[cluster[e]] + k;
        } else {
          const int64_t slot = static_cast<int64_t>(bh) * out.capacity + kept_at;
          out.cluster_ids[slot] = cluster[e];
          out.row_start[slot] = row_at;
        }
        ++kept_at;
        row_at += weight[e];
      } else {
        estimate_ids[estimate_base + pruned_at] = coarse ? p.seqs[b].num_clusters + cluster[e] : cluster[e];
        ++pruned_at;
      }
    }
    count += total.x & 0xffff;
    pruned += total.x >> 16;
    rows += total.y;
  }
  __syncthreads();  // every thread has read out.estimated[bh] before thread 0 rewrites it
  if (threadIdx.x != 0) return;
  if (out.estimated) out.estimated[bh] = estimate ? estimate_base + pruned : 0;
  if (coarse) {
    num_candidates_out[bh] = rows;
  } else {
    out.counts[bh] = count;
    out.rows[bh] = rows;
    // Scored: every fine centroid (one level), or the non-empty children of the kept coarse clusters.
    out.comparisons[bh] = l.level == Level::kChildren ? p.seqs[b].num_coarse + count + pruned : v.num_candidates;
  }
}

}  // namespace

template <int D>
cudaError_t run_generic_selection(const AttentionShape& s, const ProblemArgs& p, const SelectionParams& params,
                                  const SelectionLimits& lim, const Workspace& ws, const Selection& out,
                                  float* scores_out, cudaStream_t stream) {
  const int bh = s.batch * s.num_kv_heads;
  const int tiles = (ws.level_capacity + kTile - 1) / kTile;
  // Pass 2 recomputes logits for prefill blocks: give each CTA several tiles but keep ~4 waves.
  const int tiles_c = ws.store_z ? 1 : std::max(1, tiles * bh / (4 * 132));
  const int chunks_c = (tiles + tiles_c - 1) / tiles_c;
  const size_t smem_a = sizeof(TileSmem<D>) + sizeof(float2) * ws.rows;
  cudaError_t err = cudaFuncSetAttribute(lse_partials_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem_a));
  if (err != cudaSuccess) return err;

  // First level: flat, or coarse for a hierarchical index.
  const LevelArgs first{params.hierarchical ? Level::kCoarse : Level::kFlat, nullptr, nullptr, 0};
  lse_partials_kernel<D><<<dim3(ws.chunks_a, s.num_kv_heads, s.batch), kThreads, smem_a, stream>>>(
      p, first, ws.tiles_a, ws.chunks_a, ws.partials, ws.z, ws.level_capacity);
  launch_log_denominators(s, p, first, ws.tiles_a, ws.chunks_a, ws.partials, ws.logden, stream);
  flags_kernel<D><<<dim3(chunks_c, s.num_kv_heads, s.batch), kThreads, 0, stream>>>(
      p, first, tiles_c, params, ws.logden, ws.z, ws.level_capacity, ws.flags,
      params.hierarchical ? nullptr : scores_out, ws.level_capacity);
  launch_compact<D>(s, p, first, ws.flags, ws.level_capacity, out, ws.children, ws.num_candidates, stream);
  if (!params.hierarchical) return cudaSuccess;

  // Children of the kept coarse clusters, scored with the coarse denominator (never the others).
  const LevelArgs children{Level::kChildren, ws.children, ws.num_candidates, ws.level_capacity};
  const int fine_tiles = (lim.max_clusters + kTile - 1) / kTile;
  const int tiles_f = ws.store_z ? 1 : std::max(1, fine_tiles * bh / (4 * 132));
  flags_kernel<D><<<dim3((fine_tiles + tiles_f - 1) / tiles_f, s.num_kv_heads, s.batch), kThreads, 0, stream>>>(
      p, children, tiles_f, params, ws.logden, nullptr, ws.level_capacity, ws.flags, scores_out, ws.level_capacity);
  launch_compact<D>(s, p, children, ws.flags, ws.level_capacity, out, nullptr, nullptr, stream);
  return cudaSuccess;
}

void launch_log_denominators(const AttentionShape& s, const ProblemArgs& p, const LevelArgs& l, int tiles_per_chunk,
                             int num_chunks, const float2* partials, float* logden, cudaStream_t stream) {
  const int rows = s.query_len * s.group();
  log_denominator_kernel<<<dim3((rows + kThreads - 1) / kThreads, s.num_kv_heads, s.batch), kThreads, 0, stream>>>(
      p, l, tiles_per_chunk, num_chunks, partials, logden);
}

template <int D>
void launch_compact(const AttentionShape& s, const ProblemArgs& p, const LevelArgs& l, const uint8_t* flags,
                    int capacity, const Selection& out, int32_t* children_out,
                    int32_t* num_candidates_out, cudaStream_t stream) {
  compact_kernel<D><<<dim3(s.num_kv_heads, s.batch), 1024, 0, stream>>>(p, l, flags, capacity, out, children_out,
                                                                       num_candidates_out);
}

#define SQZ_INSTANTIATE(D_)                                                                                           \
  template cudaError_t run_generic_selection<D_>(const AttentionShape&, const ProblemArgs&, const SelectionParams&, \
                                                 const SelectionLimits&, const Workspace&, const Selection&, float*, \
                                                 cudaStream_t);                                                      \
  template void launch_compact<D_>(const AttentionShape&, const ProblemArgs&, const LevelArgs&, const uint8_t*, int, \
                                   const Selection&, int32_t*, int32_t*, cudaStream_t);
SQZ_INSTANTIATE(64)
SQZ_INSTANTIATE(128)
#undef SQZ_INSTANTIATE

}  // namespace squeezeserve::kernels::detail
