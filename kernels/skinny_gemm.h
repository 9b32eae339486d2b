// The decode step's weight products: out = x W^T (+ bias) (+ residual) for a few rows of x (the
// decode batch, M <= kSkinnyMaxRows), bf16 in and out, fp32 accumulation. Plain C++ header; CPU
// reference with the same contract: skinny_gemm_ref.h.
//
// Why our own: at decode a product reads each weight once and does 2M FLOPs per weight, so it is
// the weights' bytes over the memory bandwidth or nothing. cuBLAS read Llama-3-8B's o_proj (+ the
// residual) at 62% of the copy rate and qkv / down at 82-86% on an H100 (bench/kernels/NOTES.md
// run 22), and libtorch adds a copy of the residual before the matmul and two elementwise kernels
// for SiLU * up before the down projection. Here: the weights stream as the MMA's A operand (16
// output features a tile, any k order: each lane loads 16 contiguous weights per row and feeds
// them to four m16n8k16 MMAs, the tokens' x in the same order as B), split over K across the
// CTA's warps and, where the tiles alone would not fill the device, across CTAs (each writes an
// fp32 partial; the tile's last CTA sums them in split order: deterministic). The residual and
// bias are added in the epilogue, SiLU * up is one launch of its own (silu_mul_bf16), and the
// first weights are loaded before the kernel waits for its predecessor (programmatic dependent
// launch, kernels/launch.h): the weights do not depend on it.
// SiLU * up inside the product cost more than it saved: applied as x was loaded, every load group
// waited for x; applied at the MMA, every 16-feature tile recomputed it for all of x. The down
// projection took 1.4x and 4.4x cuBLAS's time (bench/kernels/NOTES.md run 23).
// The RMSNorm before qkv, gate/up and the lm_head stays a launch of its own too: folded into the
// product (x * weight on the way in, the row's scale in the epilogue, no split over CTAs) it was
// slower on an H100 (Llama-3-8B 33K TPOT 9.04 vs 8.76 ms at batch 1, 13.61 vs 13.24 at batch 8;
// the step's products and norms 5.53 vs 5.38 ms) and less accurate (a tiny model's logits 1.1-1.4%
// off libtorch's, over tests/engine/fused_ops_test.cc's 1%), so it was removed.
#pragma once

#include <cstddef>
#include <cstdint>

namespace squeezeserve::kernels {

// Rows of x one launch takes: the MMA's N dimension (8 tokens).
constexpr int kSkinnyMaxRows = 8;

struct SkinnyGemm {
  int m = 0, n = 0, k = 0;  // rows of x (1..kSkinnyMaxRows), output features, inner dimension
  const void* x = nullptr;  // device bf16 [m][k], rows x_stride elements apart
  int64_t x_stride = 0;
  const void* w = nullptr;         // device bf16 [n][k], contiguous
  const void* bias = nullptr;      // nullable device bf16 [n]
  const void* residual = nullptr;  // nullable device bf16 [m][n], contiguous; may be `out`
  void* out = nullptr;             // device bf16 [m][n], contiguous
};

// Device memory a launch uses besides its operands: the split-K partials and the tiles' tickets.
// It must be all zero before the first launch; every launch leaves its tickets zero again.
// Launches on one stream may share it (each writes only after its predecessor finished).
constexpr size_t kSkinnyGemmWorkspaceBytes = size_t{1} << 21;

struct SkinnyLaunch {
  int ksplit = 0;  // CTAs per 16-feature tile along K; 0 = chosen to fill the device (tests set it)
};

// Whether skinny_gemm takes this problem: 1 <= m <= kSkinnyMaxRows, n >= 1, k a positive multiple
// of 8, x_stride a multiple of 8 (>= k), and x, w, out, residual 16-byte
// aligned. The caller falls back to a general GEMM otherwise.
bool skinny_gemm_supports(const SkinnyGemm& g);

// Returns a cudaError_t value (cudaErrorInvalidValue where !skinny_gemm_supports). Launched with
// programmatic dependent launch where it is on (kernels/chained_launch.cuh's contract).
int skinny_gemm(const SkinnyGemm& g, void* workspace, void* stream, const SkinnyLaunch& launch = {});

// SwiGLU's activation between the gate/up and the down products: act[i][j] =
// bf16(bf16(silu(gate)) * up) of gate = gate_up[i][j], up = gate_up[i][inter + j] (rows of
// gate_up `stride` elements apart; act [rows][inter] contiguous), rounded as libtorch's CUDA
// at::silu(gate).mul_(up) on bf16 tensors (fp32 math, a bf16 result per op): one launch for
// libtorch's two. Needs inter and stride multiples of 8 and 16-byte aligned pointers. Launched
// with programmatic dependent launch. Returns a cudaError_t value.
int silu_mul_bf16(const void* gate_up, int64_t stride, void* act, int rows, int inter, void* stream);

}  // namespace squeezeserve::kernels
