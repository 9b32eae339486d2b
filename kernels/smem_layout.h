// The shared-memory tile layouts that Hopper's warpgroup MMA (wgmma) reads, and the descriptor
// steps over them: plain integer arithmetic shared by the kernels (wgmma.cuh,
// prefill_attention_ws.cu) and their CPU test (tests/kernels/smem_layout_test.cc), which checks
// every element a descriptor reads against where the copies put it, under the hardware's
// canonical layouts. So a wrong offset fails on the CPU instead of costing a GPU session.
//
// Two layouts, both filled 16 bytes (8 bf16, one "chunk") per cp.async:
//   - core matrices, no swizzle: 8 rows x 8 elements = 128 contiguous bytes each; chunk q of a
//     [rows][D] tile lies at element 8 q and holds elements core_chunk_col(q) .. + 7 of row
//     core_chunk_row(q) (8 consecutive chunks make one core matrix);
//   - the 128-byte swizzle (SWIZZLE_128B, FlashAttention-3's K and V tiles): rows of 64 elements
//     (128 bytes, an "atom column"; D = 128 is two, one after the other), chunk c of row r at
//     chunk c ^ (r % 8) of the row. The tile starts 1024-byte aligned: the hardware applies the
//     XOR to address bits 4-6 from bits 7-9.
// A quarter-warp's 16-byte copies are likely served together (bench/kernels/NOTES.md run 35): in
// core matrices a row's chunks all share one bank group, so a quarter-warp gets either whole
// 32-byte sectors or conflict-free shared writes; in the swizzle it gets both.
#pragma once

#include <cstdint>

#include "kernels/squeeze_types.h"  // SQUEEZESERVE_HOST_DEVICE

namespace squeezeserve::kernels::detail {

template <int D>
SQUEEZESERVE_HOST_DEVICE constexpr int core_chunk_row(int q) {
  return ((q >> 3) / (D / 8)) * 8 + (q & 7);
}
template <int D>
SQUEEZESERVE_HOST_DEVICE constexpr int core_chunk_col(int q) {
  return ((q >> 3) % (D / 8)) * 8;
}

// Element of chunk `chunk` (0..7) of row `row` within one atom column of the 128-byte swizzle.
SQUEEZESERVE_HOST_DEVICE constexpr int sw128_element(int row, int chunk) {
  return row * 64 + ((chunk ^ (row & 7)) << 3);
}

// A wgmma operand's descriptor fields, in bytes: start (from the tile's first byte), leading and
// stride byte offsets (wgmma.cuh smem_descriptor / smem_descriptor_sw128 encode them).
struct OperandStep {
  uint32_t start, leading, stride;
};

// K-major core matrices of rows of D, k-step s (elements 16 s .. + 15): the step's two 8-element
// halves 128 bytes apart (leading), 8-row groups 16 D bytes apart (stride). The centroid tiles of
// wgmma.cuh wgmma_two_halves_x64 and the warp-specialized prefill's Q.
template <int D>
SQUEEZESERVE_HOST_DEVICE constexpr OperandStep core_step(int s) {
  return {256u * s, 128u, 16u * D};
}

// The warp-specialized prefill's operands (prefill_attention_ws.cu, D = 128, key tiles of 64).
namespace ws_layout {
constexpr int kD = 128;
constexpr int kKeys = 64;                      // rows of a K or V tile
constexpr int kAtomColumnBytes = kKeys * 128;  // one atom column: 64 dimensions of every row
// Copy l (0 .. kKeys * 16 - 1) of a K or V tile: row l / 16, dimensions 8 (l % 16) .. + 7, at this
// element of the swizzled tile. A quarter-warp (8 consecutive l) copies one row's 128 contiguous
// bytes into one swizzled 128-byte row.
SQUEEZESERVE_HOST_DEVICE constexpr int copy_row(int l) { return l >> 4; }
SQUEEZESERVE_HOST_DEVICE constexpr int copy_dim(int l) { return (l & 15) * 8; }
SQUEEZESERVE_HOST_DEVICE constexpr int copy_element(int l) {
  return ((l >> 3) & 1) * (kAtomColumnBytes / 2) + sw128_element(l >> 4, l & 7);
}
// S = Q K^T, k-step kc (dimensions 16 kc .. + 15) of m64n64k16. Q (A): core matrices (core_step).
// K (B): K-major swizzled, atom column kc / 4, 32 bytes a step within its rows, 8-key groups 1024
// bytes apart (the leading offset is unused there).
SQUEEZESERVE_HOST_DEVICE constexpr OperandStep q_step(int kc) { return core_step<kD>(kc); }
SQUEEZESERVE_HOST_DEVICE constexpr OperandStep k_step(int kc) {
  return {static_cast<uint32_t>((kc / 4) * kAtomColumnBytes + (kc % 4) * 32), 16u, 1024u};
}
// O += P V, k-step kk (keys 16 kk .. + 15) of m64n128k16: V (B) MN-major swizzled, the second 64
// dimensions one atom column further (leading), 8-key groups 1024 bytes apart (stride). Without
// swizzle an MN-major descriptor's two offsets mean the opposite.
SQUEEZESERVE_HOST_DEVICE constexpr OperandStep v_step(int kk) {
  return {static_cast<uint32_t>(kk * 16 * 128), static_cast<uint32_t>(kAtomColumnBytes), 1024u};
}
}  // namespace ws_layout

}  // namespace squeezeserve::kernels::detail
