// CPU reference of the nearest-centroid assignment (nearest_centroid.h), same contract with float
// arrays. Scores are computed in double, so the reference is the exact score of the (bf16-valued)
// inputs up to one final rounding; the GPU's fp32 sums differ from it by ~1e-6 (see the check
// program, bench/kernels/nearest_centroid_check.cu, for how the two are compared).
#pragma once

#include <cstdint>

namespace squeezeserve::kernels {

// x: [heads][n][d]; centroids: [heads][k][d]; half_norms: [heads][k]. For every (h, i):
//   score(j)     = x[h][i] · centroids[h][j] − half_norms[h][j]
//   labels[h][i] = the smallest j with the largest score (NaN scores are never chosen; a point
//                  whose scores are all NaN or −inf gets label 0 and best −inf)
//   best[h][i]   = that score, as float (best may be null).
// Requires heads, n, k, d >= 1.
void nearest_centroid_ref(const float* x, const float* centroids, const float* half_norms, int heads, int64_t n,
                          int k, int d, int64_t* labels, float* best);

// The exact score of one point against one centroid, as the reference computes it (double).
double centroid_score_ref(const float* point, const float* centroid, float half_norm, int d);

}  // namespace squeezeserve::kernels
