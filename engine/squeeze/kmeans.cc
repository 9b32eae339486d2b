#include "engine/squeeze/kmeans.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <tuple>
#include <vector>

#include "engine/squeeze/tensor_util.h"

#ifdef SQUEEZESERVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "kernels/nearest_centroid.h"
#endif

namespace squeezeserve::squeeze {
namespace {

// The [H, chunk, K] score block of one assignment step stays below this many elements: small on
// the CPU (cache), large on a GPU (each block is a matmul launch; 2^28 bf16 scores are 512 MB).
constexpr int64_t kAssignBlockElementsCpu = int64_t{1} << 24;
constexpr int64_t kAssignBlockElementsGpu = int64_t{1} << 28;
// Seeds are drawn one per round up to this many clusters (exact k-means++), else in this many
// rounds (batched k-means++, see SeedKMeansPlusPlus): each round costs ~25 libtorch ops of host
// dispatch, which at 64 rounds was half of a 32K-token context's clustering time.
constexpr int64_t kExactSeedingClusters = 128;
constexpr int64_t kSeedingRounds = 16;
// Seeding and Lloyd's iterations run on a uniform sample of this many points per cluster (at least
// kMinSampledPoints) when there are more, and every point is assigned once at the end: at the
// ingest's 20 keys per cluster that is 40% of the keys, and the assignments over all keys, whose
// cost grows with N·K (quadratic in the context), fall from ~6 per layer to ~3. The final means
// are taken over every key. Index quality against full Lloyd: docs/performance.md (squeeze_accuracy).
constexpr int64_t kSampledPointsPerCluster = 8;
constexpr int64_t kMinSampledPoints = 2048;

at::Tensor UnitRows(const at::Tensor& x) { return x / x.norm(2, {-1}, /*keepdim=*/true).clamp_min(1e-12); }

// Nearest centroid of every point. For ‖x − c‖² = ‖x‖² − 2(x·c − ½‖c‖²), the argmin over c is the
// argmax of x·c − ½‖c‖² (one batched matmul). `best` keeps that maximum so callers get distances.
struct Assignment {
  at::Tensor labels;  // [H, N] int64
  at::Tensor best;    // [H, N] float: x·c − ½‖c‖² of the chosen centroid
};

#ifdef SQUEEZESERVE_CUDA_KERNELS
// Whether the fused kernel (kernels/nearest_centroid.h) assigns these points: on a GPU, for the head
// dims it has (the Squeezed keys: 64 or 128).
bool FusedAssignment(const at::Tensor& x) {
  return x.is_cuda() && (x.size(2) == 64 || x.size(2) == 128) && x.size(0) <= 65535 && x.size(1) > 0;
}

// The scores x·c − ½‖c‖² on the tensor cores with each point's running maximum kept in registers:
// the [H, N, K] scores are never written (at a 512K-token context they are 220 GB of bf16 per pass),
// and the products are summed in fp32 (more exact than the bf16 scores of the libtorch path below).
Assignment AssignFused(const at::Tensor& x, const at::Tensor& c) {
  const int64_t H = x.size(0), N = x.size(1), K = c.size(1), D = x.size(2);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xs = x.to(at::kBFloat16).contiguous();
  const at::Tensor cs = c.to(at::kBFloat16).contiguous();
  const at::Tensor half_norm = (0.5 * c.to(at::kFloat).pow(2).sum(-1)).contiguous();  // [H, K] fp32
  at::Tensor labels = at::empty({H, N}, x.options().dtype(at::kLong));
  at::Tensor best = at::empty({H, N}, x.options().dtype(at::kFloat));
  const int err = kernels::nearest_centroid_bf16(
      static_cast<const uint16_t*>(xs.data_ptr()), static_cast<const uint16_t*>(cs.data_ptr()),
      half_norm.data_ptr<float>(), static_cast<int>(H), N, static_cast<int>(K), static_cast<int>(D),
      labels.data_ptr<int64_t>(), best.data_ptr<float>(), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  if (err != 0) {
    throw std::runtime_error(std::string("nearest_centroid_bf16 failed: ") +
                             cudaGetErrorString(static_cast<cudaError_t>(err)));
  }
  return {labels, best};
}
#endif

// On a GPU the fused kernel above where it applies; elsewhere on a GPU the scores are bf16 matmuls
// on the tensor cores (the points are unit vectors: their dot products need no more precision to
// pick the nearest centroid, and the objective and centroids are still computed in float32); on the
// CPU float32.
Assignment Assign(const at::Tensor& x, const at::Tensor& c) {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  if (FusedAssignment(x)) return AssignFused(x, c);
#endif
  const int64_t H = x.size(0), N = x.size(1), K = c.size(1);
  const bool gpu = x.is_cuda();
  const auto score_type = gpu ? at::kBFloat16 : at::kFloat;
  const at::Tensor half_norm = (0.5 * c.pow(2).sum(-1).unsqueeze(1)).to(score_type);  // [H, 1, K]
  const at::Tensor ct = c.transpose(1, 2).to(score_type);                              // [H, D, K]
  const at::Tensor xs = x.to(score_type);
  const int64_t budget = gpu ? kAssignBlockElementsGpu : kAssignBlockElementsCpu;
  const int64_t chunk = std::max<int64_t>(1, budget / std::max<int64_t>(1, H * K));
  std::vector<at::Tensor> labels, best;
  for (int64_t start = 0; start < N; start += chunk) {
    at::Tensor scores = at::baddbmm(-half_norm.expand({H, std::min(chunk, N - start), K}),
                                    xs.narrow(1, start, std::min(chunk, N - start)), ct);
    auto [value, index] = scores.max(-1);
    best.push_back(value.to(at::kFloat));
    labels.push_back(index);
  }
  return {at::cat(labels, 1), at::cat(best, 1)};
}

at::Tensor SquaredDistance(const at::Tensor& x, const Assignment& a) {
  return (x.pow(2).sum(-1) - 2 * a.best).clamp_min(0);
}

// Σ_n w·‖x_n − c(n)‖² per head, in float64.
at::Tensor Objective(const at::Tensor& x, const at::Tensor& w, const Assignment& a) {
  return (SquaredDistance(x, a) * w).to(at::kDouble).sum(-1);
}

// Moves every empty cluster onto one of the points farthest from their centroid (a different
// point per empty cluster of a head), which splits the worst-fitted clusters instead of leaving a
// dead centroid. Vectorized: the e-th empty cluster of a head takes the e-th farthest point.
at::Tensor ReseedEmpty(const at::Tensor& x, const at::Tensor& w, at::Tensor c, const at::Tensor& empty,
                       const Assignment& a) {
  // Only as many of the farthest points as the most empty clusters of a head: a top-K over every
  // point would cost more than the iteration's assignment at a long context.
  const int64_t N = x.size(1), most_empty = empty.sum(-1).max().item<int64_t>();
  if (most_empty == 0) return c;
  const at::Tensor dist = SquaredDistance(x, a).masked_fill(w <= 0, -1);
  auto [far_dist, far_index] = dist.topk(std::min(most_empty, N), -1);  // [H, R], farthest first
  const int64_t R = far_index.size(1);
  const at::Tensor rank = (empty.to(at::kLong).cumsum(-1) - 1).clamp(0, R - 1);  // [H, K]
  // Only move onto a point that is actually away from its centroid: a duplicate would just tie.
  const at::Tensor move = empty & (far_dist.gather(1, rank) > 1e-12);
  return at::where(move.unsqueeze(-1), GatherRows(x, far_index.gather(1, rank)), c);
}

struct LloydResult {
  at::Tensor centroids;  // [H, K, D] in the normalized space
  Assignment assignment;
  int iterations = 0;
};

// Weighted Lloyd iterations: update (weighted means by scatter-add), re-seed empties, re-assign.
LloydResult Lloyd(const at::Tensor& x, const at::Tensor& w, at::Tensor c, Assignment a, int max_iterations,
                  double tolerance, const std::function<void(int, double)>& progress) {
  const int64_t K = c.size(1);
  const at::Tensor counted = w > 0;
  const double num_valid = std::max<double>(1, counted.sum().item<double>());
  int it = 0;
  while (it < max_iterations) {
    ++it;
    const at::Tensor mass = BatchedBincount(a.labels, w, K);                    // [H, K]
    const at::Tensor sums = BatchedSegmentSum(a.labels, x * w.unsqueeze(-1), K);  // [H, K, D]
    const at::Tensor empty = mass <= 0;
    c = at::where(empty.unsqueeze(-1), c, sums / mass.clamp_min(1e-30).unsqueeze(-1));
    c = ReseedEmpty(x, w, c, empty, a);
    Assignment next = Assign(x, c);
    const double changed = ((next.labels != a.labels) & counted).sum().item<double>() / num_valid;
    a = std::move(next);
    if (progress) progress(it, changed);
    if (changed <= tolerance) break;
  }
  return {c, a, it};
}

// k-means++ seeding (Arthur & Vassilvitskii 2007), batched over heads and over seeds: the first
// seed is a random valid point, then each round draws a batch of seeds, each point with probability
// ∝ its squared distance to the nearest seed so far. With K <= kExactSeedingClusters every round
// draws one seed (exact k-means++); with more, K / kSeedingRounds per round, so that the sequential
// part is kSeedingRounds steps and the arithmetic one [N×D]·[D×K] product in all, whatever K is
// (one seed per round would be K dependent steps: minutes at a 512K-token context). A batch may
// draw a point twice: that seed starts an empty cluster, which Lloyd re-seeds.
struct Seeding {
  at::Tensor seeds;       // [H, K, D]
  Assignment assignment;  // of every point to its nearest seed (tracked while drawing: no extra pass)
};

Seeding SeedKMeansPlusPlus(const at::Tensor& x, const at::Tensor& w, int64_t K, at::Generator& gen) {
  const int64_t H = x.size(0), N = x.size(1), D = x.size(2);
  // All uniforms drawn at once from the seeded CPU generator: reproducible and device-independent.
  const at::Tensor u = at::rand({H, K}, gen, at::TensorOptions().dtype(at::kDouble)).to(x.device());
  at::Tensor seeds = at::empty({H, K, D}, x.options());
  at::Tensor weight = w.to(at::kDouble);  // first draw: uniform over valid points
  at::Tensor nearest = at::full({H, N}, std::numeric_limits<double>::infinity(), weight.options());
  Assignment all;  // nearest seed so far: the first batch's, then replaced where a later one is nearer
  const int64_t per_round =
      K <= kExactSeedingClusters ? 1 : std::max<int64_t>(1, (K - 1 + kSeedingRounds - 1) / kSeedingRounds);
  for (int64_t k = 0; k < K;) {
    const int64_t m = k == 0 ? 1 : std::min(per_round, K - k);
    const at::Tensor cdf = weight.cumsum(-1);
    const at::Tensor target = (u.narrow(1, k, m) * cdf.narrow(1, N - 1, 1)).contiguous();
    // Right-sided search never lands on a zero-weight point (valid mask, or already a seed).
    const at::Tensor pick = at::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).clamp_max(N - 1);
    const at::Tensor batch = GatherRows(x, pick);  // [H, m, D]
    seeds.narrow(1, k, m).copy_(batch);
    // Each point's distance to its nearest new seed: one (blocked) assignment to the batch.
    Assignment a = Assign(x, batch);
    if (k == 0) {
      all = a;
    } else {
      const at::Tensor nearer = a.best > all.best;  // ties keep the earlier seed, as one argmax would
      all.labels = at::where(nearer, a.labels + k, all.labels);
      all.best = at::where(nearer, a.best, all.best);
    }
    nearest = at::minimum(nearest, SquaredDistance(x, a).to(at::kDouble));
    weight = nearest * w;
    k += m;
  }
  return {seeds, all};
}

}  // namespace

at::Tensor NearestCentroids(const at::Tensor& points, const at::Tensor& centroids) {
  return Assign(points, centroids).labels;
}

KMeansResult KMeans(const at::Tensor& points, const KMeansOptions& options, const at::Tensor& valid) {
  TORCH_CHECK(points.dim() == 3, "KMeans: points must be [H, N, D]");
  const int64_t H = points.size(0), N = points.size(1), K = options.num_clusters;
  TORCH_CHECK(N >= 1 && K >= 1 && K <= N, "KMeans: need 1 <= K <= N, got K=", K, " N=", N);

  const at::Tensor raw = points.to(at::kFloat);
  const at::Tensor x = UnitRows(raw);
  const at::Tensor w = valid.defined() ? valid.to(raw.options()) : at::ones({H, N}, raw.options());

  // Wall seconds since `since`, after the device finished the work queued on `t` (timed only).
  const auto clock = [&options](const at::Tensor& t, std::chrono::steady_clock::time_point since) {
    if (!options.timed) return 0.0;
    if (t.is_cuda()) t.flatten()[0].item<double>();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
  };
  KMeansResult result;
  auto started = std::chrono::steady_clock::now();
  at::Generator gen = at::detail::createCPUGenerator(options.seed);
  // The points seeding and Lloyd run on: a uniform sample (the same positions in every head) where
  // there are many points per cluster and all are valid (kSampledPointsPerCluster), else all.
  const int64_t sampled = std::max(kMinSampledPoints, kSampledPointsPerCluster * K);
  const bool sampling = !valid.defined() && N > sampled;
  at::Tensor xs = x, ws = w;
  if (sampling) {
    const at::Tensor order = at::randperm(N, gen, at::TensorOptions().dtype(at::kLong));
    const at::Tensor rows = std::get<0>(order.narrow(0, 0, sampled).sort()).to(x.device());
    xs = x.index_select(1, rows);
    ws = w.index_select(1, rows);
  }
  Seeding seeding = SeedKMeansPlusPlus(xs, ws, K, gen);
  if (options.seed_objective) {
    result.seed_objective = Objective(x, w, sampling ? Assign(x, seeding.seeds) : seeding.assignment);
  }
  result.seconds_seeding = clock(seeding.seeds, started);

  started = std::chrono::steady_clock::now();
  LloydResult lloyd = Lloyd(xs, ws, seeding.seeds, std::move(seeding.assignment), options.max_iterations,
                            options.tolerance, options.progress);
  // Every point's nearest centroid (the sample's labels are already that, without sampling).
  const Assignment final_assignment = sampling ? Assign(x, lloyd.centroids) : lloyd.assignment;
  result.final_objective = Objective(x, w, final_assignment);
  result.iterations = lloyd.iterations;

  // Final labels are the last assignment; sizes and raw means are taken from exactly those labels,
  // so the three always agree.
  result.labels = final_assignment.labels;
  const at::Tensor mass = BatchedBincount(result.labels, w, K);
  result.sizes = mass.round().to(at::kLong);
  const at::Tensor sums = BatchedSegmentSum(result.labels, raw * w.unsqueeze(-1), K);
  result.centroids = at::where((mass > 0).unsqueeze(-1), sums / mass.clamp_min(1e-30).unsqueeze(-1),
                               at::zeros_like(sums));
  result.seconds_lloyd = clock(result.centroids, started);
  return result;
}

}  // namespace squeezeserve::squeeze
