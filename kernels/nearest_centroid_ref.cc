#include "kernels/nearest_centroid_ref.h"

#include <limits>

namespace squeezeserve::kernels {

double centroid_score_ref(const float* point, const float* centroid, float half_norm, int d) {
  double dot = 0;
  for (int e = 0; e < d; ++e) dot += static_cast<double>(point[e]) * centroid[e];
  return dot - half_norm;
}

void nearest_centroid_ref(const float* x, const float* centroids, const float* half_norms, int heads, int64_t n,
                          int k, int d, int64_t* labels, float* best) {
  for (int h = 0; h < heads; ++h) {
    const float* ch = centroids + static_cast<int64_t>(h) * k * d;
    const float* hn = half_norms + static_cast<int64_t>(h) * k;
    for (int64_t i = 0; i < n; ++i) {
      const float* point = x + (static_cast<int64_t>(h) * n + i) * d;
      double top = -std::numeric_limits<double>::infinity();
      int64_t arg = 0;
      for (int j = 0; j < k; ++j) {
        const double s = centroid_score_ref(point, ch + static_cast<int64_t>(j) * d, hn[j], d);
        if (s > top) {  // strict: the first (smallest) j keeps a tie; false for NaN
          top = s;
          arg = j;
        }
      }
      labels[static_cast<int64_t>(h) * n + i] = arg;
      if (best) best[static_cast<int64_t>(h) * n + i] = static_cast<float>(top);
    }
  }
}

}  // namespace squeezeserve::kernels
