// Sparse prefill attention with mma.sync (FlashAttention-2 structure). Contract:
// prefill_attention.h, reference: attention_ref.cc.
//
// CTA = 8 warps = 128 packed query rows (token, group member) of one (sequence, KV head); each
// warp owns 16 rows. KV tiles of 64 virtual rows (selected segments, then dense rows) are gathered
// with cp.async into padded smem (row stride D + 8 bf16: ldmatrix rows fall in distinct banks),
// three stages. S = Q K^T and O += P V on tensor cores; softmax state in fp32, log2 domain.
// Why 128 rows and 3 stages: each gathered K/V tile now feeds twice the MMAs (the gather, not
// the math, limited the 64-row version: ~70 TFLOP/s), and at 178 registers/thread only one
// 256-thread CTA fits an SM anyway, so its smem (139 KB at D = 128) buys a deeper pipeline.
// Gather addressing: a 64-row tile's physical rows are resolved once per row (segment search in
// the selection's row_start), by 8 resolver lanes per warp, and handed to the lanes that copy the
// row with a shuffle; the 64-row version ran the search once per 16-byte chunk (16x per row).
// Pruned-cluster estimate: the estimated clusters are virtual rows after the selected ones
// (virtual_rows.cuh), unmasked, with log2 of their key count added to the logit (a per-row bias
// the resolver lanes write to smem beside the tile). Read-ahead's top key (kernel variant kTop):
// per query row, the most attended selected row and the softmax sum over the context rows.
#include "kernels/cuda_common.cuh"
#include "kernels/mma.cuh"
#include "kernels/prefill_attention.h"
#include "kernels/softmax_state.cuh"
#include "kernels/virtual_rows.cuh"

#include <climits>

namespace squeezeserve::kernels {
namespace detail {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTileM = 16 * kWarps;  // 128 query rows
constexpr int kTileN = 64;           // KV rows per tile
constexpr int kStages = 3;

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
constexpr size_t kSmemBytes =
    sizeof(__nv_bfloat16) * (kTileM + 2 * kStages * kTileN) * (D + 8) + sizeof(float) * kStages * kTileN;

template <int D, bool kTop>
__global__ void __launch_bounds__(kThreads) prefill_kernel(PrefillArgs a) {
  constexpr int kStride = D + 8;
  constexpr int kTileElems = kTileN * kStride;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* q_smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kTileM][kStride]
  __nv_bfloat16* k_smem = q_smem + kTileM * kStride;                    // [kStages][kTileN][kStride]
  __nv_bfloat16* v_smem = k_smem + kStages * kTileElems;
  float* bias_smem = reinterpret_cast<float*>(v_smem + kStages * kTileElems);  // [kStages][kTileN]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int b = blockIdx.z, h = blockIdx.y, m0 = blockIdx.x * kTileM;
  const int rows_m = a.lq * a.g, G = a.g;
  const VirtualRows vr = virtual_rows<D>(a.seqs[b], a.sel, b, h, a.hkv, /*decode=*/false);

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
  // Whether tile t holds estimated rows (CTA-uniform): only those tiles carry biases.
  auto has_estimate = [&](int t) {
    return vr.est_count > 0 && t * kTileN < clustered && (t + 1) * kTileN > vr.sparse_rows;
  };

  // Loader: chunk c = tid + kThreads * i (i < kIters) of a tile is row c / kCpr, 16 B column
  // c % kCpr, so lane L of warp w copies rows w * kRpw + L / kCpr + kRowsPerPass * i. The warp's
  // kRpw * kIters = 8 rows are resolved by its lanes k < 8 (row w*kRpw + k % kRpw + kRowsPerPass *
  // (k / kRpw)), which keep a lower bound `seg` on the segment of the next tile's rows.
  constexpr int kCpr = D / 8;                       // 16-byte chunks per row
  constexpr int kRowsPerPass = kThreads / kCpr;     // 16 (D=128) / 32 (D=64)
  constexpr int kIters = kTileN / kRowsPerPass;     // 4 / 2
  constexpr int kRpw = 32 / kCpr;                   // rows per warp per pass: 2 / 4
  static_assert(kRpw * kIters == 8, "8 resolver lanes per warp");
  const int res_row = warp * kRpw + (lane % kRpw) + kRowsPerPass * ((lane & 7) / kRpw);
  // Segment search without a chain of dependent loads: the warp loads a window of 128 row_start
  // entries from `wseg` (a lower bound on the segment of every row of this and later tiles: the
  // segment of the warp's last row of the previous tile; rows of this tile are < 128 rows past it
  // and every segment has >= 1 row, so their segments lie in the window). The segment of row v is
  // wseg - 1 + #(window entries <= v): four ballots. Then ids / row_start, then offsets: three
  // round trips per tile instead of ~10 for a binary search.
  int wseg = 0;
  auto load_tile = [&](int t) {
    const int v0 = t * kTileN;
    // Resolve: the row code (virtual_rows.cuh) of resolver lane k's row.
    int code = kNoRow;
    if (v0 < vr.sparse_rows) {  // warp-uniform
      int rs[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int sg = wseg + u * 32 + lane;
        rs[u] = sg < vr.count ? __ldg(vr.row_start + sg) : INT_MAX;
      }
      int my_seg = 0;
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int v = v0 + warp * kRpw + k % kRpw + kRowsPerPass * (k / kRpw);
        int cnt = 0;
#pragma unroll
        for (int u = 0; u < 4; ++u) cnt += __popc(__ballot_sync(0xffffffffu, rs[u] <= v));
        if (lane == k) my_seg = wseg + cnt - 1;
      }
      const int next_wseg = __shfl_sync(0xffffffffu, my_seg, 7);  // resolver 7 has the warp's last row
      const int v = v0 + res_row;
      if (lane < 8 && v < vr.sparse_rows) {
        const int id = __ldg(vr.ids + my_seg), start = __ldg(vr.row_start + my_seg);
        code = __ldg(vr.offsets + id) + (v - start);
      } else if (lane < 8 && v < total) {
        code = unselected_row_code(vr, v);
      }
      wseg = next_wseg;
    } else if (lane < 8 && v0 + res_row < total) {
      code = unselected_row_code(vr, v0 + res_row);
    }
    if (has_estimate(t) && lane < 8)
      bias_smem[(t % kStages) * kTileN + res_row] = is_estimate_code(code) ? estimate_log2_size(vr, code) : 0.f;
    __nv_bfloat16* ks = k_smem + (t % kStages) * kTileElems;
    __nv_bfloat16* vs = v_smem + (t % kStages) * kTileElems;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int row = warp * kRpw + lane / kCpr + kRowsPerPass * i, col = (lane % kCpr) * 8;
      const RowSource src = row_source<D>(vr, __shfl_sync(0xffffffffu, code, i * kRpw + lane / kCpr), col);
      cp_async_16(ks + row * kStride + col, src.key, src.key_bytes);
      cp_async_16(vs + row * kStride + col, src.value, src.bytes);
    }
  };
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
  float ctx[2] = {0.f, 0.f};  // kTop: this thread's part of each row's context sum
  TopKey top[2] = {TopKey::none(), TopKey::none()};
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = 0.f;
  SoftmaxState st[2] = {SoftmaxState::empty(), SoftmaxState::empty()};  // st[i].l: this thread's part
  uint32_t qa[D / 16][4];

  for (int t = 0; t < num_tiles; ++t) {
    // Stage (t + 2) % 3 was consumed in iteration t - 1 (closed by its barrier): refill it.
    if (t + kStages - 1 < num_tiles) load_tile(t + kStages - 1);
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
    // Scale, bias (estimated rows), mask (tile tail; causal over dense rows), online softmax.
    const float* tile_bias = has_estimate(t) ? bias_smem + (t % kStages) * kTileN : nullptr;
    float tile_max[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int n = 0; n < kTileN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n * 8 + (lane & 3) * 2 + (e & 1), v = t * kTileN + col, i = e >> 1;
        const bool visible = v < total && (v < clustered || v - clustered < dense_limit[i]);
        float x = visible ? s[n][e] * a.scale_log2 : neg_inf();
        if (tile_bias && visible) x += tile_bias[col];
        if (kTop && v < vr.sparse_rows) top[i].offer(x, v);
        s[n][e] = x;
        tile_max[i] = fmaxf(tile_max[i], x);
      }
    float corr[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 1));
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 2));
      corr[i] = st[i].rescale(fmaxf(st[i].m, tile_max[i]));
      if (kTop) ctx[i] *= corr[i];
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] *= corr[e >> 1];
    uint32_t pa[kTileN / 16][4];  // P as A fragments: n-tiles 2kk, 2kk+1 form k-chunk kk
#pragma unroll
    for (int n = 0; n < kTileN / 8; ++n) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e >> 1;
        p[e] = s[n][e] == neg_inf() ? 0.f : exp2f(s[n][e] - st[i].m);
        st[i].l += p[e];
        if (kTop && t * kTileN + n * 8 + (lane & 3) * 2 + (e & 1) < ctx_end) ctx[i] += p[e];
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
