// Split-K sparse decode attention. Contract: decode_attention.h, reference: attention_ref.cc.
//
// Work split (decode_split.h, proved on the CPU by tests/kernels/decode_split_test.cc). The virtual
// rows of every (sequence, KV head) are laid end to end (a head without rows still takes one masked
// row, so that its output is written) and cut into one equal, contiguous range of cost per CTA. The
// grid is what the device holds at once, so all CTAs stream at the same time. A CTA's range is one
// piece per head it overlaps (mostly one or two); each piece writes an fp32 partial (o, max, sum) of
// the G query heads of the group, and the head's last piece to finish merges its partials in order
// (deterministic log-sum-exp merge), or, with DecodeLaunch::defer_merge, merge_decode_pieces does
// after the launch, one warp per query row.
// Cost: every row, selected, estimated (a mean value and no key) or dense, is kRowCost units. An
// estimated row moves about half a selected row's bytes, but in 16-row tiles took about a selected
// row's time: charged 1, 2 or 3 quarters of a row, the split made the attention up to 1.9x slower
// (bench/kernels/NOTES.md run 18).
// Each head's rows are preceded by start_cost units of nothing (DecodeLaunch::piece_start_rows): a
// CTA that straddles two heads pays a second piece's dependent round trips mid-stream, under full
// load (partial, fence, ticket, then the next head's views, window seek and first tiles), and the
// per-CTA trace (NOTES.md run 14) showed those CTAs finishing ~20 us after the rest at 512K batch 1:
// with the charge they stream fewer rows instead. Where the grid has 16 or more CTAs per head
// (batch 1), the heads are aligned to CTA ranges instead and no CTA has two pieces
// (DecodeLaunch::align_heads, decode_split.h HeadLayout).
//
// Streaming. Inside a piece the tiles go to the CTA's four warps in turn (tile t to warp t % 4),
// and every warp streams its tiles 16 rows at a time through three cp.async stages of its own,
// computing on exactly the rows it copied: no CTA barrier per tile. Dealt in turn, the CTA reads
// one stream of rows instead of four: on an H200 Llama-2's launches took 3.6-3.8% less than with a
// contiguous quarter a warp, Llama-3's within noise (bench/kernels/NOTES.md run 28). Wide tiles and
// read-ahead's top keys keep the quarters (WarpTiles::of), which the split's cost per warp
// (decode_split.h Piece::warp_start) divides. Rows are mapped to physical rows by a window of 32
// selected segments held in registers (lane j: segment base + j), searched with shuffles and
// reloaded only when a tile runs past it (every ~30 clusters). Why: run 3c's kernel had four
// __syncthreads and two dependent global loads (segment window, then the clusters' offsets) on
// every 64-row tile's critical path, plus a 12-load binary search per work item; at the measured
// 410 us (MHA) that is ~4 us per tile per CTA, i.e. those loaded round trips, not bandwidth, set
// the pace (2.1 TB/s MHA, 0.96 TB/s GQA).
//
// Math on tensor cores for every group size: S = Q K^T and O += P V with mma.sync m16n8k16, the
// group's G query heads as rows 0..G-1 of the A operand (rows G..15 zero), a warp tile's 16 keys as
// N (then K of P V). Softmax state in fp32, log2 domain; P is rounded to bf16 for P V (as in
// prefill). Also for G = 1 and 2: one code path, and per row fewer instructions than run 3c's
// CUDA-core loop at G = 1 (there each row took 16 lanes x (8 FMA + 4 shuffles + 4 adds) for q.k and
// every exp2 was repeated on those 16 lanes; here a 16-row tile is 32 MMAs, 16 ldmatrix and 5 exp2
// per lane).
//
// Groups above 16 (the engine's shared-context bundles: a batch's questions on one context as one
// group) take two MMA tiles, which one warp has no registers for: two warps share each tile of
// keys, 16 query heads each (kPair, attend_rows), so the context streams once for the batch.
// Squeezed bundles (kernels/bundle_selection.h) take these variants at any group, with a member
// mask per selected cluster (kMasked: the heads of members that did not select it get -inf) and
// read-ahead's top keys; the other variants compile without the masks.
//
// Pruned-cluster estimate: the estimated clusters are virtual rows after the selected ones
// (virtual_rows.cuh): their mean is the value and their logit a per-row bias in smem beside the
// tile — the selection's s q.c + ln n (Selection::estimate_logits), copied by cp.async with the
// tile, or ln n over the centroid as the key. A row's cluster id (which its value address needs) is
// loaded one tile ahead: loaded when the tile was resolved, it stalled the warp on every estimated
// tile (1.6-1.8x the paper lookup's time at 90%, against 1.4x with the prefetch; docs/performance.md).
// With the selection's logits and groups up to 4, a warp's run of estimated rows goes 32 to a tile
// (WarpTiles; DecodeLaunch::wide_estimate_tiles): no key, so the K buffer holds rows 0..15's values.
// Read-ahead's top key (TopKeys, kernel variant kTop): per query head, the most attended selected
// row and the softmax sum over the context rows, merged across warps and pieces like (m, l).
#include <algorithm>
#include <climits>

#include "kernels/chained_launch.cuh"
#include "kernels/cuda_common.cuh"
#include "kernels/decode_attention.h"
#include "kernels/decode_split.h"
#include "kernels/mma.cuh"
#include "kernels/softmax_state.cuh"
#include "kernels/virtual_rows.cuh"

namespace squeezeserve::kernels {
namespace detail {
namespace {

using decode_split::HeadCost;
using decode_split::kRowCost;
constexpr int kWarps = decode_split::kWarps;
constexpr int kThreads = kWarps * 32;
constexpr int kTileRows = decode_split::kTileRows;  // KV rows per warp tile
constexpr int kWideTileRows = 2 * kTileRows;         // estimated rows per wide tile (WarpTiles)
constexpr int kStages = 3;                           // per warp
constexpr int kMmaRows = 16;                         // query heads in one MMA tile's rows
// Whether a variant deals a piece's tiles to its warps in turn ("Streaming" above); the others
// stream a contiguous quarter of its cost each.
template <bool kWide, bool kTop>
constexpr bool kTilesInTurn = !kWide && !kTop;
constexpr int kMaxHeads = 2048;  // B * H_kv

// Per warp: kStages x (K tile, V tile), rows padded to D + 8 bf16 so that the 8 rows an ldmatrix
// reads fall in distinct banks. After all warps' tiles: per warp kStages x kTileRows x kMaxGroup
// logit offsets (natural log units) of a tile's rows per query head: for an estimated cluster ln n,
// or its whole logit (ln n included) when the selection provides it (its key row is then zero,
// and the logits arrive by cp.async with the tile); 0 for other rows. Heads past the selection's
// stride (estimate_logit_stride(G): padding heads only) are never written; they read head S - 1.
template <int D>
constexpr int kWarpSmemElems = kStages * 2 * kTileRows * (D + 8);
constexpr int kWarpBiases = kStages * kTileRows * kMaxGroup;
// Then per warp, for each of a pair's 2 kStages stages, kTileRows row codes (virtual_rows.cuh),
// read-ahead's only: the physical row of each selected row a tile offers as its top key
// (TopKey::v here: see write_top).
constexpr int kWarpCodes = 2 * kStages * kTileRows;
// Then per warp, in a squeezed bundle's launch (Selection::member_masks), the member mask of each
// row of a tile, for each of a pair's 2 kStages stages (the warp's own copy: both warps of a pair
// resolve every row of a tile).
constexpr int kWarpMasks = 2 * kStages * kTileRows;
template <int D>
constexpr size_t kSmemBytes = sizeof(__nv_bfloat16) * kWarps * kWarpSmemElems<D> +
                              sizeof(float) * kWarps * kWarpBiases + sizeof(int) * kWarps * kWarpCodes +
                              sizeof(uint32_t) * kWarps * kWarpMasks;
// Where (stage, tile row, query head)'s logit offset lies in a warp's bias buffer: the one index
// the resolving lanes write by and the computing lanes read by.
__device__ __forceinline__ int bias_at(int stage, int row, int head) { return (stage * kTileRows + row) * kMaxGroup + head; }
// A squeezed bundle's (kMasked) estimated rows have one offset for every head, ln n: one float a
// row, for each of a pair's 2 kStages stages (bias_at's kStages would not hold a pair's ring, whose
// loads run 2 kStages - 1 tiles ahead).
__device__ __forceinline__ int row_bias_at(int stage, int row) { return stage * kTileRows + row; }
static_assert(2 * kStages * kTileRows <= kWarpBiases, "a pair's per-row offsets fit the warp's bias buffer");

// A piece's softmax statistics of one query head: (m, l) of the SoftmaxState, l_ctx = the sum over
// the context rows relative to the same m, and the top key's logit; its row is stored beside.
struct DecodeWorkspace {
  float* partial_o;     // [max_pieces][G][D], unnormalised (relative to the piece's max)
  float4* partial_st;   // [max_pieces][G] (m in log2 units, l, l_ctx, top logit)
  int* partial_top;     // [max_pieces][G] top key's physical row, -1 = none (kTop only)
  int* tickets;         // [B*H_kv] finished pieces per head (DecodeLaunch::tickets where set)
  int2* head_pieces;    // [B*H_kv] (first slot, pieces) per head: DecodeLaunch::defer_merge only
  size_t bytes;
  // Piece (CTA c, head bh) uses slot c + bh: along the flat row order every new piece starts a new
  // CTA range or a new head (or both), so c + bh grows strictly; a head's slots are consecutive.
  DecodeWorkspace(const AttentionShape& s, int num_ctas, void* base) {
    const size_t max_pieces = size_t(num_ctas) + size_t(s.batch) * s.num_kv_heads;
    const size_t heads = max_pieces * s.num_q_heads / s.num_kv_heads;
    auto up = [](size_t x) { return (x + 255) & ~size_t{255}; };
    char* p = static_cast<char*>(base);
    partial_o = reinterpret_cast<float*>(p);
    size_t off = up(sizeof(float) * heads * s.head_dim);
    partial_st = reinterpret_cast<float4*>(p + off);
    off += up(sizeof(float4) * heads);
    partial_top = reinterpret_cast<int*>(p + off);
    off += up(sizeof(int) * heads);
    tickets = reinterpret_cast<int*>(p + off);
    off += up(sizeof(int) * s.batch * s.num_kv_heads);
    head_pieces = reinterpret_cast<int2*>(p + off);
    off += up(sizeof(int2) * s.batch * s.num_kv_heads);
    bytes = off;
  }
};

#ifdef SQZ_DECODE_TRACE
// set_decode_trace (decode_attention.h): where thread 0 of each CTA records its phases.
__device__ unsigned long long* g_trace = nullptr;
__device__ int g_trace_ctas = 0;
// Thread 0 of a traced CTA writes (x, y) to its slot `event`.
__device__ __forceinline__ void trace_write(int event, unsigned long long x, unsigned long long y) {
  if (threadIdx.x != 0 || g_trace == nullptr || static_cast<int>(blockIdx.x) >= g_trace_ctas) return;
  unsigned long long* at = g_trace + (static_cast<size_t>(blockIdx.x) * kDecodeTraceEvents + event) * 2;
  at[0] = x;
  at[1] = y;
}
__device__ __forceinline__ void trace_event(int event) {
  unsigned long long ns;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  trace_write(event, ns, static_cast<unsigned long long>(clock64()));
}
#define DECODE_TRACE(event) trace_event(event)
#define DECODE_TRACE_COUNTS(pieces, merges) trace_write(7, (pieces), (merges))
#else
#define DECODE_TRACE(event) ((void)0)
#define DECODE_TRACE_COUNTS(pieces, merges) ((void)0)
#endif

struct DecodeArgs {
  const SequenceLayerBf16* seqs;
  const __nv_bfloat16* q;
  Selection sel;
  __nv_bfloat16* out;
  float* lse;
  TopKeys top;
  DecodeWorkspace ws;
  int batch, hkv, g;  // g: query heads per KV head (1..32; above 8 the kHigh variant, above 16 kPair)
  float scale_log2;
  int start_cost_cap;  // DecodeLaunch::piece_start_rows, resolved (>= 0), in cost units
  bool align_heads;    // DecodeLaunch::align_heads
  int align_min_ctas;  // CTAs a head from which heads align (decode_split.h head_layout)
  bool defer_merge;    // DecodeLaunch::defer_merge
  bool static_selection;  // DecodeLaunch::static_selection
  bool next_beside;       // DecodeLaunch::next_beside
  bool beside_previous;   // DecodeLaunch::beside_previous
  const int64_t* q_rows;  // DecodeLaunch::q_rows (nullable)
};

// w (1, 2 or 4) floats from global to shared by cp.async (w * 4-byte aligned), or zeros.
__device__ __forceinline__ void cp_async_floats(float* smem, const float* gmem, int w, bool copy) {
  if (w == 4) cp_async_16(smem, gmem, copy ? 16 : 0);
  else if (w == 2) cp_async_8(smem, gmem, copy ? 8 : 0);
  else cp_async_4(smem, gmem, copy ? 4 : 0);
}

// Head bh's rows in the split (decode_split.h).
__device__ __forceinline__ HeadCost head_cost(const DecodeArgs& a, int bh) {
  const SequenceLayerBf16& s = a.seqs[bh / a.hkv];
  const int sel = a.sel.rows[bh];
  const int est = a.sel.estimated != nullptr && s.cluster_values != nullptr ? a.sel.estimated[bh] : 0;
  return HeadCost::of(sel, est, s.dense_len);
}

// A warp's window of 32 consecutive selected segments: lane j holds segment base + j, its first
// virtual row `start` (INT_MAX past the last segment) and `shift` = physical - virtual row in it.
// Rows in [start of lane 0, end) lie in the window's segments 0..30 (or any, when it holds the
// last segment: end = INT_MAX).
struct SegmentWindow {
  int base, start, shift, end;
  uint32_t mask;  // the segment's member mask (squeezed bundles; all ones without)

  // Two dependent round trips: row_start + ids (+ kMasked: the mask), then the clusters' offsets.
  template <bool kMasked>
  __device__ void load(const VirtualRows& vr, int first, int lane) {
    base = first;
    const int s = first + lane;
    start = INT_MAX;
    shift = 0;
    mask = ~0u;
    if (s < vr.count) {
      start = __ldg(vr.row_start + s);
      if (kMasked) mask = __ldg(vr.masks + s);
      shift = __ldg(vr.offsets + __ldg(vr.ids + s)) - start;
    }
    end = __shfl_sync(0xffffffffu, start, 31);
  }

  // First window for sparse row v: 32-way search of row_start down to 32 candidate segments (one
  // round trip per round: 2 rounds up to 32K segments), which become the window.
  template <bool kMasked>
  __device__ void seek(const VirtualRows& vr, int v, int lane) {
    int lo = 0, n = vr.count;  // v's segment is in [lo, lo + n), and row_start[lo] <= v
    while (n > 32) {
      const int stride = (n + 31) / 32, idx = lo + lane * stride;
      const bool le = idx < lo + n && __ldg(vr.row_start + idx) <= v;
      const int k = 31 - __clz(__ballot_sync(0xffffffffu, le));  // lane 0 always qualifies
      lo += k * stride;
      n = min(stride, n - k * stride);
    }
    load<kMasked>(vr, lo, lane);
  }

  // Window index of the segment holding row x (last lane with start <= x), for start(0) <= x.
  // Every lane passes its own x.
  __device__ int find(int x) const {
    int j = 0;
#pragma unroll
    for (int step = 16; step > 0; step >>= 1)
      if (__shfl_sync(0xffffffffu, start, j + step) <= x) j += step;
    return j;
  }
};

// A warp's rows [w0, w1) as tiles in order: 16-row tiles, except that a run of estimated rows
// whose logits the selection computed goes 32 rows to a tile ("wide"), from the first tile
// boundary past the selected rows, and the rest (under 32 estimated rows, the dense part) in
// 16-row tiles again. Why: an estimated tile carries no key and no Q K^T, but a 16-row one took
// about a selected tile's time for half its bytes (the chain of wait, softmax, rescale and P V
// each warp runs per tile: bench/kernels/NOTES.md runs 18-19); a wide one moves a selected tile's
// bytes through that chain once. Wide tiles need 32 rows of logits in a stage's bias buffer:
// est_stride <= 4 (query groups up to 4). The kernel variant without them (kWide false: lookups
// without the estimate's logits) keeps the narrow loop as it was: with the wide path compiled in,
// the paper lookup's attention took 2 us longer at batch 1 (run 19).
template <bool kWide>
struct WarpTiles {
  int w0, n0, n1, num;  // n0 narrow tiles from w0, then n1 wide ones, num tiles in all
  int step;             // tiles from one of this warp's to its next (1: contiguous; kPair: 2; in turn: 4)

  // Interleaved: this warp's tiles are every step-th of the piece, from w0 (narrow tiles only).
  __device__ static WarpTiles interleaved(int w0, int w1, int step) {
    return {w0, 0, 0, w1 <= w0 ? 0 : (w1 - w0 + kTileRows * step - 1) / (kTileRows * step), step};
  }
  __device__ static WarpTiles of(const VirtualRows& vr, int w0, int w1) {
    if (w1 <= w0) return {w0, 0, 0, 0, 1};
    const int narrow_end = min(w0 + (max(vr.sparse_rows - w0, 0) + kTileRows - 1) / kTileRows * kTileRows, w1);
    const int est_end = min(vr.clustered(), w1);
    const bool wide = kWide && vr.est_logits != nullptr && vr.est_stride * kWideTileRows <= kTileRows * kMaxGroup;
    const int n1 = wide && est_end > narrow_end ? (est_end - narrow_end) / kWideTileRows : 0;
    const int wide_end = narrow_end + n1 * kWideTileRows;
    const int n0 = (narrow_end - w0 + kTileRows - 1) / kTileRows;
    return {w0, n0, n1, n0 + n1 + (w1 - wide_end + kTileRows - 1) / kTileRows, 1};
  }
  __device__ bool wide(int t) const { return kWide && t >= n0 && t < n0 + n1; }
  __device__ int rows(int t) const { return wide(t) ? kWideTileRows : kTileRows; }
  // Every tile before t counts 16 rows (step of them interleaved), and each wide one 16 more.
  __device__ int start(int t) const { return w0 + kTileRows * (kWide ? t + min(max(t - n0, 0), n1) : t * step); }
};

// The online softmax's step for a tile: raises the state's max to the tile's (this lane's part
// tile_max, reduced over the quad that holds one query head) and rescales o (and with kTop ctx).
// kHalf: the query head's rows of the MMA tile, lane / 4 (0: c0, c1) or lane / 4 + 8 (1: c2, c3).
template <int D, bool kTop, int kHalf = 0>
__device__ __forceinline__ void rescale_to_tile(float tile_max, SoftmaxState& st, float& ctx, float (&o)[D / 8][4]) {
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
  tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
  const float corr = st.rescale(fmaxf(st.m, tile_max));
  if (kTop) ctx *= corr;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    o[n][2 * kHalf] *= corr;
    o[n][2 * kHalf + 1] *= corr;
  }
}

// O += P V over 16 keys: pa the A fragment of P (row lane / 4 = query head), vs their 16 value rows
// at stride D + 8; ldmatrix.trans of the V rows gives the B fragments (keys = k, dims = n).
template <int D>
__device__ __forceinline__ void add_pv(const uint32_t (&pa)[4], const __nv_bfloat16* vs, int lane, float (&o)[D / 8][4]) {
  constexpr int kStride = D + 8;
#pragma unroll
  for (int dn = 0; dn < D / 16; ++dn) {
    uint32_t vb[4];  // b0,b1 of dims dn*16..+7, then of dn*16+8..+15
    ldmatrix_x4_trans(vb, vs + ((lane & 7) + ((lane >> 3) & 1) * 8) * kStride + dn * 16 + (lane >> 4) * 8);
    mma_bf16_16816(o[2 * dn], pa, vb[0], vb[1]);
    mma_bf16_16816(o[2 * dn + 1], pa, vb[2], vb[3]);
  }
}

// One wide tile (WarpTiles): 32 estimated rows, `vals` their values (32 rows at stride D + 8: the
// stage's K buffer, then its V buffer), `bias` their logits (natural log, `stride` floats per
// row), all context rows. Their logit is the selection's, so there is no Q K^T: the online softmax
// of 2 x 16 keys, then O += P V in two k-steps.
template <int D, bool kTop>
__device__ __forceinline__ void attend_wide_tile(const __nv_bfloat16* vals, const float* bias, int stride,
                                                 int bias_head, int lane, float (&o)[D / 8][4], SoftmaxState& st,
                                                 float& ctx) {
  float x[4][2];  // this lane's head lane / 4, keys n * 8 + 2 * (lane & 3) + e
  float tile_max = neg_inf();
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      x[n][e] = bias[(n * 8 + 2 * (lane & 3) + e) * stride + bias_head] * kLog2e;
      tile_max = fmaxf(tile_max, x[n][e]);
    }
  rescale_to_tile<D, kTop>(tile_max, st, ctx, o);
  float p[4][2];
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      p[n][e] = x[n][e] == neg_inf() ? 0.f : exp2f(x[n][e] - st.m);
      st.l += p[n][e];
      if (kTop) ctx += p[n][e];
    }
#pragma unroll
  for (int k = 0; k < 2; ++k) {  // keys 16 k .. 16 k + 15
    const uint32_t pa[4] = {pack_bf16(p[2 * k][0], p[2 * k][1]), 0u, pack_bf16(p[2 * k + 1][0], p[2 * k + 1][1]), 0u};
    add_pv<D>(pa, vals + kTileRows * (D + 8) * k, lane, o);
  }
}

// The two warps of pair `pair` (warps 2 pair, 2 pair + 1) wait for each other: named barrier 1 + pair
// (0 is __syncthreads'), with the ordering of shared memory that __syncthreads gives.
// (Immediate ids: with an id in a register, ptxas reserves all 16 of the CTA's barriers.)
__device__ __forceinline__ void pair_sync(int pair) {
  static_assert(kWarps == 4, "two pairs");
  if (pair == 0) asm volatile("bar.sync 1, 64;" ::: "memory");
  else asm volatile("bar.sync 2, 64;" ::: "memory");
}

// One warp attends its rows [w0, w1) of a head: online softmax of the group's query heads (qa:
// A fragments of Q, row lane / 4 = head) into o (C fragments, rows = heads) and st (st.l is this
// lane's partial sum; the quad holds the row's four parts), and with kTop the lane's part of the
// context sum and its top key (as a physical row). kHigh (groups above 8, and squeezed bundles:
// no estimate): query heads 8..15 too, rows lane / 4 + 8 of the tile, their state in st_hi (and
// with kTop ctx_hi, top_hi). Uses `smem`, `bias`, `codes` and `masks`, the warp's stage buffers.
// kMasked (a squeezed bundle's launch, Selection::member_masks; kHigh's variants only): the rows
// of a selected cluster whose member mask lacks bit `member` (this lane's query head lane / 4's
// member; member_hi: head lane / 4 + 8's) have logit -inf for that head (and are never its top key).
// kPair (groups above 16, kHigh's too): the warp is half `half` of a pair that streams the same
// tiles through the pair's stage buffers (`smem`: both warps' buffers, 2 kStages stages), each
// warp copying half of a tile's rows and attending with its own 16 query heads (qa). One pair
// barrier a tile: the partner's half of tile t has landed and the partner is done with tile t - 1,
// whose stage is then refilled. So the context streams once for up to 32 query heads a KV head.
template <int D, bool kTop, bool kWide, bool kHigh, bool kPair, bool kMasked>
__device__ __forceinline__ void attend_rows(const VirtualRows& vr, int w0, int w1,
                                            const uint32_t (&qa)[D / 16][4], __nv_bfloat16* smem, float* bias,
                                            int* codes, uint32_t* masks, int member, int member_hi,
                                            float scale_log2, int lane, int pair, int half,
                                            float (&o)[D / 8][4], SoftmaxState& st, SoftmaxState& st_hi, float& ctx,
                                            TopKey& top, float& ctx_hi, TopKey& top_hi) {
  static_assert(!kHigh || !kWide, "query heads 8..15 only without wide tiles");
  static_assert(!kPair || kHigh, "a pair's warps attend 16 query heads each");
  static_assert(!kMasked || kHigh, "the squeezed bundles take the variants of groups above 8");
  constexpr int kStride = D + 8, kTileElems = kTileRows * kStride;
  constexpr int kChunks = D / 8, kRowsPerPass = 32 / kChunks;  // 16-byte chunks per row
  constexpr int kStageCount = kPair ? 2 * kStages : kStages;
  constexpr bool kInTurn = kTilesInTurn<kWide, kTop>;
  // Rows of a tile this warp copies: all, or its half's (kPair).
  constexpr int kCopyRows = kPair ? kTileRows / 2 : kTileRows;
  const int copy_row0 = kPair ? half * kCopyRows : 0;
  const WarpTiles<kWide> tiles = kPair     ? WarpTiles<kWide>::interleaved(w0, w1, kWarps / 2)
                                 : kInTurn ? WarpTiles<kWide>::interleaved(w0, w1, kWarps)
                                           : WarpTiles<kWide>::of(vr, w0, w1);
  const int num_tiles = tiles.num;
  const int ctx_end = vr.context_rows();
  // This lane's query head in the bias rows; padding heads past the stride read head S - 1's.
  const int bias_head = min(lane >> 2, vr.est_stride - 1);
  // Whether tile [v, v + 16) holds estimated rows (warp-uniform): only those tiles carry biases.
  auto has_estimate = [&](int v) {
    return vr.est_count > 0 && v < min(vr.clustered(), w1) && v + kTileRows > vr.sparse_rows;
  };
  SegmentWindow win;
  if (num_tiles > 0 && w0 < vr.sparse_rows) win.seek<kMasked>(vr, w0, lane);

  // An estimated row's cluster id, loaded one tile ahead (pending_id): the id is what the row's
  // value address depends on, and a load issued when the tile is resolved would stall the warp there
  // (estimated tiles cost twice a selected one's time when it did). -1: not an estimated row.
  auto estimated_row = [&](int x) { return x < w1 && x >= vr.sparse_rows && x < vr.clustered(); };
  auto est_id_for = [&](int t) {
    if (t >= num_tiles) return -1;
    const int x = tiles.start(t) + (lane & (tiles.rows(t) - 1));
    return estimated_row(x) ? __ldg(vr.est_ids + (x - vr.sparse_rows)) : -1;
  };
  int pending_id = num_tiles > 0 && vr.est_count > 0 ? est_id_for(0) : -1;
  // kMasked with the estimate in the bundle (Selection::estimate_masks): an estimated row's member
  // mask, loaded one tile ahead as its id (the resolving lanes store it with the tile's masks).
  auto est_mask_for = [&](int t) {
    if (!kMasked || t >= num_tiles || vr.est_masks == nullptr) return ~0u;
    const int x = tiles.start(t) + (lane & (tiles.rows(t) - 1));
    return estimated_row(x) ? __ldg(vr.est_masks + (x - vr.sparse_rows)) : ~0u;
  };
  uint32_t pending_mask = kMasked && num_tiles > 0 && vr.est_count > 0 ? est_mask_for(0) : ~0u;

  // Tile t (called for t = 0, 1, 2, ... in order): lanes i and i + 16 resolve row i, then each lane
  // copies kTileRows / kRowsPerPass 16-byte chunks of K and of V, and in a tile with estimated rows
  // one 16-byte half of a row's logit offsets. A wide tile (WarpTiles): lane i resolves estimated
  // row i of 32 and copies its logits, and the values of rows 0..31 fill the K and V buffers.
  auto load_tile = [&](int t) {
    const int v = tiles.start(t);
    const int my_id = pending_id;
    const uint32_t my_est_mask = pending_mask;
    if (vr.est_count > 0) {
      pending_id = est_id_for(t + 1);
      if (kMasked) pending_mask = est_mask_for(t + 1);
    }
    if (tiles.wide(t)) {  // warp-uniform; every row is estimated and the logits are the selection's
      const int code = estimate_code(my_id), S = vr.est_stride;
      cp_async_floats(bias + bias_at(t % kStages, 0, 0) + lane * S,
                      vr.est_logits + static_cast<int64_t>(v + lane - vr.sparse_rows) * S, S, true);
      __nv_bfloat16* rows = smem + (t % kStageCount) * 2 * kTileElems;  // K buffer, then V: 32 rows
#pragma unroll
      for (int i = 0; i < kWideTileRows / kRowsPerPass; ++i) {
        const int row = i * kRowsPerPass + lane / kChunks, col = (lane % kChunks) * 8;
        const RowSource src = row_source<D>(vr, __shfl_sync(0xffffffffu, code, row), col);
        cp_async_16(rows + row * kStride + col, src.value, src.bytes);
      }
      return;
    }
    const int x = v + (lane & (kTileRows - 1));
    int shift = 0;
    uint32_t row_mask = ~0u;
    if (v < vr.sparse_rows) {  // warp-uniform
      // Segments have >= 1 row, so a window based at v's segment covers the tile's <= 16 segments.
      const int last = min(min(v + kTileRows, w1), vr.sparse_rows) - 1;
      // (Interleaved tiles, kPair, skip rows: a skip past the window moves it 31 segments at a time.)
      while (last >= win.end) win.load<kMasked>(vr, win.base + win.find(v), lane);
      const int segment = win.find(x);
      shift = __shfl_sync(0xffffffffu, win.shift, segment);
      if (kMasked) row_mask = __shfl_sync(0xffffffffu, win.mask, segment);
    }
    // A squeezed bundle's rows: the members that attend each (the selected rows' and estimated
    // clusters' masks; every member: the dense rows).
    if (kMasked && lane < kTileRows) {
      masks[(t % kStageCount) * kTileRows + lane] = x < vr.sparse_rows ? row_mask : estimated_row(x) ? my_est_mask : ~0u;
    }
    // Row code of row x (virtual_rows.cuh).
    const int code = x >= w1                   ? kNoRow
                     : x < vr.sparse_rows      ? x + shift
                     : estimated_row(x)        ? estimate_code(my_id)
                                               : dense_code(x - vr.clustered());
    // Read-ahead: the rows' codes, so that a top key is offered as its physical row (write_top).
    if (kTop && lane < kTileRows) codes[(t % kStageCount) * kTileRows + lane] = code;
    if (has_estimate(v)) {  // the tile's logit offsets per (row, query head), natural log units
      float* to = bias + bias_at(t % kStages, 0, 0);
      if (!kMasked && vr.est_logits) {  // (the launcher gives a squeezed bundle no logits)
        // The selection's logits s q.c + ln n, S = est_stride floats per row, copied in pieces of
        // w = min(S, 4) floats (a row is one piece, or two for S = 8): one piece per lane,
        // zero-filled for the tile's rows that are not estimated.
        const int S = vr.est_stride, w = min(S, 4), per_row = S / w;
        if (lane < kTileRows * per_row) {
          const int row = lane / per_row, part = lane % per_row, xr = v + row;
          const float* src = estimated_row(xr)
                                 ? vr.est_logits + static_cast<int64_t>(xr - vr.sparse_rows) * S + part * w
                                 : vr.est_logits;
          cp_async_floats(to + row * kMaxGroup + part * w, src, w, estimated_row(xr));
        }
      } else if (kMasked && lane < kTileRows) {
        // The key is its centroid: only ln n is added, from the union's sizes (Selection::
        // estimate_log_sizes), copied with the tile (0 for its other rows).
        cp_async_4(bias + row_bias_at(t % kStageCount, lane),
                   vr.est_log_sizes + (estimated_row(x) ? x - vr.sparse_rows : 0), estimated_row(x) ? 4 : 0);
      } else if (lane < kTileRows) {  // the key is its centroid: only ln n is added
        const float log_size = estimated_row(x) ? estimate_log2_size(vr, code) / kLog2e : 0.f;
        float4* row = reinterpret_cast<float4*>(to + lane * kMaxGroup);
        row[0] = row[1] = make_float4(log_size, log_size, log_size, log_size);
      }
    }
    __nv_bfloat16* ks = smem + (t % kStageCount) * 2 * kTileElems;
    __nv_bfloat16* vs = ks + kTileElems;
#pragma unroll
    for (int i = 0; i < kCopyRows / kRowsPerPass; ++i) {
      const int row = copy_row0 + i * kRowsPerPass + lane / kChunks, col = (lane % kChunks) * 8;
      const RowSource src = row_source<D>(vr, __shfl_sync(0xffffffffu, code, row), col);
      cp_async_16(ks + row * kStride + col, src.key, src.key_bytes);
      cp_async_16(vs + row * kStride + col, src.value, src.bytes);
    }
  };

#pragma unroll
  for (int t = 0; t < kStageCount - 1; ++t) {
    if (t < num_tiles) load_tile(t);
    cp_async_commit();
  }
  for (int t = 0; t < num_tiles; ++t) {
    if constexpr (kPair) {
      cp_async_wait<kStageCount - 2>();  // this warp's half of tile t landed
      pair_sync(pair);  // and the partner's; both are done reading stage (t - 1) % kStageCount
      if (t + kStageCount - 1 < num_tiles) load_tile(t + kStageCount - 1);
      cp_async_commit();
    } else {
      __syncwarp();  // all lanes are done reading stage (t - 1) % kStages, refilled here
      if (t + kStages - 1 < num_tiles) load_tile(t + kStages - 1);
      cp_async_commit();
      cp_async_wait<kStages - 1>();
      __syncwarp();  // tile t landed, the other lanes' chunks (and biases) included
    }
    const __nv_bfloat16* ks = smem + (t % kStageCount) * 2 * kTileElems;
    const __nv_bfloat16* vs = ks + kTileElems;
    if (tiles.wide(t)) {
      attend_wide_tile<D, kTop>(ks, bias + bias_at(t % kStages, 0, 0), vr.est_stride, bias_head, lane, o, st, ctx);
      continue;
    }

    // S = Q K^T: 16 (padded) heads x 16 keys, two n-tiles of 8 keys.
    float s[2][4];
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = 0.f;
#pragma unroll
      for (int kc = 0; kc < D / 16; kc += 2) {
        uint32_t kb[4];  // b0,b1 of k-chunk kc, then of kc + 1
        ldmatrix_x4(kb, ks + (n * 8 + (lane & 7)) * kStride + kc * 16 + (lane >> 3) * 8);
        mma_bf16_16816(s[n], qa[kc], kb[0], kb[1]);
        mma_bf16_16816(s[n], qa[kc + 1], kb[2], kb[3]);
      }
    }
    // This lane's head lane / 4 (c0, c1; c2, c3: head lane / 4 + 8 with kHigh, else padding rows):
    // keys n * 8 + 2 * (lane & 3) + e.
    const int v = tiles.start(t);
    const bool tile_bias = has_estimate(v);
    const uint32_t* tile_masks = masks + (t % kStageCount) * kTileRows;
    const float* row_bias = bias + row_bias_at(t % kStageCount, 0);  // kMasked's ln n per row
    // Whether this lane's head of member `m` attends the tile's row col (squeezed bundles).
    auto attends = [&](int col, int m) { return !kMasked || ((tile_masks[col] >> m) & 1u) != 0u; };
    float tile_max = neg_inf();
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = n * 8 + 2 * (lane & 3) + e, key = v + col;
        float x = key < w1 && attends(col, member) ? s[n][e] * scale_log2 : neg_inf();
        if (tile_bias && key < w1)
          x = fmaf(kMasked ? row_bias[col] : bias[bias_at(t % kStages, col, bias_head)], kLog2e, x);
        // A selected row's code is its physical row, in the same order as its virtual row (the
        // segments are in ascending cluster order): ties still go to the first row.
        if (kTop && key < vr.sparse_rows && key < w1 && x != neg_inf())
          top.offer(x, codes[(t % kStageCount) * kTileRows + col]);
        s[n][e] = x;
        tile_max = fmaxf(tile_max, x);
      }
    rescale_to_tile<D, kTop>(tile_max, st, ctx, o);
    float p[2][2];
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        p[n][e] = s[n][e] == neg_inf() ? 0.f : exp2f(s[n][e] - st.m);
        st.l += p[n][e];
        if (kTop && v + n * 8 + 2 * (lane & 3) + e < ctx_end) ctx += p[n][e];
      }
    uint32_t pa[4] = {pack_bf16(p[0][0], p[0][1]), 0u, pack_bf16(p[1][0], p[1][1]), 0u};
    if constexpr (kHigh) {  // heads 8..15: the same softmax over c2, c3, P's rows 8..15 (a1, a3)
      float hi_max = neg_inf();
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = n * 8 + 2 * (lane & 3) + e, key = v + col;
          s[n][2 + e] = key < w1 && attends(col, member_hi) ? s[n][2 + e] * scale_log2 : neg_inf();
          // An estimated cluster's ln n, the same for every head (only a squeezed bundle has an
          // estimate here, and it takes no estimate logits).
          if (kMasked && tile_bias && key < w1)
            s[n][2 + e] = fmaf(row_bias[col], kLog2e, s[n][2 + e]);
          if (kTop && key < vr.sparse_rows && key < w1 && s[n][2 + e] != neg_inf())
            top_hi.offer(s[n][2 + e], codes[(t % kStageCount) * kTileRows + col]);
          hi_max = fmaxf(hi_max, s[n][2 + e]);
        }
      rescale_to_tile<D, kTop, 1>(hi_max, st_hi, ctx_hi, o);
      float q[2][2];
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          q[n][e] = s[n][2 + e] == neg_inf() ? 0.f : exp2f(s[n][2 + e] - st_hi.m);
          st_hi.l += q[n][e];
          if (kTop && v + n * 8 + 2 * (lane & 3) + e < ctx_end) ctx_hi += q[n][e];
        }
      pa[1] = pack_bf16(q[0][0], q[0][1]);
      pa[3] = pack_bf16(q[1][0], q[1][1]);
    }
    add_pv<D>(pa, vs, lane, o);
  }
  cp_async_wait<0>();
  __syncwarp();  // the stage buffers are free for the caller
  if (kPair) pair_sync(pair);  // the partner's too: the caller reuses this warp's half of them
}

// Row r's read-ahead outputs: the top key's share of the context sum (ctx, relative to the max m,
// log2 units) and its position (the row's entry of perm), and the context LSE (natural log), or
// `empty_context_lse` where the context part is empty. One formula for the merging CTA's tail
// (write_top) and merge_decode_pieces' (where part B's context sum has been added to ctx).
__device__ void write_read_ahead(const TopKeys& out, int64_t r, const SequenceLayerBf16& s, int h, float m, float ctx,
                                 TopKey top, float empty_context_lse) {
  float share = 0.f;
  int position = -1;
  if (top.v >= 0 && ctx > 0.f) share = exp2f(top.s - m) / ctx;
  if (share > 0.f) {
    const int n = __ldg(s.offsets + static_cast<int64_t>(h) * (s.num_clusters + 1) + s.num_clusters);  // N
    position = __ldg(s.perm + static_cast<int64_t>(h) * n + top.v);
  }
  if (out.share) out.share[r] = share;
  if (out.position) out.position[r] = position;
  if (out.context_lse) out.context_lse[r] = ctx > 0.f && m != neg_inf() ? (m + log2f(ctx)) / kLog2e : empty_context_lse;
}

// Query head hq's read-ahead outputs (share, position) from its merged statistics and top key
// (TopKey::v: the physical row, which the tiles offer; see attend_rows). Two dependent loads (the
// head's row count, then the row's position), by the item's first lane (the one that merged the
// top key), in the merging CTA's tail: the step's last work. Before, the top key was a virtual
// row whose physical row the item's lanes searched for in the selection here (~5 dependent loads;
// the merging CTAs' merge took ~10 us at Llama-3 64K batch 1), though the step did not measurably
// change without the search (bench/kernels/NOTES.md run 20).
template <int D>
__device__ void write_top(const DecodeArgs& a, int bh, int64_t hq, const SoftmaxState& st, float ctx, TopKey top) {
  write_read_ahead(a.top, hq, a.seqs[bh / a.hkv], bh % a.hkv, st.m, ctx, top, neg_inf());
}

// Merge of head bh's partials (slots first.., n of them) in slot order; writes out, lse and (kTop)
// the top keys. The partials go to shared memory (the CTA's stage buffers, free after its piece)
// by cp.async, as many pieces at a time as fit (25 to 207): one round trip for a head's pieces
// where loads into registers, 8 pieces at a time, took one per 8 (five at Llama-3 512K batch 1,
// 33 pieces per head, at the end of the step's critical path). Every thread merges its (query
// head, 4 dims) items from there, in slot order.
template <int D, bool kTop, int kMaxRows>
__device__ void merge_head(const DecodeArgs& a, int bh, int first, int n, unsigned char* smem) {
  constexpr int kItems = (kMaxRows * D / 4 + kThreads - 1) / kThreads;
  const int G = a.g, items = G * D / 4;
  const int capacity = static_cast<int>(kSmemBytes<D> / (G * (sizeof(float) * D + sizeof(float4) + sizeof(int))));
  float* piece_o = reinterpret_cast<float*>(smem);                               // [capacity][G][D]
  float4* piece_st = reinterpret_cast<float4*>(piece_o + capacity * G * D);      // [capacity][G]
  int* piece_top = reinterpret_cast<int*>(piece_st + capacity * G);              // [capacity][G]
  SoftmaxState st[kItems];
  float ctx[kItems];
  TopKey top[kItems];
  float4 acc[kItems];
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    st[k] = SoftmaxState::empty();
    ctx[k] = 0.f;
    top[k] = TopKey::none();
    acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  for (int it = 0; it < n; it += capacity) {
    const int m = min(capacity, n - it);
    const int64_t slot0 = first + it;
    const float* from_o = a.ws.partial_o + slot0 * G * D;
    for (int c = threadIdx.x; c < m * G * D / 4; c += kThreads) cp_async_16(piece_o + c * 4, from_o + c * 4);
    for (int c = threadIdx.x; c < m * G; c += kThreads) {
      cp_async_16(piece_st + c, a.ws.partial_st + slot0 * G + c);
      if (kTop) piece_top[c] = __ldcg(a.ws.partial_top + slot0 * G + c);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int idx = threadIdx.x + k * kThreads;
      if (idx >= items) break;
      const int j = idx / (D / 4), d = idx % (D / 4) * 4;
      for (int u = 0; u < m; ++u) {
        const float4 ps = piece_st[u * G + j];
        const float4 po = *reinterpret_cast<const float4*>(piece_o + (u * G + j) * D + d);
        if (kTop && d == 0) top[k].offer(ps.w, piece_top[u * G + j]);
        const float2 w = st[k].merge({ps.x, ps.y});  // (keep, add)
        if (kTop) ctx[k] = ctx[k] * w.x + ps.z * w.y;
        acc[k].x = acc[k].x * w.x + po.x * w.y;
        acc[k].y = acc[k].y * w.x + po.y * w.y;
        acc[k].z = acc[k].z * w.x + po.z * w.y;
        acc[k].w = acc[k].w * w.x + po.w * w.y;
      }
    }
    __syncthreads();  // the next batch, or the next piece's tiles, reuses the buffers
  }
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int idx = threadIdx.x + k * kThreads;
    if (idx >= items) break;
    const int j = idx / (D / 4), d = idx % (D / 4) * 4;
    const int64_t hq = static_cast<int64_t>(bh) * G + j;
    __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(a.out + hq * D + d);
    const float inv = st[k].l > 0.f ? 1.f / st[k].l : 0.f;
    dst[0] = __floats2bfloat162_rn(acc[k].x * inv, acc[k].y * inv);
    dst[1] = __floats2bfloat162_rn(acc[k].z * inv, acc[k].w * inv);
    if (d == 0 && a.lse) a.lse[hq] = st[k].lse();
    if (kTop && d == 0) write_top<D>(a, bh, hq, st[k], ctx[k], top[k]);  // the lane that merged the top key
  }
}

// Exclusive prefix sum over the CTA's threads, in thread order, and the total (every thread calls
// it; `warp_sums` is kWarps slots of shared memory, free when it is called).
__device__ __forceinline__ void block_prefix_sum(long long mine, long long* warp_sums, long long* before,
                                                 long long* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  long long incl = mine;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const long long y = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += y;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  *total = 0;
  *before = incl - mine;
  for (int w = 0; w < kWarps; ++w) {
    *total += warp_sums[w];
    if (w < warp) *before += warp_sums[w];
  }
}

// Brings [p, p + bytes) into this SM's L1, one 128-byte line per thread and round.
__device__ __forceinline__ void prefetch_l1(const void* p, size_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{127};
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + bytes;
  for (uintptr_t line = first + threadIdx.x * 128; line < end; line += kThreads * 128)
    asm volatile("prefetch.global.L1 [%0];" ::"l"(line));
}

// kTop: read-ahead's top keys (TopKeys); kWide: estimated rows in wide tiles (WarpTiles); kHigh:
// groups above 8 (query heads 8..15 in the MMA tile's rows 8..15; no wide tiles), or a squeezed
// bundle's at any group; kPair: groups above 16 (kHigh's too), each pair of warps streaming tiles
// for 2 x 16 query heads; kMasked: a squeezed bundle's (Selection::member_masks; kHigh's).
template <int D, bool kTop, bool kWide, bool kHigh, bool kPair, bool kMasked>
// Two CTAs per SM at D = 128 (smem: 102 KB each; ~180 registers fit). D = 64 has smem for four but
// needs ~136 registers (a cap of 128 spilled), so three: 12 warps, up to ~96 KB of copies in flight;
// two with top keys for query heads 8..15 as well (a squeezed bundle's), which spill under three.
__global__ void __launch_bounds__(kThreads, D == 64 && !(kTop && kHigh) ? 3 : 2) decode_kernel(DecodeArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ long long warp_units[kWarps];
  __shared__ long long first_head_start;
  __shared__ int first_head, merge_flag;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int num_heads = a.batch * a.hkv, G = a.g;
  if (!a.next_beside) allow_next_grid();
  DECODE_TRACE(0);
  // The views are written by the host before the step: into L1 under the selection's tail, since
  // the split and virtual_rows read them first thing after the wait.
  prefetch_l1(a.seqs, sizeof(SequenceLayerBf16) * a.batch);
  // Everything below reads the selection or writes; a static selection (DecodeLaunch) is read
  // before the wait, which then comes after the split.
  // Beside the previous launch (DecodeLaunch::beside_previous, static selections only): no wait
  // until the end.
  if (!a.static_selection && !a.beside_previous) wait_for_previous_grid();
  DECODE_TRACE(1);
  prefetch_l1(a.sel.counts, sizeof(int32_t) * num_heads);  // virtual_rows; rows / estimated: the split

  // The split, computed identically by every CTA from the device-side counts: prefix sums of the
  // heads' cost over a contiguous chunk of heads per thread give the layout (decode_split.h), then
  // prefix sums of the heads' extents in it this CTA's range [f0, f1) and the head it starts in.
  const int per_thread = (num_heads + kThreads - 1) / kThreads;
  const int h_lo = min(tid * per_thread, num_heads), h_hi = min(h_lo + per_thread, num_heads);
  long long mine = 0;
  for (int x = h_lo; x < h_hi; ++x) mine += head_cost(a, x).units();
  long long units_before, units_total;
  block_prefix_sum(mine, warp_units, &units_before, &units_total);
  const decode_split::HeadLayout layout =
      decode_split::head_layout(units_total, gridDim.x, num_heads, a.start_cost_cap, a.align_heads, a.align_min_ctas);
  long long chunk_start = units_before + layout.start_cost * h_lo;  // flat: extent = start cost + units
  long long extents = mine + layout.start_cost * (h_hi - h_lo);
  long long total = units_total + layout.start_cost * num_heads;
  if (layout.aligned) {  // CTA-uniform: extents rounded up to whole ranges, a second scan
    extents = 0;
    for (int x = h_lo; x < h_hi; ++x) extents += layout.extent(head_cost(a, x).units());
    __syncthreads();  // every thread has read warp_units
    block_prefix_sum(extents, warp_units, &chunk_start, &total);
  }
  const long long per_cta = layout.per_cta;
  const long long f0 = blockIdx.x * per_cta;
  if (a.static_selection && !a.beside_previous) wait_for_previous_grid();  // the queries, the dense rows' last row, the outputs
  // The next launch runs beside this one (DecodeLaunch::next_beside): scheduled only now, so that
  // the kernels before this one are complete when its CTAs start on the SMs this one's leave.
  if (a.next_beside) allow_next_grid();
  if (f0 >= total) {  // CTA-uniform: no rows left for this CTA
    DECODE_TRACE(2);
    DECODE_TRACE(6);
    if (a.beside_previous) wait_for_previous_grid();  // this launch's end implies the previous one's
    return;
  }
  const long long f1 = min(f0 + per_cta, total);
  if (chunk_start <= f0 && f0 < chunk_start + extents) {  // one thread holds f0's head
    for (int x = h_lo;; ++x) {
      const long long extent = layout.extent(head_cost(a, x).units());
      if (f0 < chunk_start + extent) {
        first_head = x;
        first_head_start = chunk_start;
        break;
      }
      chunk_start += extent;
    }
  }
  __syncthreads();
  DECODE_TRACE(2);

  __nv_bfloat16* warp_smem = reinterpret_cast<__nv_bfloat16*>(smem_raw) + warp * kWarpSmemElems<D>;
  // kPair: a pair's stage buffers are its two warps' (consecutive), 2 kStages stages.
  const int pair = warp >> 1, half = warp & 1;
  constexpr bool kInTurn = kTilesInTurn<kWide, kTop>;
  __nv_bfloat16* pair_smem = reinterpret_cast<__nv_bfloat16*>(smem_raw) + 2 * pair * kWarpSmemElems<D>;
  float* biases = reinterpret_cast<float*>(reinterpret_cast<__nv_bfloat16*>(smem_raw) + kWarps * kWarpSmemElems<D>);
  float* warp_bias = biases + warp * kWarpBiases;
  int* warp_codes = reinterpret_cast<int*>(biases + kWarps * kWarpBiases) + warp * kWarpCodes;
  uint32_t* warp_masks =
      reinterpret_cast<uint32_t*>(reinterpret_cast<int*>(biases + kWarps * kWarpBiases) + kWarps * kWarpCodes) +
      warp * kWarpMasks;
  int bh = first_head;
  [[maybe_unused]] int pieces = 0, merges = 0;  // DECODE_TRACE_COUNTS
  for (long long head_start = first_head_start; head_start < f1; ++bh) {
    const int b = bh / a.hkv, h = bh % a.hkv;
    const VirtualRows vr = virtual_rows<D>(a.seqs[b], a.sel, b, h, a.hkv, /*decode_group=*/a.g);
    const HeadCost cost = head_cost(a, bh);
    // The head's units lie at [at, at + units), after its start cost. This piece: head rows [r0,
    // r1), none when the range only meets the start cost or part of a row; the head's pieces are
    // first_cta .. first_cta + num_pieces - 1 (decode_split.h).
    const long long at = head_start + layout.lead();
    head_start += layout.extent(cost.units());
    const decode_split::Piece piece = decode_split::piece_of(cost, at, f0, f1, per_cta);
    if (piece.r1 <= piece.r0) continue;  // CTA-uniform
    const int first_cta = piece.first_cta, num_pieces = piece.num_pieces;
    const int slot = blockIdx.x + bh;

    // Warp ranges, clipped to the head's real rows: kInTurn, from the warp's first tile to the
    // piece's end (every kWarps-th tile); kPair, the same for the pair (both warps of a pair the
    // same tiles); else equal cost, whole tiles.
    const int w0 = kPair     ? piece.r0 + pair * kTileRows
                   : kInTurn ? piece.r0 + warp * kTileRows
                             : piece.warp_start(cost, warp);
    const int w1 = min(kPair || kInTurn ? piece.r1 : piece.warp_start(cost, warp + 1), vr.total());

    // Q as A fragments: row lane / 4 = query head g of the group (a0: dims 2*(lane&3)+{0,1} of
    // the 16-dim chunk, a2: the same + 8); rows >= G are zero, and so are rows 8..15 (a1, a3)
    // but with kHigh, where they are query heads g + 8. kPair: query heads 16 half + those.
    const int g = lane >> 2 | (kPair ? half * 16 : 0);
    uint32_t qa[D / 16][4];
    {
      int64_t row = static_cast<int64_t>(bh) * G + min(g, G - 1), row_hi = static_cast<int64_t>(bh) * G + min(g + 8, G - 1);
      if (a.q_rows) {
        row = __ldg(a.q_rows + row);
        row_hi = __ldg(a.q_rows + row_hi);
      }
      const __nv_bfloat16* q = a.q + row * D + 2 * (lane & 3);
      const __nv_bfloat16* q_hi = a.q + row_hi * D + 2 * (lane & 3);
      const bool hi = kHigh && g + 8 < G;
#pragma unroll
      for (int kc = 0; kc < D / 16; ++kc) {
        qa[kc][0] = g < G ? __ldg(reinterpret_cast<const unsigned*>(q + kc * 16)) : 0u;
        qa[kc][1] = hi ? __ldg(reinterpret_cast<const unsigned*>(q_hi + kc * 16)) : 0u;
        qa[kc][2] = g < G ? __ldg(reinterpret_cast<const unsigned*>(q + kc * 16 + 8)) : 0u;
        qa[kc][3] = hi ? __ldg(reinterpret_cast<const unsigned*>(q_hi + kc * 16 + 8)) : 0u;
      }
    }
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] = 0.f;
    SoftmaxState st = SoftmaxState::empty(), st_hi = SoftmaxState::empty();
    float ctx = 0.f, ctx_hi = 0.f;
    TopKey top = TopKey::none(), top_hi = TopKey::none();
    // A squeezed bundle's members of this lane's query heads g and g + 8 (Selection::member_masks).
    const int mg = max(a.sel.member_group, 1);
    attend_rows<D, kTop, kWide, kHigh, kPair, kMasked>(vr, w0, w1, qa, kPair ? pair_smem : warp_smem, warp_bias, warp_codes,
                                              warp_masks, min(g / mg, 31), min((g + 8) / mg, 31), a.scale_log2, lane,
                                              pair, half, o, st, st_hi, ctx, top, ctx_hi, top_hi);
    if (pieces == 0) DECODE_TRACE(3);
    st.l += __shfl_xor_sync(0xffffffffu, st.l, 1);
    st.l += __shfl_xor_sync(0xffffffffu, st.l, 2);
    if (kHigh) {
      st_hi.l += __shfl_xor_sync(0xffffffffu, st_hi.l, 1);
      st_hi.l += __shfl_xor_sync(0xffffffffu, st_hi.l, 2);
    }
    if (kTop) {
      ctx += __shfl_xor_sync(0xffffffffu, ctx, 1);
      ctx += __shfl_xor_sync(0xffffffffu, ctx, 2);
      top.quad_reduce();
      if (kHigh) {
        ctx_hi += __shfl_xor_sync(0xffffffffu, ctx_hi, 1);
        ctx_hi += __shfl_xor_sync(0xffffffffu, ctx_hi, 2);
        top_hi.quad_reduce();
      }
    }

    // Combine the warps: each stores (o, statistics) in its own stage buffers (free after
    // attend_rows), then the CTA writes the piece's partial relative to the piece max M.
    {
      float* red_o = reinterpret_cast<float*>(warp_smem);             // [G][D]
      float4* red_st = reinterpret_cast<float4*>(red_o + G * D);      // [G] (m, l, l_ctx, top logit)
      int* red_top = reinterpret_cast<int*>(red_st + G);              // [G]
      if (g < G) {
#pragma unroll
        for (int n = 0; n < D / 8; ++n)
          *reinterpret_cast<float2*>(red_o + g * D + n * 8 + 2 * (lane & 3)) = make_float2(o[n][0], o[n][1]);
        if ((lane & 3) == 0) {
          red_st[g] = make_float4(st.m, st.l, ctx, top.s);
          red_top[g] = top.v;
        }
      }
      if (kHigh && g + 8 < G) {  // heads 8..15 from c2, c3
#pragma unroll
        for (int n = 0; n < D / 8; ++n)
          *reinterpret_cast<float2*>(red_o + (g + 8) * D + n * 8 + 2 * (lane & 3)) = make_float2(o[n][2], o[n][3]);
        if ((lane & 3) == 0) {
          red_st[g + 8] = make_float4(st_hi.m, st_hi.l, ctx_hi, top_hi.s);
          red_top[g + 8] = top_hi.v;
        }
      }
    }
    __syncthreads();
    for (int idx = tid; idx < G * D / 4; idx += kThreads) {
      const int j = idx / (D / 4), d = idx % (D / 4) * 4;
      // Warp w's stored (o, statistics), as written above from its warp_smem.
      auto warp_o = [&](int w) { return reinterpret_cast<const float*>(smem_raw) + w * (kWarpSmemElems<D> / 2); };
      auto warp_st = [&](int w) { return reinterpret_cast<const float4*>(warp_o(w) + G * D)[j]; };
      auto warp_top = [&](int w) { return reinterpret_cast<const int*>(reinterpret_cast<const float4*>(warp_o(w) + G * D) + G)[j]; };
      // The warps that attended row j: all, or (kPair) the warps of half j / 16.
      constexpr int kStreams = kPair ? kWarps / 2 : kWarps;
      auto owner = [&](int k) { return kPair ? 2 * k + j / 16 : k; };
      float M = neg_inf();
#pragma unroll
      for (int k = 0; k < kStreams; ++k) M = fmaxf(M, warp_st(owner(k)).x);
      float L = 0.f, C = 0.f;
      TopKey T = TopKey::none();
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
      if (M != neg_inf()) {
#pragma unroll
        for (int k = 0; k < kStreams; ++k) {
          const int w = owner(k);
          const float4 sw = warp_st(w);
          const float wt = SoftmaxState{sw.x, sw.y}.weight_at(M);
          const float4 ow = *reinterpret_cast<const float4*>(warp_o(w) + j * D + d);
          L += sw.y * wt;
          if (kTop) C += sw.z * wt;
          acc.x += ow.x * wt;
          acc.y += ow.y * wt;
          acc.z += ow.z * wt;
          acc.w += ow.w * wt;
        }
      }
      *reinterpret_cast<float4*>(a.ws.partial_o + (static_cast<int64_t>(slot) * G + j) * D + d) = acc;
      if (d == 0) {
        if (kTop) {
#pragma unroll
          for (int k = 0; k < kStreams; ++k) T.offer(warp_st(owner(k)).w, warp_top(owner(k)));
          a.ws.partial_top[static_cast<int64_t>(slot) * G + j] = T.v;
        }
        a.ws.partial_st[static_cast<int64_t>(slot) * G + j] = make_float4(M, L, C, T.s);
      }
    }

    // The head's last piece to finish merges all of them, or merge_decode_pieces does. (The
    // barriers here also order this piece's smem reads before the next piece's copies.)
    if (a.defer_merge) {
      if (tid == 0) a.ws.head_pieces[bh] = make_int2(first_cta + bh, num_pieces);  // every piece: the same
      __syncthreads();
      if (pieces++ == 0) {
        DECODE_TRACE(4);
        DECODE_TRACE(5);
      }
      continue;
    }
    __threadfence();
    __syncthreads();
    if (tid == 0) merge_flag = atomicAdd(a.ws.tickets + bh, 1) == num_pieces - 1;
    __syncthreads();
    if (pieces == 0) DECODE_TRACE(4);
    if (merge_flag) {
      __threadfence();
      merge_head<D, kTop, kPair ? 2 * kMmaRows : kHigh ? kMmaRows : kMaxGroup>(a, bh, first_cta + bh, num_pieces,
                                                                               smem_raw);
      if (tid == 0) a.ws.tickets[bh] = 0;  // ready for the next launch (DecodeLaunch::tickets)
      ++merges;
    }
    if (pieces++ == 0) DECODE_TRACE(5);
  }
  DECODE_TRACE(6);
  DECODE_TRACE_COUNTS(pieces, merges);
  if (a.beside_previous) wait_for_previous_grid();  // this launch's end implies the previous one's
}

using DecodeKernel = void (*)(DecodeArgs);

// merge_decode_pieces: one warp per output row, lane l holding dims [4l, 4l + 4). A row's pieces
// are loaded kMergeAhead at a time (independent L2 loads in flight) and merged in slot order with
// the same operations as merge_head, then with part B (merge_parts_ref.h's formula).
constexpr int kMergeWarps = 8;
constexpr int kMergeAhead = 8;

struct MergePiecesArgs {
  DecodeWorkspace ws;
  int rows, g;
  const int32_t* a_row;
  const __nv_bfloat16* b_out;
  const float* b_lse;
  __nv_bfloat16* out;
  float* lse;
  // kTop: the launch's views (perm, offsets), its KV heads, part B's context LSE and the outputs.
  const SequenceLayerBf16* seqs;
  int hkv;
  const float* b_context_lse;
  TopKeys top;
};

// kTop: also read-ahead's top key of each row, from the pieces' (slot order, as merge_head) and
// their context sums with part B's (merge_decode_pieces).
template <int D, bool kTop>
__global__ void __launch_bounds__(kMergeWarps * 32) merge_pieces_kernel(MergePiecesArgs m) {
  allow_next_grid();
  const int r = blockIdx.x * kMergeWarps + static_cast<int>(threadIdx.x >> 5), lane = threadIdx.x & 31;
  wait_for_previous_grid();  // the pieces are the previous kernel's output
  if (r >= m.rows) return;
  const int64_t ar = m.a_row != nullptr ? m.a_row[r] : r;
  const int bh = static_cast<int>(ar / m.g), j = static_cast<int>(ar % m.g);
  const int2 hp = __ldcg(m.ws.head_pieces + bh);  // (first slot, pieces)
  const bool mine = lane < D / 4;
  SoftmaxState st = SoftmaxState::empty();
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  float ctx = 0.f;
  TopKey top = TopKey::none();
  for (int u0 = 0; u0 < hp.y; u0 += kMergeAhead) {
    float4 ps[kMergeAhead], po[kMergeAhead];
    int pt[kMergeAhead];
#pragma unroll
    for (int k = 0; k < kMergeAhead; ++k) {
      const int64_t at = static_cast<int64_t>(hp.x + min(u0 + k, hp.y - 1)) * m.g + j;
      ps[k] = __ldcg(m.ws.partial_st + at);
      po[k] = mine ? __ldcg(reinterpret_cast<const float4*>(m.ws.partial_o + at * D) + lane)
                   : make_float4(0.f, 0.f, 0.f, 0.f);
      if (kTop) pt[k] = __ldcg(m.ws.partial_top + at);
    }
#pragma unroll
    for (int k = 0; k < kMergeAhead; ++k) {
      if (u0 + k >= hp.y) break;
      if (kTop) top.offer(ps[k].w, pt[k]);
      const float2 w = st.merge({ps[k].x, ps[k].y});  // (keep, add)
      if (kTop) ctx = ctx * w.x + ps[k].z * w.y;
      acc.x = acc.x * w.x + po[k].x * w.y;
      acc.y = acc.y * w.x + po[k].y * w.y;
      acc.z = acc.z * w.x + po[k].z * w.y;
      acc.w = acc.w * w.x + po[k].w * w.y;
    }
  }
  // Part A normalized, then the two parts weighted by their LSEs (natural log).
  const float la = st.lse(), inv_l = st.l > 0.f ? 1.f / st.l : 0.f;
  const float lb = m.b_out != nullptr ? m.b_lse[r] : neg_inf();
  const float mx = fmaxf(la, lb);
  float wa = la == neg_inf() ? 0.f : __expf(la - mx);
  float wb = lb == neg_inf() ? 0.f : __expf(lb - mx);
  const float sum = wa + wb;
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  wa *= inv * inv_l;
  wb *= inv;
  if (mine) {
    float4 b = make_float4(0.f, 0.f, 0.f, 0.f);
    if (wb > 0.f) {  // an empty part's output is never read
      const uint2 bits = *reinterpret_cast<const uint2*>(m.b_out + static_cast<int64_t>(r) * D + lane * 4);
      const float2 b01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bits.x));
      const float2 b23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bits.y));
      b = make_float4(b01.x, b01.y, b23.x, b23.y);
    }
    __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(m.out + static_cast<int64_t>(r) * D + lane * 4);
    dst[0] = __floats2bfloat162_rn(wa * acc.x + wb * b.x, wa * acc.y + wb * b.y);
    dst[1] = __floats2bfloat162_rn(wa * acc.z + wb * b.z, wa * acc.w + wb * b.w);
  }
  if (m.lse != nullptr && lane == 0) m.lse[r] = sum > 0.f ? mx + __logf(sum) : neg_inf();
  if constexpr (kTop) {
    if (lane != 0) return;
    // The context sum relative to part A's max (log2 units): A's, plus part B's (its estimate and
    // window: the squeezed bundles' members) where given.
    const float cb = m.b_context_lse != nullptr ? m.b_context_lse[r] : neg_inf();
    if (cb != neg_inf()) ctx += st.m == neg_inf() ? INFINITY : exp2f(cb * kLog2e - st.m);
    write_read_ahead(m.top, r, m.seqs[bh / m.hkv], bh % m.hkv, st.m, ctx, top, cb);
  }
}

// The group size is a kernel argument (any 1..8: the group's heads are rows of one 16-row MMA
// tile, so it changes no loop the streaming depends on); 9..16 take the kHigh variant and 17..32
// the kPair one, which have no wide tiles and top keys only for squeezed bundles (masked). A
// squeezed bundle takes them at any group; without top keys its variants have the dense bundles'
// launch bounds (so the same grid: merge_decode_pieces finds the pieces of either).
template <int D>
DecodeKernel kernel_for(bool top, bool wide, bool high, bool pair, bool masked) {
  if (masked) {
    if (top) return pair ? decode_kernel<D, true, false, true, true, true> : decode_kernel<D, true, false, true, false, true>;
    return pair ? decode_kernel<D, false, false, true, true, true> : decode_kernel<D, false, false, true, false, true>;
  }
  if (high) {
    if (wide || top) return nullptr;
    return pair ? decode_kernel<D, false, false, true, true, false> : decode_kernel<D, false, false, true, false, false>;
  }
  if (wide)
    return top ? decode_kernel<D, true, true, false, false, false> : decode_kernel<D, false, true, false, false, false>;
  return top ? decode_kernel<D, true, false, false, false, false> : decode_kernel<D, false, false, false, false, false>;
}

// wide: the selection provides the estimate's logits and 32 rows of them fit a stage (WarpTiles).
// masked: a squeezed bundle's launch (Selection::member_masks).
DecodeKernel kernel_for(int head_dim, int group, bool top, bool wide, bool masked = false) {
  if (group < 1 || group > kMaxDecodeGroup) return nullptr;
  const bool high = group > kMaxGroup, pair = group > kMmaRows;
  wide = !high && !masked && wide && estimate_logit_stride(group) * kWideTileRows <= kTileRows * kMaxGroup;
  if (head_dim == 64) return kernel_for<64>(top, wide, high, pair, masked);
  if (head_dim == 128) return kernel_for<128>(top, wide, high, pair, masked);
  return nullptr;
}

size_t smem_bytes(int head_dim) { return head_dim == 64 ? kSmemBytes<64> : kSmemBytes<128>; }

// The grid of a launch and the CTAs a head from which its heads align.
struct Grid {
  int ctas = 1;
  int align_min_ctas = static_cast<int>(decode_split::kAlignMinCtasPerHead);
};

// Sets the kernel's smem limits and picks the grid for `heads` (sequence, KV head) pairs:
// launch.num_ctas, or with one_wave_per_heads k CTAs a head (DecodeLaunch), or every CTA the
// device holds at once times launch.waves (the flat split gives each CTA an equal share of 1 /
// grid: one wave of equal ranges, or several shorter ones that the block scheduler balances).
cudaError_t configure(DecodeKernel kernel, int head_dim, const DecodeLaunch& launch, int heads, Grid* grid) {
  const size_t smem = smem_bytes(head_dim);
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err == cudaSuccess)
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared);
  if (err != cudaSuccess) return err;
  if (launch.num_ctas > 0) {
    grid->ctas = launch.num_ctas;
    return cudaSuccess;
  }
  int dev = 0, sms = 0, per_sm = 0;
  err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  const int wave = std::max(1, per_sm) * std::max(1, sms);
  grid->ctas = wave * std::max(1, launch.waves);
  const int per_head = std::min(wave / std::max(1, heads), static_cast<int>(decode_split::kAlignMinCtasPerHead));
  if (launch.one_wave_per_heads && per_head >= 2) *grid = {per_head * heads, per_head};  // never above `wave`
  return err;
}

}  // namespace
}  // namespace detail

int set_decode_trace(unsigned long long* trace, int max_ctas) {
#ifdef SQZ_DECODE_TRACE
  cudaError_t err = cudaMemcpyToSymbol(detail::g_trace, &trace, sizeof trace);
  if (err == cudaSuccess) err = cudaMemcpyToSymbol(detail::g_trace_ctas, &max_ctas, sizeof max_ctas);
  return err;
#else
  (void)trace;
  (void)max_ctas;
  return cudaErrorNotSupported;
#endif
}

size_t decode_attention_workspace_bytes(const AttentionShape& shape, const DecodeLaunch& launch) {
  using namespace detail;
  // Unsupported shapes (the launch rejects them) and failed queries fall back to launch.num_ctas or 1.
  // The grid of every variant (with and without TopKeys, wide tiles) fits.
  int ctas = std::max(1, launch.num_ctas);
  // (The masked variants' grids are never larger: their launch bounds are the unmasked high
  // variants', or two CTAs a SM where those have three; the engine's Plan calls this every step.)
  for (const bool top : {false, true})
    for (const bool wide : {false, true}) {
      Grid variant{ctas};
      if (const DecodeKernel kernel = kernel_for(shape.head_dim, shape.group(), top, wide))
        configure(kernel, shape.head_dim, launch, shape.batch * shape.num_kv_heads, &variant);
      ctas = std::max(ctas, variant.ctas);
    }
  return DecodeWorkspace(shape, ctas, nullptr).bytes;
}

int sparse_decode_attention(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                            const Selection& selection, void* out, float* lse, void* workspace,
                            const DecodeLaunch& launch, void* stream, const TopKeys& top) {
  using namespace detail;
  const int g = shape.group();
  const bool with_top = top.position != nullptr || top.share != nullptr || top.context_lse != nullptr;
  const DecodeKernel kernel = kernel_for(shape.head_dim, g, with_top,
                                         selection.estimate_logits != nullptr && launch.wide_estimate_tiles,
                                         selection.member_masks != nullptr);
  if (!kernel || shape.query_len != 1 || shape.num_q_heads != g * shape.num_kv_heads ||
      shape.batch * shape.num_kv_heads > kMaxHeads)
    return cudaErrorInvalidValue;
  // Groups above 8 have no bias rows for heads 8..15: the pruned-cluster estimate only where its
  // bias is ln n for every head, a squeezed bundle's (estimate_masks; no estimate logits).
  const bool estimate =
      selection.estimated != nullptr || selection.estimate_ids != nullptr || selection.estimate_logits != nullptr;
  const bool bundle_estimate = selection.member_masks != nullptr && selection.estimate_masks != nullptr &&
                               selection.estimate_log_sizes != nullptr && selection.estimate_logits == nullptr;
  if (g > kMaxGroup && estimate && !bundle_estimate) return cudaErrorInvalidValue;
  // A squeezed bundle: whole members in the group, at most 32 (a mask bit each); an estimate only
  // with the members' masks for it.
  if (selection.member_masks != nullptr &&
      (selection.member_group < 1 || g % selection.member_group != 0 || g / selection.member_group > 32 ||
       (estimate && !bundle_estimate)))
    return cudaErrorInvalidValue;
  if (selection.estimate_masks != nullptr && selection.member_masks == nullptr) return cudaErrorInvalidValue;
  Grid grid;
  cudaError_t err = configure(kernel, shape.head_dim, launch, shape.batch * shape.num_kv_heads, &grid);
  if (err != cudaSuccess) return err;
  const auto st = static_cast<cudaStream_t>(stream);
  // Deferred: no estimate logits (the wide-tile variant's grid could differ from the one
  // merge_decode_pieces finds the pieces by); top keys are the merge's to write, and it must be
  // told (its `top`), for the same reason.
  if (launch.defer_merge && selection.estimate_logits != nullptr) return cudaErrorInvalidValue;
  // Beside the previous launch: what it reads must be staged by the host, and no ticket memset may
  // stand between the two (it would wait for the previous launch to end).
  if (launch.beside_previous && (!launch.static_selection || (!launch.tickets && !launch.defer_merge)))
    return cudaErrorInvalidValue;
  DecodeArgs a{seqs, static_cast<const __nv_bfloat16*>(q), selection, static_cast<__nv_bfloat16*>(out), lse, top,
               DecodeWorkspace(shape, grid.ctas, workspace), shape.batch, shape.num_kv_heads, g,
               kLog2e / sqrtf(static_cast<float>(shape.head_dim)),
               kRowCost * (launch.piece_start_rows < 0 ? kDefaultPieceStartRows : launch.piece_start_rows),
               launch.align_heads, grid.align_min_ctas, launch.defer_merge, launch.static_selection,
               launch.next_beside, launch.beside_previous, launch.q_rows};
  if (launch.tickets) {
    a.ws.tickets = launch.tickets;  // zero, as every launch leaves them: no memset between selection and this
  } else if (!launch.defer_merge) {  // a deferred launch takes no tickets
    err = cudaMemsetAsync(a.ws.tickets, 0, sizeof(int) * shape.batch * shape.num_kv_heads, st);
    if (err != cudaSuccess) return err;
  }
  return launch_chained(kernel, dim3(grid.ctas), dim3(kThreads), smem_bytes(shape.head_dim), st, a);
}

int merge_decode_pieces(const AttentionShape& shape, const DecodeLaunch& launch, const void* workspace, int rows,
                        const int32_t* a_row, const void* b_out, const float* b_lse, void* out, float* lse,
                        void* stream, const SequenceLayerBf16* seqs, const TopKeys& top, const float* b_context_lse,
                        bool masked) {
  using namespace detail;
  const int g = shape.group();
  const bool with_top = top.position != nullptr || top.share != nullptr || top.context_lse != nullptr;
  // The launch's grid, hence where its workspace holds the pieces: its variant's (deferred launches
  // have no wide tiles).
  const DecodeKernel kernel = kernel_for(shape.head_dim, g, with_top, /*wide=*/false, masked);
  if (!kernel || rows < 0 || shape.num_q_heads != g * shape.num_kv_heads || (b_out != nullptr && b_lse == nullptr) ||
      (with_top && seqs == nullptr))
    return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  Grid grid;
  const cudaError_t err = configure(kernel, shape.head_dim, launch, shape.batch * shape.num_kv_heads, &grid);
  if (err != cudaSuccess) return err;
  const MergePiecesArgs m{DecodeWorkspace(shape, grid.ctas, const_cast<void*>(workspace)),
                          rows,
                          g,
                          a_row,
                          static_cast<const __nv_bfloat16*>(b_out),
                          b_lse,
                          static_cast<__nv_bfloat16*>(out),
                          lse,
                          seqs,
                          shape.num_kv_heads,
                          b_context_lse,
                          top};
  const dim3 ctas((rows + kMergeWarps - 1) / kMergeWarps), block(kMergeWarps * 32);
  const auto st = static_cast<cudaStream_t>(stream);
  if (with_top) {
    return shape.head_dim == 64 ? launch_chained(merge_pieces_kernel<64, true>, ctas, block, 0, st, m)
                                : launch_chained(merge_pieces_kernel<128, true>, ctas, block, 0, st, m);
  }
  return shape.head_dim == 64 ? launch_chained(merge_pieces_kernel<64, false>, ctas, block, 0, st, m)
                              : launch_chained(merge_pieces_kernel<128, false>, ctas, block, 0, st, m);
}

}  // namespace squeezeserve::kernels
