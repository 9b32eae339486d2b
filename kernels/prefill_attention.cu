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
#include "kernels/cuda_common.cuh"
#include "kernels/mma.cuh"
#include "kernels/prefill_attention.h"
#include "kernels/softmax_state.cuh"
#include "kernels/virtual_rows.cuh"

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
};

template <int D>
constexpr size_t kSmemBytes = sizeof(__nv_bfloat16) * (kTileM + 2 * kStages * kTileN) * (D + 8) +
                              sizeof(float) * kStages * kTileN +
                              sizeof(int) * (2 * kWindow + 2 * kChunkRows + 4);  // resolver (below)

template <int D, bool kTop>
__global__ void __launch_bounds__(kThreads) prefill_kernel(PrefillArgs a) {
  constexpr int kStride = D + 8;
  constexpr int kTileElems = kTileN * kStride;
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
  const int b = blockIdx.z, h = blockIdx.y, m0 = blockIdx.x * kTileM;
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
  // Loader: chunk c = tid + kThreads * i (i < kIters) of a tile is row c / kCpr, 16 B column
  // c % kCpr; the row's code comes from the resolved chunk (the caller resolves the chunk first).
  constexpr int kCpr = D / 8;                       // 16-byte chunks per row
  constexpr int kRowsPerPass = kThreads / kCpr;     // 16 (D=128) / 32 (D=64)
  constexpr int kIters = kTileN / kRowsPerPass;     // 4 / 2
  auto load_tile = [&](int t) {
    const int c0 = t * kTileN - chunk_r0;
    if (tid < kTileN) bias_smem[(t % kStages) * kTileN + tid] = chunk_bias[c0 + tid];
    __nv_bfloat16* ks = k_smem + (t % kStages) * kTileElems;
    __nv_bfloat16* vs = v_smem + (t % kStages) * kTileElems;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int row = tid / kCpr + kRowsPerPass * i, col = (tid % kCpr) * 8;
      const RowSource src = row_source<D>(vr, chunk_code[c0 + row], col);
      cp_async_16(ks + row * kStride + col, src.key, src.key_bytes);
      cp_async_16(vs + row * kStride + col, src.value, src.bytes);
    }
  };
  constexpr int kTilesPerChunk = kChunkRows / kTileN;
  resolve_chunk(0);
  // Prologue: the first kStages - 1 tiles in flight (one commit group each, empty past the end).
#pragma unroll
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < num_tiles) load_tile(t);
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

  for (int t = 0; t < num_tiles; ++t) {
    // Stage (t + 2) % 3 was consumed in iteration t - 1 (closed by its barrier): refill it.
    if (t + kStages - 1 < num_tiles) {
      if ((t + kStages - 1) % kTilesPerChunk == 0) resolve_chunk((t + kStages - 1) * kTileN);
      load_tile(t + kStages - 1);
    }
    cp_async_commit();
    cp_async_wait<kStages - 1>();  // tile t (and Q) landed for this thread; barrier: for all
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int kc = 0; kc < D / 16; ++kc)
        ldmatrix_x4(qa[kc], q_smem + (warp * 16 + (lane & 15)) * kStride + kc * 16 + (lane >> 4) * 8);
    }
    const __nv_bfloat16* ks = k_smem + (t % kStages) * kTileElems;
    const __nv_bfloat16* vs = v_smem + (t % kStages) * kTileElems;

    // S = Q K^T: 16 rows x 64 keys per warp, 8 n-tiles of 8 keys.
    float s[kTileN / 8][4];
#pragma unroll
    for (int n = 0; n < kTileN / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = 0.f;
#pragma unroll
      for (int kc = 0; kc < D / 16; kc += 2) {
        uint32_t kb[4];  // b0,b1 of k-chunk kc, then of kc + 1
        ldmatrix_x4(kb, ks + (n * 8 + (lane & 7)) * kStride + kc * 16 + (lane >> 3) * 8);
        mma_bf16_16816(s[n], qa[kc], kb[0], kb[1]);
        mma_bf16_16816(s[n], qa[kc + 1], kb[2], kb[3]);
      }
    }
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
    // O += P V: V rows are keys (k), columns dims (n): ldmatrix.trans gives the B fragments.
#pragma unroll
    for (int kk = 0; kk < kTileN / 16; ++kk)
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        uint32_t vb[4];  // b0,b1 of dims dn*16..+7, then of dn*16+8..+15
        ldmatrix_x4_trans(vb, vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + dn * 16 + (lane >> 4) * 8);
        mma_bf16_16816(o[2 * dn], pa[kk], vb[0], vb[1]);
        mma_bf16_16816(o[2 * dn + 1], pa[kk], vb[2], vb[3]);
      }
    __syncthreads();  // stage t % 3 is refilled two iterations from now
  }
  cp_async_wait<0>();
  if (kTop && num_tiles <= t_ctx) {  // every tile was context
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

template <int D, bool kTop>
cudaError_t launch_prefill(const PrefillArgs& a, int batch, cudaStream_t stream) {
  cudaError_t err = cudaFuncSetAttribute(prefill_kernel<D, kTop>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSmemBytes<D>));
  if (err != cudaSuccess) return err;
  const dim3 grid((a.lq * a.g + kTileM - 1) / kTileM, a.hkv, batch);
  prefill_kernel<D, kTop><<<grid, kThreads, kSmemBytes<D>, stream>>>(a);
  return cudaGetLastError();
}

template <int D>
cudaError_t launch_prefill(const PrefillArgs& a, int batch, cudaStream_t stream) {
  const bool top = a.top.position != nullptr || a.top.share != nullptr;
  return top ? launch_prefill<D, true>(a, batch, stream) : launch_prefill<D, false>(a, batch, stream);
}

}  // namespace
}  // namespace detail

int sparse_prefill_attention(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                             const Selection& selection, void* out, float* lse, void* stream, const TopKeys& top) {
  using namespace detail;
  const int g = shape.group();
  if (g < 1 || g > 8 || shape.num_q_heads != g * shape.num_kv_heads || shape.query_len < 1)
    return cudaErrorInvalidValue;
  const PrefillArgs a{seqs, static_cast<const __nv_bfloat16*>(q), selection, static_cast<__nv_bfloat16*>(out), lse, top,
                      shape.query_len, shape.num_kv_heads, g, kLog2e / sqrtf(static_cast<float>(shape.head_dim))};
  const auto st = static_cast<cudaStream_t>(stream);
  switch (shape.head_dim) {
    case 64: return launch_prefill<64>(a, shape.batch, st);
    case 128: return launch_prefill<128>(a, shape.batch, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace squeezeserve::kernels
