// The squeezed bundles' union selection. Contract: bundle_selection.h; reference:
// bundle_selection_ref.cc.
//
// One CTA per (KV head, bundle). The cluster ids run in chunks of kChunk: the chunk's cluster sizes
// go to shared memory (the first chunk's before the wait for the selection: index data, under its
// tail); each slot's selected ids of the chunk (all of them when one chunk holds every cluster,
// else a binary search of its ascending list) set their slot's bit in a mask per cluster in shared
// memory, the CTA's threads taking the slots' ids in turn, kBatch loads in flight each; then each
// thread takes kPerThread consecutive clusters, counts the selected ones and their rows, and a CTA
// prefix sum places them after the chunks before. Shared memory stays two kChunk arrays whatever
// K (1M tokens: K ~ 52K clusters). Why: the first version (a warp per slot, binary searches always)
// took 19 us at 32K and 31 us at 128K on an H100, for a few KB of ids (bench/kernels/NOTES.md run
// 31): chains of dependent loads. With the estimate's union (estimate_masks), blockIdx.z = 1 does
// the same over the members' estimate lists, beside the selections' CTAs (no rows; each estimated
// cluster's ln n beside its mask, for the attention to copy with its tile).
#include <cuda_runtime.h>

#include "kernels/bundle_selection.h"
#include "kernels/chained_launch.cuh"

namespace squeezeserve::kernels {
namespace detail {
namespace {

constexpr int kThreads = 512;
constexpr int kPerThread = 16;
constexpr int kChunk = kThreads * kPerThread;  // clusters per round
constexpr int kMaxSlots = 32;
constexpr int kBatch = 4;  // ids a thread loads before it sets their bits

struct UnionArgs {
  BundleMembers bundles;
  int hkv;
  const SequenceLayerBf16* seqs;
  Selection members;
  Selection out;
  uint32_t* masks;
  uint32_t* estimate_masks;  // null: no estimate union (gridDim.z = 1)
  float* estimate_log_sizes;  // with estimate_masks
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

struct UnionSmem {
  uint32_t mask[kChunk];
  int size[kChunk];  // rows of the chunk's clusters
  int2 warp_sums[kThreads / 32];
  int2 carried;  // (clusters, rows) placed by the chunks before
  const int32_t* slot_ids[kMaxSlots];
  int slot_count[kMaxSlots];
  int slot_first[kMaxSlots];
  int slot_end[kMaxSlots + 1];  // the chunk's entries of slots < m, end to end (exclusive: [m])
};

// The sizes of clusters [c0, c0 + kChunk) of `off` (0 past K), into smem.
__device__ __forceinline__ void load_sizes(int* size, const int32_t* off, int c0, int K) {
  for (int i = threadIdx.x; i < kChunk; i += kThreads) {
    const int c = c0 + i;
    size[i] = c < K ? __ldg(off + c + 1) - __ldg(off + c) : 0;
  }
}

__global__ void __launch_bounds__(kThreads) bundle_union_kernel(UnionArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  UnionSmem& sm = *reinterpret_cast<UnionSmem*>(smem_raw);
  allow_next_grid();
  const int h = blockIdx.x, k = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const bool est = blockIdx.z == 1;  // CTA-uniform: the estimate lists' union (ln n of each cluster, no rows)
  const int slots = a.bundles.slots;
  const SequenceLayerBf16& s = a.seqs[k];  // staged by the host: read before the wait
  const int K = s.num_clusters;
  const int32_t* off = s.offsets + static_cast<int64_t>(h) * (K + 1);
  const int64_t kh = static_cast<int64_t>(k) * a.hkv + h;
  load_sizes(sm.size, off, 0, K);
  int b = -1;
  if (tid < slots) b = a.bundles.members[static_cast<int64_t>(k) * slots + tid];
  wait_for_previous_grid();  // the members' selections are the previous kernel's output
  if (tid < slots) {
    const int64_t bh = static_cast<int64_t>(b) * a.hkv + h;
    if (est) {
      sm.slot_ids[tid] = b >= 0 ? a.members.estimate_ids + bh * a.members.estimate_capacity : nullptr;
      sm.slot_count[tid] = b >= 0 && a.members.estimated != nullptr ? a.members.estimated[bh] : 0;
    } else {
      sm.slot_ids[tid] = b >= 0 ? a.members.cluster_ids + bh * a.members.capacity : nullptr;
      sm.slot_count[tid] = b >= 0 ? a.members.counts[bh] : 0;
    }
  }
  if (tid == 0) sm.carried = make_int2(0, 0);
  for (int c0 = 0; c0 < K; c0 += kChunk) {
    if (c0 > 0) load_sizes(sm.size, off, c0, K);
    for (int i = tid; i < kChunk; i += kThreads) sm.mask[i] = 0u;
    __syncthreads();  // slot_ids and counts (first round), the sizes, the cleared masks
    if (tid < slots) {  // the slot's entries in this chunk
      const int n = sm.slot_count[tid];
      const bool all = c0 == 0 && K <= kChunk;  // one chunk holds every cluster: no search
      sm.slot_first[tid] = all || c0 == 0 ? 0 : lower_bound(sm.slot_ids[tid], n, c0);
      sm.slot_end[tid + 1] = all ? n : lower_bound(sm.slot_ids[tid], n, c0 + kChunk);
    }
    __syncthreads();
    if (tid == 0) {  // entries end to end: slot m's are [slot_end[m], slot_end[m + 1])
      sm.slot_end[0] = 0;
      for (int m = 0; m < slots; ++m) sm.slot_end[m + 1] = sm.slot_end[m] + sm.slot_end[m + 1] - sm.slot_first[m];
    }
    __syncthreads();
    const int total = sm.slot_end[slots];
    for (int e0 = tid; e0 < total; e0 += kThreads * kBatch) {
      int id[kBatch], slot[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int e = e0 + u * kThreads;
        slot[u] = -1;
        id[u] = 0;
        if (e < total) {
          int m = 0;
          while (sm.slot_end[m + 1] <= e) ++m;
          slot[u] = m;
          id[u] = __ldg(sm.slot_ids[m] + sm.slot_first[m] + (e - sm.slot_end[m]));
        }
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (slot[u] >= 0 && id[u] < K) atomicOr(&sm.mask[id[u] - c0], 1u << slot[u]);  // (one-level ids: < K)
    }
    __syncthreads();
    const int mine = tid * kPerThread;
    int2 own = make_int2(0, 0);  // (clusters, rows) of this thread's run
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      if (sm.mask[mine + j] != 0u) {
        own.x += 1;
        own.y += est ? 0 : sm.size[mine + j];
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
    if (lane == 31) sm.warp_sums[warp] = incl;
    __syncthreads();
    int2 before = make_int2(sm.carried.x + incl.x - own.x, sm.carried.y + incl.y - own.y), total_placed = sm.carried;
    for (int w = 0; w < kThreads / 32; ++w) {
      total_placed.x += sm.warp_sums[w].x;
      total_placed.y += sm.warp_sums[w].y;
      if (w < warp) {
        before.x += sm.warp_sums[w].x;
        before.y += sm.warp_sums[w].y;
      }
    }
    for (int j = 0; j < kPerThread; ++j) {
      const uint32_t mask = sm.mask[mine + j];
      if (mask != 0u && est) {
        const int64_t at = kh * a.out.estimate_capacity + before.x;
        a.out.estimate_ids[at] = c0 + mine + j;
        a.estimate_masks[at] = mask;
        a.estimate_log_sizes[at] = logf(static_cast<float>(sm.size[mine + j]));
        before.x += 1;
      } else if (mask != 0u) {
        const int64_t at = kh * a.out.capacity + before.x;
        a.out.cluster_ids[at] = c0 + mine + j;
        a.out.row_start[at] = before.y;
        a.masks[at] = mask;
        before.x += 1;
        before.y += sm.size[mine + j];
      }
    }
    __syncthreads();  // every thread has read carried, warp_sums, the masks and the sizes
    if (tid == 0) sm.carried = total_placed;
  }
  __syncthreads();
  if (tid == 0 && est) {
    a.out.estimated[kh] = sm.carried.x;
  } else if (tid == 0) {
    a.out.counts[kh] = sm.carried.x;
    a.out.rows[kh] = sm.carried.y;
  }
}

}  // namespace
}  // namespace detail

int bundle_selections(const BundleMembers& bundles, int num_kv_heads, const SequenceLayerBf16* bundle_seqs,
                      const Selection& members, const Selection& out, uint32_t* masks, uint32_t* estimate_masks,
                      float* estimate_log_sizes, void* stream) {
  using namespace detail;
  if (bundles.bundles < 0 || bundles.slots < 1 || bundles.slots > kMaxSlots || num_kv_heads < 1 ||
      bundles.members == nullptr || bundle_seqs == nullptr || members.cluster_ids == nullptr ||
      members.counts == nullptr || masks == nullptr || out.cluster_ids == nullptr || out.row_start == nullptr ||
      out.counts == nullptr || out.rows == nullptr || out.capacity < 1)
    return cudaErrorInvalidValue;
  if (estimate_masks != nullptr && (members.estimate_ids == nullptr || out.estimate_ids == nullptr ||
                                    out.estimated == nullptr || out.estimate_capacity < 1 ||
                                    estimate_log_sizes == nullptr))
    return cudaErrorInvalidValue;
  if (bundles.bundles == 0) return cudaSuccess;
  const cudaError_t err = cudaFuncSetAttribute(bundle_union_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(sizeof(UnionSmem)));
  if (err != cudaSuccess) return err;
  return launch_chained(bundle_union_kernel, dim3(num_kv_heads, bundles.bundles, estimate_masks != nullptr ? 2 : 1),
                        dim3(kThreads), sizeof(UnionSmem), static_cast<cudaStream_t>(stream),
                        UnionArgs{bundles, num_kv_heads, bundle_seqs, members, out, masks, estimate_masks,
                                  estimate_log_sizes});
}

}  // namespace squeezeserve::kernels
