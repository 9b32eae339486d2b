// What the two nearest-centroid kernels (nearest_centroid.cu: mma.sync, nearest_centroid_wgmma.cu:
// wgmma) share: the CTA shape, the shared-memory image of a centroid tile and the stream of those
// tiles through the stages, and the per-point running (max, argmax).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda_common.cuh"
#include "kernels/wgmma.cuh"

namespace squeezeserve::kernels::detail::nearest {

constexpr int kThreads = 256;        // 8 warps: both kernels
constexpr int kCtaPoints = 256;      // points per CTA (32 per warp)
constexpr int kTileCentroids = 64;   // centroids per shared-memory stage
constexpr int kStages = 4;

// Smem: kStages centroid tiles (kTileCentroids x D bf16 each, 1 KB-aligned), then kStages arrays of
// kTileCentroids half norms (fp32).
template <int D>
constexpr int kTileElems = kTileCentroids * D;
template <int D>
constexpr size_t kSmemBytes = kStages * (sizeof(__nv_bfloat16) * kTileElems<D> + sizeof(float) * kTileCentroids);

struct Args {
  const __nv_bfloat16* x;          // [H][N][D]
  const __nv_bfloat16* centroids;  // [H][K][D]
  const float* half_norms;         // [H][K]
  int64_t* labels;                 // [H][N]
  float* best;                     // [H][N] or null
  int64_t n;
  int k;
};

// A centroid tile in smem is laid out in 8x8 "core matrices" (8 centroids x 8 bf16 = 128
// contiguous bytes): centroid j, elements 8c..8c+7 at element ((j / 8) * (D / 8) + c) * 64 + (j % 8) * 8.
// Both readers want exactly this: every ldmatrix (mma.sync kernel) reads one core matrix, so the
// reads are free of bank conflicts without padding, and it is the non-swizzled K-major layout a
// wgmma descriptor describes (K-adjacent core matrices 128 B apart, 8-centroid groups 16·D B apart).
//
// Loads centroids [first, first + kTileCentroids) of the head: rows past k are zero-filled and
// their half norm set to +inf, so their score is −inf and never wins (no masking in the epilogues).
// One commit group is NOT issued here: the caller commits.
template <int D>
__device__ __forceinline__ void load_tile(__nv_bfloat16* tile, float* half_norms_tile, const __nv_bfloat16* centroids,
                                          const float* half_norms, int first, int k, int tid) {
  copy_core_tile<D, kTileCentroids, kThreads>(tile, centroids, first, k, tid);
  if (tid < kTileCentroids) {
    const int j = first + tid;
    if (j < k) cp_async_4(half_norms_tile + tid, half_norms + j);
    else half_norms_tile[tid] = __int_as_float(0x7f800000);  // +inf: visible after the stage's barrier
  }
}

// One head's centroids streamed through the kStages shared-memory stages (tile t in stage
// t % kStages), as both kernels read them: start() puts tiles 0 .. kStages - 2 in flight, and the
// loop refills the stage of tile t - 1 with tile t + kStages - 1 once every thread is done with it.
template <int D>
struct CentroidStream {
  __nv_bfloat16* tiles;  // smem: kStages tiles, then kStages arrays of half norms
  float* norms;
  const __nv_bfloat16* centroids;  // the head's [k][D]
  const float* half_norms;         // the head's [k]
  int k, num_tiles;

  __device__ CentroidStream(unsigned char* smem, const Args& a, int head)
      : tiles(reinterpret_cast<__nv_bfloat16*>(smem)),
        norms(reinterpret_cast<float*>(smem + kStages * sizeof(__nv_bfloat16) * kTileElems<D>)),
        centroids(a.centroids + static_cast<int64_t>(head) * a.k * D),
        half_norms(a.half_norms + static_cast<int64_t>(head) * a.k),
        k(a.k),
        num_tiles((a.k + kTileCentroids - 1) / kTileCentroids) {}
  // Tile t's stage: its centroids and their half norms.
  __device__ __forceinline__ __nv_bfloat16* tile(int t) const { return tiles + (t % kStages) * kTileElems<D>; }
  __device__ __forceinline__ float* tile_norms(int t) const { return norms + (t % kStages) * kTileCentroids; }
  // Tile t into its stage when there is one; one commit group either way (the waits count groups).
  __device__ __forceinline__ void load(int t, int tid) const {
    if (t < num_tiles) load_tile<D>(tile(t), tile_norms(t), centroids, half_norms, t * kTileCentroids, k, tid);
    cp_async_commit();
  }
  __device__ __forceinline__ void start(int tid) const {
#pragma unroll
    for (int t = 0; t < kStages - 1; ++t) load(t, tid);
  }
};

// Running (max, argmax) of one point over the columns one lane sees. Columns arrive in increasing
// order and only a strictly larger score replaces the max, so ties keep the smallest column; NaN
// never compares larger.
struct RunningBest {
  float value;
  int index;
  __device__ __forceinline__ void reset() {
    value = neg_inf();
    index = 0;
  }
  __device__ __forceinline__ void consider(float score, int column) {
    if (score > value) {
      value = score;
      index = column;
    }
  }
  // Merge over the 4 lanes of a quad (they hold the same point, different columns): larger score,
  // then smaller column.
  __device__ __forceinline__ void reduce_quad() {
#pragma unroll
    for (int offset = 1; offset <= 2; offset <<= 1) {
      const float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
      const int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
      if (other_value > value || (other_value == value && other_index < index)) {
        value = other_value;
        index = other_index;
      }
    }
  }
  // After reduce_quad: lane q == 0 of the quad writes point `row` of the head.
  __device__ __forceinline__ void store(const Args& a, int64_t head_offset, int64_t row, int lane) const {
    if ((lane & 3) == 0 && row < a.n) {
      a.labels[head_offset + row] = index;
      if (a.best) a.best[head_offset + row] = value;
    }
  }
};

// Launchers (cudaError_t values); the wgmma one returns cudaErrorNotSupported where unavailable.
int launch_mma_sync(const Args& a, int heads, int d, cudaStream_t stream);
int launch_wgmma(const Args& a, int heads, int d, cudaStream_t stream);

}  // namespace squeezeserve::kernels::detail::nearest
