// Selection with R = Lq * g <= 8 query rows: decode steps, and prefill blocks that small
// (selection_common.cuh lists the paths). Flat or two-level indexes.
#include "kernels/chained_launch.cuh"
#include "kernels/mma.cuh"
#include "kernels/selection_common.cuh"
#include "kernels/selection_place.cuh"

namespace squeezeserve::kernels::detail {
namespace {

// Decode selection is a pure stream over the level's bf16 centroids (2D bytes each), so it must run
// at DRAM speed with every warp loading. Two launches per level:
//  K1 score_mma_kernel on tensor cores (a launch on one context scores each chunk once for up to 8
//     sequences; below), or with SelectionLaunch::tensor_core_stream off score_stream_kernel on
//     CUDA cores, grid (ceil(candidates / 256), H_kv, B), 8 warps x 32 centroids per CTA.
//     CUDA cores: a centroid row is read by L = D/8 lanes, 16 B each (a warp covers 32/L centroids
//     per load) and each lane keeps kUnroll loads in flight. The R dot products of a centroid are summed over
//     its L lanes by a halving butterfly: R-1 + log2(L/R) shuffles instead of R*log2(L) (8 vs 32
//     for R = 8, L = 16); afterwards the lane's high bits say which row it holds. Outputs: z =
//     s*q.c in fp32, candidate-major [bh][cap][R] (4R bytes per 2D read, coalesced for K1 and
//     K2), and one LSE partial (max, sum n_c*exp(z - max)) per row per CTA.
//  K2 select_place_kernel, grid (ceil(candidates / 1024), H_kv, B): every CTA merges the head's
//     K1 partials into the log denominators (the same fixed order in every CTA, so all agree bit
//     for bit), scores and thresholds its 1024 candidates (z is L2-resident: 3.4 MB for all heads
//     at 512K; read-ahead's forced clusters are kept whatever their score), ranks the kept and the
//     live but pruned ones (the estimate's, when on) within the chunk, publishes the chunk's totals
//     and sums those of the head's earlier chunks (decoupled look-back, as CUB's single-pass scan:
//     a chunk waits only for chunks of lower block index, which the hardware dispatches first), then
//     writes its lists at those offsets of the output. The head's last chunk writes counts / rows /
//     comparisons / estimated. Its index reads (cluster sizes, thresholds) come before its wait for
//     K1, so after it the critical path is three round trips: logits + partials, the look-back,
//     the lists.
// The output is the one ordered compaction a single CTA per head would produce (that was K2 until
// run 3: 8 CTAs for 8 KV heads left 124 SMs idle and took ~80 us at GQA 512K). No N-sized pass, no
// host round trip. Until run 12 the compaction was two launches (chunk-local lists, then a second
// grid placing them): one dependent launch and one copy of the lists more per level.
//
// Two-level indexes run the two launches twice. The coarse level (Level::kCoarse) keeps coarse
// clusters; its K2 writes the fine ids of their children (the children level's candidates, in
// order) instead of a selection. The children level (Level::kChildren) streams only those fine
// centroids, by id, and scores them with the coarse level's denominators (so its K1 writes no
// partials); its K2 writes the selection. With SelectionLaunch::fused_place (the default) each
// level's stream places its own chunks (score_mma_kernel's kPlace: one launch per level). The
// estimate lists the pruned coarse clusters (as K + c) first, then the pruned children. This
// replaced the CUDA-core passes of selection_generic.cu for decode: 556 us against one level's 328
// (Llama-2 512K, 90%), although two levels read 58% fewer centroid bytes.

// K1's grid has one CTA per (sequence, head) past every level's candidates (x = gridDim.x - 1): it
// zeroes the head's chunk words (unpublished) for the level's K2. On the early-exit path, apart from the stream:
// in the stream's CTAs these stores cost the loop registers (+5 to +20 per thread; 5% of the stream
// at batch 8). After wait_for_previous_grid: the previous kernel may still read them (the coarse
// level's K2) or share the workspace (the attention).
// The coarse level's also zeroes the words of the children's fused stream (SelectionLaunch::
// fused_place: that kernel has no extra CTA; everything before the coarse K1 has finished).
__device__ __forceinline__ void clear_chunk_flags(const StreamScratch& ws, int bh, bool coarse) {
  for (int c = threadIdx.x; c < ws.select_chunks; c += blockDim.x)
    ws.chunk_words[static_cast<int64_t>(bh) * ws.select_chunks + c] = 0ull;
  if (coarse)
    for (int c = threadIdx.x; c < ws.children_chunks; c += blockDim.x)
      ws.children_words[static_cast<int64_t>(bh) * ws.children_chunks + c] = 0ull;
}

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

// The level's view with its kind known at compile time (head_level's branches fold away).
template <Level LV>
__device__ __forceinline__ HeadLevel level_view(const ProblemArgs& p, const LevelArgs& l, int b, int h, int d) {
  return head_level(p, LevelArgs{LV, l.children, l.num_candidates, l.capacity}, b, h, d);
}

// K1 on CUDA cores: one (chunk, KV head, sequence) per CTA, kUnroll 16-byte loads per lane in
// flight in registers. (Staging the whole chunk in shared memory by cp.async instead measured 5-47%
// slower on an H100, bench/kernels/NOTES.md run 10: the stream is bound by its instructions per
// centroid, not by the bytes in flight; run 11 moved them to tensor cores, score_mma_kernel.)
template <int D, int R, Level LV>
__global__ void __launch_bounds__(kThreads) score_stream_kernel(ProblemArgs p, LevelArgs l, StreamScratch ws) {
  constexpr int L = D / 8, CPW = 32 / L;
  constexpr int kPerWarp = kStreamChunk / kWarps;
  constexpr int kSteps = kPerWarp / CPW;
  constexpr int kUnroll = 4;
  constexpr int kLogR = log2_rows<R>();
  constexpr bool kPartials = LV != Level::kChildren;  // the children use the coarse denominators
  static_assert(R <= L, "butterfly needs at least R lanes per centroid");
  __shared__ float log_size[kStreamChunk];
  __shared__ int centroid_of[kStreamChunk];  // kChildren: the fine cluster of each candidate
  __shared__ float2 red[kWarps * CPW][R];
  allow_next_grid();
  // The children level's candidates are the previous kernel's output; the other levels read only
  // the index (fixed) until the queries, so their first centroid loads overlap that kernel's end.
  if constexpr (LV == Level::kChildren) wait_for_previous_grid();
  const int b = blockIdx.z, h = blockIdx.y, chunk = blockIdx.x, bh = b * p.hkv + h;
  const HeadLevel v = level_view<LV>(p, l, b, h, D);
  const int K = v.num_candidates;
  const int c_first = chunk * kStreamChunk;
  if (c_first >= K) {  // past this (sequence, head)'s candidates (they differ); never read
    wait_for_previous_grid();
    if (blockIdx.x == gridDim.x - 1) clear_chunk_flags(ws, bh, LV == Level::kCoarse);
    return;
  }
  const int rows = p.lq * p.g;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, sub = lane % L, slot = lane / L;
  const int warp_first = c_first + warp * kPerWarp;
  if constexpr (LV == Level::kChildren) {
    centroid_of[tid] = c_first + tid < K ? v.children[c_first + tid] : 0;
    __syncthreads();
  }
  auto centroid_row = [&](int c) {  // c: a candidate of this CTA, < K
    const int id = LV == Level::kChildren ? centroid_of[c - c_first] : c;
    return reinterpret_cast<const uint4*>(v.centroids + static_cast<int64_t>(id) * D + sub * 8);
  };

  // Issue the first centroid loads before anything else: they are the long pole.
  uint4 raw[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int c = warp_first + u * CPW + slot;
    raw[u] = c < K ? __ldg(centroid_row(c)) : make_uint4(0u, 0u, 0u, 0u);
  }
  if constexpr (kPartials) {
    const int c = c_first + tid;
    const int n = c < K ? cluster_size(v, LV, c) : 0;
    log_size[tid] = n > 0 ? __logf(static_cast<float>(n)) : neg_inf();
  }
  if constexpr (LV != Level::kChildren) wait_for_previous_grid();  // the queries; z and partials are reused
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
  if constexpr (kPartials) __syncthreads();  // log_size

#pragma unroll 1
  for (int st0 = 0; st0 < kSteps; st0 += kUnroll) {
    uint4 cur[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) cur[u] = raw[u];
    if (st0 + kUnroll < kSteps) {  // next group in flight while this one is reduced
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = warp_first + (st0 + kUnroll + u) * CPW + slot;
        raw[u] = c < K ? __ldg(centroid_row(c)) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = warp_first + (st0 + u) * CPW + slot;
      float k[8];
      bf16x8_to_float(cur[u], k);
      float dot[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float acc = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc = fmaf(q[r][e], k[e], acc);
        dot[r] = acc;
      }
      const float z = butterfly_rows<R, L>(dot, lane) * p.scale;
      if (owner && c < K) {
        ws.z[(static_cast<int64_t>(bh) * ws.capacity + c) * R + my_row] = z;
        const float x = kPartials ? z + log_size[c - c_first] : neg_inf();
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
  if constexpr (!kPartials) return;
  if (owner) red[warp * CPW + slot][my_row] = make_float2(run_m, run_s);
  __syncthreads();
  if (tid < R && tid < rows) {  // fixed merge order: deterministic
    float2 acc = make_float2(neg_inf(), 0.f);
    for (int i = 0; i < kWarps * CPW; ++i) acc = lse_merge(acc, red[i][tid]);
    ws.partials[(static_cast<int64_t>(bh) * ws.den_chunks + chunk) * R + tid] = acc;
  }
}


// A fused stream (score_mma_kernel, kPlace), after its MMAs: thread tid places candidate
// c_first + tid of the chunk (cluster, n keys, weight) from the logits in zs, as
// select_place_kernel places its own (selection_place.cuh). The children level has its
// denominators (the coarse level's) in logden already and finds its offset by look-back. The
// coarse level first waits for every chunk of the head (head_barrier, SelectionLaunch::head_sync:
// the head's LSE partials, then the chunks' totals; a third count marks the chunk done and the last
// one resets the counter for the next launch), so it needs no flags that a launch must clear.
template <int R, Level LV>
__device__ __forceinline__ void place_own_chunk(const ProblemArgs& p, const HeadLevel& v, const StreamScratch& ws,
                                                const Selection& out, int* head_sync, const Placement<R, LV>& place,
                                                const float (*zs)[R], float (&logden)[R], float* scores, int c_first,
                                                int K, int cluster, int n, int weight) {
  const int tid = threadIdx.x, chunk = blockIdx.x, b = blockIdx.z, bh = b * p.hkv + blockIdx.y;
  const int i = c_first + tid, used = (K + kStreamChunk - 1) / kStreamChunk;
  int* sync = LV == Level::kCoarse ? head_sync + bh : nullptr;
  if constexpr (LV == Level::kCoarse) {  // every chunk's partials, then the head's denominators
    __threadfence();                     // this chunk's partials
    head_barrier(sync, used);
    fast_log_denominators<R>(bh, K, p.lq * p.g, ws.den_chunks, ws.partials, logden);
  }
  __syncthreads();  // zs, the log denominators
  float z[R];
#pragma unroll
  for (int r = 0; r < R; ++r) z[r] = zs[tid][r];
  float* score = scores && i < K ? scores + static_cast<int64_t>(bh) * ws.capacity + i : nullptr;
  const int2 keep[1] = {place.verdict(z, i < K, cluster, n, weight, score)};
  int2 at[1];
  const int2 total = chunk_exclusive_scan<1>(keep, at);
  const int4 own = make_int4(total.x & 0xffff, total.y, total.x >> 16, 0);
  int4 before;
  if constexpr (LV == Level::kCoarse) {
    int4* totals = ws.coarse_totals + static_cast<int64_t>(bh) * ws.coarse_chunks;
    if (tid == 0) {
      totals[chunk] = own;
      __threadfence();
    }
    head_barrier(sync, 2 * used);
    before = earlier_totals(totals, chunk);
  } else {
    before = place.look_back(ws.children_words + static_cast<int64_t>(bh) * ws.children_chunks, chunk, own);
  }
  place.write(v, ws, out, bh, keep[0], at[0], before, cluster, n, weight, z);
  if (chunk == used - 1 && tid == 0)
    finish_head<LV>(p.seqs[b], v, ws, out, bh, make_int4(before.x + own.x, before.y + own.y, before.z + own.z, 0),
                    place.estimate, place.estimate_base);
  // Done with the counter (every chunk read the totals before counting itself out): the last resets it.
  if (LV == Level::kCoarse && tid == 0 && atomicAdd(sync, 1) == 3 * used - 1) atomicExch(sync, 0);
}

// K1 on tensor cores (SelectionLaunch::tensor_core_stream, the default): the same outputs
// as the CUDA-core kernel above, z = s q.c per (candidate, row) and one LSE partial per row per CTA, with
// each warp's 32 centroids as the A operand of mma.sync m16n8k16 (two tiles of 16) and the R <= 8
// query rows as B (the n = 8 columns, rows >= R zero). The dot products' k order is permuted so that
// every lane loads whole 16-byte words straight into its fragments: in 32-dim block j, lane
// (group, quad) loads dims [32j + 8quad, +8) of centroid rows group and group + 8 (and of query row
// group), and those 8 dims are k-steps 2j (its first 4) and 2j + 1 (its last 4) of the fragment
// layout (mma.cuh): no shuffles, no conversions, 2 MMAs per 16-byte word where the CUDA-core
// kernel spends 8 conversions, 8R FMAs and its butterfly. The centroid words stay in registers, so
// a CTA scores its chunk for a group of sequences on one index (SelectionLaunch::shared_context;
// group_size > 1, not the children level) by reloading only the queries: per sequence the same
// instructions as alone, so shared and per-sequence launches agree bit for bit.
// Packed columns: with R <= 4 rows a sequence, the n-tile's 8 columns take kPack = 8 / R sequences
// of the group at once (column col: sequence b + col / R, row col % R), so a shared CTA runs
// ceil(group / kPack) passes instead of one per sequence. A column's dot products and its online
// (max, sum) are the same instructions in the same order whichever column it is, so the outputs stay
// those of a per-sequence launch bit for bit. Why: a shared CTA's passes are serial (each a chain
// of MMAs, exp and a CTA barrier for the partials), so scoring a batch of 8 Llama-3 questions (R 4)
// once per chunk took about as long as scoring each question's chunks on CTAs of their own (47 vs
// 51 us at 128K, bench/kernels/NOTES.md run 18), and those read the centroids 8 times.
// Launch bounds: 2 CTAs per SM at D = 128 and 4 at D = 64, the occupancy it had before the
// queries were loaded early (their registers are live under the centroid words'); kPlace at D = 64
// 3 for the children and 2 for the coarse level (its barrier's state: under 3 it spilled 18-46 bytes;
// under 4 the children's verdict spilled 64-104; 12 remain at R = 8).
//
// kPlace (two-level decode, SelectionLaunch::fused_place; one sequence per CTA): the CTA also
// places its own chunk, as select_place_kernel would (place_own_chunk): the logits stay in shared
// memory. The children level merges the coarse level's partials into its denominators under the
// MMAs' loads and publishes its totals to the head's later chunks (look-back); the coarse level
// waits for the head's other chunks twice (their partials, their totals). One launch and one write
// + read of the logits fewer per level; chunks of 256 candidates instead of 1024.
template <int D, int R, Level LV, bool kPlace = false>
__global__ void __launch_bounds__(kThreads, D == 64 ? (kPlace ? (LV == Level::kCoarse ? 2 : 3) : 4) : 2)
    score_mma_kernel(ProblemArgs p, LevelArgs l, StreamScratch ws, int batch, int group_size, SelectionParams params,
                     Selection out, float* scores, int* head_sync) {
  static_assert(!kPlace || LV != Level::kFlat, "the two-level decode's levels place their own chunks");
  constexpr int kBlocks = D / 32;                     // 16-byte words per lane per centroid row
  constexpr int kTiles = kStreamChunk / kWarps / 16;  // 16-centroid MMA tiles per warp (2)
  constexpr bool kPartials = LV != Level::kChildren;
  static_assert(R >= 1 && R <= 8, "the query rows are the 8 columns of one n-tile");
  // Sequences per pass (packed columns above); one where the CTA places its chunk (one sequence).
  constexpr int kPack = kPlace ? 1 : 8 / R;
  __shared__ float log_size[kStreamChunk];
  __shared__ int centroid_of[kStreamChunk];
  __shared__ float2 red[kWarps][kPack * R];  // per column
  __shared__ float zs[kPlace ? kStreamChunk : 1][R];  // kPlace: the chunk's logits
  __shared__ float logden[R];                         // kPlace: the coarse level's denominators
  allow_next_grid();
  if constexpr (LV == Level::kChildren) wait_for_previous_grid();  // the candidates are its output
  const int h = blockIdx.y, chunk = blockIdx.x;
  const int b_first = blockIdx.z * group_size, b_end = min(b_first + group_size, batch);
  const HeadLevel v = level_view<LV>(p, l, b_first, h, D);  // every sequence's (shared: one index)
  const int K = v.num_candidates;
  const int c_first = chunk * kStreamChunk;
  if (c_first >= K) {  // past this (sequence, head)'s candidates; never read
    wait_for_previous_grid();
    if constexpr (kPlace && LV == Level::kCoarse) {  // as the unfused stream's (the extra CTA clears)
      if (blockIdx.x == gridDim.x - 1) clear_chunk_flags(ws, b_first * p.hkv + h, true);
    }
    if constexpr (kPlace) {  // no candidates: chunk 0 writes the zero counts
      if (K == 0 && chunk == 0 && threadIdx.x == 0) {
        const SequenceLayerBf16& s = p.seqs[b_first];
        const bool estimate = estimate_on(s, out);
        const int bh = b_first * p.hkv + h;
        const int base = estimate && LV == Level::kChildren ? ws.coarse_estimated[bh] : 0;
        finish_head<LV>(s, v, ws, out, bh, make_int4(0, 0, 0, 0), estimate, base);
      }
    } else if (blockIdx.x == gridDim.x - 1) {
      for (int b = b_first; b < b_end; ++b) clear_chunk_flags(ws, b * p.hkv + h, LV == Level::kCoarse);
    }
    return;
  }
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, group = lane >> 2, quad = lane & 3;
  const int warp_first = c_first + warp * (kTiles * 16);
  const int rows = p.lq * p.g;
  // Column col of the pass from sequence b: sequence b + col / R, query row col % R; whether that
  // is a row of the group (columns past the rows or the group's sequences are zero and unused).
  // (Unpacked, the pass's one sequence is b < b_end: the same tests as before packing, whose
  // registers the fused placement's variants have no room for.)
  auto column_seq = [&](int b, int col) { return kPack == 1 ? b : b + col / R; };
  auto column_used = [&](int b, int col) {
    return kPack == 1 ? col < rows : col < kPack * R && column_seq(b, col) < b_end && col % R < rows;
  };
  // B fragments of the pass from sequence b: column `group` (zero where unused), the same dims as
  // the centroid words. The queries are the previous kernel's output: loaded right after the wait,
  // so that their round trip runs under the index loads' (it came after the log_size barrier, one
  // dependent round trip more per CTA), and (D = 128: registers fit under 2 CTAs per SM; at D = 64
  // they spill under 4) the next pass's of a shared launch under this one's MMAs.
  constexpr bool kNextQ = D == 128 && !kPlace;
  auto load_q = [&](int b, uint4 (&qb)[kBlocks]) {
    const bool used = column_used(b, group);
    const int row = kPack == 1 ? group : group % R, t = row / p.g, jm = row % p.g;
    const uint4* qrow = reinterpret_cast<const uint4*>(
        p.q + ((static_cast<int64_t>(used ? column_seq(b, group) : b) * p.lq + t) * p.hq + h * p.g + jm) * D + quad * 8);
#pragma unroll
    for (int j = 0; j < kBlocks; ++j) qb[j] = used ? qrow[j * 4] : make_uint4(0u, 0u, 0u, 0u);
  };
  uint4 qb[kBlocks];
  if constexpr (LV == Level::kChildren) {
    load_q(b_first, qb);
    centroid_of[tid] = c_first + tid < K ? v.children[c_first + tid] : 0;
    __syncthreads();
  }
  // This lane's centroid words: tile i, row group (+8 for half 1), block j. Index data only: on
  // the flat and coarse levels they are loaded before waiting for the previous kernel.
  uint4 a[kTiles][2][kBlocks];
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int c = warp_first + i * 16 + half * 8 + group;
      const int id = LV == Level::kChildren ? centroid_of[min(c, K - 1) - c_first] : min(c, K - 1);
      const uint4* row = reinterpret_cast<const uint4*>(v.centroids + static_cast<int64_t>(id) * D + quad * 8);
#pragma unroll
      for (int j = 0; j < kBlocks; ++j) a[i][half][j] = c < K ? __ldg(row + j * 4) : make_uint4(0u, 0u, 0u, 0u);
    }
  // kPlace: thread tid's candidate (cluster, keys, weight) and what its verdict needs, loaded under
  // the words'; the children's denominators are the coarse level's, complete before this launch.
  const int bh_first = b_first * p.hkv + h;
  const bool own_in = c_first + tid < K;
  const int own_cluster = LV == Level::kChildren ? centroid_of[tid] : c_first + tid;
  const int own_n = kPlace && own_in ? cluster_size(v, LV, own_cluster) : 0;
  const int own_weight = LV == Level::kCoarse ? (kPlace && own_in ? num_children(v, own_cluster) : 0) : own_n;
  if constexpr (kPlace && LV == Level::kChildren)
    fast_log_denominators<R>(bh_first, p.seqs[b_first].num_coarse, rows, ws.den_chunks, ws.partials, logden);
  if constexpr (kPartials) {
    const int c = c_first + tid;
    const int n = c < K ? cluster_size(v, LV, c) : 0;
    wait_for_previous_grid();  // the queries; z and the partials are rewritten
    load_q(b_first, qb);
    log_size[tid] = n > 0 ? __logf(static_cast<float>(n)) : neg_inf();
    __syncthreads();  // log_size
  }
  // After the wait: read-ahead's positions are the previous step's output.
  const std::conditional_t<kPlace, Placement<R, LV>, NoPlacement> place(p.seqs[b_first], params, p, out, ws, logden, h,
                                                                         bh_first);

#pragma unroll 1
  for (int b = b_first, bh = bh_first; b < b_end; b += kPack, bh += kPack * p.hkv) {
    uint4 qn[kNextQ ? kBlocks : 1];
    if constexpr (kNextQ) {
      if (b + kPack < b_end) load_q(b + kPack, qn);
    } else if (b > b_first) {
      load_q(b, qb);
    }
    float2 run[2] = {make_float2(neg_inf(), 0.f), make_float2(neg_inf(), 0.f)};  // columns 2quad, 2quad + 1
#pragma unroll
    for (int i = 0; i < kTiles; ++i) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < kBlocks; ++j) {
        const uint4& g0 = a[i][0][j];
        const uint4& g8 = a[i][1][j];
        mma_bf16_16816(acc, {g0.x, g8.x, g0.y, g8.y}, qb[j].x, qb[j].y);  // dims 32j + 8quad + 0..3
        mma_bf16_16816(acc, {g0.z, g8.z, g0.w, g8.w}, qb[j].z, qb[j].w);  // dims 32j + 8quad + 4..7
      }
      // acc: (centroid group, rows 2quad, 2quad + 1), then (centroid group + 8, the same rows).
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int c = warp_first + i * 16 + half * 8 + group;
        const float z0 = acc[2 * half] * p.scale, z1 = acc[2 * half + 1] * p.scale;
        if (kPlace && 2 * quad < R) {  // every candidate row of the chunk: read back by its own thread
          zs[c - c_first][2 * quad] = z0;
          if constexpr (R > 1) zs[c - c_first][2 * quad + 1] = z1;
        } else if (c < K && 2 * quad < kPack * R && (kPack == 1 || column_seq(b, 2 * quad) < b_end)) {
          // rows (2quad, 2quad + 1) % R of their sequences, all R of a sequence's (as unpacked)
          // (Unpacked: the pass's bh, which the fused placement's variants hold without spilling.)
          const int64_t col_bh = kPack == 1 ? bh : static_cast<int64_t>(column_seq(b, 2 * quad)) * p.hkv + h;
          float* at = ws.z + (col_bh * ws.capacity + c) * R + (kPack == 1 ? 2 * quad : 2 * quad % R);
          if constexpr (R == 1) {  // the two columns are two sequences
            at[0] = z0;
            if (column_seq(b, 2 * quad + 1) < b_end)  // the next sequence's (b, KV head) row
              ws.z[(col_bh + p.hkv) * ws.capacity + c] = z1;
          } else {
            *reinterpret_cast<float2*>(at) = make_float2(z0, z1);
          }
        }
        if constexpr (kPartials) {
          if (c < K) {
            const float ls = log_size[c - c_first];  // -inf for an empty cluster: skipped
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float x = (e ? z1 : z0) + ls;
              if (column_used(b, 2 * quad + e) && x != neg_inf()) {  // online (max, sum) of n_c * exp(z)
                if (x > run[e].x) {
                  run[e].y = run[e].y * __expf(run[e].x - x) + 1.f;
                  run[e].x = x;
                } else {
                  run[e].y += __expf(x - run[e].x);
                }
              }
            }
          }
        }
      }
    }
    if constexpr (kPartials) {
      // The warp's partial per row: merge the 8 groups holding the same rows (lanes xor 4, 8, 16).
#pragma unroll
      for (int e = 0; e < 2; ++e) {
#pragma unroll
        for (int o = 4; o < 32; o <<= 1)
          run[e] = lse_merge(run[e], make_float2(__shfl_xor_sync(0xffffffffu, run[e].x, o),
                                                 __shfl_xor_sync(0xffffffffu, run[e].y, o)));
        if (group == 0 && (kPack > 1 || 2 * quad + e < R)) red[warp][2 * quad + e] = run[e];
      }
      __syncthreads();
      if (tid < 8 && column_used(b, tid)) {  // column tid; fixed merge order: deterministic
        float2 acc = make_float2(neg_inf(), 0.f);
        for (int w = 0; w < kWarps; ++w) acc = lse_merge(acc, red[w][tid]);
        const int64_t col_row = kPack == 1 ? bh : static_cast<int64_t>(column_seq(b, tid)) * p.hkv + h;
        ws.partials[(col_row * ws.den_chunks + chunk) * R + (kPack == 1 ? tid : tid % R)] = acc;
      }
      if (b + kPack < b_end) __syncthreads();  // red is rewritten by the next pass
    }
    if constexpr (kNextQ) {
#pragma unroll
      for (int j = 0; j < kBlocks; ++j) qb[j] = qn[j];
    }
  }
  if constexpr (kPlace)
    place_own_chunk<R, LV>(p, v, ws, out, head_sync, place, zs, logden, scores, c_first, K, own_cluster, own_n,
                           own_weight);
}

// K2. grid (select chunks, H_kv, B), 256 threads; thread tid owns candidates
// first + e * 256 + tid (each warp load reads 32 consecutive candidates). A head with no
// candidates runs only its chunk 0, which writes the zero counts. Launch bounds with one CTA per
// SM: without a minimum ptxas held some instantiations to 64-80 registers and spilled 2-8 bytes
// (now 56-108, no spills; the grids are small, 2 CTAs per SM still fit at 108).
template <int R, Level LV>
__global__ void __launch_bounds__(kThreads, 1) select_place_kernel(ProblemArgs p, LevelArgs l, SelectionParams params,
                                                                StreamScratch ws, Selection out, float* scores) {
  __shared__ float logden[R];
  allow_next_grid();
  const int b = blockIdx.z, h = blockIdx.y, chunk = blockIdx.x, bh = b * p.hkv + h;
  const SequenceLayerBf16& s = p.seqs[b];
  const int rows = p.lq * p.g;
  const int first = chunk * kSelectChunk;

  // The chunk's candidates: cluster id, n = the keys it stands for, weight = what keeping it adds
  // (rows, or coarse children). On the flat and coarse levels that is index data (the views, the
  // offsets), read before waiting for K1: under its tail, once the launch overlaps it. The
  // children level's candidates are the coarse compaction's output: read after the wait.
  HeadLevel v{};
  int K = 0;
  int cluster[kSelectPer], n[kSelectPer], weight[kSelectPer];
  auto load_candidates = [&] {
    v = level_view<LV>(p, l, b, h, 0);  // no centroids read here
    K = v.num_candidates;
#pragma unroll
    for (int e = 0; e < kSelectPer; ++e) {
      const int i = first + e * kThreads + threadIdx.x;
      const bool in = i < K;
      cluster[e] = in ? candidate_cluster(v, LV, i) : 0;
      n[e] = in ? cluster_size(v, LV, cluster[e]) : 0;
      weight[e] = LV == Level::kCoarse && in ? num_children(v, cluster[e]) : n[e];
    }
  };
  if constexpr (LV != Level::kChildren) load_candidates();
  wait_for_previous_grid();
  if constexpr (LV == Level::kChildren) load_candidates();
  const int used = (K + kSelectChunk - 1) / kSelectChunk;
  if (used == 0) {  // the children's estimate still counts the coarse level's (estimate_base)
    if (chunk == 0 && threadIdx.x == 0) {
      const bool estimate = estimate_on(s, out);
      const int base = estimate && LV == Level::kChildren ? ws.coarse_estimated[bh] : 0;
      finish_head<LV>(s, v, ws, out, bh, make_int4(0, 0, 0, 0), estimate, base);
    }
    return;
  }
  if (chunk >= used) return;  // past this (sequence, head)'s candidates

  // K1's logits of the chunk, then the (small) denominator merge under their latency.
  float zz[kSelectPer][R];
#pragma unroll
  for (int e = 0; e < kSelectPer; ++e) {
    const int i = first + e * kThreads + threadIdx.x;
#pragma unroll
    for (int r = 0; r < R; ++r) zz[e][r] = 0.f;
    if (i < K) load_logits<R>(ws.z + (static_cast<int64_t>(bh) * ws.capacity + i) * R, zz[e]);
  }
  fast_log_denominators<R>(bh, LV == Level::kFlat ? s.num_clusters : s.num_coarse, rows, ws.den_chunks, ws.partials,
                           logden);
  const Placement<R, LV> place(s, params, p, out, ws, logden, h, bh);
  __syncthreads();  // logden

  int2 keep[kSelectPer];
#pragma unroll
  for (int e = 0; e < kSelectPer; ++e) {
    const int i = first + e * kThreads + threadIdx.x;
    float* score = scores && i < K ? scores + static_cast<int64_t>(bh) * ws.capacity + i : nullptr;
    keep[e] = place.verdict(zz[e], i < K, cluster[e], n[e], weight[e], score);
  }
  int2 at[kSelectPer];
  const int2 total = chunk_exclusive_scan<kSelectPer>(keep, at);
  const int4 own = make_int4(total.x & 0xffff, total.y, total.x >> 16, 0);
  const int4 before = place.look_back(ws.chunk_words + static_cast<int64_t>(bh) * ws.select_chunks, chunk, own);
#pragma unroll
  for (int e = 0; e < kSelectPer; ++e)
    place.write(v, ws, out, bh, keep[e], at[e], before, cluster[e], n[e], weight[e], zz[e]);
  if (chunk == used - 1 && threadIdx.x == 0)
    finish_head<LV>(s, v, ws, out, bh, make_int4(before.x + own.x, before.y + own.y, before.z + own.z, 0),
                    place.estimate, place.estimate_base);
}

// Whether a grid of `ctas` CTAs has at least `per_sm` CTAs per SM of the current device.
bool grid_fills(int64_t ctas, float per_sm) {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return false;
  return static_cast<double>(ctas) >= static_cast<double>(per_sm) * sms;
}

// K1 (shared or per sequence: SelectionLaunch) and K2 of one level.
template <int D, int R, Level LV>
void run_level(const AttentionShape& s, const ProblemArgs& p, const LevelArgs& l, const SelectionParams& params,
               int stream_chunks, const StreamScratch& ws, const Selection& out, float* scores_out,
               const SelectionLaunch& launch, cudaStream_t stream) {
  bool shared = false;
  const int groups = (s.batch + kMaxSharedSequences - 1) / kMaxSharedSequences;
  if constexpr (LV != Level::kChildren) {  // the children's candidates differ per sequence
    shared = launch.shared_context && s.batch > 1 &&
             grid_fills(int64_t{stream_chunks} * s.num_kv_heads * groups, launch.min_shared_sm_fraction);
  }
  // K1's grid: the level's chunks of kStreamChunk candidates (stream_chunks * kStreamChunk >= every
  // sequence's candidates) and one more, which clears K2's flags (clear_chunk_flags).
  // Tensor cores for every row count: with one row per sequence (MHA decode) the CUDA-core kernel
  // measured up to 2% faster per step (run 11, H200), but one kernel keeps a shared launch and a
  // per-sequence one equal bit for bit. Launch errors reach the caller through cudaGetLastError
  // (run_selection).
  if (launch.tensor_core_stream) {
    const int group_size = shared ? kMaxSharedSequences : 1;
    launch_chained(score_mma_kernel<D, R, LV>, dim3(stream_chunks + 1, s.num_kv_heads, shared ? groups : s.batch),
                   dim3(kThreads), 0, stream, p, l, ws, s.batch, group_size, params, out, scores_out, nullptr);
  } else {  // per sequence, also where the launch could share (tensor_core_stream off)
    launch_chained(score_stream_kernel<D, R, LV>, dim3(stream_chunks + 1, s.num_kv_heads, s.batch), dim3(kThreads), 0,
                   stream, p, l, ws);
  }
  launch_chained(select_place_kernel<R, LV>, dim3(ws.select_chunks, s.num_kv_heads, s.batch), dim3(kThreads), 0,
                 stream, p, l, params, ws, out, scores_out);
}

// Whether the coarse level can run fused (score_mma_kernel, kPlace): one sequence per CTA, a
// counter per head (SelectionLaunch::head_sync), and the whole grid resident at once on the current
// device. The barrier itself needs only a head's chunks resident at once, but where the grid takes
// more than one wave, a head whose chunks straddle two waves spins on its SMs until the first wave
// drains: Llama-3 512K batch 8 on an H100 (~900 CTAs against 264 slots) took the two-level
// selection from 114.6 to 130.4 us (NOTES.md run 18), where batch 1 (~110 CTAs) gained. The
// kernel's CTAs per SM are fixed by its build (one sm_90a/sm_80 binary): queried once, not per
// launch; the SM count per call (devices may differ).
template <int D, int R>
bool coarse_fuses(const AttentionShape& s, const SelectionLaunch& launch, int coarse_chunks) {
  if (!launch.head_sync || (launch.shared_context && s.batch > 1)) return false;
  static const int per_sm = [] {
    int n = 0;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, score_mma_kernel<D, R, Level::kCoarse, true>, kThreads,
                                                         0) == cudaSuccess
               ? n
               : 0;
  }();
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return false;
  return int64_t{per_sm} * sms >= int64_t{coarse_chunks + 1} * s.num_kv_heads * s.batch;  // + the extra CTA
}

template <int D, int R>
void run_rows(const AttentionShape& s, const ProblemArgs& p, const SelectionParams& params, const Workspace& w,
              const Selection& out, float* scores_out, const SelectionLaunch& launch, cudaStream_t stream) {
  StreamScratch ws{w.level_capacity,   w.fast_z,         w.fast_partials,    w.fast_chunks,
                   w.chunk_words,      w.select_chunks,  w.children,         w.num_candidates,
                   w.coarse_estimated, w.children_words, w.fast_chunks,      w.coarse_totals,
                   w.coarse_chunks};
  if (!params.hierarchical) {
    const LevelArgs flat{Level::kFlat, nullptr, nullptr, 0};
    return run_level<D, R, Level::kFlat>(s, p, flat, params, w.fast_chunks, ws, out, scores_out, launch, stream);
  }
  ws.den_chunks = w.coarse_chunks;
  // Both levels fused or neither: where the coarse grid takes more than one wave, the children's
  // fused stream lost too (Llama-3 512K batch 8, H100: the selection 113.2 us unfused, 121.1 with
  // the children fused; NOTES.md run 18).
  const bool fused =
      launch.fused_place && launch.tensor_core_stream && coarse_fuses<D, R>(s, launch, w.coarse_chunks);
  const LevelArgs coarse{Level::kCoarse, nullptr, nullptr, 0};
  if (fused) {  // one launch: stream, barrier, place
    launch_chained(score_mma_kernel<D, R, Level::kCoarse, true>, dim3(w.coarse_chunks + 1, s.num_kv_heads, s.batch),
                   dim3(kThreads), 0, stream, p, coarse, ws, s.batch, 1, params, out, nullptr, launch.head_sync);
  } else {
    run_level<D, R, Level::kCoarse>(s, p, coarse, params, w.coarse_chunks, ws, out, nullptr, launch, stream);
  }
  const LevelArgs children{Level::kChildren, w.children, w.num_candidates, w.level_capacity};
  if (fused) {  // one launch: stream and place
    launch_chained(score_mma_kernel<D, R, Level::kChildren, true>, dim3(w.fast_chunks, s.num_kv_heads, s.batch),
                   dim3(kThreads), 0, stream, p, children, ws, s.batch, 1, params, out, scores_out, nullptr);
    return;
  }
  run_level<D, R, Level::kChildren>(s, p, children, params, w.fast_chunks, ws, out, scores_out, launch,
                                    stream);
}

}  // namespace

template <int D>
void run_decode_selection(const AttentionShape& s, const ProblemArgs& p, const SelectionParams& params,
                          const Workspace& ws, const Selection& out, float* scores_out, const SelectionLaunch& launch,
                          cudaStream_t stream) {
  switch (ws.fast_r) {
    case 1: return run_rows<D, 1>(s, p, params, ws, out, scores_out, launch, stream);
    case 2: return run_rows<D, 2>(s, p, params, ws, out, scores_out, launch, stream);
    case 4: return run_rows<D, 4>(s, p, params, ws, out, scores_out, launch, stream);
    default: return run_rows<D, 8>(s, p, params, ws, out, scores_out, launch, stream);
  }
}

template void run_decode_selection<64>(const AttentionShape&, const ProblemArgs&, const SelectionParams&,
                                       const Workspace&, const Selection&, float*, const SelectionLaunch&,
                                       cudaStream_t);
template void run_decode_selection<128>(const AttentionShape&, const ProblemArgs&, const SelectionParams&,
                                        const Workspace&, const Selection&, float*, const SelectionLaunch&,
                                        cudaStream_t);

}  // namespace squeezeserve::kernels::detail
