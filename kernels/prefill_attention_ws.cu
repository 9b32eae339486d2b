// Sparse prefill attention, warp-specialized on Hopper's warpgroup MMA (FlashAttention-3
// structure; PrefillKernel::kWarpSpecialized, head_dim 128, sm_90a). Same contract, grid, row
// packing, tiles and per-row arithmetic as the mma.sync kernel (prefill_attention.cu,
// prefill_common.cuh); what differs is who waits for what.
//
// Why: the mma.sync kernel runs at ~230 TFLOP/s (bench/kernels/NOTES.md). Its 8 warps load, wait
// and compute in lockstep behind two CTA barriers a tile, so the tensor cores idle through every
// softmax and every gather's tail; the same loop on wgmma measured slower still (each product
// waited for itself). Here:
//   - warpgroup 0, the producer, resolves the row codes (prefill_common.cuh's resolver, on its own
//     named barrier) and gathers K, V and the logit bias of each 64-row tile with cp.async into a
//     4-stage ring; each thread's copies arrive on the stage's "full" mbarrier as they land
//     (cp.async.mbarrier.arrive.noinc), its bias store with a plain (release) arrive;
//   - warpgroups 1 and 2, the consumers, own 64 query rows each. A consumer waits for "full",
//     issues S = Q K^T of tile t and O += P V of tile t - 1 as one batch of wgmma, and runs tile
//     t's softmax while the batch's second half is still on the tensor cores (intra-warpgroup
//     overlap); when the products of tile t - 1 are done it releases the stage ("empty", one
//     arrive per warp);
//   - the two consumers take turns issuing (two named barriers), so that one's softmax runs while
//     the other's products are on the tensor cores (ping-pong).
// Registers: 168 a thread (384 threads), no spills, without setmaxnreg: Q stays in smem (wgmma
// reads both operands of S from there) and the consumers keep only S, P, O and the row state.
// Operands: Q as K-major core matrices without swizzle (the descriptor the removed drop-in wgmma
// kernel proved at D = 128: bench/kernels/NOTES.md, 2026-12-05); K (K-major) and V (MN-major B) in
// the 128-byte swizzle (smem_layout.h; run 35: the unswizzled tiles' gathers read half
// sectors a quarter-warp, the likely cause of run 20's 2x K/V sectors through the L2 at 1K x
// 512K); P as A fragments in registers (the mma.sync layout, per warp 16 of the 64 rows).
// A tile of at most 64 rows (a Llama-2 question: 64 rows, group 1) would leave the second
// consumer's rows all padding: the two then take the same rows over alternate key tiles (no turns)
// and consumer 0 merges consumer 1's state at the end (Sharing::kSplitKeys; the consumer's code is
// a separate instantiation: the generic index arithmetic cost 8 bytes of spill).
// If kernels_check fails here with the mma.sync kernel passing, suspect first the swizzled K and V
// descriptors (written without a GPU, run 35: issue_qk, issue_pv), then the visibility of
// the gathered tiles to wgmma: the consumer fences the async proxy after its mbarrier wait (as
// FlashAttention-3's cp.async path relies on the wait alone); the alternative is the producer
// waiting for its copies one stage late (cp.async.wait_group) and fencing before a plain arrive.
#include "kernels/cuda_common.cuh"
#include "kernels/prefill_common.cuh"
#include "kernels/wgmma.cuh"

#include <cstddef>

namespace squeezeserve::kernels::detail {
namespace {

constexpr int D = 128;
constexpr int kThreads = 384;  // producer warpgroup + two consumer warpgroups
constexpr int kStages = 4;
constexpr int kTileN = kPrefillTileN;
constexpr int kTileElems = kTileN * D;     // a K or V tile: two atom columns of the 128-byte swizzle
static_assert(D == ws_layout::kD && kTileN == ws_layout::kKeys, "smem_layout.h ws_layout describes this kernel's tiles");
static_assert(kStages % 2 == 0, "split keys: a stage's tiles all belong to one consumer");
struct Smem {
  __nv_bfloat16 q[kPrefillTileM * D];  // core matrices, no swizzle
  __nv_bfloat16 k[kStages][kTileElems];  // smem_layout.h ws_layout::copy_element
  __nv_bfloat16 v[kStages][kTileElems];
  float bias[kStages][kTileN];
  int resolver[resolver_smem_ints(2)];  // two chunks' codes: the next resolved while this one loads
  uint64_t full[kStages], empty[kStages];
};
static_assert(offsetof(Smem, k) % 1024 == 0 && offsetof(Smem, v) % 1024 == 0 && sizeof(Smem::k[0]) % 1024 == 0 &&
                  ws_layout::kAtomColumnBytes % 1024 == 0 && offsetof(Smem, k) == sizeof(Smem::q),
              "the swizzled K and V tiles and their atom columns start 1024-byte aligned (Q's core matrices 128)");

#ifdef SQZ_HAS_WGMMA

// A debugging build (-DSQZ_PREFILL_WS_SERIAL) waits for every product before the softmax and
// drops the turns: the same data flow without any overlap, to tell a hazard of the overlap from
// a fault of the data (bench/kernels/NOTES.md, run 9).
#ifdef SQZ_PREFILL_WS_SERIAL
constexpr bool kSerial = true;
#else
constexpr bool kSerial = false;
#endif
constexpr int kProducerBarrier = 1;        // named barriers: the producer warpgroup's own,
constexpr int kTurnBarrier = 2;            // consumer c's turn to issue: kTurnBarrier + c,
constexpr int kQBarrier = 4;               // consumer c's Q landed: kQBarrier + c,
constexpr int kMergeBarrier = 6;           // split keys: both consumers done, then consumer 1's state stored

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(smem_address(bar))
               : "memory");
}
// An arrive that fires when this thread's earlier cp.async copies have landed, counted against
// the barrier's expected arrivals (.noinc).
__device__ __forceinline__ void mbar_arrive_on_copies(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_address(bar)) : "memory");
}
// Waits for the completion of the barrier's phase with this parity. A wait that never ends is a
// bug in the pipeline's accounting: trap (a launch error the caller sees) instead of hanging the
// GPU, after 10 s of the GPU's global timer (a real wait takes microseconds; try_wait may suspend
// the thread for a system-dependent time, so a count of polls bounds nothing).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t address = smem_address(bar);
  uint64_t since = 0;
  for (uint32_t polls = 1;; ++polls) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(address), "r"(parity)
        : "memory");
    if (done) return;
    if (polls % 1024 == 0) {
      uint64_t now;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
      if (since == 0) since = now;
      else if (now - since > 10000000000ull) __trap();
    }
  }
}
__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Producer warpgroup: the tiles [t_begin, t_end) into the ring, tile i of the range in stage
// i % kStages once both consumers have released that stage's previous tile. Chunk k + 1's codes
// are resolved into the other buffer as soon as chunk k's first kStages tiles are in flight, while
// the consumers work through them (the resolve, ~3 rounds of dependent loads, would otherwise
// leave the ring empty behind it once every 32 tiles). Not inlined: ptxas then allocates the
// producer's registers apart from the consumers' (inlined, the two roles' peaks met in one
// allocation and spilled up to 56 bytes in the top-key variant). Its view and tile range are copied
// into registers on entry.
__device__ __noinline__ void produce(Smem& sm, const VirtualRows& vr_in, const PrefillTiles& p_in, int tid) {
  // Copies in registers: the references point into the caller's stack frame (local memory), which
  // the loop read from ~16 times a tile (bench/kernels/NOTES.md run 20: 4 GB of local-memory traffic
  // through the L2 at 1K x 512K).
  const VirtualRows vr = vr_in;
  const PrefillTiles p = p_in;
  constexpr int kTilesPerChunk = kPrefillChunkRows / kTileN;
  ChunkResolver<128, NamedSync<kProducerBarrier, 128>, /*kBuffers=*/2> res(sm.resolver);
  const int n_tiles = p.t_end - p.t_begin;
  res.start_at(vr, p.t_begin * kTileN, tid);
  if (n_tiles > 0) res.resolve(vr, p.t_begin * kTileN, p.total, tid, 0);
  for (int i = 0; i < n_tiles; ++i) {
    const int t = p.t_begin + i, stage = i % kStages, chunk = i / kTilesPerChunk;
    if (i % kTilesPerChunk == 0) res.use(chunk & 1);
    if (i % kTilesPerChunk == min(kStages, kTilesPerChunk - 1) && (chunk + 1) * kTilesPerChunk < n_tiles)
      res.resolve(vr, (t - i % kTilesPerChunk + kTilesPerChunk) * kTileN, p.total, tid, (chunk + 1) & 1);
    if (i >= kStages) mbar_wait(&sm.empty[stage], ((i / kStages) - 1) & 1);
    const int c0 = t * kTileN - res.chunk_r0;
    if (tid < kTileN) sm.bias[stage][tid] = res.chunk_bias[c0 + tid];
#pragma unroll
    for (int j = 0; j < kTileN * D / 8 / 128; ++j) {  // 8 chunks of K and 8 of V per thread
      // A quarter-warp copies one row's 128 contiguous bytes (4 whole sectors) into one swizzled
      // 128-byte row (smem_layout.h).
      const int l = tid + 128 * j, at = ws_layout::copy_element(l);
      const RowSource src = row_source<D>(vr, res.chunk_code[c0 + ws_layout::copy_row(l)], ws_layout::copy_dim(l));
      cp_async_16(sm.k[stage] + at, src.key, src.key_bytes);
      cp_async_16(sm.v[stage] + at, src.value, src.bytes);
    }
    mbar_arrive_on_copies(&sm.full[stage]);
    mbar_arrive(&sm.full[stage]);  // releases the bias store
  }
  // wait_group counts committed groups only: without the commit the copies (and their .noinc
  // arrives) could still be in flight when the thread exits.
  cp_async_commit();
  cp_async_wait<0>();  // nothing of this thread's in flight when it exits
}

// S = Q K^T: 8 k-steps of m64n64k16, both K-major in smem: Q in core matrices, K swizzled
// (smem_layout.h ws_layout::q_step, k_step); the first step ignores s's old values. One commit
// group. Every issue here is unconditional: a wgmma behind a branch, or one whose registers a
// branch last wrote, makes ptxas serialize them all (C7520).
__device__ __forceinline__ void issue_qk(float (&s)[kTileN / 8][4], uint32_t q, const __nv_bfloat16* k) {
  const uint32_t tile = smem_address(k);
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    const OperandStep a = ws_layout::q_step(kc), b = ws_layout::k_step(kc);
    wgmma_m64n64k16_ss(s, smem_descriptor(q + a.start, a.leading, a.stride),
                       smem_descriptor_sw128(tile + b.start, b.leading, b.stride), kc > 0);
  }
  wgmma_commit();
}
// O += P V: 4 k-steps of m64n128k16, P from registers, V swizzled as MN-major B (smem_layout.h
// ws_layout::v_step). One commit group.
__device__ __forceinline__ void issue_pv(float (&o)[D / 8][4], const uint32_t (&pa)[kTileN / 16][4],
                                         const __nv_bfloat16* v) {
  const uint32_t tile = smem_address(v);
#pragma unroll
  for (int kk = 0; kk < kTileN / 16; ++kk) {
    const OperandStep b = ws_layout::v_step(kk);
    wgmma_m64n128k16<1>(o, pa[kk], smem_descriptor_sw128(tile + b.start, b.leading, b.stride), 1);
  }
  wgmma_commit();
}

// Split keys: consumer 1 hands its rows' state (per thread: O, and per row m, l and with kTop the
// context sum and top key) to consumer 0 through the K stages, free once both have consumed every
// tile; consumer 0 folds it in (the log-sum-exp merge; ties of the top key go to the lower row, as
// in a scan of the tiles in order). Returns whether this consumer writes the output (consumer 0).
// The thread with the same index in each consumer holds the same rows and columns.
template <bool kTop>
__device__ bool merge_split_keys(Smem& sm, PrefillRows<kTop>& rows, float (&o)[D / 8][4], int c, int wtid) {
  float* buf = reinterpret_cast<float*>(sm.k[0]);  // [element][128 threads]: 64 of O, then 10 of state
  constexpr int kState = D / 2;
  static_assert((kState + 10) * 128 * sizeof(float) <= sizeof(Smem::k), "the state fits the K stages");
  rows.finish_context();
  named_sync(kMergeBarrier, 256);  // every tile consumed by both: the stages are free
  if (c == 1) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) buf[(4 * n + e) * 128 + wtid] = o[n][e];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      buf[(kState + 5 * i + 0) * 128 + wtid] = rows.st[i].m;
      buf[(kState + 5 * i + 1) * 128 + wtid] = rows.st[i].l;
      buf[(kState + 5 * i + 2) * 128 + wtid] = kTop ? rows.ctx[i] : 0.f;
      buf[(kState + 5 * i + 3) * 128 + wtid] = kTop ? rows.top[i].s : 0.f;
      buf[(kState + 5 * i + 4) * 128 + wtid] = __int_as_float(kTop ? rows.top[i].v : -1);
    }
    named_arrive(kMergeBarrier, 256);
    return false;
  }
  named_sync(kMergeBarrier, 256);  // consumer 1's state is stored
  float keep[2], add[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const SoftmaxState other{buf[(kState + 5 * i) * 128 + wtid], buf[(kState + 5 * i + 1) * 128 + wtid]};
    const float2 w = rows.st[i].merge(other);
    keep[i] = w.x;
    add[i] = w.y;
    if (kTop) {
      rows.ctx[i] = rows.ctx[i] * keep[i] + buf[(kState + 5 * i + 2) * 128 + wtid] * add[i];
      rows.top[i].offer(buf[(kState + 5 * i + 3) * 128 + wtid], __float_as_int(buf[(kState + 5 * i + 4) * 128 + wtid]));
    }
  }
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = o[n][e] * keep[e >> 1] + buf[(4 * n + e) * 128 + wtid] * add[e >> 1];
  return true;
}

// How the consumers share a CTA's tile: each its own 64 rows, taking turns to issue (kHalves); or,
// when the tile has at most 64 rows, both the same rows over alternate key tiles, merged at the
// end (kSplitKeys: a Llama-2 question's 64 rows would otherwise leave one consumer idle); or one
// consumer alone (a tile of at most 64 rows and fewer than two key tiles).
enum class Sharing { kHalves, kSplitKeys, kAlone };

// Consumer c (0 or 1). Keeps only the softmax state, S, P and O in registers (Q stays in smem):
// 168 registers a thread, the most 384 threads may have.
template <bool kTop, bool kSplitKeys>
__device__ void consume(Smem& sm, const PrefillArgs& a, const PrefillTiles& p, int c, Sharing sharing) {
  const int wtid = threadIdx.x - 128 * (c + 1), warp = wtid >> 5, lane = wtid & 31;
  const int row_base = sharing == Sharing::kHalves ? 64 * c : 0;  // the consumer's first row in the tile
  const int m_first = row_base + 16 * warp + (lane >> 2);         // this thread's first row in the tile
  // Q: the consumer's 64 rows into its half of the Q buffer, in core matrices (packed row m ->
  // token m / G, head h * G + m % G; rows past the block zero), visible to wgmma's async proxy
  // before any warp of the group issues.
  {
    const int G = a.g;
#pragma unroll
    for (int i = 0; i < 64 * D / 8 / 128; ++i) {
      const int chunk = wtid + 128 * i, row = core_chunk_row<D>(chunk), col = core_chunk_col<D>(chunk);
      const int m = p.m0 + row_base + row;
      const __nv_bfloat16* src = a.q;
      int bytes = 0;
      if (m < p.rows_m) {
        src = a.q + ((static_cast<int64_t>(p.b) * a.lq + m / G) * a.hkv * G + p.h * G + m % G) * D + col;
        bytes = 16;
      }
      cp_async_16(sm.q + 64 * c * D + 8 * chunk, src, bytes);  // the consumer's 64 rows, core-matrix order
    }
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async();
    named_sync(kQBarrier + c, 128);
  }
  const uint32_t q = smem_address(sm.q + 64 * c * D);  // 8 row groups of 16 D bytes per 64 rows

  PrefillRows<kTop> rows(a, p, m_first);
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = 0.f;
  // The consumer's key tiles: every tile of the range, or (split keys) every other one from c.
  const int n_range = p.t_end - p.t_begin;
  const int first = kSplitKeys ? c : 0;
  constexpr int step = kSplitKeys ? 2 : 1;
  const int n_tiles = n_range > first ? (n_range - first + step - 1) / step : 0;
  if (n_tiles > 0) {  // uniform over the consumer
    const bool turns = sharing == Sharing::kHalves && !kSerial;
    float s[kTileN / 8][4];
    uint32_t pa[kTileN / 16][4];
    // Turns: consumer c issues after the other's last issue (consumer 1 lets 0 go first: its
    // arrive below, before anything, opens consumer 0's first turn), so the two alternate on the
    // tensor cores. Each issues n_tiles + 1 batches (both have the same tiles) and signals after
    // each but consumer 1's last: consumer 0 syncs n_tiles + 1 times on its barrier and gets the
    // opening arrive plus n_tiles; consumer 1 syncs n_tiles + 1 times and gets n_tiles + 1.
    const int mine = kTurnBarrier + c, other = kTurnBarrier + 1 - c;
    auto take_turn = [&] {
      if (turns) named_sync(mine, 256);
    };
    auto pass_turn = [&](bool last) {
      if (turns && !(last && c == 1)) named_arrive(other, 256);
    };
    // The range's tile i = first + j * step (j: the consumer's own count).
    auto wait_full = [&](int j) {
      const int i = first + j * step;
      mbar_wait(&sm.full[i % kStages], (i / kStages) & 1);
      __syncwarp();  // lanes may leave the polling loop on different polls; bar and wgmma are .aligned
      fence_proxy_async();  // the copies landed through the generic proxy; wgmma reads via the async one
    };
    auto stage_of = [&](int j) { return (first + j * step) % kStages; };
    auto release = [&](int j) {  // after the products reading that tile's stage are done
      __syncwarp();
      if (lane == 0) mbar_arrive(&sm.empty[stage_of(j)]);
    };
    if (turns && c == 1) named_arrive(other, 256);  // opens consumer 0's first turn
    float corr[2];
    // Tile 0: S alone.
    wait_full(0);
    take_turn();
    wgmma_fence();
    issue_qk(s, q, sm.k[stage_of(0)]);
    pass_turn(false);
    wgmma_wait<0>();
    fence_operands(s);
    rows.softmax_tile(s, p.t_begin + first, sm.bias[stage_of(0)], a, p, lane, corr);
    pack_p(s, pa);
    // Tile j: S of tile j and P V of tile j - 1 in flight together; tile j's softmax while the
    // second runs. O is rescaled every tile (the factor is 1 where a row's max held): a branch
    // around it would make the next P V's accumulators depend on a divergent path.
    for (int j = 1; j < n_tiles; ++j) {
      wait_full(j);
      take_turn();
      wgmma_fence();  // o, pa and s were last written by ordinary instructions
      issue_qk(s, q, sm.k[stage_of(j)]);
      issue_pv(o, pa, sm.v[stage_of(j - 1)]);
      fence_operands(s);
      fence_operands(o);
      pass_turn(false);
      if constexpr (kSerial) wgmma_wait<0>();
      wgmma_wait<1>();  // S of tile j (the first group)
      fence_operands(s);
      rows.softmax_tile(s, p.t_begin + first + j * step, sm.bias[stage_of(j)], a, p, lane, corr);
      wgmma_wait<0>();  // P V of tile j - 1
      fence_operands(o);
      fence_operands(pa);  // P V of tile j - 1 read them: pack_p may now overwrite
      release(j - 1);
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[n][e] *= corr[e >> 1];
      pack_p(s, pa);
    }
    // The last tile's P V.
    take_turn();
    wgmma_fence();
    issue_pv(o, pa, sm.v[stage_of(n_tiles - 1)]);
    fence_operands(o);
    pass_turn(true);
    wgmma_wait<0>();
    fence_operands(o);
    release(n_tiles - 1);
  }
  if (kSplitKeys && !merge_split_keys<kTop>(sm, rows, o, c, wtid)) return;
  // The epilogue's top-key lookup reads the selection again rather than keeping its pointers live
  // through the loop.
  const VirtualRows vr = virtual_rows<D>(a.seqs[p.b], a.sel, p.b, p.h, a.hkv, /*decode_group=*/0);
  rows.template write<D>(o, a, p, vr, m_first, lane);
}

#endif  // SQZ_HAS_WGMMA

template <bool kTop>
__global__ void __launch_bounds__(kThreads, 1) prefill_ws_kernel(PrefillArgs a) {
#ifdef SQZ_HAS_WGMMA
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  {  // The swizzle reads address bits 7-9. The check goes through an asm copy: with the array's
     // declared alignment the compiler would fold `address % 1024` to 0 and drop the trap.
    uint32_t base;
    asm volatile("mov.u32 %0, %1;" : "=r"(base) : "r"(smem_address(smem_raw)));
    if (base % 1024 != 0) __trap();
  }
  const VirtualRows vr = virtual_rows<D>(a.seqs[blockIdx.z], a.sel, blockIdx.z, blockIdx.y, a.hkv, /*decode_group=*/0);
  const PrefillTiles p = PrefillTiles::of(a, vr);
  // CTA-uniform: how the consumers share the tile (Sharing), and the arrives that free a stage
  // (every tile is read by one consumer when they split the keys).
  const Sharing sharing = p.rows_m - p.m0 > 64           ? Sharing::kHalves
                          : p.t_end - p.t_begin >= 2 ? Sharing::kSplitKeys
                                                     : Sharing::kAlone;
  const int consumers = sharing == Sharing::kAlone ? 1 : 2;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&sm.full[s], 2 * 128);        // per producer thread: its copies, its bias store
      mbar_init(&sm.empty[s], sharing == Sharing::kHalves ? 8 : 4);  // one arrive per consumer warp reading it
    }
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) produce(sm, vr, p, threadIdx.x);
  else if (wg <= consumers && sharing == Sharing::kSplitKeys) consume<kTop, true>(sm, a, p, wg - 1, sharing);
  else if (wg <= consumers) consume<kTop, false>(sm, a, p, wg - 1, sharing);
#else
  __trap();  // launched only where prefill_ws_available()
#endif
}

}  // namespace

bool prefill_ws_available() { return wgmma_available(); }

template <bool kTop>
cudaError_t launch_prefill_ws(const PrefillArgs& a, int batch, cudaStream_t stream) {
  if (!prefill_ws_available()) return cudaErrorNotSupported;
  const auto kernel = prefill_ws_kernel<kTop>;
  const int bytes = static_cast<int>(sizeof(Smem));
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err != cudaSuccess) return err;
  const dim3 grid((a.lq * a.g + kPrefillTileM - 1) / kPrefillTileM * a.splits, a.hkv, batch);
  kernel<<<grid, kThreads, bytes, stream>>>(a);
  return cudaGetLastError();
}

template cudaError_t launch_prefill_ws<false>(const PrefillArgs&, int, cudaStream_t);
template cudaError_t launch_prefill_ws<true>(const PrefillArgs&, int, cudaStream_t);

}  // namespace squeezeserve::kernels::detail
