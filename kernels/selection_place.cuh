// Internal to selection_decode.cu (not a public header): the decode path's compaction, which
// scores a chunk of a level's candidates against the head's log denominators, thresholds them and
// writes the kept ones (and the estimate's) in candidate order at the offsets the head's earlier
// chunks publish (single-pass decoupled look-back). select_place_kernel runs it on K1's logits;
// with SelectionLaunch::fused_place each two-level stream runs it on its own chunk (the coarse
// level behind a barrier among the head's chunks instead of the look-back).
#pragma once

#include <type_traits>

#include "kernels/selection_common.cuh"

namespace squeezeserve::kernels::detail {

// The scratch a level's launches pass along (Workspace, selection_common.cuh).
struct StreamScratch {
  int capacity;          // per-head stride of z, of `children` and of `scores`
  float* z;              // [bh][capacity][R]
  float2* partials;      // [bh][den_chunks][R]: the flat level's, or the coarse one's
  int den_chunks;
  unsigned long long* chunk_words;  // [bh][select_chunks]: a K2 chunk's totals once published (pack_totals), else 0
  int select_chunks;
  int32_t *children, *num_children, *coarse_estimated;
  unsigned long long* children_words;  // [bh][children_chunks]: the children's fused stream's (kStreamChunk each)
  int children_chunks;
  int4* coarse_totals;  // [bh][coarse_chunks]: the coarse fused stream's chunk totals (behind its barrier)
  int coarse_chunks;
};

// Log denominators of the R rows of (b, h) from the K1 partials (read through L2: the coarse fused
// stream reads them in the launch that wrote them, behind head_barrier), into smem (warp r merges row r;
// rows <= kMaxFastRows = kWarps). Fixed order: lane-strided (chunks lane, lane + 32, ...), then the
// warp tree. A lane issues up to kBatch loads before it merges: one round trip up to 32 * kBatch
// chunks (64K candidates), where a load per merge was one round trip per 32 chunks (4 at Llama-3
// 512K, on the compaction's critical path).
template <int R>
__device__ void fast_log_denominators(int bh, int K, int rows, int num_chunks, const float2* partials,
                                      float (&logden)[R]) {
  constexpr int kBatch = 8;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int used = (K + kStreamChunk - 1) / kStreamChunk;
  if (warp >= rows) return;
  float2 acc = make_float2(neg_inf(), 0.f);
  for (int c0 = lane; c0 < used; c0 += 32 * kBatch) {
    float2 x[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int c = c0 + 32 * u;
      x[u] = c < used ? __ldcg(partials + (static_cast<int64_t>(bh) * num_chunks + c) * R + warp)
                      : make_float2(neg_inf(), 0.f);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u)
      if (c0 + 32 * u < used) acc = lse_merge(acc, x[u]);
  }
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

// Ordered exclusive scan of a compaction CTA's (keep, rows) pairs, candidate e * 256 + tid owning
// x[e]: returns in at[e] the pair's position among the chunk's kept candidates (and rows before it),
// and the chunk's totals. One warp scan per e, then warp 0 scans the kPer * 8 warp sums in (e, warp)
// order. kPer = kSelectPer in select_place_kernel, 1 in the fused streams.
template <int kPer>
__device__ int2 chunk_exclusive_scan(const int2 (&x)[kPer], int2 (&at)[kPer]) {
  static_assert(kPer * kWarps <= 32, "warp 0 scans one warp sum per lane");
  __shared__ int2 base[32];
  __shared__ int2 total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    const int2 inc = warp_inclusive_scan(x[e]);
    at[e] = make_int2(inc.x - x[e].x, inc.y - x[e].y);
    if (lane == 31) base[e * kWarps + warp] = inc;
  }
  __syncthreads();
  if (warp == 0) {
    const int2 sum = lane < kPer * kWarps ? base[lane] : make_int2(0, 0);
    const int2 inc = warp_inclusive_scan(sum);
    base[lane] = make_int2(inc.x - sum.x, inc.y - sum.y);
    if (lane == 31) total = inc;
  }
  __syncthreads();
#pragma unroll
  for (int e = 0; e < kPer; ++e) {
    at[e].x += base[e * kWarps + warp].x;
    at[e].y += base[e * kWarps + warp].y;
  }
  return total;
}

// A chunk's totals (kept, their weight, live but not kept) and the flag that publishes them, as one
// 64-bit word (StreamScratch::chunk_words): bit 63 = published, kept << 52 and live-not-kept << 41
// (each <= kSelectChunk = 1024: 11 bits), the weight in bits 0-40 (rows or children, < 2^31). One
// aligned 64-bit store and load are single-copy atomic, so a relaxed load that sees the flag sees
// the totals: one round trip per look-back, no release fence before the store (run 12 published an
// int4, then a flag with a release store, and read them with two dependent loads).
constexpr unsigned long long kPublished = 1ull << 63;
__device__ __forceinline__ unsigned long long pack_totals(int4 t) {
  static_assert(kSelectChunk < (1 << 11), "a chunk's counts fit 11 bits");
  return kPublished | static_cast<unsigned long long>(t.x) << 52 | static_cast<unsigned long long>(t.z) << 41 |
         static_cast<unsigned long long>(static_cast<unsigned>(t.y));
}
__device__ __forceinline__ int4 unpack_totals(unsigned long long w) {
  return make_int4(static_cast<int>(w >> 52 & 0x7ff), static_cast<int>(w & ((1ull << 41) - 1)),
                   static_cast<int>(w >> 41 & 0x7ff), 0);
}
__device__ __forceinline__ void store_word(unsigned long long* at, unsigned long long w) {
  asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(at), "l"(w) : "memory");
}
__device__ __forceinline__ unsigned long long load_word(const unsigned long long* at) {
  unsigned long long w;
  asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];" : "=l"(w) : "l"(at) : "memory");
  return w;
}

// The per-head results the last chunk writes from the head's totals (kept, weight, pruned).
template <Level LV>
__device__ void finish_head(const SequenceLayerBf16& s, const HeadLevel& v, const StreamScratch& ws,
                            const Selection& out, int bh, int4 t, bool estimate, int estimate_base) {
  if (LV == Level::kCoarse) {
    ws.num_children[bh] = t.y;
    ws.coarse_estimated[bh] = estimate ? t.z : 0;
    return;
  }
  out.counts[bh] = t.x;
  out.rows[bh] = t.y;
  // Scored: every fine centroid (one level), or the coarse ones and the non-empty children.
  out.comparisons[bh] = LV == Level::kChildren ? s.num_coarse + t.x + t.z : v.num_candidates;
  if (out.estimated) out.estimated[bh] = estimate ? estimate_base + t.z : 0;
}

// The coarse fused stream's barrier among a head's chunks (SelectionLaunch::fused_place): thread 0
// counts this CTA in `counter` (SelectionLaunch::head_sync: zero before the launch) and waits until
// it reaches `target`; every thread returns after it. The caller fences its writes first
// (__threadfence), which the other chunks then read through L2. Deadlock-free where every chunk of
// a head can be resident at once (the launcher checks it): a head's chunks are consecutive block
// indices, dispatched in order, so the heads before it finish and free their SMs. A wait past 10 s
// of the global timer is a bug in the counts: trap (a launch error) instead of hanging the GPU.
__device__ __forceinline__ void head_barrier(int* counter, int target) {
  __syncthreads();  // every thread's writes fenced
  if (threadIdx.x == 0) {
    atomicAdd(counter, 1);
    uint64_t since = 0;
    for (uint32_t polls = 1;; ++polls) {
      int seen;
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
      if (seen >= target) break;
      if (polls % 1024 == 0) {
        uint64_t now;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
        if (since == 0) since = now;
        else if (now - since > 10000000000ull) __trap();
      }
    }
  }
  __syncthreads();
}

// A warp's sum of its lanes' chunk totals (kept, weight, live-not-kept).
__device__ __forceinline__ int4 warp_sum_totals(int4 sum) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    sum.x += __shfl_xor_sync(0xffffffffu, sum.x, o);
    sum.y += __shfl_xor_sync(0xffffffffu, sum.y, o);
    sum.z += __shfl_xor_sync(0xffffffffu, sum.z, o);
  }
  return sum;
}

// The sum of the totals of chunks [0, chunk) (warp 0, a lane per chunk, through L2; integer sums,
// exact in any order). Every thread calls it.
__device__ __forceinline__ int4 earlier_totals(const int4* totals, int chunk) {
  __shared__ int4 earlier_sum;
  if (threadIdx.x < 32) {
    int4 sum = make_int4(0, 0, 0, 0);
    for (int c = threadIdx.x; c < chunk; c += 32) {
      const int4 t = __ldcg(totals + c);
      sum = make_int4(sum.x + t.x, sum.y + t.y, sum.z + t.z, 0);
    }
    sum = warp_sum_totals(sum);
    if (threadIdx.x == 0) earlier_sum = sum;
  }
  __syncthreads();
  return earlier_sum;
}

// What a compaction CTA holds for its (sequence, KV head) at a level, and the three steps every
// compaction takes with it (select_place_kernel, and a fused stream placing its own chunk,
// SelectionLaunch::fused_place; the coarse one sums the earlier totals behind its barrier instead
// of the look-back):
//   verdict   a candidate's group score against the threshold: (kept | estimated << 16, the
//             kept candidate's weight);
//   look_back publish the chunk's totals, sum those of the head's earlier chunks;
//   write     a candidate's entry in the lists at the offset the scan and the look-back give it.
template <int R, Level LV>
struct Placement {
  const SequenceLayerBf16& s;
  const SelectionParams& params;
  const float* logden;  // [R], shared memory: the rows' log denominators
  int member[R];        // group member of row r = t * g + j, -1 for padding rows
  int g;
  float inv_lq, tau;
  bool read_ahead, estimate, logits;
  int estimate_base;
  ForcedClusters forced;

  // All threads call it, converged (the coarse level's forced parents are a warp search).
  __device__ __forceinline__ Placement(const SequenceLayerBf16& seq, const SelectionParams& prm, const ProblemArgs& p,
                                       const Selection& out, const StreamScratch& ws, const float* ld, int h, int bh)
      : s(seq), params(prm), logden(ld), g(p.g) {
    const int rows = p.lq * p.g;
#pragma unroll
    for (int r = 0; r < R; ++r) member[r] = r < rows ? r % p.g : -1;
    inv_lq = 1.f / static_cast<float>(p.lq);
    tau = head_tau(s, params, LV == Level::kCoarse, h);  // calibrated at ingest
    read_ahead = s.read_ahead != nullptr;
    estimate = estimate_on(s, out);
    logits = estimate && estimate_logits_on(out, p);
    estimate_base = estimate && LV == Level::kChildren ? ws.coarse_estimated[bh] : 0;
    if (read_ahead) forced.load(s, h, p.g, LV == Level::kCoarse);
  }

  // x = kept + (estimated: live, not kept, above the floor << 16) (a chunk holds at most 1024
  // candidates: the two counts never carry into each other), y = the weight of a kept candidate.
  // `score`, when set, receives the group score (-inf for an empty cluster).
  __device__ __forceinline__ int2 verdict(const float (&z)[R], bool in, int cluster, int n, int weight,
                                          float* score) const {
    float pr[R];  // capped: a child over the coarse denominator can exceed p-hat = 1 by far
#pragma unroll
    for (int r = 0; r < R; ++r) pr[r] = member[r] >= 0 ? __expf(fminf(z[r] - logden[r], kMaxLogScore)) : 0.f;
    const float best = group_score<R>(pr, member, g, inv_lq);
    const bool live = in && n > 0;
    if (score) *score = live ? best : neg_inf();
    const bool kept = live && (best > tau || (read_ahead && forced.contains(cluster)));
    const bool estimated = live && !kept && above_estimate_floor(best, tau, params);
    return make_int2(static_cast<int>(kept) | static_cast<int>(estimated) << 16, kept ? weight : 0);
  }

  // Publishes this chunk's totals `own` in words[chunk] (the head's words), then sums those of the
  // head's earlier chunks (warp 0: a lane per chunk; integer sums, exact in any order). Chunk c <
  // this one has a lower block index: it was dispatched first and never waits for this one, so the
  // spin ends. Every thread calls it; returns the earlier chunks' (kept, weight, live-not-kept).
  __device__ __forceinline__ int4 look_back(unsigned long long* words, int chunk, int4 own) const {
    __shared__ int4 earlier_sum;
    if (threadIdx.x == 0) store_word(words + chunk, pack_totals(own));
    if (threadIdx.x < 32) {
      int4 sum = make_int4(0, 0, 0, 0);
      for (int c = threadIdx.x; c < chunk; c += 32) {
        unsigned long long w;
        while (!((w = load_word(words + c)) & kPublished)) {
        }
        const int4 t = unpack_totals(w);
        sum = make_int4(sum.x + t.x, sum.y + t.y, sum.z + t.z, 0);
      }
      sum = warp_sum_totals(sum);
      if (threadIdx.x == 0) earlier_sum = sum;
    }
    __syncthreads();
    return earlier_sum;
  }

  // Candidate `cluster`'s entries: kept, the cluster (or, coarse, its children: the next level's
  // candidates, in order); estimated, its id (the children's after the coarse level's) and logits.
  // keep: its verdict; at: its place in the chunk (the scan); before: the earlier chunks' totals.
  __device__ __forceinline__ void write(const HeadLevel& v, const StreamScratch& ws, const Selection& out, int bh,
                                        int2 keep, int2 at, int4 before, int cluster, int n, int weight,
                                        const float (&z)[R]) const {
    if (keep.x & 0xffff) {
      const int start = before.y + at.y;
      if (LV == Level::kCoarse) {
        int32_t* to = ws.children + static_cast<int64_t>(bh) * ws.capacity + start;
        const int first_child = v.coarse_off[cluster];
        for (int k = 0; k < weight; ++k) to[k] = first_child + k;
      } else {
        const int64_t to = static_cast<int64_t>(bh) * out.capacity + before.x + (at.x & 0xffff);
        out.cluster_ids[to] = cluster;
        out.row_start[to] = start;
      }
    } else if (keep.x && estimate) {
      const int64_t to = static_cast<int64_t>(bh) * out.estimate_capacity + estimate_base + before.z + (at.x >> 16);
      out.estimate_ids[to] = LV == Level::kCoarse ? s.num_clusters + cluster : cluster;
      if (logits) {  // decode: row r is group member r; R = the stride (estimate_logit_stride)
        const float log_n = __logf(static_cast<float>(n));  // the keys it stands for
#pragma unroll
        for (int r = 0; r < R; ++r) out.estimate_logits[to * R + r] = member[r] >= 0 ? z[r] + log_n : 0.f;
      }
    }
  }
};

// Stands in for Placement where a kernel does not place (std::conditional_t in score_mma_kernel).
struct NoPlacement {
  template <class... Args>
  __device__ __forceinline__ explicit NoPlacement(Args...) {}
};

}  // namespace squeezeserve::kernels::detail
