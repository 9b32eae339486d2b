// Pass C of the tensor-core selection (selection_tensor_core.cu) on Hopper's warpgroup MMA: each
// candidate's score, max over the group members of the mean over the block's tokens of
// exp(s q·c - logden_row), and its flags. The mma.sync kernel (tc_flags_kernel) keeps 256
// candidates' B fragments in registers and streams the query rows through shared memory in 16-row
// ldmatrix steps, reducing each member's per-column sums across the warp's lanes; measured at 0.90 ms
// of the 1K x 512K Llama-2 block's 5.55 ms. Here pass A (selection_lse_wgmma.cu) with the roles
// swapped: a CTA is 2 warpgroups and 256 candidates whose A fragments stay in registers (two m64
// halves per warpgroup), the query rows stream member-major through 4 cp.async stages of 64 in
// wgmma's core-matrix layout (wgmma.cuh) with their log denominators beside them, and each thread
// sums its candidates' p over its columns of the current member, the quad's lanes combined when the
// member ends (members are padded to multiples of 16 rows, so a 16-column group holds one member).
// Two accumulator sets: tile t + 1's wgmmas in flight while tile t's exponentials run. Same grid,
// flags and scores as tc_flags_kernel (candidate_flags, selection_common.cuh).
#include "kernels/selection_common.cuh"
#include "kernels/wgmma.cuh"

#include <type_traits>

namespace squeezeserve::kernels::detail {
namespace {

constexpr int kFlagsThreads = 256;  // 2 warpgroups
constexpr int kFlagsTile = 64;      // query rows per stage
constexpr int kFlagsStages = 4;
static_assert(kFlagsThreads == kTcStrip, "one strip of candidates per CTA, as tc_flags_kernel");

template <int D>
constexpr int kFlagsTileElems = kFlagsTile * D;
template <int D>
constexpr size_t kFlagsSmemBytes = kFlagsStages * (sizeof(__nv_bfloat16) * kFlagsTileElems<D> + sizeof(float) * kFlagsTile);

// A fragments of 16 candidates starting at c0 (rows >= K are zero), the mma.sync A layout.
template <int D>
__device__ __forceinline__ void load_candidate_fragments(uint32_t (&a)[D / 16][4], const __nv_bfloat16* cent, int c0,
                                                         int K, int lane) {
  const int g = lane >> 2, q = lane & 3;
  const uint32_t* src[2];
  bool live[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int c = c0 + g + 8 * i;
    live[i] = c < K;
    src[i] = reinterpret_cast<const uint32_t*>(cent + static_cast<int64_t>(live[i] ? c : 0) * D);
  }
#pragma unroll
  for (int s = 0; s < D / 16; ++s) {
    a[s][0] = live[0] ? __ldg(src[0] + 8 * s + q) : 0u;
    a[s][1] = live[1] ? __ldg(src[1] + 8 * s + q) : 0u;
    a[s][2] = live[0] ? __ldg(src[0] + 8 * s + 4 + q) : 0u;
    a[s][3] = live[1] ? __ldg(src[1] + 8 * s + 4 + q) : 0u;
  }
}

// grid (strips, H_kv, B): candidates [strip * 256, + 256) of (b, h).
template <int D>
__global__ void __launch_bounds__(kFlagsThreads, 1) flags_wgmma_kernel(ProblemArgs p, SelectionParams params,
                                                                       const float* logden, uint8_t* flags,
                                                                       float* scores, int capacity) {
#ifdef SQZ_HAS_WGMMA
  extern __shared__ __align__(1024) unsigned char smem[];
  __nv_bfloat16* tiles = reinterpret_cast<__nv_bfloat16*>(smem);
  float* row_in = reinterpret_cast<float*>(smem + kFlagsStages * sizeof(__nv_bfloat16) * kFlagsTileElems<D>);
  const uint32_t tiles_address = static_cast<uint32_t>(__cvta_generic_to_shared(tiles));
  constexpr uint32_t kTileBytes = sizeof(__nv_bfloat16) * kFlagsTileElems<D>;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int b = blockIdx.z, h = blockIdx.y, bh = b * p.hkv + h;
  const SequenceLayerBf16& s = p.seqs[b];
  const int K = s.num_clusters, rows = p.lq * p.g;
  const int c_first = blockIdx.x * kTcStrip;
  if (c_first >= K) return;
  const __nv_bfloat16* cent = as_bf16(s.centroids) + static_cast<int64_t>(h) * K * D;
  const float scale2 = p.scale * kLog2e;
  const float* ld = logden + static_cast<int64_t>(bh) * rows;
  // Member-major rows: member j owns padded rows [j * member_rows, (j + 1) * member_rows).
  const int member_rows = (p.lq + 15) / 16 * 16, padded_rows = p.g * member_rows;
  const int num_tiles = (padded_rows + kFlagsTile - 1) / kFlagsTile;

  // Tile t: its 64 padded rows in core-matrix layout (lanes 0-7 fill one 128-byte core matrix) and
  // their natural-log denominators (-inf for padding: it contributes exp(-inf) = 0), one group.
  auto load = [&](int t) {
    if (t < num_tiles) {
      __nv_bfloat16* tile = tiles + (t % kFlagsStages) * kFlagsTileElems<D>;
#pragma unroll
      for (int i = 0; i < kFlagsTile * D / 8 / kFlagsThreads; ++i) {
        const int chunk = i * kFlagsThreads + tid;
        const int row = ((chunk >> 3) / (D / 8)) * 8 + (chunk & 7), col = ((chunk >> 3) % (D / 8)) * 8;
        int tok, j;
        const __nv_bfloat16* src = p.q;
        int bytes = 0;
        if (tc_query_row(p, t * kFlagsTile + row, member_rows, tok, j)) {
          src = p.q + ((static_cast<int64_t>(b) * p.lq + tok) * p.hq + h * p.g + j) * D + col;
          bytes = 16;
        }
        cp_async_16(tile + chunk * 8, src, bytes);
      }
      if (tid < kFlagsTile) {
        int tok, j;
        float* to = row_in + (t % kFlagsStages) * kFlagsTile + tid;
        if (tc_query_row(p, t * kFlagsTile + tid, member_rows, tok, j)) cp_async_4(to, ld + tok * p.g + j);
        else *to = neg_inf();  // visible after the barrier that precedes its use
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int t = 0; t < kFlagsStages - 1; ++t) load(t);

  // Warp w of warpgroup w / 4 holds candidates 16 (w % 4) .. + 15 of each m64 half of its 128.
  const int cand0 = c_first + (warp >> 2) * 128 + (warp & 3) * 16;
  uint32_t afrag[2][D / 16][4];
  load_candidate_fragments<D>(afrag[0], cent, cand0, K, lane);
  load_candidate_fragments<D>(afrag[1], cent, cand0 + 64, K, lane);

  // colsum: this thread's part of the current member's sum for its candidates [half][g, g + 8];
  // best: the max over the members done so far (of the quad's combined sums).
  float colsum[2][2] = {}, best[2][2];
#pragma unroll
  for (int half = 0; half < 2; ++half) best[half][0] = best[half][1] = neg_inf();
  float acc_even[2][32], acc_odd[2][32];
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int i = 0; i < 32; ++i) acc_even[half][i] = acc_odd[half][i] = 0.f;

  cp_async_wait<kFlagsStages - 2>();
  fence_proxy_async();
  __syncthreads();
  wgmma_two_halves_x64<D>(acc_even, afrag, tiles_address);

  auto step = [&](int t, float(&acc)[2][32], float(&next)[2][32], auto issue_next) {
    cp_async_wait<kFlagsStages - 3>();  // this thread's copies of tile t + 1 landed
    fence_proxy_async();                // ... and are visible to wgmma (async proxy)
    __syncthreads();                    // everyone's; both warpgroups done with tile t - 1
    load(t + kFlagsStages - 1);         // into the stage of tile t - 1
    if constexpr (decltype(issue_next)::value) {
      wgmma_two_halves_x64<D>(next, afrag, tiles_address + ((t + 1) % kFlagsStages) * kTileBytes);
      wgmma_wait<1>();
    } else {
      wgmma_wait<0>();
    }
    fence_operands(acc[0]);
    fence_operands(acc[1]);

    // Accumulator block j (registers 4j..4j+3): candidate g, query columns 8j + 2q, +1; then
    // candidate g + 8. Columns 16k..16k+15 (blocks 2k, 2k+1) belong to one member.
    const float* nl = row_in + (t % kFlagsStages) * kFlagsTile + 2 * (lane & 3);
#pragma unroll
    for (int k = 0; k < kFlagsTile / 16; ++k) {
      const int r0 = t * kFlagsTile + 16 * k;  // the group's first padded row (CTA-uniform)
      if (r0 >= padded_rows) break;
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const int j = 2 * k + jj;
        const float2 l = *reinterpret_cast<const float2*>(nl + 8 * j);
        const float l0 = l.x == neg_inf() ? neg_inf() : -l.x * kLog2e, l1 = l.y == neg_inf() ? neg_inf() : -l.y * kLog2e;
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            colsum[half][e >> 1] += exp2_ftz(fmaf(acc[half][4 * j + e], scale2, (e & 1) ? l1 : l0));
      }
      if ((r0 + 16) % member_rows == 0) {  // the member's last group: its sums over the quad, max
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            float x = colsum[half][i];
            x += __shfl_xor_sync(0xffffffffu, x, 1);
            x += __shfl_xor_sync(0xffffffffu, x, 2);
            best[half][i] = fmaxf(best[half][i], x);
            colsum[half][i] = 0.f;
          }
      }
    }
  };
  wgmma_ping_pong(num_tiles, acc_even, acc_odd, step);
  cp_async_wait<0>();

  if ((lane & 3) == 0) {
    const float inv_lq = 1.f / static_cast<float>(p.lq);
    const FlatVerdict verdict(s, params, h, p.g);
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int c = cand0 + half * 64 + (lane >> 2) + 8 * i;
        if (c < K) verdict.write(c, best[half][i] * inv_lq, params, static_cast<int64_t>(bh) * capacity + c, flags, scores);
      }
  }
#else
  __trap();  // launched only where wgmma_available()
#endif
}

}  // namespace

template <int D>
bool launch_flags_wgmma(const AttentionShape& s, const ProblemArgs& p, const SelectionParams& params,
                        const Workspace& ws, float* scores_out, cudaStream_t stream) {
  if (!wgmma_available()) return false;
  if (cudaFuncSetAttribute(flags_wgmma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(kFlagsSmemBytes<D>)) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  flags_wgmma_kernel<D><<<dim3(ws.tc_strips, s.num_kv_heads, s.batch), kFlagsThreads, kFlagsSmemBytes<D>, stream>>>(
      p, params, ws.logden, ws.flags, scores_out, ws.level_capacity);
  return true;
}

template bool launch_flags_wgmma<64>(const AttentionShape&, const ProblemArgs&, const SelectionParams&,
                                     const Workspace&, float*, cudaStream_t);
template bool launch_flags_wgmma<128>(const AttentionShape&, const ProblemArgs&, const SelectionParams&,
                                      const Workspace&, float*, cudaStream_t);

}  // namespace squeezeserve::kernels::detail
