// Pass A of the tensor-core selection (selection_tensor_core.cu) on Hopper's warpgroup MMA: the
// LSE partials of every query row over a chunk of the head's candidates, (max, sum n_c e^(z - max)).
// The mma.sync version keeps 256 candidates per CTA and streams the query rows, merging the eight
// warps' partials of every 64-row tile through shared memory behind a barrier; it ran the tensor
// cores ~37% of the time (0.94 ms per 1K x 512K Llama-2 block). Here the roles are those of
// flash attention without the values: a CTA is 2 warpgroups and 256 query rows whose A fragments
// stay in registers (two m64 halves per warpgroup), candidates stream through 4 cp.async stages
// of 64 in wgmma's core-matrix layout (wgmma.cuh), and each thread keeps its rows' running
// (max, sum) in registers over the whole chunk: one partial per row per chunk, no merges.
// Overlap as in nearest_centroid_wgmma.cu: two accumulator sets, tile t + 1's wgmmas in flight
// while tile t's softmax runs. Contract of the partials and of the launch: selection_common.cuh.
#include "kernels/selection_common.cuh"
#include "kernels/wgmma.cuh"

#include <type_traits>

namespace squeezeserve::kernels::detail {
namespace {

constexpr int kLseThreads = 256;    // 2 warpgroups
constexpr int kLseRows = 256;       // query rows per CTA: 128 per warpgroup, two m64 halves
constexpr int kLseTile = 64;        // candidates per stage
constexpr int kLseStages = 4;

template <int D>
constexpr int kLseTileElems = kLseTile * D;
// Smem: the stages' candidate tiles (1 KB aligned), each stage's log2 n_c (-inf: empty, or past
// the chunk / K), and each stage's 65 cluster offsets (copied with the tile; the sizes come from them).
constexpr int kLseOffsets = kLseTile + 4;  // 65 used, padded
template <int D>
constexpr size_t kLseSmemBytes =
    kLseStages * (sizeof(__nv_bfloat16) * kLseTileElems<D> + sizeof(float) * kLseTile + sizeof(int) * kLseOffsets);

// A fragments of 16 packed query rows starting at row0 (row r = token r / g, member r % g of head
// h's group; rows >= rows are zero).
template <int D>
__device__ __forceinline__ void load_query_fragments(uint32_t (&a)[D / 16][4], const ProblemArgs& p, int b, int h,
                                                     int row0, int rows, int lane) {
  const __nv_bfloat16* src[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = row0 + (lane >> 2) + 8 * i;
    src[i] = r < rows ? p.q + ((static_cast<int64_t>(b) * p.lq + r / p.g) * p.hq + h * p.g + r % p.g) * D : nullptr;
  }
  load_a_rows<D>(a, src[0], src[1], lane);
}

// grid (ceil(rows / 256), chunks, B * H_kv); chunk c covers candidates [c, c + 1) * chunk_tiles * 64.
// partials[(bh * num_chunks + c) * rows + r], natural-log max.
template <int D>
__global__ void __launch_bounds__(kLseThreads, 1) lse_wgmma_kernel(ProblemArgs p, int chunk_tiles, int num_chunks,
                                                                   float2* partials) {
#ifdef SQZ_HAS_WGMMA
  extern __shared__ __align__(1024) unsigned char smem[];
  __nv_bfloat16* tiles = reinterpret_cast<__nv_bfloat16*>(smem);
  float* log2_size = reinterpret_cast<float*>(smem + kLseStages * sizeof(__nv_bfloat16) * kLseTileElems<D>);
  int* offsets = reinterpret_cast<int*>(log2_size + kLseStages * kLseTile);
  const uint32_t tiles_address = static_cast<uint32_t>(__cvta_generic_to_shared(tiles));
  constexpr uint32_t kTileBytes = sizeof(__nv_bfloat16) * kLseTileElems<D>;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int bh = blockIdx.z, b = bh / p.hkv, h = bh % p.hkv, chunk = blockIdx.y;
  const SequenceLayerBf16& s = p.seqs[b];
  const int K = s.num_clusters, rows = p.lq * p.g;
  const int c_first = chunk * chunk_tiles * kLseTile;
  if (c_first >= K) return;  // past this sequence's K: log_denominator_kernel never reads it
  const int c_end = min(K, c_first + chunk_tiles * kLseTile);
  const int num_tiles = (c_end - c_first + kLseTile - 1) / kLseTile;
  const __nv_bfloat16* cent = as_bf16(s.centroids) + static_cast<int64_t>(h) * K * D;
  const int32_t* off = s.offsets + static_cast<int64_t>(h) * (K + 1);
  const float scale2 = p.scale * kLog2e;

  // A tile's candidates and their offsets [c, c + 65) (one commit group); once landed, threads < 64
  // turn the offsets into log2 n_c (a global load per tile in the loop stalled two warps, and at
  // the next barrier all eight, for its whole latency).
  auto load = [&](int t) {
    if (t < num_tiles) {
      const int c0 = c_first + t * kLseTile;
      copy_core_tile<D, kLseTile, kLseThreads>(tiles + (t % kLseStages) * kLseTileElems<D>, cent, c0, c_end, tid);
      if (tid <= kLseTile && c0 + tid <= c_end) cp_async_4(offsets + (t % kLseStages) * kLseOffsets + tid, off + c0 + tid);
    }
    cp_async_commit();
  };
  auto make_sizes = [&](int t) {  // after tile t landed and a barrier; visible after the next one
    if (tid < kLseTile && t < num_tiles) {
      const int* o = offsets + (t % kLseStages) * kLseOffsets;
      const int n = c_first + t * kLseTile + tid < c_end ? o[tid + 1] - o[tid] : 0;
      log2_size[(t % kLseStages) * kLseTile + tid] = n > 0 ? __log2f(static_cast<float>(n)) : neg_inf();
    }
  };
#pragma unroll
  for (int t = 0; t < kLseStages - 1; ++t) load(t);

  // Warp w of warpgroup w / 4 holds rows 16 (w % 4) .. + 15 of each m64 half of its 128 rows.
  const int row0 = blockIdx.x * kLseRows + (warp >> 2) * 128 + (warp & 3) * 16;
  uint32_t afrag[2][D / 16][4];
  load_query_fragments<D>(afrag[0], p, b, h, row0, rows, lane);
  load_query_fragments<D>(afrag[1], p, b, h, row0 + 64, rows, lane);

  // Running (max, sum) in log2 units of rows [half][g, g + 8], over this thread's columns.
  float run_m[2][2], run_s[2][2];
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      run_m[half][i] = neg_inf();
      run_s[half][i] = 0.f;
    }
  float acc_even[2][32], acc_odd[2][32];
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int i = 0; i < 32; ++i) acc_even[half][i] = acc_odd[half][i] = 0.f;

  cp_async_wait<kLseStages - 2>();
  fence_proxy_async();
  __syncthreads();
  make_sizes(0);
  wgmma_two_halves_x64<D>(acc_even, afrag, tiles_address);

  auto step = [&](int t, float(&acc)[2][32], float(&next)[2][32], auto issue_next) {
    wgmma_stream_step<D, kLseStages>(t, acc, next, issue_next, afrag, tiles_address, kTileBytes, [&] {
      load(t + kLseStages - 1);  // into the stage of tile t - 1
      make_sizes(t + 1);
    });

    // Accumulator block j (registers 4j..4j+3): row g, columns 8j + 2q, +1; then row g + 8.
    const float* ls = log2_size + (t % kLseStages) * kLseTile + 2 * (lane & 3);
    float tile_max[2][2];
#pragma unroll
    for (int half = 0; half < 2; ++half) tile_max[half][0] = tile_max[half][1] = neg_inf();
#pragma unroll
    for (int j = 0; j < kLseTile / 8; ++j) {
      const float2 size = *reinterpret_cast<const float2*>(ls + j * 8);
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float& x = acc[half][4 * j + e];
          x = fmaf(x, scale2, (e & 1) ? size.y : size.x);  // -inf for empty clusters
          tile_max[half][e >> 1] = fmaxf(tile_max[half][e >> 1], x);
        }
    }
    float m_use[2][2];
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float m_new = fmaxf(run_m[half][i], tile_max[half][i]);
        if (m_new != run_m[half][i]) {
          run_s[half][i] *= exp2_ftz(run_m[half][i] - m_new);  // 0 while nothing was seen
          run_m[half][i] = m_new;
        }
        m_use[half][i] = m_new == neg_inf() ? 0.f : m_new;
      }
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int j = 0; j < kLseTile / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) run_s[half][e >> 1] += exp2_ftz(acc[half][4 * j + e] - m_use[half][e >> 1]);
  };
  wgmma_ping_pong(num_tiles, acc_even, acc_odd, step);
  cp_async_wait<0>();

  // Merge the quad's columns (fixed order: deterministic), natural-log max, one partial per row.
  constexpr float kLn2 = 0.6931471805599453f;
  float2* out = partials + (static_cast<int64_t>(bh) * num_chunks + chunk) * rows;
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float m = run_m[half][i], sum = run_s[half][i];
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) {
        const float m_o = __shfl_xor_sync(0xffffffffu, m, o), s_o = __shfl_xor_sync(0xffffffffu, sum, o);
        const float mx = fmaxf(m, m_o);
        if (mx != neg_inf()) sum = sum * exp2_ftz(m - mx) + s_o * exp2_ftz(m_o - mx);
        m = mx;
      }
      const int r = row0 + half * 64 + (lane >> 2) + 8 * i;
      if ((lane & 3) == 0 && r < rows) out[r] = make_float2(m == neg_inf() ? m : m * kLn2, sum);
    }
#else
  __trap();  // launched only where wgmma_available()
#endif
}

}  // namespace

template <int D>
bool launch_lse_wgmma(const AttentionShape& s, const ProblemArgs& p, const Workspace& ws, int chunk_tiles,
                      cudaStream_t stream) {
  if (!wgmma_available()) return false;
  if (cudaFuncSetAttribute(lse_wgmma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(kLseSmemBytes<D>)) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  const int rows = s.query_len * s.group();
  const int chunks = (ws.level_capacity + chunk_tiles * kLseTile - 1) / (chunk_tiles * kLseTile);
  const dim3 grid((rows + kLseRows - 1) / kLseRows, chunks, s.batch * s.num_kv_heads);
  lse_wgmma_kernel<D><<<grid, kLseThreads, kLseSmemBytes<D>, stream>>>(p, chunk_tiles, ws.tc_chunks, ws.partials);
  return true;
}

template bool launch_lse_wgmma<64>(const AttentionShape&, const ProblemArgs&, const Workspace&, int, cudaStream_t);
template bool launch_lse_wgmma<128>(const AttentionShape&, const ProblemArgs&, const Workspace&, int, cudaStream_t);

}  // namespace squeezeserve::kernels::detail
