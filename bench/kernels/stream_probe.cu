// What read rate the decode attention's access pattern can reach, without its math: a diagnosis of
// why its stream runs at ~2.4 TB/s where a copy moves 2.97 (bench/kernels/NOTES.md runs 26-28).
// Each CTA is the decode kernel's (4 warps, two CTAs an SM, heads aligned to CTA ranges, each warp
// three stages of a 16-row K tile and V tile, rows padded to D + 8) and copies its rows into shared
// memory, touching one word a tile; `spin` cycles a tile stand in for the tile's math. Patterns:
//   contiguous   each warp a contiguous quarter of its CTA's tiles (the decode kernel today)
//   interleaved  the CTA's tiles dealt to its warps in turn (one stream a CTA instead of four)
//   bulk / bulk-interleaved   the same, each tile's K and V one cp.async.bulk each (lane 0,
//                completion on an mbarrier) instead of 16 cp.async a lane
//   bulk rows (interleaved)   one cp.async.bulk a row (a lane each), into the padded rows
// beside a plain read (ld.global.nc, every SM, many loads in flight) and a device-to-device copy.
//   stream_probe [--heads N] [--rows N] [--out FILE]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda_common.cuh"

namespace {

using squeezeserve::kernels::detail::cp_async_16;
using squeezeserve::kernels::detail::cp_async_commit;
using squeezeserve::kernels::detail::cp_async_wait;

constexpr int kD = 128, kStride = kD + 8, kTileRows = 16, kStages = 3, kWarps = 4;
constexpr int kTileElems = kTileRows * kStride;
constexpr size_t kWarpSmemBytes = 2 * kStages * kTileElems * 2;  // K and V tiles, bf16
constexpr size_t kSmemBytes = kWarps * kWarpSmemBytes;             // 102 KB: two CTAs an SM
constexpr size_t kFlushBytes = size_t{256} << 20;
constexpr int kReps = 15;

enum Mode { kContiguous = 0, kInterleaved = 1, kBulk = 2, kBulkInterleaved = 3, kBulkRows = 4, kBulkRowsInterleaved = 5 };

struct Args {
  const uint16_t* k;
  const uint16_t* v;
  int rows, ctas_per_head, mode, spin;
  unsigned* sink;
};

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)));
}
__device__ __forceinline__ void mbar_expect(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes));
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}" ::"r"(smem_addr(bar)), "r"(parity) : "memory");
}

__global__ void __launch_bounds__(kWarps * 32, 2) probe_kernel(Args a) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t bars[kWarps][kStages];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int head = blockIdx.x / a.ctas_per_head, c = blockIdx.x % a.ctas_per_head;
  const int per_cta = (a.rows + a.ctas_per_head - 1) / a.ctas_per_head;
  const int r0 = c * per_cta, r1 = min(r0 + per_cta, a.rows);
  const int cta_tiles = r1 > r0 ? (r1 - r0 + kTileRows - 1) / kTileRows : 0;
  const bool interleaved = a.mode == kInterleaved || a.mode == kBulkInterleaved || a.mode == kBulkRowsInterleaved;
  const bool bulk = a.mode >= kBulk, rows_bulk = a.mode >= kBulkRows;
  int first, num, step;
  if (interleaved) {
    first = warp, step = kWarps, num = cta_tiles > warp ? (cta_tiles - warp + kWarps - 1) / kWarps : 0;
  } else {
    const int q = (cta_tiles + kWarps - 1) / kWarps;
    first = warp * q, step = 1, num = max(0, min(q, cta_tiles - first));
  }
  const int64_t head_off = static_cast<int64_t>(head) * a.rows * kD;
  uint16_t* ws = reinterpret_cast<uint16_t*>(smem_raw + warp * kWarpSmemBytes);
  if (bulk && lane == 0)
    for (int s = 0; s < kStages; ++s) mbar_init(&bars[warp][s]);
  if (bulk) asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncwarp();

  auto load = [&](int t) {
    const int row0 = r0 + (first + t * step) * kTileRows;
    const int n = min(kTileRows, r1 - row0);
    uint16_t* ks = ws + (t % kStages) * 2 * kTileElems;
    uint16_t* vs = ks + kTileElems;
    const int64_t at = head_off + static_cast<int64_t>(row0) * kD;
    if (rows_bulk) {  // one row a lane (K: lanes 0..15, V: 16..31), into the padded rows
      uint64_t* bar = &bars[warp][t % kStages];
      if (lane == 0) mbar_expect(bar, 2u * n * kD * 2);
      __syncwarp();
      const int row = lane & 15;
      if (row < n)
        bulk_copy((lane < 16 ? ks : vs) + row * kStride, (lane < 16 ? a.k : a.v) + at + row * kD, kD * 2, bar);
      return;
    }
    if (bulk) {  // unpadded rows: the bytes are what is measured here, not ldmatrix's banks
      if (lane == 0) {
        uint64_t* bar = &bars[warp][t % kStages];
        mbar_expect(bar, 2u * n * kD * 2);
        bulk_copy(ks, a.k + at, n * kD * 2, bar);
        bulk_copy(vs, a.v + at, n * kD * 2, bar);
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < kTileRows / 2; ++i) {
      const int row = i * 2 + lane / 16, col = (lane % 16) * 8;
      const bool in = row < n;
      const int64_t src = at + static_cast<int64_t>(in ? row : 0) * kD + col;
      cp_async_16(ks + row * kStride + col, a.k + src, in ? 16 : 0);
      cp_async_16(vs + row * kStride + col, a.v + src, in ? 16 : 0);
    }
  };

  unsigned acc = 0;
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < num) load(t);
    cp_async_commit();
  }
  for (int t = 0; t < num; ++t) {
    __syncwarp();
    if (t + kStages - 1 < num) load(t + kStages - 1);
    cp_async_commit();
    if (bulk) {
      mbar_wait(&bars[warp][t % kStages], (t / kStages) & 1);
    } else {
      cp_async_wait<kStages - 1>();
      __syncwarp();
    }
    const uint16_t* ks = ws + (t % kStages) * 2 * kTileElems;
    acc ^= reinterpret_cast<const unsigned*>(ks)[lane] ^ reinterpret_cast<const unsigned*>(ks + kTileElems)[lane];
    if (a.spin > 0) {
      const long long s0 = clock64();
      while (clock64() - s0 < a.spin) {
      }
    }
  }
  cp_async_wait<0>();
  if (acc == 0x12345678u) a.sink[blockIdx.x] = acc;  // keeps the reads; practically never stores
}

// Every SM, 16-byte non-caching loads, four in flight a thread: what reading the bytes can reach.
__global__ void __launch_bounds__(256) plain_read_kernel(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  const size_t stride = size_t{gridDim.x} * blockDim.x;
  size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 x[4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                   : "=r"(x[u].x), "=r"(x[u].y), "=r"(x[u].z), "=r"(x[u].w)
                   : "l"(p + i + u * stride));
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= x[u].x ^ x[u].w;
  }
  for (; i < n; i += stride) acc ^= p[i].x;
  if (acc == 0x12345678u) sink[blockIdx.x] = acc;
}

#define CUDA_OK(x)                                                                    \
  do {                                                                                \
    cudaError_t e_ = (x);                                                             \
    if (e_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

template <typename F>
double median_us(void* flush, F launch) {
  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  std::vector<double> us;
  for (int rep = 0; rep < kReps + 2; ++rep) {
    CUDA_OK(cudaMemsetAsync(flush, rep, kFlushBytes));
    CUDA_OK(cudaEventRecord(e0));
    launch();
    CUDA_OK(cudaEventRecord(e1));
    CUDA_OK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
    if (rep >= 2) us.push_back(1e3 * ms);
  }
  CUDA_OK(cudaGetLastError());
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int heads = 8, rows = 33000;
  const char* out_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--heads") && i + 1 < argc) heads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--rows") && i + 1 < argc) rows = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: stream_probe [--heads N] [--rows N] [--out FILE]\n");
      return 2;
    }
  }
  if (heads < 1 || rows < 16) {
    std::fprintf(stderr, "stream_probe: --heads >= 1 and --rows >= 16\n");
    return 2;
  }
  int sms = 0;
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CUDA_OK(cudaFuncSetAttribute(probe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes)));
  const size_t elems = size_t(heads) * rows * kD, bytes = 2 * elems * 2;
  uint16_t* k = nullptr;  // K, then V in the same allocation: the plain read covers both at once
  unsigned* sink = nullptr;
  void *flush = nullptr, *copy_dst = nullptr;
  CUDA_OK(cudaMalloc(&k, bytes));
  uint16_t* v = k + elems;
  CUDA_OK(cudaMalloc(&sink, 1 << 20));
  CUDA_OK(cudaMalloc(&flush, kFlushBytes));
  CUDA_OK(cudaMalloc(&copy_dst, bytes));
  CUDA_OK(cudaMemset(k, 1, elems * 2));
  CUDA_OK(cudaMemset(v, 2, elems * 2));
  // The decode kernel's grid: what the device holds at once (two CTAs an SM), heads aligned.
  const int ctas_per_head = std::max(1, 2 * sms / heads);
  std::string json = "{\"heads\": " + std::to_string(heads) + ", \"rows\": " + std::to_string(rows) +
                     ", \"bytes\": " + std::to_string(bytes) + ", \"sms\": " + std::to_string(sms) + ", \"rows_us\": [";
  std::printf("%d heads x %d rows, K and V: %.1f MB; %d CTAs (%d a head), L2 flushed, median of %d\n", heads, rows,
              bytes / 1e6, ctas_per_head * heads, ctas_per_head, kReps);
  std::printf("| pattern | spin cycles a tile | us | TB/s read |\n|---|---:|---:|---:|\n");
  bool first = true;
  auto report = [&](const std::string& name, int spin, double us, double moved) {
    std::printf("| %s | %d | %.1f | %.2f |\n", name.c_str(), spin, us, moved / us / 1e6);
    json += std::string(first ? "" : ", ") + "{\"pattern\": \"" + name + "\", \"spin\": " + std::to_string(spin) +
            ", \"us\": " + std::to_string(us) + ", \"tb_s\": " + std::to_string(moved / us / 1e6) + "}";
    first = false;
  };
  const double copy_us = median_us(flush, [&] { CUDA_OK(cudaMemcpyAsync(copy_dst, k, bytes, cudaMemcpyDeviceToDevice)); });
  report("copy (read + written)", 0, copy_us, 2.0 * bytes);
  const double read_us = median_us(flush, [&] {
    plain_read_kernel<<<sms * 8, 256>>>(reinterpret_cast<const uint4*>(k), bytes / 16, sink);
  });
  report("plain read", 0, read_us, bytes);
  const char* names[] = {"contiguous", "interleaved", "bulk", "bulk-interleaved", "bulk rows", "bulk rows interleaved"};
  for (int spin : {0, 600, 1500})
    for (int mode = 0; mode < 6; ++mode) {
      Args a{k, v, rows, ctas_per_head, mode, spin, sink};
      const double us = median_us(flush, [&] {
        probe_kernel<<<ctas_per_head * heads, kWarps * 32, kSmemBytes>>>(a);
      });
      report(names[mode], spin, us, bytes);
    }
  json += "]}\n";
  if (out_path) {
    FILE* f = std::fopen(out_path, "w");
    if (!f || std::fputs(json.c_str(), f) < 0 || std::fclose(f) != 0) {
      std::fprintf(stderr, "stream_probe: cannot write %s\n", out_path);
      return 1;
    }
  }
  return 0;
}
