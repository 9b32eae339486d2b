// The two matrix products of the prefill attention's tile loop (prefill_attention.cu), on either
// tensor-core instruction set, with the shared-memory layout each one reads its K/V tiles in:
//   MmaSyncTiles (sm_80+): rows of D + 8 bf16 (padding puts ldmatrix's 8 rows in distinct banks);
//                 each warp loads its B fragments with ldmatrix and runs mma.sync m16n8k16.
//   WgmmaTiles (sm_90a):   wgmma's 8 x 8 core matrices (wgmma.cuh), no padding; a warpgroup
//                 multiplies straight from shared memory (K as K-major B for S = Q K^T, V as
//                 MN-major B for O += P V), no B fragments in registers, no ldmatrix.
// Both keep the warp's 16 query rows' operands in the mma.sync fragment layouts, which are also
// wgmma's register layouts per warp of a warpgroup: S and O as C fragments [n-tile][4], Q and P
// as A fragments. So the softmax between the products is one code for both.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/mma.cuh"
#include "kernels/wgmma.cuh"

namespace squeezeserve::kernels::detail {

template <int D, int kTileN>
struct MmaSyncTiles {
  static constexpr int kStride = D + 8;
  static constexpr int kTileElems = kTileN * kStride;
  // 16-byte chunk q (< kTileN * D / 8) of a tile: its row and column; consecutive q run along a
  // row (a warp's cp.async writes fall in distinct banks thanks to the padding).
  __device__ static int row_of(int q) { return q / (D / 8); }
  __device__ static int col_of(int q) { return (q % (D / 8)) * 8; }
  __device__ static int offset(int row, int col) { return row * kStride + col; }
  // Between a thread's cp.async wait and the barrier before the tile is read: nothing to do.
  __device__ static void publish_copies() {}

  // s = Q K^T for this warp's 16 rows and the tile's kTileN keys.
  __device__ static void qk(float (&s)[kTileN / 8][4], const uint32_t (&qa)[D / 16][4], const __nv_bfloat16* ks,
                            int lane) {
#pragma unroll
    for (int n = 0; n < kTileN / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = 0.f;
#pragma unroll
      for (int kc = 0; kc < D / 16; kc += 2) {
        uint32_t kb[4];  // b0,b1 of k-chunk kc, then of kc + 1
        ldmatrix_x4(kb, ks + (n * 8 + (lane & 7)) * kStride + kc * 16 + (lane >> 3) * 8);
        mma_bf16_16816(s[n], qa[kc], kb[0], kb[1]);
        mma_bf16_16816(s[n], qa[kc + 1], kb[2], kb[3]);
      }
    }
  }

  // o += P V: V rows are keys (k), columns dims (n): ldmatrix.trans gives the B fragments.
  __device__ static void pv(float (&o)[D / 8][4], const uint32_t (&pa)[kTileN / 16][4], const __nv_bfloat16* vs,
                            int lane) {
#pragma unroll
    for (int kk = 0; kk < kTileN / 16; ++kk)
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        uint32_t vb[4];  // b0,b1 of dims dn*16..+7, then of dn*16+8..+15
        ldmatrix_x4_trans(vb, vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + dn * 16 + (lane >> 4) * 8);
        mma_bf16_16816(o[2 * dn], pa[kk], vb[0], vb[1]);
        mma_bf16_16816(o[2 * dn + 1], pa[kk], vb[2], vb[3]);
      }
  }
};

template <int D, int kTileN>
struct WgmmaTiles {
  static_assert(kTileN == 64, "S is one wgmma m64n64 per k-step");
  static constexpr int kTileElems = kTileN * D;
  // Chunk q: lanes 0-7 fill one 128-byte core matrix (8 rows, one column of 8 elements), so a
  // warp's cp.async writes are contiguous (wgmma.cuh's copy_core_tile order).
  __device__ static int row_of(int q) { return ((q >> 3) / (D / 8)) * 8 + (q & 7); }
  __device__ static int col_of(int q) { return ((q >> 3) % (D / 8)) * 8; }
  __device__ static int offset(int row, int col) { return ((row >> 3) * (D / 8) + (col >> 3)) * 64 + (row & 7) * 8; }

#ifdef SQZ_HAS_WGMMA
  // The thread's landed cp.async copies made visible to wgmma (the async proxy) before the barrier.
  __device__ static void publish_copies() { fence_proxy_async(); }

  // s = Q K^T: the tile's keys are B's columns, K-major: k-step kc reads dims 16kc..16kc+15 (core
  // columns 2kc, 2kc + 1: leading offset 128 B), 8-key groups 16 D bytes apart (stride offset).
  __device__ static void qk(float (&s)[kTileN / 8][4], const uint32_t (&qa)[D / 16][4], const __nv_bfloat16* ks,
                            int) {
    const uint32_t tile = static_cast<uint32_t>(__cvta_generic_to_shared(ks));
#pragma unroll
    for (int n = 0; n < kTileN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = 0.f;  // the first k-step ignores them; keeps them defined
    __syncwarp();  // the loaders and masks diverge; wgmma is .aligned
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc)
      wgmma_m64n64k16<0>(s, qa[kc], smem_descriptor(tile + 256 * kc, 128, 16 * D), kc > 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(s);
  }

  // o += P V: the tile's keys are B's k-rows, its dims B's columns, contiguous (MN-major): k-step
  // kk reads keys 16kk..16kk+15 (8-key groups 16 D bytes apart: leading offset), 8-dim core
  // columns 128 B apart (stride offset).
  __device__ static void pv(float (&o)[D / 8][4], const uint32_t (&pa)[kTileN / 16][4], const __nv_bfloat16* vs,
                            int) {
    const uint32_t tile = static_cast<uint32_t>(__cvta_generic_to_shared(vs));
    __syncwarp();
    fence_operands(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kTileN / 16; ++kk) {
      const uint64_t desc = smem_descriptor(tile + 32 * D * kk, 16 * D, 128);
      if constexpr (D == 128) wgmma_m64n128k16<1>(o, pa[kk], desc, 1);
      else wgmma_m64n64k16<1>(o, pa[kk], desc, 1);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(o);
  }
#else
  __device__ static void publish_copies() {}
  __device__ static void qk(float (&)[kTileN / 8][4], const uint32_t (&)[D / 16][4], const __nv_bfloat16*, int) {
    __trap();  // launched only where wgmma_available()
  }
  __device__ static void pv(float (&)[D / 8][4], const uint32_t (&)[kTileN / 16][4], const __nv_bfloat16*, int) {
    __trap();
  }
#endif
};

}  // namespace squeezeserve::kernels::detail
