// Hopper warpgroup MMA (wgmma, sm_90a) building blocks shared by the kernels that use it
// (nearest_centroid_wgmma.cu, selection_lse_wgmma.cu, prefill_attention_ws.cu;
// load_a_fragments also the mma.sync nearest_centroid.cu). SQZ_HAS_WGMMA is
// defined when the code is compiled for sm_90a (the device pass of an sm_90a target); kernels built
// without it trap, and the host only launches them where wgmma_available().
//
// Operands: A from registers (the mma.sync m16n8k16 A-fragment layout, per warp of the
// warpgroup: 16 of the 64 rows), B from shared memory in 8x8 "core matrices" (8 rows x 8 bf16 =
// 128 contiguous bytes) without swizzle, K-major: row j, elements 8c..8c+7 of a [rows][D] tile at
// element ((j / 8) * (D / 8) + c) * 64 + (j % 8) * 8 (copy_core_tile below writes it); or, in the
// warp-specialized prefill, K and V in the 128-byte swizzle (smem_layout.h, which the CPU test
// tests/kernels/smem_layout_test.cc checks against the hardware's canonical layouts).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda_common.cuh"
#include "kernels/smem_layout.h"

namespace squeezeserve::kernels::detail {

// Whether the current device runs this build's sm_90a kernels (an sm_90 device and a binary built
// for it from sm_90a code); cached per device. nearest_centroid_wgmma.cu.
bool wgmma_available();

// Copies rows [first, first + kRows) of a [k][D] bf16 matrix into a core-matrix tile with cp.async
// (rows past k zero-filled), kThreadsCopying threads, this one `tid`. The caller commits.
template <int D, int kRows, int kThreadsCopying>
__device__ __forceinline__ void copy_core_tile(__nv_bfloat16* tile, const __nv_bfloat16* rows, int first, int k,
                                               int tid) {
  constexpr int kChunksPerRow = D / 8;  // 16-byte chunks
  constexpr int kChunks = kRows * kChunksPerRow;
  static_assert(kChunks % kThreadsCopying == 0, "every thread copies the same number of chunks");
#pragma unroll
  for (int i = 0; i < kChunks / kThreadsCopying; ++i) {
    // A warp reads 64 contiguous bytes from each of 8 rows, in chunk order: a quarter-warp takes
    // half a sector of each of 8 rows. Whole sectors a quarter-warp (lanes permuted, shared writes
    // 2 to a bank group) made pass A 2% slower and the nearest-centroid kernels no faster
    // (bench/kernels/NOTES.md run 37).
    const int chunk = i * kThreadsCopying + tid;
    const int j = first + core_chunk_row<D>(chunk);
    const bool in_range = j < k;
    const __nv_bfloat16* src = in_range ? rows + static_cast<int64_t>(j) * D + core_chunk_col<D>(chunk) : rows;
    cp_async_16(tile + chunk * 8, src, in_range ? 16 : 0);
  }
}

// A fragments (mma.sync m16n8k16 / wgmma m64nNk16 register layout, identical per warp) of 16 rows
// of D bf16: a[s] covers elements 16s..16s+15. lane = 4 * g + q holds rows g (row_g) and g + 8
// (row_g8), elements 2q, 2q+1 (regs 0, 1) and 2q+8, 2q+9 (regs 2, 3); a null row is zero.
template <int D>
__device__ __forceinline__ void load_a_rows(uint32_t (&a)[D / 16][4], const __nv_bfloat16* row_g,
                                            const __nv_bfloat16* row_g8, int lane) {
  const int q = lane & 3;
  const uint32_t* p0 = reinterpret_cast<const uint32_t*>(row_g);
  const uint32_t* p1 = reinterpret_cast<const uint32_t*>(row_g8);
#pragma unroll
  for (int s = 0; s < D / 16; ++s) {
    a[s][0] = p0 ? __ldg(p0 + 8 * s + q) : 0u;
    a[s][1] = p1 ? __ldg(p1 + 8 * s + q) : 0u;
    a[s][2] = p0 ? __ldg(p0 + 8 * s + 4 + q) : 0u;
    a[s][3] = p1 ? __ldg(p1 + 8 * s + 4 + q) : 0u;
  }
}
// The same for rows row0 .. row0 + 15 of a [n][D] matrix x (rows past n zero).
template <int D>
__device__ __forceinline__ void load_a_fragments(uint32_t (&a)[D / 16][4], const __nv_bfloat16* x, int64_t row0,
                                                 int64_t n, int lane) {
  const int64_t r0 = row0 + (lane >> 2), r1 = r0 + 8;
  load_a_rows<D>(a, r0 < n ? x + r0 * D : nullptr, r1 < n ? x + r1 * D : nullptr, lane);
}

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SQZ_HAS_WGMMA 1


__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Pins accumulator registers in program order around the asynchronous wgmma (the compiler sees
// the asm as writing them at issue; this keeps every read after the wait).
__device__ __forceinline__ void fence_operands(float (&d)[32]) {
#pragma unroll
  for (int i = 0; i < 32; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Shared-memory matrix descriptor, no swizzle: start address, leading byte offset (between
// K-adjacent core matrices), stride byte offset (between 8-row groups), all in 16-byte units.
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t address, uint32_t leading, uint32_t stride) {
  return static_cast<uint64_t>((address & 0x3ffff) >> 4) | (static_cast<uint64_t>((leading & 0x3ffff) >> 4) << 16) |
         (static_cast<uint64_t>((stride & 0x3ffff) >> 4) << 32);
}
// The same with the 128-byte swizzle (layout type 1, bits 62-63). What its offsets mean for a
// K-major and an MN-major operand: smem_layout.h (ws_layout::k_step, v_step).
__device__ __forceinline__ uint64_t smem_descriptor_sw128(uint32_t address, uint32_t leading, uint32_t stride) {
  return smem_descriptor(address, leading, stride) | (1ull << 62);
}

// d (+)= a · b: a = 64 x 16 from registers (this warp's 16 rows), b = 16 x 64 K-major in smem.
// accumulate = 0 ignores d's old value.
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], const uint32_t (&a)[4], uint64_t b, int accumulate) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate));
}

// d (+)= a · b, d = [8][4] (n-tile j of 8 columns: the mma.sync C fragment layout), a = 64 x 16 and
// b = 16 x 64 both in smem, K-major core matrices (descriptors as smem_descriptor: leading offset
// between the two 8-element halves of K, stride offset between 8-row groups). accumulate = 0
// ignores d's old value.
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[8][4], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),
        "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),
        "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]),
        "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(a), "l"(b), "r"(accumulate));
}

// d (+)= a · b, d = [16][4] (n-tile j of 8 columns: the mma.sync C fragment layout), a = 64 x 16
// from registers, b = 16 x 128 in smem: K-major (kTransB = 0) or MN-major (kTransB = 1: each core
// matrix 8 columns x 8 k-rows with the columns contiguous; without swizzle the descriptor's leading
// offset steps 8 k-rows and its stride offset 8 columns; with the 128-byte swizzle the meanings
// swap: smem_layout.h v_step). accumulate = 0 ignores d's old value.
template <int kTransB>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[16][4], const uint32_t (&a)[4], uint64_t b, int accumulate) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, %70;\n"
      "}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),
        "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),
        "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]),
        "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
        "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]),
        "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]),
        "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]),
        "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]),
        "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]),
        "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(kTransB));
}

// The same for [N][4] accumulators, and for A fragments in registers (an asynchronous wgmma reads
// them after its issue: a later write must stay after the wait).
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_operands(uint32_t (&a)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(a[i][e])::"memory");
}

// acc[half] = the warpgroup's two m64 halves of rows (A fragments in registers) times the 64 rows
// of the core-matrix tile at smem address `tile` (as columns): 2 x D/16 wgmma m64n64k16, one
// commit group. Callers wait with wgmma_wait before reading acc.
template <int D>
__device__ __forceinline__ void wgmma_two_halves_x64(float (&acc)[2][32], const uint32_t (&afrag)[2][D / 16][4],
                                                     uint32_t tile) {
  __syncwarp();  // the callers' loaders diverge; wgmma is .aligned
  fence_operands(acc[0]);
  fence_operands(acc[1]);
  wgmma_fence();
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int s = 0; s < D / 16; ++s) {  // step s reads chunks 2s, 2s + 1: 256 bytes further
      const OperandStep b = core_step<D>(s);
      wgmma_m64n64k16(acc[half], afrag[half][s], smem_descriptor(tile + b.start, b.leading, b.stride), s > 0);
    }
  wgmma_commit();
  fence_operands(acc[0]);
  fence_operands(acc[1]);
}

// The head of step t of a stream of 64-row tiles through kStages cp.async stages, one commit group
// per tile (wgmma_ping_pong's step in nearest_centroid_wgmma.cu and the selection's passes A and
// C): waits for tile t + 1's copies (this thread's, then everyone's, visible to wgmma; the barrier
// also means every warp is done with tile t - 1, whose stage refill() may then load), issues tile
// t + 1's wgmmas into `next` when issue_next says there is one, and returns once tile t's
// accumulators `acc` are ready.
template <int D, int kStages, typename IssueNext, typename Refill>
__device__ __forceinline__ void wgmma_stream_step(int t, float (&acc)[2][32], float (&next)[2][32], IssueNext,
                                                  const uint32_t (&afrag)[2][D / 16][4], uint32_t tiles_address,
                                                  uint32_t tile_bytes, Refill&& refill) {
  cp_async_wait<kStages - 3>();
  fence_proxy_async();
  __syncthreads();
  refill();
  if constexpr (IssueNext::value) {
    wgmma_two_halves_x64<D>(next, afrag, tiles_address + ((t + 1) % kStages) * tile_bytes);
    wgmma_wait<1>();  // tile t's group is done, tile t + 1's runs on
  } else {
    wgmma_wait<0>();
  }
  fence_operands(acc[0]);
  fence_operands(acc[1]);
}

// Runs step(t, acc, next, issue_next) for tiles t < num_tiles with two accumulator sets in turn:
// tile t's wgmmas are in flight in `acc`, and step issues tile t + 1's into `next` when
// issue_next (std::true_type) says there is one. No branch around an issue inside the loop: a
// conditional issue makes the compiler merge two versions of the in-flight accumulators at the
// back edge (register moves), and ptxas then serializes every wgmma (C7514). The last one or two
// tiles run after the loop.
template <typename Acc, typename Step>
__device__ __forceinline__ void wgmma_ping_pong(int num_tiles, Acc& acc_even, Acc& acc_odd, Step&& step) {
  const std::true_type more;
  const std::false_type last;
  int t = 0;
  for (; t + 2 < num_tiles; t += 2) {
    step(t, acc_even, acc_odd, more);
    step(t + 1, acc_odd, acc_even, more);
  }
  if (t + 1 < num_tiles) {
    step(t, acc_even, acc_odd, more);
    step(t + 1, acc_odd, acc_even, last);
  } else {
    step(t, acc_even, acc_odd, last);
  }
}

#endif  // sm_90a

}  // namespace squeezeserve::kernels::detail
