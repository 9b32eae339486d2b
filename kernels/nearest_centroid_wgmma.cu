// Nearest-centroid assignment on Hopper's warpgroup MMA (wgmma, sm_90a): mma.sync runs at a
// fraction of the H100/H200 tensor-core rate, wgmma at all of it. Contract: nearest_centroid.h;
// the shared tile layout and running argmax: nearest_centroid_common.cuh.
//
// A CTA is 2 warpgroups and 256 points of one head; warpgroup w owns points 128w..128w+127 as two
// m64 halves, their A fragments in registers (wgmma's register-A form: 64 registers at D = 128).
// Centroids stream through the same 4 cp.async stages of 64 as the mma.sync kernel, in the same
// core-matrix layout, which a non-swizzled K-major wgmma descriptor reads directly. Per stage a
// warpgroup issues 2 x D/16 wgmma m64n64k16 (bf16 in, fp32 out).
//
// Overlap: two accumulator sets (2 x 2 x 32 registers). After the stage barrier of tile t, each
// warpgroup issues tile t + 1's wgmmas into one set, waits only for tile t's (wgmma.wait_group 1)
// and runs tile t's argmax epilogue on the other set while the tensor cores work on t + 1.
// cp.async writes through the generic proxy and wgmma reads shared memory through the async
// proxy, hence fence.proxy.async between a stage's arrival and the barrier that publishes it.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "kernels/nearest_centroid_common.cuh"
#include "kernels/wgmma.cuh"

namespace squeezeserve::kernels::detail::nearest {
namespace {

template <int D>
__global__ void __launch_bounds__(kThreads, 1) wgmma_kernel(Args a) {
#ifdef SQZ_HAS_WGMMA
  extern __shared__ __align__(1024) unsigned char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int head = blockIdx.y;
  const CentroidStream<D> stream(smem, a, head);
  const uint32_t tiles_address = static_cast<uint32_t>(__cvta_generic_to_shared(stream.tiles));
  constexpr uint32_t kTileBytes = sizeof(__nv_bfloat16) * kTileElems<D>;
  stream.start(tid);

  // Warp w of warpgroup g holds rows 16w..16w+15 of each m64 half of the group's 128 points.
  const int64_t head_offset = static_cast<int64_t>(head) * a.n;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kCtaPoints + (warp >> 2) * 128 + (warp & 3) * 16;
  uint32_t afrag[2][D / 16][4];
  load_a_fragments<D>(afrag[0], a.x + head_offset * D, row0, a.n, lane);
  load_a_fragments<D>(afrag[1], a.x + head_offset * D, row0 + 64, a.n, lane);

  RunningBest best[2][2];  // [half][row g, row g + 8]
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    best[half][0].reset();
    best[half][1].reset();
  }
  float acc_even[2][32], acc_odd[2][32];  // tiles 0, 2, 4, ... and 1, 3, 5, ...
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int i = 0; i < 32; ++i) acc_even[half][i] = acc_odd[half][i] = 0.f;

  cp_async_wait<kStages - 2>();
  fence_proxy_async();
  __syncthreads();
  wgmma_two_halves_x64<D>(acc_even, afrag, tiles_address);

  // Tile t: its wgmmas are in flight in `acc` (issued one step earlier); `next` takes tile t + 1
  // when there is one (issue_next: known at compile time, see the loop below).
  auto step = [&](int t, float(&acc)[2][32], float(&next)[2][32], auto issue_next) {
    wgmma_stream_step<D, kStages>(t, acc, next, issue_next, afrag, tiles_address, kTileBytes,
                                  [&] { stream.load(t + kStages - 1, tid); });  // into the stage of tile t - 1

    // Accumulator block j (registers 4j..4j+3): row g, columns 8j + 2q, +1; then row g + 8.
    const float* norms = stream.tile_norms(t);
    const int column0 = t * kTileCentroids + 2 * (lane & 3);
#pragma unroll
    for (int j = 0; j < kTileCentroids / 8; ++j) {
      const float2 norm = *reinterpret_cast<const float2*>(norms + j * 8 + 2 * (lane & 3));
      const int column = column0 + j * 8;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        best[half][0].consider(acc[half][4 * j + 0] - norm.x, column);
        best[half][0].consider(acc[half][4 * j + 1] - norm.y, column + 1);
        best[half][1].consider(acc[half][4 * j + 2] - norm.x, column);
        best[half][1].consider(acc[half][4 * j + 3] - norm.y, column + 1);
      }
    }
  };
  wgmma_ping_pong(stream.num_tiles, acc_even, acc_odd, step);
  cp_async_wait<0>();

#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      best[half][r].reduce_quad();
      best[half][r].store(a, head_offset, row0 + half * 64 + r * 8 + (lane >> 2), lane);
    }
#else
  __trap();  // launched only where wgmma_available()
#endif
}

template <int D>
int launch(const Args& a, int heads, cudaStream_t stream) {
  const auto kernel = wgmma_kernel<D>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSmemBytes<D>));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((a.n + kCtaPoints - 1) / kCtaPoints), static_cast<unsigned>(heads));
  kernel<<<grid, kThreads, kSmemBytes<D>, stream>>>(a);
  return cudaGetLastError();
}

// Whether the current device runs wgmma_kernel from sm_90a code: an sm_90 device and a binary
// built for it from sm_90a PTX (a kernel JIT-compiled from compute_80 PTX has no wgmma body).
bool query_available() {
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  if (major != 9 || minor != 0) return false;
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, wgmma_kernel<128>) != cudaSuccess) {
    (void)cudaGetLastError();  // not left for the caller's next cudaGetLastError()
    return false;
  }
  return attributes.binaryVersion == 90 && attributes.ptxVersion == 90;
}

}  // namespace

int launch_wgmma(const Args& a, int heads, int d, cudaStream_t stream) {
  if (!wgmma_available()) return cudaErrorNotSupported;
  return d == 64 ? launch<64>(a, heads, stream) : launch<128>(a, heads, stream);
}

}  // namespace squeezeserve::kernels::detail::nearest

namespace squeezeserve::kernels::detail {

bool wgmma_available() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> known[kMaxDevices] = {};  // 0 unknown, 1 no, 2 yes
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    (void)cudaGetLastError();
    return false;
  }
  int state = known[device].load(std::memory_order_relaxed);
  if (state == 0) {
    state = nearest::query_available() ? 2 : 1;
    known[device].store(state, std::memory_order_relaxed);
  }
  return state == 2;
}

}  // namespace squeezeserve::kernels::detail
