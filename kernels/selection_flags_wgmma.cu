// Pass C of the tensor-core selection (selection_tensor_core.cu) on Hopper's warpgroup MMA: each
// candidate's group score, the mean over the query's tokens of exp(z - logden) (the max over the
// group's members), then its flags. The mma.sync version (tc_flags_kernel) ran at ~240 TFLOP/s
// against pass A's ~310 on wgmma (Llama-2 1K x 512K: 908 against 731 us, bench/kernels/NOTES.md
// run 9), the same GEMM: this is pass A's structure with the roles of the operands swapped. A CTA
// is 2 warpgroups and 256 candidates whose A fragments (centroid rows) stay in registers, two m64
// halves per warpgroup; the query rows stream through 4 cp.async stages of 64 in wgmma's
// core-matrix layout (wgmma.cuh), member-major as in tc_flags_kernel (member j's tokens at rows
// [j * member_rows, (j + 1) * member_rows), member_rows a multiple of 16), each with its log
// denominator. A thread's accumulators hold 2 candidates per m64 half and 16 of the tile's 64
// rows, 8 consecutive rows per block: every block belongs to one member, so a thread sums its
// columns per member and the quad's 4 lanes (the rest of those candidates' columns) combine once
// per member. No partials across warps or CTAs: each candidate's score is one thread's.
// Contract of the flags: selection_common.cuh (FlatVerdict, candidate_flags).
#include "kernels/selection_common.cuh"
#include "kernels/wgmma.cuh"

#include <type_traits>

namespace squeezeserve::kernels::detail {
namespace {

constexpr int kFlagsThreads = 256;  // 2 warpgroups
constexpr int kFlagsCandidates = 256;  // per CTA: 128 per warpgroup, two m64 halves
constexpr int kFlagsTile = 64;      // query rows per stage
constexpr int kFlagsStages = 4;

template <int D>
constexpr int kFlagsTileElems = kFlagsTile * D;
template <int D>
constexpr size_t kFlagsSmemBytes = kFlagsStages * (sizeof(__nv_bfloat16) * kFlagsTileElems<D> + sizeof(float) * kFlagsTile);

// grid (ceil(capacity / 256), 1, B * H_kv). flags / scores at [bh * capacity + c].
template <int D>
__global__ void __launch_bounds__(kFlagsThreads, 1) flags_wgmma_kernel(ProblemArgs p, SelectionParams params,
                                                                       const float* logden, uint8_t* flags,
                                                                       float* scores, int capacity) {
#ifdef SQZ_HAS_WGMMA
  extern __shared__ __align__(1024) unsigned char smem[];
  __nv_bfloat16* tiles = reinterpret_cast<__nv_bfloat16*>(smem);
  float* den = reinterpret_cast<float*>(smem + kFlagsStages * sizeof(__nv_bfloat16) * kFlagsTileElems<D>);
  const uint32_t tiles_address = static_cast<uint32_t>(__cvta_generic_to_shared(tiles));
  constexpr uint32_t kTileBytes = sizeof(__nv_bfloat16) * kFlagsTileElems<D>;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bh = blockIdx.z, b = bh / p.hkv, h = bh % p.hkv;
  const SequenceLayerBf16& s = p.seqs[b];
  const int K = s.num_clusters;
  const int c_first = blockIdx.x * kFlagsCandidates;
  if (c_first >= K) return;  // past this sequence's K (uniform)
  const float* ld = logden + static_cast<int64_t>(bh) * p.lq * p.g;
  const int member_rows = (p.lq + 15) / 16 * 16;
  const int num_tiles = (p.g * member_rows + kFlagsTile - 1) / kFlagsTile;
  const float scale2 = p.scale * kLog2e;

  // Tile t: member-major rows [64 t, 64 t + 64) (padding rows zero) and their log denominators
  // (-inf for padding: they add nothing), one commit group.
  auto load = [&](int t) {
    if (t < num_tiles) {
      __nv_bfloat16* tile = tiles + (t % kFlagsStages) * kFlagsTileElems<D>;
      constexpr int kChunks = kFlagsTile * D / 8;
#pragma unroll
      for (int i = 0; i < kChunks / kFlagsThreads; ++i) {
        const int chunk = i * kFlagsThreads + tid;
        int tok, j;
        const bool live = tc_query_row(p, t * kFlagsTile + core_chunk_row<D>(chunk), member_rows, tok, j);
        const __nv_bfloat16* src =
            live ? p.q + ((static_cast<int64_t>(b) * p.lq + tok) * p.hq + h * p.g + j) * D + core_chunk_col<D>(chunk)
                 : p.q;
        cp_async_16(tile + 8 * chunk, src, live ? 16 : 0);
      }
      if (tid < kFlagsTile) {
        int tok, j;
        float* dst = den + (t % kFlagsStages) * kFlagsTile + tid;
        if (tc_query_row(p, t * kFlagsTile + tid, member_rows, tok, j)) cp_async_4(dst, ld + tok * p.g + j);
        else *dst = neg_inf();  // visible after the barrier that precedes its tile's use
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int t = 0; t < kFlagsStages - 1; ++t) load(t);

  // Warp w of warpgroup w / 4 holds candidates 16 (w % 4) .. + 15 of each m64 half of its 128.
  const int row0 = c_first + (warp >> 2) * 128 + (warp & 3) * 16;
  const __nv_bfloat16* cent = as_bf16(s.centroids) + static_cast<int64_t>(h) * K * D;
  uint32_t afrag[2][D / 16][4];
  load_a_fragments<D>(afrag[0], cent, row0, K, lane);
  load_a_fragments<D>(afrag[1], cent, row0 + 64, K, lane);

  // sum: this thread's part of the current member's sums of candidates [half][lane / 4 (+ 8)];
  // best: the max over the members finished so far.
  float sum[2][2] = {}, best[2][2];
#pragma unroll
  for (int half = 0; half < 2; ++half) best[half][0] = best[half][1] = neg_inf();
  int member = 0;
  auto finish_member = [&] {  // warp-uniform
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float x = sum[half][i];
        x += __shfl_xor_sync(0xffffffffu, x, 1);
        x += __shfl_xor_sync(0xffffffffu, x, 2);
        best[half][i] = fmaxf(best[half][i], x);
        sum[half][i] = 0.f;
      }
  };

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
    wgmma_stream_step<D, kFlagsStages>(t, acc, next, issue_next, afrag, tiles_address, kTileBytes,
                                       [&] { load(t + kFlagsStages - 1); });  // into the stage of tile t - 1

    // Accumulator block j (registers 4j..4j+3): candidate lane / 4, query rows 8j + 2q, +1; then
    // candidate lane / 4 + 8. Block j's rows all belong to member (64 t + 8 j) / member_rows.
    const float* dt = den + (t % kFlagsStages) * kFlagsTile + 2 * (lane & 3);
#pragma unroll
    for (int j = 0; j < kFlagsTile / 8; ++j) {
      const int m = (t * kFlagsTile + 8 * j) / member_rows;  // uniform
      if (m >= p.g) break;                                  // the last tile's padding rows
      if (m != member) {
        finish_member();
        member = m;
      }
      const float2 l = *reinterpret_cast<const float2*>(dt + 8 * j);
      // -log2(denominator); a row without any non-empty cluster (-inf) adds nothing.
      const float nl0 = l.x == neg_inf() ? neg_inf() : -l.x * kLog2e;
      const float nl1 = l.y == neg_inf() ? neg_inf() : -l.y * kLog2e;
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          sum[half][e >> 1] += exp2_ftz(fmaf(acc[half][4 * j + e], scale2, (e & 1) ? nl1 : nl0));
    }
  };
  wgmma_ping_pong(num_tiles, acc_even, acc_odd, step);
  cp_async_wait<0>();
  finish_member();

  if ((lane & 3) == 0) {
    const float inv_lq = 1.f / static_cast<float>(p.lq);
    const FlatVerdict verdict(s, params, h, p.g);
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int c = row0 + half * 64 + (lane >> 2) + 8 * i;
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
  const dim3 grid((ws.level_capacity + kFlagsCandidates - 1) / kFlagsCandidates, 1, s.batch * s.num_kv_heads);
  flags_wgmma_kernel<D><<<grid, kFlagsThreads, kFlagsSmemBytes<D>, stream>>>(p, params, ws.logden, ws.flags,
                                                                            scores_out, ws.level_capacity);
  return true;
}

template bool launch_flags_wgmma<64>(const AttentionShape&, const ProblemArgs&, const SelectionParams&,
                                     const Workspace&, float*, cudaStream_t);
template bool launch_flags_wgmma<128>(const AttentionShape&, const ProblemArgs&, const SelectionParams&,
                                      const Workspace&, float*, cudaStream_t);

}  // namespace squeezeserve::kernels::detail
