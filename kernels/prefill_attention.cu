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
// Gather addressing: the rows' codes are resolved 2048 rows at a time into smem by the whole CTA
// (prefill_common.cuh's ChunkResolver); a tile's loader reads its row's code from smem.
// The per-row arithmetic (online softmax, estimate bias, masks, top key, epilogue) is
// prefill_common.cuh's, shared with the warp-specialized kernel (prefill_attention_ws.cu).
// Pruned-cluster estimate: the estimated clusters are virtual rows after the selected ones
// (virtual_rows.cuh), unmasked, with log2 of their key count added to the logit (a per-row bias
// the resolver computes and the loader copies beside the tile). Read-ahead's top key (kernel variant kTop):
// per query row, the most attended selected row and the softmax sum over the context rows.
// Split-K (prefill_attention.h): CTA (tile, split) runs key tiles [t_begin, t_end) of its row
// tile; it finds the segment of its first row with a CTA-wide 256-way search, resolves from there
// in 2048-row chunks as the whole range does, and writes partials that merge_splits_kernel combines.
#include "kernels/cuda_common.cuh"
#include "kernels/prefill_attention.h"
#include "kernels/prefill_common.cuh"
#include "kernels/prefill_mma.cuh"

#include <algorithm>

namespace squeezeserve::kernels {
namespace detail {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kTileM = kPrefillTileM;  // 16 rows per warp
constexpr int kTileN = kPrefillTileN;
constexpr int kStages = 3;
static_assert(kTileM == 16 * kWarps, "each warp owns 16 query rows");

template <int D>
constexpr size_t kSmemBytes = sizeof(__nv_bfloat16) * (kTileM + 2 * kStages * kTileN) * (D + 8) +
                              sizeof(float) * kStages * kTileN + sizeof(int) * resolver_smem_ints(1);

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
  ChunkResolver<kThreads, CtaSync> res(reinterpret_cast<int*>(bias_smem + kStages * kTileN));

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int b = blockIdx.z, h = blockIdx.y;
  const VirtualRows vr = virtual_rows<D>(a.seqs[b], a.sel, b, h, a.hkv, /*decode_group=*/0);
  const PrefillTiles p = PrefillTiles::of(a, vr);
  const int m0 = p.m0, rows_m = p.rows_m, G = a.g;

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

  // Loader: 16-byte chunk q = tid + kThreads * i (i < kIters) of a tile lies at the row and
  // column the core's layout gives; the row's code comes from the resolved chunk (the caller
  // resolves the chunk first).
  constexpr int kIters = kTileN * D / 8 / kThreads;  // 4 (D = 128) / 2
  auto load_tile = [&](int t) {
    const int c0 = t * kTileN - res.chunk_r0;
    if (tid < kTileN) bias_smem[(t % kStages) * kTileN + tid] = res.chunk_bias[c0 + tid];
    __nv_bfloat16* ks = k_smem + (t % kStages) * kTileElems;
    __nv_bfloat16* vs = v_smem + (t % kStages) * kTileElems;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int q = tid + kThreads * i, row = Tiles::row_of(q), col = Tiles::col_of(q);
      const RowSource src = row_source<D>(vr, res.chunk_code[c0 + row], col);
      cp_async_16(ks + Tiles::offset(row, col), src.key, src.key_bytes);
      cp_async_16(vs + Tiles::offset(row, col), src.value, src.bytes);
    }
  };
  constexpr int kTilesPerChunk = kPrefillChunkRows / kTileN;
  const int t_begin = p.t_begin, t_end = p.t_end;
  res.start_at(vr, t_begin * kTileN, tid);
  res.resolve(vr, t_begin * kTileN, p.total, tid);
  // Prologue: the first kStages - 1 tiles in flight (one commit group each, empty past the end).
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (t_begin + i < t_end) load_tile(t_begin + i);
    cp_async_commit();
  }

  PrefillRows<kTop> rows(a, p, warp * 16 + (lane >> 2));
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = 0.f;
  uint32_t qa[D / 16][4];
  // Warp-uniform: the warp's rows are all padding (PrefillLaunch::skip_padding_warps).
  const bool warp_idle = a.skip_padding_warps && m0 + warp * 16 >= rows_m;

  for (int t = t_begin; t < t_end; ++t) {
    // Stage (t + 2) % 3 was consumed in iteration t - 1 (closed by its barrier): refill it.
    const int next = t + kStages - 1;
    if (next < t_end) {
      if ((next - t_begin) % kTilesPerChunk == 0) res.resolve(vr, next * kTileN, p.total, tid);
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
      float corr[2];
      if (rows.softmax_tile(s, t, bias_smem + (t % kStages) * kTileN, a, p, lane, corr)) {
#pragma unroll
        for (int n = 0; n < D / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[n][e] *= corr[e >> 1];
      }
      uint32_t pa[kTileN / 16][4];
      pack_p(s, pa);
      Tiles::pv(o, pa, vs, lane);  // O += P V
    }
    __syncthreads();  // stage t % 3 is refilled two iterations from now
  }
  cp_async_wait<0>();
  rows.template write<D>(o, a, p, vr, warp * 16 + (lane >> 2), lane);
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
cudaError_t launch_prefill(const PrefillArgs& a, int batch, bool warp_specialized, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  if (warp_specialized) {
    err = launch_prefill_ws<kTop>(a, batch, stream);
  } else {
    const auto kernel = prefill_kernel<D, kTop>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes<D>));
    if (err != cudaSuccess) return err;
    const dim3 grid((a.lq * a.g + kTileM - 1) / kTileM * a.splits, a.hkv, batch);
    kernel<<<grid, kThreads, kSmemBytes<D>, stream>>>(a);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess || a.splits == 1) return err;
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
  return prefill_auto_splits(ctas, sms);
}

// Partial bytes per (output row, split): the output, the stats and the position.
size_t partial_bytes(int head_dim) { return sizeof(float) * head_dim + sizeof(float4) + sizeof(int); }

}  // namespace
}  // namespace detail

bool prefill_warp_specialized_available() { return detail::prefill_ws_available(); }

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
  // (Squeezed bundles, Selection::member_masks, are decode steps'.)
  if (g < 1 || g > 8 || shape.num_q_heads != g * shape.num_kv_heads || shape.query_len < 1 ||
      selection.member_masks != nullptr || top.context_lse != nullptr)
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
  // The warp-specialized kernel where asked (PrefillKernel) and it can run (D = 128 on sm_90a).
  const bool ws = prefill_runs_warp_specialized(launch.kernel, a.splits,
                                                shape.head_dim == 128 && prefill_ws_available());
  switch (shape.head_dim) {
    case 64:
      return top_keys ? launch_prefill<64, true>(a, shape.batch, false, st)
                      : launch_prefill<64, false>(a, shape.batch, false, st);
    case 128:
      return top_keys ? launch_prefill<128, true>(a, shape.batch, ws, st)
                      : launch_prefill<128, false>(a, shape.batch, ws, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace squeezeserve::kernels
