// The decode step's weight products. Contract: skinny_gemm.h, reference: skinny_gemm_ref.cc.
//
// A CTA computes one tile of 16 output features for all m (<= 8) rows of x over a range of K (the
// whole K unless the tiles alone would not fill the device: SkinnyLaunch::ksplit), its four warps
// each a contiguous quarter of that range in chunks of 64. Per chunk, lane (r = lane / 4, c = lane
// % 4) loads weights [16c, 16c + 16) of features r and r + 8 (two 16-byte loads each: four lanes
// cover a row's 128 bytes) and the same 16 elements of x's row r, and feeds them to four
// m16n8k16 MMAs: MMA j takes elements 4j, 4j + 1 as its k = 2c, 2c + 1 and 4j + 2, 4j + 3 as its
// k = 2c + 8, 2c + 9, for the weights (A) and for x (B) alike. A dot product does not depend on
// the order of its terms, so the MMAs see the chunk's 64 k in a permuted order and no weight goes
// through shared memory. Loads run one group of chunks ahead of the MMAs (registers, double
// buffered), and the first group's weights are loaded before the wait for the previous kernel.
// The next kernel may launch (allow_next_grid) only once the CTA has streamed its weights, not
// first thing as the rest of the decode chain does: launched early, the next kernel's CTAs sat on
// the SMs beside the streaming product and batch 1 lost 0.5-0.7 ms a step with our products
// against cuBLAS's; triggered after the main loop, it gained 0.33-0.40 ms on them (H100,
// Llama-3-8B 33K; bench/kernels/NOTES.md runs 24-25).
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>

#include "kernels/chained_launch.cuh"
#include "kernels/mma.cuh"
#include "kernels/skinny_gemm.h"

namespace squeezeserve::kernels {
namespace detail {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kTile = 16;   // output features per CTA: the MMA's M
constexpr int kChunk = 64;  // k per lane group and chunk: 4 lanes x 16 elements
constexpr int kGroup = 2;   // chunks per load group (registers: 2 x kGroup x 24 words in flight)
// Workspace: tickets first, then the fp32 partials, 16 x 8 per (tile, split).
constexpr int kMaxTickets = 16384;
constexpr size_t kPartialsOffset = sizeof(int) * kMaxTickets;
constexpr int kMaxPartials = static_cast<int>((kSkinnyGemmWorkspaceBytes - kPartialsOffset) / (sizeof(float) * kTile * 8));

struct Args {
  SkinnyGemm g;
  int* tickets;
  float* partials;
  int ksplit, chunks;  // CTAs per tile along K; chunks of kChunk in K (the last may be partial)
};

// 16 bytes of weights, read once: no L1 allocation.
__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ uint4 zero4() { return make_uint4(0u, 0u, 0u, 0u); }

// bf16(bf16(silu(g)) * u) for the two bf16 of each word, as libtorch's CUDA at::silu then mul_.
__device__ __forceinline__ uint32_t silu_mul(uint32_t g2, uint32_t u2) {
  const float2 g = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&g2));
  const float2 u = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u2));
  const float s0 = __bfloat162float(__float2bfloat16(g.x / (1.f + expf(-g.x))));
  const float s1 = __bfloat162float(__float2bfloat16(g.y / (1.f + expf(-g.y))));
  return pack_bf16(s0 * u.x, s1 * u.y);
}

// One chunk's operands of this lane: weights of features r and r + 8, x of row r (words 0..7:
// the 16 elements from 16c).
struct ChunkRegs {
  uint4 w[2][2];
  uint4 x[2];
};

struct Lane {
  const __nv_bfloat16* w0;  // feature row0 + r at k = 16c, or null past n
  const __nv_bfloat16* w1;  // feature row0 + r + 8
  const __nv_bfloat16* x;   // x row r at k = 16c, or null past m
  int k, c;

  __device__ void load_weights(int chunk, ChunkRegs& regs) const {
    const int at = chunk * kChunk + 16 * c;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bool in = at + 8 * h < k;  // k is a multiple of 8: all 8 elements or none
      regs.w[0][h] = w0 != nullptr && in ? load_stream(w0 + chunk * kChunk + 8 * h) : zero4();
      regs.w[1][h] = w1 != nullptr && in ? load_stream(w1 + chunk * kChunk + 8 * h) : zero4();
    }
  }

  __device__ void load_x(int chunk, ChunkRegs& regs) const {
    const int at = chunk * kChunk + 16 * c;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bool in = x != nullptr && at + 8 * h < k;
      regs.x[h] = in ? __ldg(reinterpret_cast<const uint4*>(x + chunk * kChunk + 8 * h)) : zero4();
    }
  }
};

__device__ __forceinline__ uint32_t word(const uint4 (&v)[2], int i) {
  const uint4& h = v[i / 4];
  const int j = i % 4;
  return j == 0 ? h.x : j == 1 ? h.y : j == 2 ? h.z : h.w;
}

__device__ __forceinline__ void mma_chunk(const ChunkRegs& regs, float (&acc)[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t a[4] = {word(regs.w[0], 2 * j), word(regs.w[1], 2 * j), word(regs.w[0], 2 * j + 1),
                           word(regs.w[1], 2 * j + 1)};
    mma_bf16_16816(acc, a, word(regs.x, 2 * j), word(regs.x, 2 * j + 1));
  }
}

// out[t][f] = bf16(v + bias[f] + residual[t][f]) for token t < m, feature f < n.
__device__ __forceinline__ void write_out(const SkinnyGemm& g, int t, int f, float v) {
  if (t >= g.m || f >= g.n) return;
  if (g.bias) v += __bfloat162float(static_cast<const __nv_bfloat16*>(g.bias)[f]);
  const int64_t at = static_cast<int64_t>(t) * g.n + f;
  if (g.residual) v += __bfloat162float(static_cast<const __nv_bfloat16*>(g.residual)[at]);
  static_cast<__nv_bfloat16*>(g.out)[at] = __float2bfloat16(v);
}

__global__ void __launch_bounds__(kThreads) skinny_gemm_kernel(Args a) {
  __shared__ float reduce[kWarps][kTile * 8];
  __shared__ int last;
  const SkinnyGemm& g = a.g;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int r = lane >> 2, c = lane & 3;
  const int tile = blockIdx.x, split = blockIdx.y;
  const int row0 = tile * kTile;

  // This warp's chunks: the split's share of the chunks, then the warp's quarter of it.
  const int s0 = static_cast<int>(static_cast<int64_t>(a.chunks) * split / a.ksplit);
  const int s1 = static_cast<int>(static_cast<int64_t>(a.chunks) * (split + 1) / a.ksplit);
  const int c0 = s0 + (s1 - s0) * warp / kWarps, c1 = s0 + (s1 - s0) * (warp + 1) / kWarps;

  const auto* w = static_cast<const __nv_bfloat16*>(g.w);
  Lane ln;
  ln.k = g.k;
  ln.c = c;
  ln.w0 = row0 + r < g.n ? w + static_cast<int64_t>(row0 + r) * g.k + 16 * c : nullptr;
  ln.w1 = row0 + r + 8 < g.n ? w + static_cast<int64_t>(row0 + r + 8) * g.k + 16 * c : nullptr;
  ln.x = r < g.m ? static_cast<const __nv_bfloat16*>(g.x) + static_cast<int64_t>(r) * g.x_stride + 16 * c : nullptr;

  // Group i holds chunks c0 + kGroup i ..; a chunk at or past c1 loads nothing (zeros).
  auto load_group_weights = [&](int first, ChunkRegs (&regs)[kGroup]) {
#pragma unroll
    for (int u = 0; u < kGroup; ++u) {
      if (first + u < c1) ln.load_weights(first + u, regs[u]);
      else regs[u].w[0][0] = regs[u].w[0][1] = regs[u].w[1][0] = regs[u].w[1][1] = zero4();
    }
  };
  auto load_group_x = [&](int first, ChunkRegs (&regs)[kGroup]) {
#pragma unroll
    for (int u = 0; u < kGroup; ++u) {
      if (first + u < c1) ln.load_x(first + u, regs[u]);
      else regs[u].x[0] = regs[u].x[1] = zero4();
    }
  };

  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  ChunkRegs cur[kGroup];
  load_group_weights(c0, cur);  // the weights do not depend on the previous kernel
  wait_for_previous_grid();     // x, the residual, the workspace and out may
  load_group_x(c0, cur);
  for (int first = c0; first < c1; first += kGroup) {
    ChunkRegs next[kGroup];
    load_group_weights(first + kGroup, next);
    load_group_x(first + kGroup, next);
#pragma unroll
    for (int u = 0; u < kGroup; ++u) mma_chunk(cur[u], acc);
#pragma unroll
    for (int u = 0; u < kGroup; ++u) cur[u] = next[u];
  }
  allow_next_grid();  // after the stream (see the top of this file)

  // The warps' sums: C fragment c0, c1 = (feature r, tokens 2c, 2c + 1), c2, c3 = feature r + 8.
  reduce[warp][r * 8 + 2 * c] = acc[0];
  reduce[warp][r * 8 + 2 * c + 1] = acc[1];
  reduce[warp][(r + 8) * 8 + 2 * c] = acc[2];
  reduce[warp][(r + 8) * 8 + 2 * c + 1] = acc[3];
  __syncthreads();
  // Thread tid: token tid / 16, feature row0 + tid % 16 (16 consecutive features a token: 32-byte
  // stores).
  const int t = tid / kTile, f = tid % kTile;
  float v = 0.f;
#pragma unroll
  for (int q = 0; q < kWarps; ++q) v += reduce[q][f * 8 + t];
  if (a.ksplit == 1) {
    write_out(g, t, row0 + f, v);
    return;
  }
  // Split K: every split's partial, then the tile's last CTA to finish sums them in split order.
  float* mine = a.partials + (static_cast<int64_t>(tile) * a.ksplit + split) * (kTile * 8);
  mine[tid] = v;
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(a.tickets + tile, 1) == a.ksplit - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const float* tile_partials = a.partials + static_cast<int64_t>(tile) * a.ksplit * (kTile * 8);
  float sum = 0.f;
  for (int s = 0; s < a.ksplit; ++s) sum += __ldcg(tile_partials + s * (kTile * 8) + tid);
  write_out(g, t, row0 + f, sum);
  if (tid == 0) a.tickets[tile] = 0;  // zero again for the next launch
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// CTAs of the kernel the device holds at once (cached per device; threads may race to fill it
// with the same value).
int resident_ctas() {
  static std::atomic<int> cached[64] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 0;
  if (cached[dev].load(std::memory_order_relaxed) == 0) {
    int sms = 0, per_sm = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, skinny_gemm_kernel, kThreads, 0) != cudaSuccess)
      return 0;
    cached[dev].store(std::max(1, sms * per_sm), std::memory_order_relaxed);
  }
  return cached[dev].load(std::memory_order_relaxed);
}

// Eight elements of act per thread: 16-byte loads of gate and up, one 16-byte store.
__global__ void silu_mul_kernel(const __nv_bfloat16* gate_up, int64_t stride, __nv_bfloat16* act, int rows,
                                int inter) {
  allow_next_grid();
  wait_for_previous_grid();  // gate_up is the previous kernel's output
  const int per_row = inter / 8;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(rows) * per_row) return;
  const int64_t row = idx / per_row;
  const int j = static_cast<int>(idx % per_row) * 8;
  const uint4 g = *reinterpret_cast<const uint4*>(gate_up + row * stride + j);
  const uint4 u = *reinterpret_cast<const uint4*>(gate_up + row * stride + inter + j);
  *reinterpret_cast<uint4*>(act + row * inter + j) =
      make_uint4(silu_mul(g.x, u.x), silu_mul(g.y, u.y), silu_mul(g.z, u.z), silu_mul(g.w, u.w));
}

}  // namespace
}  // namespace detail

bool skinny_gemm_supports(const SkinnyGemm& g) {
  using detail::aligned16;
  return g.m >= 1 && g.m <= kSkinnyMaxRows && g.n >= 1 && g.k >= 8 && g.k % 8 == 0 && g.x_stride % 8 == 0 &&
         (g.m == 1 || g.x_stride >= g.k) && g.x && g.w && g.out && aligned16(g.x) && aligned16(g.w) &&
         aligned16(g.out) && (g.residual == nullptr || aligned16(g.residual));
}

int skinny_gemm(const SkinnyGemm& g, void* workspace, void* stream, const SkinnyLaunch& launch) {
  using namespace detail;
  if (!skinny_gemm_supports(g) || workspace == nullptr) return cudaErrorInvalidValue;
  const int tiles = (g.n + kTile - 1) / kTile;
  const int chunks = (g.k + kChunk - 1) / kChunk;
  // Split K only where the tiles leave CTAs the device could hold idle, keeping at least two
  // chunks per warp, and as far as the workspace holds the partials and tickets.
  int ksplit = launch.ksplit;
  if (ksplit <= 0) {
    const int resident = resident_ctas();
    ksplit = resident > tiles ? resident / tiles : 1;
    ksplit = std::min(ksplit, std::max(1, chunks / (2 * kWarps)));
  }
  ksplit = std::max(1, std::min(ksplit, chunks));
  if (ksplit > 1 && (tiles > kMaxTickets || tiles * ksplit > kMaxPartials)) {
    if (launch.ksplit > 0 || tiles > kMaxTickets) return cudaErrorInvalidValue;
    ksplit = std::max(1, kMaxPartials / tiles);
  }
  char* base = static_cast<char*>(workspace);
  const Args a{g, reinterpret_cast<int*>(base), reinterpret_cast<float*>(base + kPartialsOffset), ksplit, chunks};
  return launch_chained(skinny_gemm_kernel, dim3(tiles, ksplit), dim3(kThreads), 0, static_cast<cudaStream_t>(stream),
                        a);
}

int silu_mul_bf16(const void* gate_up, int64_t stride, void* act, int rows, int inter, void* stream) {
  using namespace detail;
  if (rows < 0 || inter <= 0 || inter % 8 != 0 || stride % 8 != 0 || stride < 2 * int64_t{inter} ||
      !aligned16(gate_up) || !aligned16(act))
    return cudaErrorInvalidValue;
  const int64_t threads = static_cast<int64_t>(rows) * (inter / 8);
  if (threads == 0) return cudaSuccess;
  constexpr int kBlock = 256;
  return launch_chained(silu_mul_kernel, dim3(static_cast<unsigned>((threads + kBlock - 1) / kBlock)), dim3(kBlock), 0,
                        static_cast<cudaStream_t>(stream), static_cast<const __nv_bfloat16*>(gate_up), stride,
                        static_cast<__nv_bfloat16*>(act), rows, inter);
}

}  // namespace squeezeserve::kernels
