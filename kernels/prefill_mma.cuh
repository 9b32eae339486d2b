// The two matrix products of the prefill attention's tile loop (prefill_attention.cu) and the
// shared-memory layout they read their K/V tiles in: rows of D + 8 bf16 (the padding puts
// ldmatrix's 8 rows in distinct banks); each warp loads its B fragments with ldmatrix and runs
// mma.sync m16n8k16 on its 16 query rows (S and O as C fragments [n-tile][4], Q and P as A
// fragments). A warpgroup-MMA (wgmma) version of the same loop measured 1.12-1.19x slower on the
// H200 (bench/kernels/NOTES.md, 2026-12-05): without a producer warp and two consumer warpgroups
// overlapping the softmax with the products, the instruction alone does not pay (that structure:
// prefill_attention_ws.cu).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/mma.cuh"

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

}  // namespace squeezeserve::kernels::detail
