// Nearest-centroid assignment: the argument checks, the choice of kernel, and the mma.sync kernel
// (sm_80+). Contract: nearest_centroid.h; reference: nearest_centroid_ref.cc; the wgmma kernel
// (sm_90a): nearest_centroid_wgmma.cu; what both share: nearest_centroid_common.cuh.
//
// mma.sync kernel. A CTA is 8 warps and 256 points of one head; warp w owns points 32w..32w+31 as
// two m16 tiles whose A fragments stay in registers for the whole kernel (64 registers at D = 128).
// The head's centroids stream through 4 cp.async stages of 64, one CTA barrier per stage. On a
// stage each warp computes its 32 x 64 scores in two halves of 32 centroids: per 16-element step
// of D, two ldmatrix.x4 (B fragments of 4 centroid blocks of 8) and 8 mma m16n8k16 into 32 fp32
// accumulators; then every score, minus its half norm, updates its point's running (max, argmax)
// (4 instructions per score, against 2 mma issue slots per 16 scores: the tensor pipe stays the
// bottleneck). Rows are reduced over the quad once, at the end. Grid: (point tiles, heads), point
// tiles fastest, so the CTAs running at once read the same head's centroids (L2 hits).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/mma.cuh"
#include "kernels/nearest_centroid.h"
#include "kernels/nearest_centroid_common.cuh"

namespace squeezeserve::kernels {
namespace detail::nearest {
namespace {

template <int D>
__global__ void __launch_bounds__(kThreads, 1) mma_sync_kernel(Args a) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int head = blockIdx.y;
  const CentroidStream<D> stream(smem, a, head);
  stream.start(tid);

  const int64_t head_offset = static_cast<int64_t>(head) * a.n;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kCtaPoints + warp * 32;
  uint32_t afrag[2][D / 16][4];
  load_a_fragments<D>(afrag[0], a.x + head_offset * D, row0, a.n, lane);
  load_a_fragments<D>(afrag[1], a.x + head_offset * D, row0 + 16, a.n, lane);

  RunningBest best[2][2];  // [m tile][row g, row g + 8]
#pragma unroll
  for (int m = 0; m < 2; ++m) {
    best[m][0].reset();
    best[m][1].reset();
  }

  // ldmatrix.x4 address of this lane: matrix lane / 8 is (centroid block +(lane / 16), chunk
  // +(lane / 8) % 2), row lane % 8 of it; registers come back as b0, b1 of block nb, then of nb + 1.
  const int ld_block = lane >> 4, ld_chunk = (lane >> 3) & 1, ld_row = lane & 7;

  for (int t = 0; t < stream.num_tiles; ++t) {
    cp_async_wait<kStages - 2>();  // this thread's copies of tile t landed
    __syncthreads();               // everyone's did; everyone is done reading tile t - 1
    stream.load(t + kStages - 1, tid);  // into the stage of tile t - 1
    __syncwarp();  // the loader's half-norm branch diverged; ldmatrix / mma.sync are .aligned
    const __nv_bfloat16* tile = stream.tile(t);
    const float* norms = stream.tile_norms(t);
    const int column0 = t * kTileCentroids + 2 * (lane & 3);

#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float acc[2][4][4];
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[m][j][e] = 0.f;
#pragma unroll
      for (int s = 0; s < D / 16; ++s) {
        uint32_t b[4][2];
#pragma unroll
        for (int p = 0; p < 2; ++p) {
          const int block = half * 4 + p * 2 + ld_block, chunk = 2 * s + ld_chunk;
          uint32_t r[4];
          ldmatrix_x4(r, tile + (block * (D / 8) + chunk) * 64 + ld_row * 8);
          b[2 * p][0] = r[0];
          b[2 * p][1] = r[1];
          b[2 * p + 1][0] = r[2];
          b[2 * p + 1][1] = r[3];
        }
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_bf16_16816(acc[m][j], afrag[m][s], b[j][0], b[j][1]);
      }
      // C fragment of block j: regs 0, 1 = row g, columns 2q, 2q + 1; regs 2, 3 = row g + 8.
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int block = half * 4 + j;
        const float2 norm = *reinterpret_cast<const float2*>(norms + block * 8 + 2 * (lane & 3));
        const int column = column0 + block * 8;
#pragma unroll
        for (int m = 0; m < 2; ++m) {
          best[m][0].consider(acc[m][j][0] - norm.x, column);
          best[m][0].consider(acc[m][j][1] - norm.y, column + 1);
          best[m][1].consider(acc[m][j][2] - norm.x, column);
          best[m][1].consider(acc[m][j][3] - norm.y, column + 1);
        }
      }
    }
  }
  cp_async_wait<0>();  // no copy may still target smem when the CTA exits

#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      best[m][r].reduce_quad();
      best[m][r].store(a, head_offset, row0 + m * 16 + r * 8 + (lane >> 2), lane);
    }
}

template <int D>
int launch(const Args& a, int heads, cudaStream_t stream) {
  const auto kernel = mma_sync_kernel<D>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSmemBytes<D>));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((a.n + kCtaPoints - 1) / kCtaPoints), static_cast<unsigned>(heads));
  kernel<<<grid, kThreads, kSmemBytes<D>, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

int launch_mma_sync(const Args& a, int heads, int d, cudaStream_t stream) {
  return d == 64 ? launch<64>(a, heads, stream) : launch<128>(a, heads, stream);
}

}  // namespace detail::nearest

int nearest_centroid_bf16_with(NearestCentroidKernel kernel, const uint16_t* x, const uint16_t* centroids,
                               const float* half_norms, int heads, int64_t n, int k, int d, int64_t* labels,
                               float* best, void* stream) {
  using namespace detail::nearest;
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const int64_t max_tiles = int64_t{0x7fffffff};  // grid.x
  if (!x || !centroids || !half_norms || !labels || (d != 64 && d != 128) || heads < 1 || heads > 65535 || n < 1 ||
      k < 1 || !aligned16(x) || !aligned16(centroids) || (n + kCtaPoints - 1) / kCtaPoints > max_tiles)
    return cudaErrorInvalidValue;
  const Args a{reinterpret_cast<const __nv_bfloat16*>(x), reinterpret_cast<const __nv_bfloat16*>(centroids),
               half_norms, labels, best, n, k};
  const auto s = static_cast<cudaStream_t>(stream);
  switch (kernel) {
    case NearestCentroidKernel::kMmaSync:
      return launch_mma_sync(a, heads, d, s);
    case NearestCentroidKernel::kWgmma:
      return launch_wgmma(a, heads, d, s);
    case NearestCentroidKernel::kAuto:
      break;
  }
  return detail::wgmma_available() ? launch_wgmma(a, heads, d, s) : launch_mma_sync(a, heads, d, s);
}

int nearest_centroid_bf16(const uint16_t* x, const uint16_t* centroids, const float* half_norms, int heads, int64_t n,
                          int k, int d, int64_t* labels, float* best, void* stream) {
  return nearest_centroid_bf16_with(NearestCentroidKernel::kAuto, x, centroids, half_norms, heads, n, k, d, labels,
                                    best, stream);
}

}  // namespace squeezeserve::kernels
