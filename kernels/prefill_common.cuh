// What the two sparse prefill attention kernels share (contract: prefill_attention.h): the launch
// arguments, the tile geometry, the resolver that turns virtual rows into row codes in 2048-row
// chunks, and the per-row online softmax of a 64-key tile with its epilogue. The mma.sync kernel
// (prefill_attention.cu) and the warp-specialized wgmma kernel (prefill_attention_ws.cu) differ
// only in who loads the tiles and how the two products are issued; a query row's arithmetic is
// this file's, so both give the same results up to the products' summation order.
// Device code only, internal to kernels/.
#pragma once

#include <cuda_bf16.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda_common.cuh"
#include "kernels/mma.cuh"
#include "kernels/softmax_state.cuh"
#include "kernels/squeeze_types.h"
#include "kernels/virtual_rows.cuh"

namespace squeezeserve::kernels::detail {

constexpr int kPrefillTileM = 128;    // packed query rows (token, group member) per CTA
constexpr int kPrefillTileN = 64;     // KV rows per tile
constexpr int kPrefillChunkRows = 2048;                     // rows resolved at a time (32 tiles)
constexpr int kPrefillWindow = kPrefillChunkRows + 8;       // a chunk's rows lie in kChunkRows + 1 segments

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
  bool skip_padding_warps;  // PrefillLaunch::skip_padding_warps (mma.sync kernel)
};

// The key tiles a CTA runs and where their masks start: the CTA's (row tile, KV head, split) of
// the grid (x = row tile * splits + split, y = KV head, z = sequence).
struct PrefillTiles {
  int b, h, split, m0, rows_m;
  int sparse_rows, clustered, ctx_end, total, dense_len;  // VirtualRows' (the mask's geometry)
  int t_begin, t_end;
  // Tiles below unmasked_end need no mask: every row of the CTA sees all their rows (padding rows
  // past the block may see more: their outputs are not written).
  int unmasked_end;

  __device__ static PrefillTiles of(const PrefillArgs& a, const VirtualRows& vr) {
    PrefillTiles p;
    p.b = blockIdx.z;
    p.h = blockIdx.y;
    p.split = blockIdx.x % a.splits;
    p.m0 = (blockIdx.x / a.splits) * kPrefillTileM;
    p.rows_m = a.lq * a.g;
    // Causal bound: the last token of this tile sees dense rows < dense_len - Lq + t_last + 1.
    const int t_last = (min(p.m0 + kPrefillTileM, p.rows_m) - 1) / a.g;
    const int dense_visible = max(0, min(vr.dense_len, vr.dense_len - a.lq + t_last + 1));
    p.sparse_rows = vr.sparse_rows;
    p.dense_len = vr.dense_len;
    p.clustered = vr.clustered();
    p.ctx_end = vr.context_rows();
    p.total = p.clustered + dense_visible;
    const int num_tiles = (p.total + kPrefillTileN - 1) / kPrefillTileN;
    p.t_begin = p.split * num_tiles / a.splits;
    p.t_end = (p.split + 1) * num_tiles / a.splits;
    p.unmasked_end = min(p.total, p.clustered + max(0, vr.dense_len - a.lq + p.m0 / a.g + 1));
    return p;
  }
};

// Barriers for the resolver's threads: the whole CTA, or one named barrier of kThreads threads
// (the warp-specialized kernel's producer warpgroup).
struct CtaSync {
  __device__ static void sync() { __syncthreads(); }
  __device__ static int count(bool p) { return __syncthreads_count(p); }
};
template <int kId, int kThreads>
struct NamedSync {
  __device__ static void sync() { asm volatile("bar.sync %0, %1;\n" ::"n"(kId), "n"(kThreads) : "memory"); }
  __device__ static int count(bool p) {
    int n;
    asm volatile(
        "{\n.reg .pred q;\nsetp.ne.b32 q, %1, 0;\nbar.red.popc.u32 %0, %2, %3, q;\n}\n"
        : "=r"(n)
        : "r"(static_cast<int>(p)), "n"(kId), "n"(kThreads)
        : "memory");
    return n;
  }
};

// The resolver's shared memory, in ints (window starts and bases, each buffer's codes and biases,
// the next chunk's first segment).
constexpr int resolver_smem_ints(int buffers) { return 2 * kPrefillWindow + 2 * kPrefillChunkRows * buffers + 4; }

// Resolves virtual rows into row codes (virtual_rows.cuh) kPrefillChunkRows at a time into shared
// memory, by kThreads threads (thread index tid < kThreads) that synchronise with Sync: one window
// of segment starts, one search per thread, then a walk; the estimate's ids and sizes loaded by all
// threads at once. A tile's loader then reads its rows' codes (and the estimated rows' log2 key
// counts, the logit bias) from smem. Resolving per tile (a chain of three dependent global loads
// before each tile's copies could be issued) stalled the mma.sync kernel for most of each tile.
// The window's loads (a chain of three per segment: its start, id, offset) run in three rounds,
// each issued for all of a thread's segments before any is used, rather than one segment's chain
// after the other (9 chains a thread at 256 threads, 17 at 128). kBuffers = 2 lets a producer
// resolve the next chunk while the current one's tiles still load (use() switches).
template <int kThreads, typename Sync, int kBuffers = 1>
struct ChunkResolver {
  static constexpr int kRowsPerThread = kPrefillChunkRows / kThreads;
  int* smem;
  // The current chunk, that loaders read: its codes, its estimate log2 n biases, its first row.
  int* chunk_code;
  float* chunk_bias;
  int chunk_r0 = 0;
  int buffer_r0[kBuffers] = {};
  int seg_lo = 0;

  __device__ explicit ChunkResolver(int* resolver_smem) : smem(resolver_smem) { use(0); }
  __device__ int* win_start() const { return smem; }                   // [kWindow] row_start from seg_lo
  __device__ int* win_base() const { return smem + kPrefillWindow; }   // [kWindow] offsets[id] - row_start
  __device__ int* code_of(int buffer) const { return smem + 2 * kPrefillWindow + 2 * kPrefillChunkRows * buffer; }
  __device__ float* bias_of(int buffer) const {
    return reinterpret_cast<float*>(code_of(buffer) + kPrefillChunkRows);
  }
  __device__ int* next_seg() const { return smem + 2 * kPrefillWindow + 2 * kPrefillChunkRows * kBuffers; }
  __device__ void use(int buffer) {
    chunk_code = code_of(buffer);
    chunk_bias = bias_of(buffer);
    chunk_r0 = buffer_r0[buffer];
  }

  // A key range starting at row r inside the selected segments starts its walk at the segment
  // holding r: the last s with row_start[s] <= r, found by all kThreads threads together,
  // kThreads candidates a round (a head's ~26K segments: two rounds of one load per thread).
  __device__ void start_at(const VirtualRows& vr, int r, int tid) {
    if (r <= 0 || r >= vr.sparse_rows) return;  // uniform over the resolver's threads
    int lo = 0, n = vr.count;  // the segment lies in [lo, lo + n); row_start[lo] <= r
    while (n > 1) {
      const int step = (n + kThreads - 1) / kThreads;
      const int k = tid * step;
      const bool at_or_before = k < n && __ldg(vr.row_start + lo + k) <= r;
      const int samples = Sync::count(at_or_before);  // a prefix (row_start ascends), >= 1
      lo += (samples - 1) * step;
      n = min(step, n - (samples - 1) * step);
    }
    seg_lo = lo;
  }

  // The codes of virtual rows [r0, r0 + kChunkRows) of a range of `total` rows into `buffer`
  // (with one buffer: the current chunk from then on). seg_lo is a segment at or before that of
  // row r0 (every segment has >= 1 row, so the chunk's rows lie in the kChunkRows + 1 segments from
  // it); the segment of the chunk's last selected row is the next chunk's. Thread tid resolves the
  // consecutive rows r0 + kRowsPerThread * tid + k.
  __device__ void resolve(const VirtualRows& vr, int r0, int total, int tid, int buffer = 0) {
    Sync::sync();  // every read of the window, and of this buffer's previous chunk, is done
    buffer_r0[buffer] = r0;
    int* code_out = code_of(buffer);
    float* bias_out = bias_of(buffer);
    const int sel_end = min(r0 + kPrefillChunkRows, vr.sparse_rows);
    if (r0 < sel_end) {  // uniform
      constexpr int kPer = (kPrefillWindow + kThreads - 1) / kThreads;
      int v[kPer];
#pragma unroll
      for (int j = 0; j < kPer; ++j) {  // round 1: the segments' starts
        const int i = tid + j * kThreads, sg = seg_lo + i;
        v[j] = i < kPrefillWindow && sg < vr.count ? __ldg(vr.row_start + sg) : INT_MAX;
      }
#pragma unroll
      for (int j = 0; j < kPer; ++j) {  // round 2: the ids of those that start in the chunk
        const int i = tid + j * kThreads;
        if (i < kPrefillWindow) win_start()[i] = v[j];
        v[j] = i < kPrefillWindow && v[j] < sel_end ? __ldg(vr.ids + seg_lo + i) : -1;
      }
#pragma unroll
      for (int j = 0; j < kPer; ++j) {  // round 3: their offsets
        const int i = tid + j * kThreads;
        if (i < kPrefillWindow) win_base()[i] = v[j] >= 0 ? __ldg(vr.offsets + v[j]) - win_start()[i] : 0;
      }
      Sync::sync();
    }
    const int first = r0 + kRowsPerThread * tid;
    int w = 0;  // window index of the current row's segment
    if (first < sel_end) {
      int hi = kPrefillWindow;  // last w with start[w] <= first (start[0] <= r0 <= first)
      while (hi - w > 1) {
        const int mid = (w + hi) >> 1;
        if (win_start()[mid] <= first) w = mid;
        else hi = mid;
      }
    }
    int code[kRowsPerThread];
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int v = first + k;
      if (v < sel_end) {
        while (w + 1 < kPrefillWindow && win_start()[w + 1] <= v) ++w;
        code[k] = win_base()[w] + v;
        if (v == sel_end - 1) *next_seg() = seg_lo + w;
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
      code_out[kRowsPerThread * tid + k] = code[k];
      bias_out[kRowsPerThread * tid + k] = is_estimate_code(code[k]) ? log2f(static_cast<float>(hi[k] - lo[k])) : 0.f;
    }
    Sync::sync();
    if (r0 < sel_end) seg_lo = *next_seg();
    if (kBuffers == 1) use(0);
  }
};

// P (fp32 in the S fragments) as bf16 A fragments: n-tiles 2kk, 2kk + 1 form k-chunk kk.
__device__ __forceinline__ void pack_p(const float (&p)[kPrefillTileN / 8][4], uint32_t (&pa)[kPrefillTileN / 16][4]) {
#pragma unroll
  for (int n = 0; n < kPrefillTileN / 8; ++n) {
    pa[n / 2][(n & 1) * 2 + 0] = pack_bf16(p[n][0], p[n][1]);
    pa[n / 2][(n & 1) * 2 + 1] = pack_bf16(p[n][2], p[n][3]);
  }
}

// A thread's two query rows (r_lo = lane / 4 and r_lo + 8 of its warp's 16; the C-fragment layout
// of mma.sync and of wgmma's per-warp rows): their online softmax over the key tiles and, with
// kTop, read-ahead's top key and the softmax sum over the context rows.
template <bool kTop>
struct PrefillRows {
  SoftmaxState st[2];  // st[i].l: this thread's part
  int dense_limit[2];  // dense rows visible to each of the two rows (exclusive)
  // kTop: this thread's part of each row's context sum (it is the row sum l until the first tile
  // it sees at or past t_ctx, the tile that reaches past the context rows: ctx_frozen from then
  // on); each row's top key among this thread's columns, and the row's max logit over the
  // selected rows of the tiles offered so far. A thread may see every other tile only (the
  // warp-specialized kernel's consumers splitting one block's keys): the rule holds for any
  // ascending subset of the tiles.
  float ctx[2];
  TopKey top[2];
  float row_best[2];
  bool ctx_frozen = false;

  // m_first: the packed row index (in the CTA's tile) of the thread's first row.
  __device__ PrefillRows(const PrefillArgs& a, const PrefillTiles& p, int m_first) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      st[i] = SoftmaxState::empty();
      const int m = p.m0 + m_first + 8 * i;
      dense_limit[i] = m < p.rows_m ? p.dense_len - a.lq + m / a.g + 1 : 0;
      ctx[i] = 0.f;
      top[i] = TopKey::none();
      row_best[i] = neg_inf();
    }
  }

  // Tile t's logits s (S = Q K^T, raw) -> its softmax weights in place, relative to the updated
  // running max; returns in corr the factors for the output accumulators (1 = unchanged) and
  // whether any row of the warp has one other than 1.
  __device__ __forceinline__ bool softmax_tile(float (&s)[kPrefillTileN / 8][4], int t, const float* tile_bias,
                                               const PrefillArgs& a, const PrefillTiles& p, int lane,
                                               float (&corr)[2]) {
    // Scale and bias (log2 n of estimated rows, 0 elsewhere: one FMA), then the mask, only on
    // tiles that need one: the tail and the causal dense rows (CTA-uniform). The unmasked tiles
    // (all but a few) spend ~5 instructions per logit; the masked version ~15.
    float tile_max[2] = {neg_inf(), neg_inf()};
    auto scale_mask = [&](auto masked) {
#pragma unroll
      for (int n = 0; n < kPrefillTileN / 8; ++n) {
        const float2 bias = *reinterpret_cast<const float2*>(tile_bias + n * 8 + (lane & 3) * 2);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = n * 8 + (lane & 3) * 2 + (e & 1), v = t * kPrefillTileN + col, i = e >> 1;
          float x = fmaf(s[n][e], a.scale_log2, (e & 1) ? bias.y : bias.x);
          if constexpr (decltype(masked)::value) {
            const bool visible = v < p.total && (v < p.clustered || v - p.clustered < dense_limit[i]);
            x = visible ? x : neg_inf();
          }
          s[n][e] = x;
          tile_max[i] = fmaxf(tile_max[i], x);
        }
      }
    };
    if ((t + 1) * kPrefillTileN > p.unmasked_end) scale_mask(std::true_type{});
    else scale_mask(std::false_type{});
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 1));
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 2));
      corr[i] = st[i].rescale(fmaxf(st[i].m, tile_max[i]));
      if (kTop) ctx[i] *= corr[i];
    }
    const int t_ctx = p.ctx_end / kPrefillTileN;
    if (kTop) {
      // Top key: a tile of selected rows only can hold a new top only where its row max beats the
      // row's best so far (ties keep the lower row, seen earlier), so its logits are offered only
      // then (a few percent of tiles, after the first); the tile where the selected rows end
      // always is, per logit.
      const int v0 = t * kPrefillTileN;
      const bool pure = v0 + kPrefillTileN <= p.sparse_rows;  // CTA-uniform
      const bool offer = pure ? __any_sync(0xffffffffu, tile_max[0] > row_best[0] || tile_max[1] > row_best[1])
                              : v0 < p.sparse_rows;
      if (offer) {
#pragma unroll
        for (int n = 0; n < kPrefillTileN / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int v = v0 + n * 8 + (lane & 3) * 2 + (e & 1);
            if (v < p.sparse_rows) top[e >> 1].offer(s[n][e], v);
          }
      }
      if (pure) {
        row_best[0] = fmaxf(row_best[0], tile_max[0]);
        row_best[1] = fmaxf(row_best[1], tile_max[1]);
      }
      if (!ctx_frozen && t >= t_ctx) {  // the context rows so far are all the rows so far
        ctx[0] = st[0].l;
        ctx[1] = st[1].l;
        ctx_frozen = true;
      }
    }
    // A row with nothing visible yet has m = -inf: subtract 0 there (its logits are -inf: p = 0).
    const float m_use[2] = {st[0].m == neg_inf() ? 0.f : st[0].m, st[1].m == neg_inf() ? 0.f : st[1].m};
#pragma unroll
    for (int n = 0; n < kPrefillTileN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e >> 1;
        s[n][e] = exp2_ftz(s[n][e] - m_use[i]);
        st[i].l += s[n][e];
        if (kTop && t == t_ctx && t * kPrefillTileN + n * 8 + (lane & 3) * 2 + (e & 1) < p.ctx_end) ctx[i] += s[n][e];
      }
    // The output only needs rescaling where a row's max moved (rare after the first tiles).
    return __any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f);
  }

  // After the last tile seen: if every tile seen was context, ctx is the whole sum l (0 when the
  // first tile seen was past t_ctx, as then frozen at 0).
  __device__ __forceinline__ void finish_context() {
    if (kTop && !ctx_frozen) {
      ctx[0] = st[0].l;
      ctx[1] = st[1].l;
      ctx_frozen = true;
    }
  }

  // After the last tile: the row sums (spread over the 4 threads of a quad) reduced, the output
  // o (this thread's C fragments of its two rows, unnormalised) normalised and written, or this
  // key range's partial. m_first as in the constructor.
  template <int D>
  __device__ __forceinline__ void write(float (&o)[D / 8][4], const PrefillArgs& a, const PrefillTiles& p,
                                        const VirtualRows& vr, int m_first, int lane) {
    finish_context();
    const int G = a.g;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      st[i].l += __shfl_xor_sync(0xffffffffu, st[i].l, 1);
      st[i].l += __shfl_xor_sync(0xffffffffu, st[i].l, 2);
      if (kTop) {
        ctx[i] += __shfl_xor_sync(0xffffffffu, ctx[i], 1);
        ctx[i] += __shfl_xor_sync(0xffffffffu, ctx[i], 2);
        top[i].quad_reduce();
      }
      const int m = p.m0 + m_first + 8 * i;
      if (m >= p.rows_m) continue;
      const int64_t head_row = (static_cast<int64_t>(p.b) * a.lq + m / G) * a.hkv * G + p.h * G + m % G;
      if (a.splits > 1) {  // this range's partial (merge_splits_kernel)
        const int64_t at = head_row * a.splits + p.split;
#pragma unroll
        for (int n = 0; n < D / 8; ++n)
          *reinterpret_cast<float2*>(a.part_o + at * D + n * 8 + (lane & 3) * 2) =
              make_float2(o[n][2 * i], o[n][2 * i + 1]);
        if ((lane & 3) == 0) {
          a.part_stat[at] = make_float4(st[i].m, st[i].l, kTop ? ctx[i] : 0.f, kTop ? top[i].s : neg_inf());
          int position = -1;
          if (kTop && top[i].v >= 0) {
            const int n = __ldg(vr.offsets + vr.num_clusters);  // N: the perm stride
            position = __ldg(a.seqs[p.b].perm + static_cast<int64_t>(p.h) * n + selected_physical_row(vr, top[i].v));
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
      if (a.lse && (lane & 3) == 0) a.lse[head_row] = st[i].lse();
      if (kTop && (lane & 3) == 0) {  // read-ahead's top key of this row (TopKeys)
        const float share = top[i].v >= 0 && ctx[i] > 0.f ? exp2f(top[i].s - st[i].m) / ctx[i] : 0.f;
        int position = -1;
        if (share > 0.f) {
          const int n = __ldg(vr.offsets + vr.num_clusters);  // N: the perm stride
          position = __ldg(a.seqs[p.b].perm + static_cast<int64_t>(p.h) * n + selected_physical_row(vr, top[i].v));
        }
        if (a.top.share) a.top.share[head_row] = share;
        if (a.top.position) a.top.position[head_row] = position;
      }
    }
  }
};

// The warp-specialized wgmma kernel (prefill_attention_ws.cu): false where this build or device
// cannot run it (then the caller launches the mma.sync kernel). D = 128 only.
bool prefill_ws_available();
template <bool kTop>
cudaError_t launch_prefill_ws(const PrefillArgs& a, int batch, cudaStream_t stream);

}  // namespace squeezeserve::kernels::detail
