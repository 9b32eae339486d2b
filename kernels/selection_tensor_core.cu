// Selection for a flat index with R = Lq * g > 8 query rows (prefill blocks) on tensor cores
// (selection_common.cuh lists the paths).
#include "kernels/mma.cuh"
#include "kernels/selection_common.cuh"

#include <algorithm>

namespace squeezeserve::kernels::detail {
namespace {

// The logits of a (sequence, KV head) are a GEMM: Z = Q C^T with Q [R x D] (packed rows
// r = t*g + j, as in every selection path) and C [K x D], bf16 in, fp32 accumulate (mma.sync
// m16n8k16: bf16 x bf16 products are exact in fp32, so only the summation order differs from the
// CPU reference). R*K*D is ~3.4 GFLOP per head at 1K tokens x 512K, far too much for the CUDA-core
// tiles of selection_generic.cu (31.6 ms at 512K), and Z (R*K fp32 = 107 MB per head) is too large to keep, so the
// GEMM runs twice:
//  A tc_lse_kernel: per strip of 256 candidates and every query row, the LSE partial
//    (max, sum n_c*exp(z - max)) over the strip; per-row partials of the strips of a chunk are
//    merged in place (same CTA, fixed order), one float2 per (chunk, row) goes out.
//  (log_denominator_kernel merges the chunks, as for the generic path.)
//  C tc_flags_kernel: the same GEMM, p = exp(z - logden_r), summed over the rows of each group
//    member in registers, max over members / Lq = score; flags: live (non-empty), kept (score >
//    the head's tau_fine, or forced by read-ahead), estimated (candidate_flags).
//    Pass C orders the rows member-major (all tokens of member 0, then of member 1, ...), each
//    member's tokens padded to a multiple of 16, so that every 16-row sub-tile belongs to one group
//    member whatever the group size: a thread's per-column sums are then one member's, combined
//    over the warp's lanes once per member.
//    On Hopper pass A runs on wgmma (selection_lse_wgmma.cu). Pass C stays on mma.sync: on wgmma
//    it measured 6% slower (bench/kernels/NOTES.md run 18), and was deleted.
// Then compact_kernel. CTA = 8 warps, each owning 32 candidates whose B fragments (centroid rows)
// stay in registers (64 regs at D = 128) for the whole pass; query rows stream through smem in
// 64-row tiles (cp.async, double buffered; Q of a head is L2-resident: 256 KB at 1K tokens) and
// each warp reads them with ldmatrix. One 16-row A fragment feeds 4 mma (4 n-tiles of 8
// candidates), so smem traffic stays below the tensor-core rate. Softmax math in the log2 domain
// (ex2 + one FMA per logit).
constexpr int kTcRows = 64;                         // query rows per smem tile (4 m16 sub-tiles)
constexpr float kTcLn2 = 0.6931471805599453f;

template <int D>
struct TcSmem {
  static constexpr int kStride = D + 8;  // bf16; ldmatrix rows land in distinct banks
  __nv_bfloat16 q[2][kTcRows * kStride];
  float row_in[2][kTcRows];              // pass C: log denominators of the tile's rows (-inf = padding)
  float log2_size[kTcStrip];             // pass A: log2 n_c, -inf for empty / past K
  float2 red[kTcWarps][kTcRows];         // pass A: per-warp (max2, sum) of the tile's rows
};

// Async copy of tile rows [r0, r0 + 64) of (b, h) into stage `buf` (zero for padding rows).
template <int D>
__device__ __forceinline__ void tc_load_q(TcSmem<D>& sm, int buf, const ProblemArgs& p, int b, int h, int r0,
                                          int member_rows) {
  for (int c = threadIdx.x; c < kTcRows * D / 8; c += kTcThreads) {
    const int row = c / (D / 8), col = (c % (D / 8)) * 8;
    int t, j;
    const __nv_bfloat16* src = p.q;
    int bytes = 0;
    if (tc_query_row(p, r0 + row, member_rows, t, j)) {
      src = p.q + ((static_cast<int64_t>(b) * p.lq + t) * p.hq + h * p.g + j) * D + col;
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
  const float scale2 = p.scale * kLog2e;
  const int num_row_tiles = (rows + kTcRows - 1) / kTcRows;
  float2* out = partials + (static_cast<int64_t>(bh) * num_chunks + chunk) * rows;

  for (int st = 0; st < strips_per_chunk; ++st) {
    const int c_first = (chunk * strips_per_chunk + st) * kTcStrip;
    if (c_first >= K) break;  // uniform: past this sequence's K
    __syncthreads();          // previous strip done with smem
    tc_load_q<D>(sm, 0, p, b, h, 0, 0);
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
      if (rt + 1 < num_row_tiles) tc_load_q<D>(sm, buf ^ 1, p, b, h, (rt + 1) * kTcRows, 0);
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
            acc[n][e] = fmaf(acc[n][e], scale2, ls[n][e & 1]);  // -inf for empty clusters
            m[e >> 1] = fmaxf(m[e >> 1], acc[n][e]);
          }
        float sum[2] = {0.f, 0.f};
#pragma unroll
        for (int i = 0; i < 2; ++i) {  // a row's 32 columns live in the 4 lanes of a quad
          m[i] = fmaxf(m[i], __shfl_xor_sync(0xffffffffu, m[i], 1));
          m[i] = fmaxf(m[i], __shfl_xor_sync(0xffffffffu, m[i], 2));
        }
        const float m_use[2] = {m[0] == neg_inf() ? 0.f : m[0], m[1] == neg_inf() ? 0.f : m[1]};
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) sum[e >> 1] += exp2_ftz(acc[n][e] - m_use[e >> 1]);
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

// Pass C. grid (strips, H_kv, B), one strip of 256 candidates per CTA. Its sub-tile loop is
// unrolled so a warp's next products issue while this sub-tile's exponentials wait on the MUFU;
// 2 CTAs an SM bound the registers (126 at D 128, no spill): -4% of the selection at 1K x 512K
// (bench/kernels/NOTES.md run 37).
template <int D>
__global__ void __launch_bounds__(kTcThreads, 2) tc_flags_kernel(ProblemArgs p, SelectionParams params,
                                                                 const float* logden, uint8_t* flags, float* scores,
                                                                 int capacity) {
  __shared__ __align__(16) TcSmem<D> sm;
  const int b = blockIdx.z, h = blockIdx.y, bh = b * p.hkv + h;
  const SequenceLayerBf16& s = p.seqs[b];
  const int K = s.num_clusters, rows = p.lq * p.g;
  const int c_first = blockIdx.x * kTcStrip;
  if (c_first >= K) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const __nv_bfloat16* cent = as_bf16(s.centroids) + static_cast<int64_t>(h) * K * D;
  const float scale2 = p.scale * kLog2e;
  const float* ld = logden + static_cast<int64_t>(bh) * rows;
  // Member-major rows: member j owns tile rows [j * member_rows, (j + 1) * member_rows).
  const int member_rows = (p.lq + 15) / 16 * 16, member_tiles = member_rows / 16;
  const int num_row_tiles = (p.g * member_rows + kTcRows - 1) / kTcRows;

  // Q tile plus its rows' log denominators, both by cp.async (a plain load here stalled two warps,
  // and at the stage barrier all eight, for a global latency per row tile).
  auto load = [&](int buf, int r0) {
    tc_load_q<D>(sm, buf, p, b, h, r0, member_rows);
    if (tid < kTcRows) {
      int t, j;
      if (tc_query_row(p, r0 + tid, member_rows, t, j)) cp_async_4(&sm.row_in[buf][tid], ld + t * p.g + j);
      else sm.row_in[buf][tid] = neg_inf();  // padding: visible after the stage's barrier
    }
  };
  // A row's log denominator in log2 units, negated; rows without any non-empty cluster (and
  // padding) have -inf and contribute nothing: -(+inf).
  auto neg_log2_den = [](float l) { return l == neg_inf() ? neg_inf() : -l * kLog2e; };
  load(0, 0);
  cp_async_commit();
  uint32_t bf[4][D / 16][2];
  tc_load_b<D>(bf, cent, c_first + warp * kTcPerWarp, K);
  // colsum: this thread's part of the current member's per-column sums (its rows lane/4 and
  // lane/4 + 8 of each of the member's sub-tiles); best: the max over the members done so far.
  float colsum[4][2] = {}, best[4][2];
#pragma unroll
  for (int n = 0; n < 4; ++n) best[n][0] = best[n][1] = neg_inf();
  for (int rt = 0; rt < num_row_tiles; ++rt) {
    const int buf = rt & 1;
    if (rt + 1 < num_row_tiles) load(buf ^ 1, (rt + 1) * kTcRows);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
#pragma unroll
    for (int sub = 0; sub < kTcRows / 16; ++sub) {
      const int tile = rt * (kTcRows / 16) + sub;  // global 16-row sub-tile: member tile / member_tiles
      if (tile >= p.g * member_tiles) break;       // warp-uniform: past the last member
      float acc[4][4];
      tc_tile<D>(sm, buf, sub, bf, acc);
      const float l0 = neg_log2_den(sm.row_in[buf][sub * 16 + (lane >> 2)]);
      const float l1 = neg_log2_den(sm.row_in[buf][sub * 16 + (lane >> 2) + 8]);
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) colsum[n][e & 1] += exp2_ftz(fmaf(acc[n][e], scale2, (e >> 1) ? l1 : l0));
      if ((tile + 1) % member_tiles == 0) {  // the member's last sub-tile: sum its 8 row lanes, max
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float x = colsum[n][e];
#pragma unroll
            for (int o = 4; o < 32; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
            best[n][e] = fmaxf(best[n][e], x);
            colsum[n][e] = 0.f;
          }
      }
    }
    __syncthreads();  // stage buf is refilled by the next iteration's load
  }
  cp_async_wait<0>();
  if (lane < 4) {
    const float inv_lq = 1.f / static_cast<float>(p.lq);
    const FlatVerdict verdict(s, params, h, p.g);
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = c_first + warp * kTcPerWarp + n * 8 + 2 * lane + e;
        if (c < K) verdict.write(c, best[n][e] * inv_lq, params, static_cast<int64_t>(bh) * capacity + c, flags, scores);
      }
  }
}

}  // namespace

// Pass A, the log-denominator merge, pass C, then the ordered compaction.
template <int D>
void run_tensor_core_selection(const AttentionShape& s, const ProblemArgs& p, const SelectionParams& params,
                               const Workspace& ws, const Selection& out, float* scores_out, cudaStream_t stream) {
  const LevelArgs flat{Level::kFlat, nullptr, nullptr, 0};
  // Pass A on wgmma where the device has it (selection_lse_wgmma.cu): chunks of candidates sized
  // for ~4 waves of one-CTA-per-SM work, never more chunks than the partials hold (tc_chunks).
  int device = 0, sms = 132;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    (void)cudaGetLastError();
    sms = 132;
  }
  const int ctas_per_chunk = (s.query_len * s.group() + 255) / 256 * s.batch * s.num_kv_heads;
  const int cap_tiles = (ws.level_capacity + 63) / 64;
  const int chunks = std::max(1, (4 * sms + ctas_per_chunk - 1) / ctas_per_chunk);
  const int chunk_tiles = std::max({8, 4 * ws.tc_strips_per_chunk, (cap_tiles + chunks - 1) / chunks});
  if (launch_lse_wgmma<D>(s, p, ws, chunk_tiles, stream)) {
    launch_log_denominators(s, p, flat, chunk_tiles * (64 / kTile), ws.tc_chunks, ws.partials, ws.logden, stream);
  } else {
    tc_lse_kernel<D><<<dim3(ws.tc_chunks, s.num_kv_heads, s.batch), kTcThreads, 0, stream>>>(
        p, ws.tc_strips_per_chunk, ws.tc_chunks, ws.partials);
    launch_log_denominators(s, p, flat, ws.tc_strips_per_chunk * (kTcStrip / kTile), ws.tc_chunks, ws.partials,
                            ws.logden, stream);
  }
  tc_flags_kernel<D><<<dim3(ws.tc_strips, s.num_kv_heads, s.batch), kTcThreads, 0, stream>>>(
      p, params, ws.logden, ws.flags, scores_out, ws.level_capacity);
  launch_compact<D>(s, p, flat, ws.flags, ws.level_capacity, out, nullptr, nullptr, stream);
}

template void run_tensor_core_selection<64>(const AttentionShape&, const ProblemArgs&, const SelectionParams&,
                                            const Workspace&, const Selection&, float*, cudaStream_t);
template void run_tensor_core_selection<128>(const AttentionShape&, const ProblemArgs&, const SelectionParams&,
                                             const Workspace&, const Selection&, float*, cudaStream_t);

}  // namespace squeezeserve::kernels::detail
