// Split-K sparse decode attention. Contract: decode_attention.h, reference: attention_ref.cc.
//
// Thread layout (FlashInfer-style CUDA-core decode): a KV row of D bf16 is read by TX = D/8
// threads, 16 B each; TY = 256/TX rows are processed at once. Every thread keeps the online-softmax
// state (max, sum, 8 output dims) of all G query heads of the group, so each K/V row loaded from
// DRAM serves the whole group. Logits are in the log2 domain (exp2f), everything fp32.
#include <algorithm>

#include "kernels/cuda_common.cuh"
#include "kernels/decode_attention.h"

namespace squeezeserve::kernels {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kTileRows = 64;
constexpr int kStages = 3;
constexpr int kItemsPerCta = 4;  // work items per CTA on average: balance vs partial traffic
constexpr int kMaxHeads = 2048;  // B * H_kv
constexpr float kLog2e = 1.4426950408889634f;

struct DecodeWorkspace {
  float* partial_o;   // [max_items][G][D], unnormalised (relative to the item's max)
  float2* partial_ml;  // [max_items][G] (max in log2 units, sum)
  int* tickets;       // [B*H_kv] finished items per head
  size_t bytes;
  DecodeWorkspace(const AttentionShape& s, int num_ctas, void* base) {
    const size_t max_items = size_t(num_ctas) * kItemsPerCta + size_t(s.batch) * s.num_kv_heads;
    auto up = [](size_t x) { return (x + 255) & ~size_t{255}; };
    char* p = static_cast<char*>(base);
    partial_o = reinterpret_cast<float*>(p);
    size_t off = up(sizeof(float) * max_items * s.num_q_heads / s.num_kv_heads * s.head_dim);
    partial_ml = reinterpret_cast<float2*>(p + off);
    off += up(sizeof(float2) * max_items * s.num_q_heads / s.num_kv_heads);
    tickets = reinterpret_cast<int*>(p + off);
    off += up(sizeof(int) * s.batch * s.num_kv_heads);
    bytes = off;
  }
};

struct DecodeArgs {
  const SequenceLayerBf16* seqs;
  const __nv_bfloat16* q;
  Selection sel;
  __nv_bfloat16* out;
  float* lse;
  DecodeWorkspace ws;
  int batch, hkv;
  float scale_log2;
};

template <int D, int G>
// Two CTAs per SM for G <= 4 (caps registers at 128: G=4 used 170 -> 1 CTA, 8 warps per SM, too few
// to cover the per-tile barriers); G=8 keeps one (its 8x8 accumulators do not fit in 128).
__global__ void __launch_bounds__(kThreads, G <= 4 ? 2 : 1) decode_kernel(DecodeArgs a) {
  constexpr int TX = D / 8, TY = kThreads / TX, kRowsPerThread = kTileRows / TY;
  constexpr int kStageElems = kTileRows * D;  // bf16 per K (or V) stage
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* k_smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* v_smem = k_smem + kStages * kStageElems;
  __shared__ int item_start[kMaxHeads + 1];
  __shared__ int rows_per_item, merge_flag;
  __shared__ int64_t tile_rows[kStages][kTileRows];  // physical row of each row of a stage
  __shared__ int win_vstart[kTileRows + 1], win_phys[kTileRows + 1];  // segment window of a tile
  __shared__ int next_hint;

  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const int num_heads = a.batch * a.hkv;

  // Work list, computed identically by every CTA from the device-side counts: head bh owns items
  // [item_start[bh], item_start[bh+1]), each covering rows_per_item virtual rows (>= 1 item, so
  // every head's output is written even when it has nothing to attend to).
  {
    long long total = 0;
    for (int bh = tid; bh < num_heads; bh += kThreads) {
      const int rows = a.sel.rows[bh] + a.seqs[bh / a.hkv].dense_len;
      item_start[bh + 1] = rows;
      total += rows;
    }
    __shared__ long long block_total;
    if (tid == 0) block_total = 0;
    __syncthreads();
    atomicAdd(reinterpret_cast<unsigned long long*>(&block_total), static_cast<unsigned long long>(total));
    __syncthreads();
    if (tid == 0) {
      const long long per = (block_total + gridDim.x * kItemsPerCta - 1) / (gridDim.x * kItemsPerCta);
      const long long rounded = (per + kTileRows - 1) / kTileRows * kTileRows;
      const int r = static_cast<int>(rounded > kTileRows ? rounded : kTileRows);
      rows_per_item = r;
      item_start[0] = 0;
      for (int bh = 0; bh < num_heads; ++bh)
        item_start[bh + 1] = item_start[bh] + max(1, (item_start[bh + 1] + r - 1) / r);
    }
    __syncthreads();
  }
  const int R = rows_per_item, num_items = item_start[num_heads];

  for (int item = blockIdx.x; item < num_items; item += gridDim.x) {
    int bh = 0;
    {
      int lo = 0, hi = num_heads;
      while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (item_start[mid] <= item) lo = mid;
        else hi = mid;
      }
      bh = lo;
    }
    const int b = bh / a.hkv, h = bh % a.hkv;
    const VirtualRows vr = virtual_rows(a.seqs[b], a.sel, b, h, a.hkv);
    const int v_begin = (item - item_start[bh]) * R, v_end = min(v_begin + R, vr.total());
    const int seg0 = v_begin < vr.sparse_rows ? find_segment(vr, v_begin, 0, vr.count) : 0;

    // Query heads of the group, this thread's 8 dims, pre-scaled into log2 units.
    float q[G][8];
#pragma unroll
    for (int j = 0; j < G; ++j) {
      const uint4 raw = *reinterpret_cast<const uint4*>(a.q + (static_cast<int64_t>(b) * a.hkv * G + h * G + j) * D + tx * 8);
      bf16x8_to_float(raw, q[j]);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[j][e] *= a.scale_log2;
    }
    float m[G], l[G], o[G][8];
#pragma unroll
    for (int j = 0; j < G; ++j) {
      m[j] = neg_inf();
      l[j] = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) o[j][e] = 0.f;
    }

    const int num_tiles = (v_end - v_begin + kTileRows - 1) / kTileRows;
    // Row addresses of a tile. The previous version binary-searched row_start in global memory for
    // each of the 64 rows (~9 dependent L2 round trips per tile, exposed on every tile because the
    // copies wait for it). Now: tiles are loaded in order, and a 64-row tile spans at most 64
    // segments after the segment `seg_hint` of the previous tile's last row, so 65 threads stage
    // that window (virtual start, physical start) into smem with 2 dependent loads in parallel,
    // and each row resolves itself by a search in smem.
    int seg_hint = seg0;  // same value in every thread (each ran the same search)
    auto load_tile = [&](int t) {
      const int stage = t % kStages;
      const int vt = v_begin + t * kTileRows;
      const bool sparse_tile = vt < vr.sparse_rows;  // uniform across the CTA
      if (sparse_tile && tid <= kTileRows) {
        const int j = seg_hint + tid;
        if (j < vr.count) {
          win_vstart[tid] = __ldg(vr.row_start + j);
          win_phys[tid] = __ldg(vr.offsets + __ldg(vr.ids + j));
        } else {
          win_vstart[tid] = 0x7fffffff;
        }
      }
      if (sparse_tile) __syncthreads();
      if (tid < kTileRows) {
        const int v = vt + tid;
        int64_t r = -1;  // -1: past the item (zero-fill); dense rows are stored as -(2 + index)
        if (v < v_end) {
          if (v >= vr.sparse_rows) {
            r = -2 - static_cast<int64_t>(v - vr.sparse_rows);
          } else {
            int lo = 0, hi = kTileRows + 1;  // last window entry with start <= v
            while (hi - lo > 1) {
              const int mid = (lo + hi) >> 1;
              if (win_vstart[mid] <= v) lo = mid;
              else hi = mid;
            }
            r = static_cast<int64_t>(win_phys[lo]) + (v - win_vstart[lo]);
            if (tid == kTileRows - 1) next_hint = seg_hint + lo;
          }
        }
        tile_rows[stage][tid] = r;
      }
      __syncthreads();
      seg_hint = next_hint;  // written before the barrier; rewritten only after the next one
      for (int c = tid; c < kTileRows * TX; c += kThreads) {
        const int row = c / TX, col = (c % TX) * 8;
        const int64_t r = tile_rows[stage][row];
        const __nv_bfloat16 *ks = vr.keys, *vs = vr.values;  // any valid address for zero-fill
        if (r >= 0) {
          ks = vr.keys + r * D + col;
          vs = vr.values + r * D + col;
        } else if (r <= -2) {
          ks = vr.dense_keys + (-2 - r) * D + col;
          vs = vr.dense_values + (-2 - r) * D + col;
        }
        const int bytes = r == -1 ? 0 : 16;
        cp_async_16(k_smem + stage * kStageElems + row * D + col, ks, bytes);
        cp_async_16(v_smem + stage * kStageElems + row * D + col, vs, bytes);
      }
    };
#pragma unroll
    for (int t = 0; t < kStages - 1; ++t) {
      if (t < num_tiles) load_tile(t);
      cp_async_commit();
    }
    for (int t = 0; t < num_tiles; ++t) {
      if (t + kStages - 1 < num_tiles) load_tile(t + kStages - 1);
      cp_async_commit();
      cp_async_wait<kStages - 1>();
      __syncthreads();
      const __nv_bfloat16* ks = k_smem + (t % kStages) * kStageElems;
      const __nv_bfloat16* vs = v_smem + (t % kStages) * kStageElems;
      float s[kRowsPerThread][G];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int row = ty + TY * i;
        const uint4 raw = *reinterpret_cast<const uint4*>(ks + row * D + tx * 8);
        float k[8];
        bf16x8_to_float(raw, k);
        const bool valid = v_begin + t * kTileRows + row < v_end;
#pragma unroll
        for (int j = 0; j < G; ++j) {
          float acc = 0.f;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc += q[j][e] * k[e];
#pragma unroll
          for (int off = TX / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
          s[i][j] = valid ? acc : neg_inf();
        }
      }
#pragma unroll
      for (int j = 0; j < G; ++j) {
        float tile_max = s[0][j];
#pragma unroll
        for (int i = 1; i < kRowsPerThread; ++i) tile_max = fmaxf(tile_max, s[i][j]);
        const float m_new = fmaxf(m[j], tile_max);
        if (m_new == neg_inf()) continue;  // nothing valid seen yet
        const float corr = exp2f(m[j] - m_new);
        m[j] = m_new;
        l[j] *= corr;
#pragma unroll
        for (int e = 0; e < 8; ++e) o[j][e] *= corr;
      }
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int row = ty + TY * i;
        const uint4 raw = *reinterpret_cast<const uint4*>(vs + row * D + tx * 8);
        float v[8];
        bf16x8_to_float(raw, v);
#pragma unroll
        for (int j = 0; j < G; ++j) {
          const float p = s[i][j] == neg_inf() ? 0.f : exp2f(s[i][j] - m[j]);
          l[j] += p;
#pragma unroll
          for (int e = 0; e < 8; ++e) o[j][e] += p * v[e];
        }
      }
      __syncthreads();  // stage (t % kStages) is refilled next iteration
    }
    cp_async_wait<0>();
    __syncthreads();

    // Combine the TY row groups of this CTA (reusing the stage buffers), then write the item's
    // partial: o relative to the item max M, and (M, L).
    float* red_o = reinterpret_cast<float*>(smem_raw);                  // [TY][G][D]
    float2* red_ml = reinterpret_cast<float2*>(red_o + TY * G * D);     // [TY][G]
#pragma unroll
    for (int j = 0; j < G; ++j) {
#pragma unroll
      for (int e = 0; e < 8; ++e) red_o[(ty * G + j) * D + tx * 8 + e] = o[j][e];
      if (tx == 0) red_ml[ty * G + j] = make_float2(m[j], l[j]);
    }
    __syncthreads();
    for (int idx = tid; idx < G * D; idx += kThreads) {
      const int j = idx / D, d = idx % D;
      float M = neg_inf();
      for (int y = 0; y < TY; ++y) M = fmaxf(M, red_ml[y * G + j].x);
      float L = 0.f, acc = 0.f;
      if (M != neg_inf()) {
        for (int y = 0; y < TY; ++y) {
          const float2 ml = red_ml[y * G + j];
          const float w = ml.x == neg_inf() ? 0.f : exp2f(ml.x - M);
          L += ml.y * w;
          acc += red_o[(y * G + j) * D + d] * w;
        }
      }
      a.ws.partial_o[(static_cast<int64_t>(item) * G + j) * D + d] = acc;
      if (d == 0) a.ws.partial_ml[static_cast<int64_t>(item) * G + j] = make_float2(M, L);
    }

    // The head's last item to finish merges all of them, in item order.
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      const int n = item_start[bh + 1] - item_start[bh];
      merge_flag = atomicAdd(a.ws.tickets + bh, 1) == n - 1;
    }
    __syncthreads();
    if (merge_flag) {
      __threadfence();
      // Merge of the head's n items. The first version looped over the items serially per output
      // (2n dependent-looking L2 loads per thread, n ~ 100+ for GQA: a ~100 us tail on the CTA that
      // merges). Now: (1) the n*G (max, sum) pairs are loaded in parallel into smem (the stage
      // buffers are free), (2) warp j computes M_j, the item weights w = 2^(m - M_j) and L_j in a
      // fixed order, (3) each output sums w * o over items with 8 loads in flight. Deterministic.
      const int first = item_start[bh], n = item_start[bh + 1] - item_start[bh];
      float2* ml_s = reinterpret_cast<float2*>(smem_raw);  // [n][G] (max, sum), 8 B aligned first
      float* w_s = reinterpret_cast<float*>(ml_s + n * G);   // [n][G] weights
      float* stat_s = w_s + n * G;                           // [G] M, [G] L
      for (int x = tid; x < n * G; x += kThreads) ml_s[x] = __ldcg(&a.ws.partial_ml[static_cast<int64_t>(first) * G + x]);
      __syncthreads();
      const int warp = tid >> 5, lane = tid & 31;
      for (int j = warp; j < G; j += kThreads / 32) {
        float M = neg_inf();
        for (int it = lane; it < n; it += 32) M = fmaxf(M, ml_s[it * G + j].x);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
        float L = 0.f;
        for (int it = lane; it < n; it += 32) {
          const float2 ml = ml_s[it * G + j];
          const float w = (M == neg_inf() || ml.x == neg_inf()) ? 0.f : exp2f(ml.x - M);
          w_s[it * G + j] = w;
          L += ml.y * w;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
        if (lane == 0) {
          stat_s[j] = M;
          stat_s[G + j] = L;
        }
      }
      __syncthreads();
      for (int idx = tid; idx < G * D; idx += kThreads) {
        const int j = idx / D, d = idx % D;
        const float M = stat_s[j], L = stat_s[G + j];
        const float* po = a.ws.partial_o + (static_cast<int64_t>(first) * G + j) * D + d;
        float acc = 0.f;
        int it = 0;
        for (; it + 8 <= n; it += 8) {
          float v[8];
#pragma unroll
          for (int u = 0; u < 8; ++u) v[u] = __ldcg(po + static_cast<int64_t>(it + u) * G * D);
#pragma unroll
          for (int u = 0; u < 8; ++u) acc += v[u] * w_s[(it + u) * G + j];
        }
        for (; it < n; ++it) acc += __ldcg(po + static_cast<int64_t>(it) * G * D) * w_s[it * G + j];
        const int64_t hq = static_cast<int64_t>(b) * a.hkv * G + h * G + j;
        a.out[hq * D + d] = __float2bfloat16(L > 0.f ? acc / L : 0.f);
        if (d == 0 && a.lse) a.lse[hq] = L > 0.f ? (M + log2f(L)) / kLog2e : neg_inf();
      }
      if (tid == 0) a.ws.tickets[bh] = 0;  // ready for the next launch (also reset by the launcher)
    }
    __syncthreads();  // smem reused by the next item
  }
}

template <int D, int G>
cudaError_t launch_decode(const DecodeArgs& a, int num_ctas, cudaStream_t stream) {
  constexpr int TX = D / 8, TY = kThreads / TX;
  const size_t stage_bytes = size_t(2) * kStages * kTileRows * D * sizeof(__nv_bfloat16);
  const size_t reduce_bytes = sizeof(float) * TY * G * D + sizeof(float2) * TY * G;
  // The merge keeps (max, sum) and a weight per item of one head in smem: a head has at most
  // kItemsPerCta * num_ctas + 1 items (item_start rounding adds at most one per head).
  const size_t merge_bytes = (size_t(kItemsPerCta) * num_ctas + 1) * G * (sizeof(float) + sizeof(float2)) +
                             2 * G * sizeof(float);
  const size_t smem = std::max({stage_bytes, reduce_bytes, merge_bytes});
  cudaError_t err = cudaFuncSetAttribute(decode_kernel<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  decode_kernel<D, G><<<num_ctas, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

int default_ctas() {
  int dev = 0, sms = 132;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  return 2 * sms;
}

}  // namespace
}  // namespace detail

size_t decode_attention_workspace_bytes(const AttentionShape& shape, const DecodeLaunch& launch) {
  const int ctas = launch.num_ctas > 0 ? launch.num_ctas : detail::default_ctas();
  return detail::DecodeWorkspace(shape, ctas, nullptr).bytes;
}

int sparse_decode_attention(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                            const Selection& selection, void* out, float* lse, void* workspace,
                            const DecodeLaunch& launch, void* stream) {
  using namespace detail;
  const int g = shape.group();
  if (shape.query_len != 1 || shape.num_q_heads != g * shape.num_kv_heads || shape.batch * shape.num_kv_heads > kMaxHeads)
    return cudaErrorInvalidValue;
  const int ctas = launch.num_ctas > 0 ? launch.num_ctas : default_ctas();
  const auto st = static_cast<cudaStream_t>(stream);
  DecodeArgs a{seqs, static_cast<const __nv_bfloat16*>(q), selection, static_cast<__nv_bfloat16*>(out), lse,
               DecodeWorkspace(shape, ctas, workspace), shape.batch, shape.num_kv_heads,
               kLog2e / sqrtf(static_cast<float>(shape.head_dim))};
  const cudaError_t err = cudaMemsetAsync(a.ws.tickets, 0, sizeof(int) * shape.batch * shape.num_kv_heads, st);
  if (err != cudaSuccess) return err;
#define SQZ_DECODE_CASE(D_, G_) \
  if (shape.head_dim == D_ && g == G_) return launch_decode<D_, G_>(a, ctas, st);
  SQZ_DECODE_CASE(64, 1) SQZ_DECODE_CASE(64, 2) SQZ_DECODE_CASE(64, 4) SQZ_DECODE_CASE(64, 8)
  SQZ_DECODE_CASE(128, 1) SQZ_DECODE_CASE(128, 2) SQZ_DECODE_CASE(128, 4) SQZ_DECODE_CASE(128, 8)
#undef SQZ_DECODE_CASE
  return cudaErrorInvalidValue;
}

}  // namespace squeezeserve::kernels
