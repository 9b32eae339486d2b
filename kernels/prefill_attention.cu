// Sparse prefill attention with mma.sync (FlashAttention-2 structure). Contract:
// prefill_attention.h, reference: attention_ref.cc.
//
// CTA = 8 warps = 128 packed query rows (token, group member) of one (sequence, KV head); each
// warp owns 16 rows. KV tiles of 64 virtual rows (selected segments, then dense rows) are gathered
// with cp.async into padded smem (row stride D + 8 bf16: ldmatrix rows fall in distinct banks),
// three stages. S = Q K^T and O += P V on tensor cores; softmax state in fp32, log2 domain.
// Why 128 rows and 3 stages: each gathered K/V tile now feeds twice the MMAs (the gather, not
// the math, limited the 64-row version: ~70 TFLOP/s), and at ~250 registers/thread only one
// 256-thread CTA fits an SM anyway, so its smem (169 KB at D = 128) buys a deeper pipeline.
// Gather addressing: the rows' codes (virtual_rows.cuh) are resolved for 2048 rows (32 tiles) at
// a time into smem by the whole CTA: one window of segment starts, one search per thread, the
// estimate's ids and sizes loaded by all threads at once. A tile's loader then reads its row's code
// from smem. Resolving per tile (a chain of three dependent global loads before each tile's copies
// could be issued) stalled the CTA, the only one on its SM, for most of each tile: the attention ran
// at ~110 TFLOP/s.
// Pruned-cluster estimate: the estimated clusters are virtual rows after the selected ones
// (virtual_rows.cuh), unmasked, with log2 of their key count added to the logit (a per-row bias
// the resolver computes and the loader copies beside the tile). Read-ahead's top key (kernel variant kTop):
// per query row, the most attended selected row and the softmax sum over the context rows.
// Split-K (prefill_attention.h): CTA (tile, split) runs key tiles [t_begin, t_end) of its row
// tile; it finds the segment of its first row with a CTA-wide 256-way search, resolves from there
// in 2048-row chunks as the whole range does, and writes partials that merge_splits_kernel combines.
#include "kernels/cuda_common.cuh"
#include "kernels/mma.cuh"
#include "kernels/prefill_attention.h"
#include "kernels/prefill_mma.cuh"
#include "kernels/softmax_state.cuh"
#include "kernels/virtual_rows.cuh"

#include <algorithm>
#include <climits>
#include <type_traits>

namespace squeezeserve::kernels {
namespace detail {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTileM = 16 * kWarps;  // 128 query rows
constexpr int kTileN = 64;           // KV rows per tile
constexpr int kStages = 3;
constexpr int kChunkRows = 2048;                 // rows resolved at a time (32 tiles)
constexpr int kRowsPerThread = kChunkRows / kThreads;
constexpr int kWindow = kChunkRows + 8;          // segment starts: a chunk's rows lie in kChunkRows + 1

struct PrefillArgs {
  const SequenceLayerBf16* seqs;
  const __nv_bfloat16* q;
  Selection sel;
  __nv_bfloat16* out;
  float* lse;
  TopKeys top;
  int lq, hkv, g;
  float scale_log2;
  // Split-K (splits > 1): partials per (output row [B][Lq][Hq], split): unnormalised output
  // [D], (max, sum, context sum, top logit) in log2 units, and the top key's context position.
  int splits;
  float* part_o;
  float4* part_stat;
  int* part_pos;
  bool skip_padding_warps;  // PrefillLaunch::skip_padding_warps
};

// The selected segment holding virtual row r (< vr.sparse_rows): the last s with row_start[s] <= r,
// by the whole CTA (every thread calls; the result is CTA-uniform), 256 candidates a round, so a
// head's ~26K segments take two rounds of one load per thread instead of ~15 dependent loads.
__device__ int segment_of_row(const VirtualRows& vr, int r) {
  int lo = 0, n = vr.count;  // the segment lies in [lo, lo + n); row_start[lo] <= r
  while (n > 1) {
    const int step = (n + kThreads - 1) / kThreads;
    const int k = static_cast<int>(threadIdx.x) * step;
    const bool at_or_before = k < n && __ldg(vr.row_start + lo + k) <= r;
    const int samples = __syncthreads_count(at_or_before);  // a prefix (row_start ascends), >= 1
    lo += (samples - 1) * step;
    n = min(step, n - (samples - 1) * step);
  }
  return lo;
}

template <int D>
constexpr size_t kSmemBytes = sizeof(__nv_bfloat16) * (kTileM + 2 * kStages * kTileN) * (D + 8) +
                              sizeof(float) * kStages * kTileN +
                              sizeof(int) * (2 * kWindow + 2 * kChunkRows + 4);  // resolver (below)

template <int D, bool kTop>
__global__ void __launch_bounds__(kThreads) prefill_kernel(PrefillArgs a) {
  using Tiles = MmaSyncTiles<D, kTileN>;
  constexpr int kStride = D + 8;  // Q's rows (ldmatrix builds its A fragments for both cores)
  constexpr int kTileElems = Tiles::kTileElems;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* q_smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kTileM][kStride]
  __nv_bfloat16* k_smem = q_smem + kTileM * kStride;                    // [kStages][kTileN][kStride]
  __nv_bfloat16* v_smem = k_smem + kStages * kTileElems;
  float* bias_smem = reinterpret_cast<float*>(v_smem + kStages * kTileElems);  // [kStages][kTileN]
  int* win_start = reinterpret_cast<int*>(bias_smem + kStages * kTileN);  // [kWindow] row_start from seg_lo
  int* win_base = win_start + kWindow;             // [kWindow] offsets[id] - row_start of those segments
  int* chunk_code = win_base + kWindow;            // [kChunkRows] row codes of the resolved chunk
  float* chunk_bias = reinterpret_cast<float*>(chunk_code + kChunkRows);  // [kChunkRows] estimate log2 n
  int* next_seg = reinterpret_cast<int*>(chunk_bias + kChunkRows);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int b = blockIdx.z, h = blockIdx.y, split = blockIdx.x % a.splits, m0 = (blockIdx.x / a.splits) * kTileM;
  const int rows_m = a.lq * a.g, G = a.g;
  const VirtualRows vr = virtual_rows<D>(a.seqs[b], a.sel, b, h, a.hkv, /*decode_group=*/0);

  // Q tile: packed row m -> token m / G, head h * G + m % G (rows past the block are zero).
  for (int c = tid; c < kTileM * D / 8; c += kThreads) {
    const int row = c / (D / 8), col = (c % (D / 8)) * 8, m = m0 + row;
    const __nv_bfloat16* src = a.q;
    int bytes = 0;
    if (m < rows_m) {
      src = a.q + ((static_cast<int64_t>(b) * a.lq + m / G) * a.hkv * G + h * G + m % G) * D + col;
      bytes = 16;
    }
    cp_async_16(q_smem + row * kStride + col, src, bytes);
  }
  cp_async_commit();

  // Causal bound: the last token of this tile sees dense rows < dense_len - Lq + t_last + 1.
  const int t_last = (min(m0 + kTileM, rows_m) - 1) / G;
  const int dense_visible = max(0, min(vr.dense_len, vr.dense_len - a.lq + t_last + 1));
  const int clustered = vr.clustered(), ctx_end = vr.context_rows();
  const int total = clustered + dense_visible;
  const int num_tiles = (total + kTileN - 1) / kTileN;
  const int t_begin = split * num_tiles / a.splits, t_end = (split + 1) * num_tiles / a.splits;
  // Tiles below unmasked_end need no mask: every row of the CTA sees all their rows (padding
  // rows past the block may see more: their outputs are not written).
  const int unmasked_end = min(total, clustered + max(0, vr.dense_len - a.lq + m0 / G + 1));

  // Resolver: the codes of virtual rows [r0, r0 + kChunkRows) into chunk_code (and each estimated
  // row's log2 key count into chunk_bias). seg_lo is a segment at or before that of row r0 (every
  // segment has >= 1 row, so the chunk's rows lie in the kChunkRows + 1 segments from it); the
  // segment of the chunk's last selected row is the next chunk's. Thread tid resolves the
  // consecutive rows r0 + kRowsPerThread * tid + k: one binary search in the window, then a walk.
  int chunk_r0 = 0, seg_lo = 0;
  auto resolve_chunk = [&](int r0) {
    __syncthreads();  // every loader read of the previous chunk is done
    chunk_r0 = r0;
    const int sel_end = min(r0 + kChunkRows, vr.sparse_rows);
    if (r0 < sel_end) {  // CTA-uniform
      for (int i = tid; i < kWindow; i += kThreads) {
        const int sg = seg_lo + i;
        int start = INT_MAX, base = 0;
        if (sg < vr.count) {
          start = __ldg(vr.row_start + sg);
          if (start < sel_end) base = __ldg(vr.offsets + __ldg(vr.ids + sg)) - start;
        }
        win_start[i] = start;
        win_base[i] = base;
      }
      __syncthreads();
    }
    const int first = r0 + kRowsPerThread * tid;
    int w = 0;  // window index of the current row's segment
    if (first < sel_end) {
      int hi = kWindow;  // last w with win_start[w] <= first (win_start[0] <= r0 <= first)
      while (hi - w > 1) {
        const int mid = (w + hi) >> 1;
        if (win_start[mid] <= first) w = mid;
        else hi = mid;
      }
    }
    int code[kRowsPerThread];
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int v = first + k;
      if (v < sel_end) {
        while (w + 1 < kWindow && win_start[w + 1] <= v) ++w;
        code[k] = win_base[w] + v;
        if (v == sel_end - 1) *next_seg = seg_lo + w;
      } else {
        code[k] = v < total ? unselected_row_code(vr, v) : kNoRow;
      }
    }
    // The estimated rows' key counts (estimate_log2_size), each round of loads issued for all rows
    // before any is used: a coarse cluster's fine range, then the two offsets.
    int lo[kRowsPerThread], hi[kRowsPerThread];
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int id = code[k] - INT_MIN;
      lo[k] = hi[k] = 0;
      if (is_estimate_code(code[k])) {
        const bool coarse = id >= vr.num_clusters;
        lo[k] = coarse ? __ldg(vr.coarse_offsets + (id - vr.num_clusters)) : id;
        hi[k] = coarse ? __ldg(vr.coarse_offsets + (id - vr.num_clusters) + 1) : id + 1;
      }
    }
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k)
      if (is_estimate_code(code[k])) {
        lo[k] = __ldg(vr.offsets + lo[k]);
        hi[k] = __ldg(vr.offsets + hi[k]);
      }
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      chunk_code[kRowsPerThread * tid + k] = code[k];
      chunk_bias[kRowsPerThread * tid + k] = is_estimate_code(code[k]) ? log2f(static_cast<float>(hi[k] - lo[k])) : 0.f;
    }
    __syncthreads();
    if (r0 < sel_end) seg_lo = *next_seg;
  };
  // Loader: 16-byte chunk q = tid + kThreads * i (i < kIters) of a tile lies at the row and
  // column the core's layout gives; the row's code comes from the resolved chunk (the caller
  // resolves the chunk first).
  constexpr int kIters = kTileN * D / 8 / kThreads;  // 4 (D = 128) / 2
  auto load_tile = [&](int t) {
    const int c0 = t * kTileN - chunk_r0;
    if (tid < kTileN) bias_smem[(t % kStages) * kTileN + tid] = chunk_bias[c0 + tid];
    __nv_bfloat16* ks = k_smem + (t % kStages) * kTileElems;
    __nv_bfloat16* vs = v_smem + (t % kStages) * kTileElems;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int q = tid + kThreads * i, row = Tiles::row_of(q), col = Tiles::col_of(q);
      const RowSource src = row_source<D>(vr, chunk_code[c0 + row], col);
      cp_async_16(ks + Tiles::offset(row, col), src.key, src.key_bytes);
      cp_async_16(vs + Tiles::offset(row, col), src.value, src.bytes);
    }
  };
  constexpr int kTilesPerChunk = kChunkRows / kTileN;
  // A later key range starts inside the selected segments: find its first one (CTA-uniform).
  if (t_begin > 0 && t_begin * kTileN < vr.sparse_rows) seg_lo = segment_of_row(vr, t_begin * kTileN);
  resolve_chunk(t_begin * kTileN);
  // Prologue: the first kStages - 1 tiles in flight (one commit group each, empty past the end).
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (t_begin + i < t_end) load_tile(t_begin + i);
    cp_async_commit();
  }

  // Per thread: rows r_lo = warp*16 + lane/4 and r_hi = r_lo + 8 of the tile.
  const int r_lo = warp * 16 + (lane >> 2);
  int dense_limit[2];  // dense rows visible to each of the two rows (exclusive)
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int m = m0 + r_lo + 8 * i;
    dense_limit[i] = m < rows_m ? vr.dense_len - a.lq + m / G + 1 : 0;
  }
  // kTop: this thread's part of each row's context sum (it is the row sum l until the tile t_ctx
  // that reaches past the context rows); each row's top key among this thread's columns, and the
  // row's max logit over the selected rows of the tiles offered so far.
  float ctx[2] = {0.f, 0.f};
  const int t_ctx = ctx_end / kTileN;
  TopKey top[2] = {TopKey::none(), TopKey::none()};
  float row_best[2] = {neg_inf(), neg_inf()};
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = 0.f;
  SoftmaxState st[2] = {SoftmaxState::empty(), SoftmaxState::empty()};  // st[i].l: this thread's part
  uint32_t qa[D / 16][4];
  // Warp-uniform: the warp's rows are all padding (PrefillLaunch::skip_padding_warps).
  const bool warp_idle = a.skip_padding_warps && m0 + warp * 16 >= rows_m;

  for (int t = t_begin; t < t_end; ++t) {
    // Stage (t + 2) % 3 was consumed in iteration t - 1 (closed by its barrier): refill it.
    const int next = t + kStages - 1;
    if (next < t_end) {
      if ((next - t_begin) % kTilesPerChunk == 0) resolve_chunk(next * kTileN);
      load_tile(next);
    }
    cp_async_commit();
    cp_async_wait<kStages - 1>();  // tile t (and Q) landed for this thread; barrier: for all
    __syncthreads();
    if (!warp_idle) {  // every thread still meets the barrier below
      if (t == t_begin) {
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc)
          ldmatrix_x4(qa[kc], q_smem + (warp * 16 + (lane & 15)) * kStride + kc * 16 + (lane >> 4) * 8);
      }
      const __nv_bfloat16* ks = k_smem + (t % kStages) * kTileElems;
      const __nv_bfloat16* vs = v_smem + (t % kStages) * kTileElems;

      // S = Q K^T: 16 rows x 64 keys per warp, 8 n-tiles of 8 keys.
      float s[kTileN / 8][4];
      Tiles::qk(s, qa, ks, lane);
      // Scale and bias (log2 n of estimated rows, 0 elsewhere: one FMA), then the mask, only on
      // tiles that need one: the tail and the causal dense rows (CTA-uniform). The unmasked tiles
      // (all but a few) spend ~5 instructions per logit; the masked version ~15.
      const float* tile_bias = bias_smem + (t % kStages) * kTileN;
      float tile_max[2] = {neg_inf(), neg_inf()};
      auto scale_mask = [&](auto masked) {
#pragma unroll
        for (int n = 0; n < kTileN / 8; ++n) {
          const float2 bias = *reinterpret_cast<const float2*>(tile_bias + n * 8 + (lane & 3) * 2);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = n * 8 + (lane & 3) * 2 + (e & 1), v = t * kTileN + col, i = e >> 1;
            float x = fmaf(s[n][e], a.scale_log2, (e & 1) ? bias.y : bias.x);
            if constexpr (decltype(masked)::value) {
              const bool visible = v < total && (v < clustered || v - clustered < dense_limit[i]);
              x = visible ? x : neg_inf();
            }
            s[n][e] = x;
            tile_max[i] = fmaxf(tile_max[i], x);
          }
        }
      };
      if ((t + 1) * kTileN > unmasked_end) scale_mask(std::true_type{});
      else scale_mask(std::false_type{});
      float corr[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 1));
        tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 2));
        corr[i] = st[i].rescale(fmaxf(st[i].m, tile_max[i]));
        if (kTop) ctx[i] *= corr[i];
      }
      if (kTop) {
        // Top key: a tile of selected rows only can hold a new top only where its row max beats the
        // row's best so far (ties keep the lower row, seen earlier), so its logits are offered only
        // then (a few percent of tiles, after the first); the tile where the selected rows end
        // always is, per logit.
        const int v0 = t * kTileN;
        const bool pure = v0 + kTileN <= vr.sparse_rows;  // CTA-uniform
        const bool offer = pure ? __any_sync(0xffffffffu, tile_max[0] > row_best[0] || tile_max[1] > row_best[1])
                                : v0 < vr.sparse_rows;
        if (offer) {
#pragma unroll
          for (int n = 0; n < kTileN / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int v = v0 + n * 8 + (lane & 3) * 2 + (e & 1);
              if (v < vr.sparse_rows) top[e >> 1].offer(s[n][e], v);
            }
        }
        if (pure) {
          row_best[0] = fmaxf(row_best[0], tile_max[0]);
          row_best[1] = fmaxf(row_best[1], tile_max[1]);
        }
        if (t == t_ctx) {  // the context rows so far are all the rows so far
          ctx[0] = st[0].l;
          ctx[1] = st[1].l;
        }
      }
      // The output only needs rescaling where a row's max moved (rare after the first tiles).
      if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) {
#pragma unroll
        for (int n = 0; n < D / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[n][e] *= corr[e >> 1];
      }
      // A row with nothing visible yet has m = -inf: subtract 0 there (its logits are -inf: p = 0).
      const float m_use[2] = {st[0].m == neg_inf() ? 0.f : st[0].m, st[1].m == neg_inf() ? 0.f : st[1].m};
      uint32_t pa[kTileN / 16][4];  // P as A fragments: n-tiles 2kk, 2kk+1 form k-chunk kk
#pragma unroll
      for (int n = 0; n < kTileN / 8; ++n) {
        float p[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = e >> 1;
          p[e] = exp2_ftz(s[n][e] - m_use[i]);
          st[i].l += p[e];
          if (kTop && t == t_ctx && t * kTileN + n * 8 + (lane & 3) * 2 + (e & 1) < ctx_end) ctx[i] += p[e];
        }
        pa[n / 2][(n & 1) * 2 + 0] = pack_bf16(p[0], p[1]);
        pa[n / 2][(n & 1) * 2 + 1] = pack_bf16(p[2], p[3]);
      }
      Tiles::pv(o, pa, vs, lane);  // O += P V
    }
    __syncthreads();  // stage t % 3 is refilled two iterations from now
  }
  cp_async_wait<0>();
  if (kTop && t_end <= t_ctx) {  // every tile was context (none when t_begin > t_ctx: ctx stays 0)
    ctx[0] = st[0].l;
    ctx[1] = st[1].l;
  }

  // Row sums live spread over the 4 threads of a quad: reduce, normalise, write.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    st[i].l += __shfl_xor_sync(0xffffffffu, st[i].l, 1);
    st[i].l += __shfl_xor_sync(0xffffffffu, st[i].l, 2);
    if (kTop) {
      ctx[i] += __shfl_xor_sync(0xffffffffu, ctx[i], 1);
      ctx[i] += __shfl_xor_sync(0xffffffffu, ctx[i], 2);
      top[i].quad_reduce();
    }
    const int m = m0 + r_lo + 8 * i;
    if (m >= rows_m) continue;
    const int64_t head_row = (static_cast<int64_t>(b) * a.lq + m / G) * a.hkv * G + h * G + m % G;
    if (a.splits > 1) {  // this range's partial (merge_splits_kernel)
      const int64_t at = head_row * a.splits + split;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<float2*>(a.part_o + at * D + n * 8 + (lane & 3) * 2) = make_float2(o[n][2 * i], o[n][2 * i + 1]);
      if ((lane & 3) == 0) {
        a.part_stat[at] = make_float4(st[i].m, st[i].l, kTop ? ctx[i] : 0.f, kTop ? top[i].s : neg_inf());
        int position = -1;
        if (kTop && top[i].v >= 0) {
          const int n = __ldg(vr.offsets + vr.num_clusters);  // N: the perm stride
          position = __ldg(a.seqs[b].perm + static_cast<int64_t>(h) * n + selected_physical_row(vr, top[i].v));
        }
        a.part_pos[at] = position;
      }
      continue;
    }
    const float inv = st[i].l > 0.f ? 1.f / st[i].l : 0.f;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int d = n * 8 + (lane & 3) * 2;
      *reinterpret_cast<__nv_bfloat162*>(a.out + head_row * D + d) =
          __floats2bfloat162_rn(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
    if (a.lse && (lane & 3) == 0)
      a.lse[head_row] = st[i].lse();
    if (kTop && (lane & 3) == 0) {  // read-ahead's top key of this row (TopKeys)
      const float share = top[i].v >= 0 && ctx[i] > 0.f ? exp2f(top[i].s - st[i].m) / ctx[i] : 0.f;
      int position = -1;
      if (share > 0.f) {
        const int n = __ldg(vr.offsets + vr.num_clusters);  // N: the perm stride
        position = __ldg(a.seqs[b].perm + static_cast<int64_t>(h) * n + selected_physical_row(vr, top[i].v));
      }
      if (a.top.share) a.top.share[head_row] = share;
      if (a.top.position) a.top.position[head_row] = position;
    }
  }
}

// Merges the splits' partials of every output row (one warp per row, in split order): the
// log-sum-exp merge of the outputs and sums; the top key is the highest logit, the earliest split
// on ties (its rows come first, as a scan in row order keeps the lower row).
template <int D>
__global__ void __launch_bounds__(256) merge_splits_kernel(PrefillArgs a, int64_t out_rows) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (row >= out_rows) return;
  constexpr int kPerLane = D / 32;  // 4 (D = 128) or 2 (D = 64) consecutive dims
  const float4* stat = a.part_stat + row * a.splits;
  float M = neg_inf();
  for (int s = 0; s < a.splits; ++s) M = fmaxf(M, stat[s].x);
  float l = 0.f, ctx = 0.f, top_s = neg_inf(), acc[kPerLane] = {};
  int top_position = -1;
  for (int s = 0; s < a.splits; ++s) {
    const float4 st = stat[s];
    const float w = SoftmaxState{st.x, st.y}.weight_at(M);
    l += st.y * w;
    ctx += st.z * w;
    const float* o = a.part_o + (row * a.splits + s) * D + lane * kPerLane;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) acc[k] += o[k] * w;
    const int position = a.part_pos[row * a.splits + s];
    if (position >= 0 && (top_position < 0 || st.w > top_s)) {
      top_s = st.w;
      top_position = position;
    }
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int k = 0; k < kPerLane; k += 2)
    *reinterpret_cast<__nv_bfloat162*>(a.out + row * D + lane * kPerLane + k) =
        __floats2bfloat162_rn(acc[k] * inv, acc[k + 1] * inv);
  if (lane != 0) return;
  if (a.lse) a.lse[row] = SoftmaxState{M, l}.lse();
  const float share = top_position >= 0 && ctx > 0.f ? exp2f(top_s - M) / ctx : 0.f;
  if (a.top.share) a.top.share[row] = share;
  if (a.top.position) a.top.position[row] = share > 0.f ? top_position : -1;
}

template <int D, bool kTop>
cudaError_t launch_prefill(const PrefillArgs& a, int batch, cudaStream_t stream) {
  const auto kernel = prefill_kernel<D, kTop>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSmemBytes<D>));
  if (err != cudaSuccess) return err;
  const dim3 grid((a.lq * a.g + kTileM - 1) / kTileM * a.splits, a.hkv, batch);
  kernel<<<grid, kThreads, kSmemBytes<D>, stream>>>(a);
  if (a.splits == 1) return cudaGetLastError();
  const int64_t out_rows = static_cast<int64_t>(batch) * a.lq * a.hkv * a.g;
  merge_splits_kernel<D><<<static_cast<unsigned>((out_rows + 7) / 8), 256, 0, stream>>>(a, out_rows);
  return cudaGetLastError();
}

// Key ranges per (row tile, KV head) for this launch (see PrefillLaunch).
int prefill_splits(const AttentionShape& shape, const PrefillLaunch& launch) {
  if (launch.splits > 0) return std::min(launch.splits, kMaxPrefillSplits);
  const int64_t ctas = static_cast<int64_t>(shape.batch) * shape.num_kv_heads *
                       ((static_cast<int64_t>(shape.query_len) * shape.group() + kTileM - 1) / kTileM);
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    return 1;
  // One ~250-register, 256-thread CTA fits an SM at a time; 2 per SM evens out the ranges' ends.
  return static_cast<int>(std::clamp<int64_t>(2 * sms / std::max<int64_t>(ctas, 1), 1, kMaxPrefillSplits));
}

// Partial bytes per (output row, split): the output, the stats and the position.
size_t partial_bytes(int head_dim) { return sizeof(float) * head_dim + sizeof(float4) + sizeof(int); }

}  // namespace
}  // namespace detail

size_t prefill_attention_workspace_bytes(const AttentionShape& shape, const PrefillLaunch& launch) {
  const int splits = detail::prefill_splits(shape, launch);
  if (splits <= 1) return 0;
  const size_t rows = static_cast<size_t>(shape.batch) * shape.query_len * shape.num_q_heads;
  return rows * splits * detail::partial_bytes(shape.head_dim);
}

int sparse_prefill_attention(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                             const Selection& selection, void* out, float* lse, void* workspace,
                             const PrefillLaunch& launch, void* stream, const TopKeys& top) {
  using namespace detail;
  const int g = shape.group();
  if (g < 1 || g > 8 || shape.num_q_heads != g * shape.num_kv_heads || shape.query_len < 1)
    return cudaErrorInvalidValue;
  PrefillArgs a{seqs, static_cast<const __nv_bfloat16*>(q), selection, static_cast<__nv_bfloat16*>(out), lse, top,
                shape.query_len, shape.num_kv_heads, g, kLog2e / sqrtf(static_cast<float>(shape.head_dim)),
                /*splits=*/1, nullptr, nullptr, nullptr, launch.skip_padding_warps};
  if (workspace != nullptr) a.splits = prefill_splits(shape, launch);
  if (a.splits > 1) {  // workspace: part_o [rows][splits][D] fp32, part_stat [rows][splits], part_pos
    const size_t parts = static_cast<size_t>(shape.batch) * shape.query_len * shape.num_q_heads * a.splits;
    a.part_o = static_cast<float*>(workspace);
    a.part_stat = reinterpret_cast<float4*>(a.part_o + parts * shape.head_dim);
    a.part_pos = reinterpret_cast<int*>(a.part_stat + parts);
  }
  const auto st = static_cast<cudaStream_t>(stream);
  const bool top_keys = top.position != nullptr || top.share != nullptr;
  switch (shape.head_dim) {
    case 64:
      return top_keys ? launch_prefill<64, true>(a, shape.batch, st) : launch_prefill<64, false>(a, shape.batch, st);
    case 128:
      return top_keys ? launch_prefill<128, true>(a, shape.batch, st) : launch_prefill<128, false>(a, shape.batch, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace squeezeserve::kernels
