// The squeezed bundles' union selection. Contract: bundle_selection.h; reference:
// bundle_selection_ref.cc.
//
// One CTA per (KV head, bundle). The cluster ids run in chunks of kChunk: each slot's selected ids
// of the chunk (found by a binary search of its ascending list) set their slot's bit in a mask per
// cluster in shared memory; then each thread takes kPerThread consecutive clusters of the chunk,
// counts the selected ones and their rows, and a CTA prefix sum places them after the chunks
// before. Shared memory stays kChunk masks whatever K (1M tokens: K ~ 52K clusters).
#include <cuda_runtime.h>

#include "kernels/bundle_selection.h"
#include "kernels/chained_launch.cuh"

namespace squeezeserve::kernels {
namespace detail {
namespace {

constexpr int kThreads = 512;
constexpr int kPerThread = 16;
constexpr int kChunk = kThreads * kPerThread;  // clusters per round (32 KB of masks)
constexpr int kMaxSlots = 32;

struct UnionArgs {
  BundleMembers bundles;
  int hkv;
  const SequenceLayerBf16* seqs;
  Selection members;
  Selection out;
  uint32_t* masks;
};

// First index i in [0, n) with ids[i] >= x (n if none).
__device__ __forceinline__ int lower_bound(const int32_t* ids, int n, int x) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (__ldg(ids + mid) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

__global__ void __launch_bounds__(kThreads) bundle_union_kernel(UnionArgs a) {
  __shared__ uint32_t mask[kChunk];
  __shared__ int2 warp_sums[kThreads / 32];
  __shared__ int2 carried;  // (clusters, rows) placed by the chunks before
  __shared__ int slot_b[kMaxSlots], slot_count[kMaxSlots];
  allow_next_grid();
  const int h = blockIdx.x, k = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const SequenceLayerBf16& s = a.seqs[k];
  const int K = s.num_clusters;
  const int32_t* off = s.offsets + static_cast<int64_t>(h) * (K + 1);
  const int64_t kh = static_cast<int64_t>(k) * a.hkv + h;
  wait_for_previous_grid();  // the members' selections are the previous kernel's output
  if (tid < a.bundles.slots) {
    const int b = a.bundles.members[static_cast<int64_t>(k) * a.bundles.slots + tid];
    slot_b[tid] = b;
    slot_count[tid] = b >= 0 ? a.members.counts[static_cast<int64_t>(b) * a.hkv + h] : 0;
  }
  if (tid == 0) carried = make_int2(0, 0);
  __syncthreads();
  for (int c0 = 0; c0 < K; c0 += kChunk) {
    for (int i = tid; i < kChunk; i += kThreads) mask[i] = 0u;
    __syncthreads();
    // Slot m's ids in [c0, c0 + kChunk): one warp per slot in turn, its lanes over the entries.
    for (int m = warp; m < a.bundles.slots; m += kThreads / 32) {
      if (slot_b[m] < 0) continue;
      const int32_t* ids = a.members.cluster_ids + (static_cast<int64_t>(slot_b[m]) * a.hkv + h) * a.members.capacity;
      const int n = slot_count[m];
      const int first = lower_bound(ids, n, c0), end = lower_bound(ids, n, c0 + kChunk);
      for (int i = first + lane; i < end; i += 32) atomicOr(&mask[__ldg(ids + i) - c0], 1u << m);
    }
    __syncthreads();
    const int mine = c0 + tid * kPerThread;
    int2 own = make_int2(0, 0);  // (clusters, rows) of this thread's run
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int c = mine + j;
      if (c < K && mask[c - c0] != 0u) {
        own.x += 1;
        own.y += __ldg(off + c + 1) - __ldg(off + c);
      }
    }
    // Exclusive prefix over the CTA, in thread order.
    int2 incl = own;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int x = __shfl_up_sync(0xffffffffu, incl.x, o), y = __shfl_up_sync(0xffffffffu, incl.y, o);
      if (lane >= o) {
        incl.x += x;
        incl.y += y;
      }
    }
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    int2 before = make_int2(carried.x + incl.x - own.x, carried.y + incl.y - own.y), total = carried;
    for (int w = 0; w < kThreads / 32; ++w) {
      total.x += warp_sums[w].x;
      total.y += warp_sums[w].y;
      if (w < warp) {
        before.x += warp_sums[w].x;
        before.y += warp_sums[w].y;
      }
    }
    for (int j = 0; j < kPerThread; ++j) {
      const int c = mine + j;
      if (c < K && mask[c - c0] != 0u) {
        const int64_t at = kh * a.out.capacity + before.x;
        a.out.cluster_ids[at] = c;
        a.out.row_start[at] = before.y;
        a.masks[at] = mask[c - c0];
        before.x += 1;
        before.y += __ldg(off + c + 1) - __ldg(off + c);
      }
    }
    __syncthreads();  // every thread has read carried, warp_sums and the masks
    if (tid == 0) carried = total;
    // (The next round's clearing of the masks comes after this barrier's reads; carried is read
    // after the next round's barriers.)
  }
  __syncthreads();
  if (tid == 0) {
    a.out.counts[kh] = carried.x;
    a.out.rows[kh] = carried.y;
  }
}

}  // namespace
}  // namespace detail

int bundle_selections(const BundleMembers& bundles, int num_kv_heads, const SequenceLayerBf16* bundle_seqs,
                      const Selection& members, const Selection& out, uint32_t* masks, void* stream) {
  using namespace detail;
  if (bundles.bundles < 0 || bundles.slots < 1 || bundles.slots > kMaxSlots || num_kv_heads < 1 ||
      bundles.members == nullptr || bundle_seqs == nullptr || members.cluster_ids == nullptr ||
      members.counts == nullptr || masks == nullptr || out.cluster_ids == nullptr || out.row_start == nullptr ||
      out.counts == nullptr || out.rows == nullptr || out.capacity < 1)
    return cudaErrorInvalidValue;
  if (bundles.bundles == 0) return cudaSuccess;
  return launch_chained(bundle_union_kernel, dim3(num_kv_heads, bundles.bundles), dim3(kThreads), 0,
                        static_cast<cudaStream_t>(stream), UnionArgs{bundles, num_kv_heads, bundle_seqs, members, out, masks});
}

}  // namespace squeezeserve::kernels
