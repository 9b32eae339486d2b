// Nearest centroid of every point, fused on the tensor cores: the assignment step of the ingest's
// k-means (engine/squeeze/kmeans.cc), run once per Lloyd iteration and per seeding round.
// Plain C++ header; CPU reference with the same contract: nearest_centroid_ref.h.
//
// Since ‖x − c‖² = ‖x‖² − 2(x·c − ½‖c‖²), the nearest centroid is the argmax of x·c − ½‖c‖²: an
// [N×D]·[D×K] product per head followed by a max over K. A CTA holds a tile of 256 points in
// registers, streams every centroid of its head through shared memory (cp.async, 4 stages) and
// keeps each point's running (max, argmax) in registers: the [N×K] scores are never written
// (at N = 512K, K = N/20 they are 220 GB per pass as bf16). Two kernels, one contract:
// wgmma (sm_90a, used on an sm_90 device when the build has its sm_90a code) and mma.sync
// m16n8k16 (sm_80+, everywhere else). nearest_centroid.cu says how each is laid out.
#pragma once

#include <cstdint>

namespace squeezeserve::kernels {

// x: device bf16 [heads][n][d]; centroids: device bf16 [heads][k][d]; half_norms: device fp32
// [heads][k], normally ½‖c‖² of the centroids (computed by the caller, in fp32, from the same
// vectors the distances are meant to; any finite values are accepted). labels: device int64
// [heads][n]; best: device fp32 [heads][n], nullable. All contiguous; x and centroids 16-byte
// aligned (whole rows: d * 2 is 128 or 256 bytes). For every (h, i):
//   score(j)     = Σ_e x[h][i][e] · centroids[h][j][e] − half_norms[h][j]
//                  (exact bf16 products summed in fp32, then the subtraction in fp32)
//   labels[h][i] = the smallest j with the largest score (NaN scores are never chosen; a point
//                  whose scores are all NaN or −inf gets label 0 and best −inf)
//   best[h][i]   = that score.
// Requires d in {64, 128}, 1 <= heads <= 65535, n >= 1, k >= 1. Returns a cudaError_t value
// (cudaErrorInvalidValue for arguments outside the contract).
int nearest_centroid_bf16(const uint16_t* x, const uint16_t* centroids, const float* half_norms, int heads, int64_t n,
                          int k, int d, int64_t* labels, float* best, void* stream);

// The same on a chosen kernel, for the check program and benchmarks (the engine calls the one
// above). kWgmma returns cudaErrorNotSupported where the device is not sm_90 or the build has no
// sm_90a code.
enum class NearestCentroidKernel { kAuto, kMmaSync, kWgmma };
int nearest_centroid_bf16_with(NearestCentroidKernel kernel, const uint16_t* x, const uint16_t* centroids,
                               const float* half_norms, int heads, int64_t n, int k, int d, int64_t* labels,
                               float* best, void* stream);

}  // namespace squeezeserve::kernels
