// Sparse decode attention on the GPU: one query token per sequence, attending to its KV head's
// selected cluster segments and the dense part (window + own tokens, all preceding: no mask).
// Plain C++ header; CPU reference with the same contract: attention_ref.h (query_len = 1).
//
// One launch, split-K: the selected rows of every (sequence, KV head) plus its dense rows are laid
// end to end (each head's start charged as extra rows: DecodeLaunch::piece_start_rows) and cut into
// one equal contiguous range of cost per CTA, so heads with very different kept
// counts balance; each range loads its rows once for the whole GQA group (tensor cores, the group's
// query heads as matrix rows) and writes an fp32 partial (o, max, sum) per head it overlaps; the
// last piece of a head to finish merges the head's partials in order (deterministic log-sum-exp
// merge), or merge_decode_pieces does after the launch (DecodeLaunch::defer_merge). Counts are read from device memory: no host round trip. With the pruned-cluster estimate
// (Selection::estimated) the estimated clusters are rows too (one key each; with
// Selection::estimate_logits their logits come from the selection and only their mean values are
// read); with TopKeys, each query head's most attended selected key (read-ahead) is merged beside
// the LSE.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

struct DecodeLaunch {
  int32_t num_ctas = 0;  // grid size; 0 = the CTAs the current device holds at once, times `waves`
  // With num_ctas = 0, the grid in waves of what the device holds at once, each CTA a range of
  // 1 / waves the length: the block scheduler then hands the later ranges to the SMs that finish
  // first. Why: CTAs with equal ranges end up to 20% apart (NOTES.md run 14's trace), and Nsight
  // Compute put the SMs' active time at 82% of the accurate attention's (Llama-3 128K batch 8,
  // run 18). Costs: more pieces per head, each a partial to write and merge. Measured (run 19,
  // "*-wavesN" rows): 4 waves win only where a CTA's range is long (Llama-3 512K batch 8: 4-13%)
  // and lose 27-37% at batch 1, so 1 until an H200 run at 512K decides a rule.
  int32_t waves = 1;
  // Estimated rows whose logits the selection provides go 32 to a warp tile instead of 16 (query
  // groups up to 4; decode_attention.cu "WarpTiles"): the accurate lookup's attention 3-5% faster
  // at batch 8 over a flat index, and its end-to-end TPOT at 64K batch 8 1.15x -> 1.05-1.08x the
  // paper lookup's (bench/kernels/NOTES.md run 19). Off over a two-level index (the engine sets it): the
  // chained step there took 4-7 us longer at batch 1 with them, for reasons not yet known.
  bool wide_estimate_tiles = true;
  // Nullable device array of at least B * H_kv ints, all zero before the first launch that uses
  // it; every launch leaves them zero (each head's last piece resets its own). Unset, the launch
  // zeroes its workspace's tickets with a memset first, which stands between the selection's last
  // kernel and this one and so stops them overlapping (launch.h); the workspace cannot hold them
  // across launches because the selection reuses it.
  int32_t* tickets = nullptr;
  // The split's charge for starting a piece, in rows (decode_attention.cu "Work split"): each head
  // counts as min(this, rows per CTA / 4) extra rows, so a CTA that also ends the head before it
  // streams that many fewer. -1: kDefaultPieceStartRows; 0: the plain equal split.
  int32_t piece_start_rows = -1;
  // Where the grid has at least 16 CTAs per head (batch 1: Llama-3 has 33 a head on an H100), each
  // head starts at a CTA boundary, so that no CTA has two pieces (decode_split.h HeadLayout);
  // piece_start_rows then does not apply. false: always the flat split.
  bool align_heads = true;
  // For a launch of many short heads (the shared-context bundles' own tokens: ~100 rows a head):
  // the grid is k CTAs a head, k = what one wave of the device holds a head (2..16; fewer than 2:
  // the device-sized grid), each head aligned to CTA ranges (so a head of up to ~128 rows is one
  // CTA's; longer ones spread over up to k), the CTAs without rows returning after the split. Why:
  // the device-sized grid made the ~100-row heads straddle CTAs (two pieces and a merge each: 26 us
  // a layer at Llama-3-8B batch 8, run 24), and 16 CTAs a head (run 25) ran the idle CTAs in four
  // waves of ~3 us (the split, which every CTA computes): 17 us. num_ctas, where set, comes first.
  bool one_wave_per_heads = false;
  // The selection's arrays and the views are not written by the kernels before this launch on its
  // stream (the engine's dense selections, staged by the host before the step): every CTA computes
  // its split (~3 us on an H100: bench/kernels/NOTES.md run 26) before it waits for the previous
  // kernel, under that kernel's tail (programmatic dependent launch, kernels/launch.h).
  bool static_selection = false;
  // Leaves each head's pieces unmerged in the workspace (out and lse are not written) for
  // merge_decode_pieces below, which merges every head at once on many CTAs. Why: a head's last
  // piece merged its 16-33 partials on one CTA while the rest of the device idled, up to 11-20 us at
  // the end of the shared-context bundles' launch (bench/kernels/NOTES.md run 25). Not with the
  // selection's estimate logits; with TopKeys the merge writes them (and must be given them).
  bool defer_merge = false;
  // The next launch on the stream runs beside this one: it reads nothing this launch writes and
  // writes nothing this launch reads (made with beside_previous). This launch lets it be scheduled
  // only after its own wait for the previous kernel, so that everything before this launch is
  // complete when the next one's CTAs start, on the SMs this launch's CTAs leave. Why: the
  // shared-context bundles' launch ends unevenly (~10 us between its CTAs' ends, bench/kernels/NOTES.md
  // run 26) and their members' own tokens are a latency-bound launch of ~15 us (run 27); run one
  // after the other they added up, beside each other the own tokens fill the bundles' tail.
  bool next_beside = false;
  // This launch runs beside the previous one (made with next_beside): it waits for it only before
  // returning, so that its end still implies the previous one's for the kernel after it. Needs a
  // static selection (the host staged what it reads) and tickets (or defer_merge): a memset of the
  // tickets between the two would wait for the previous launch's end.
  bool beside_previous = false;
  // Nullable device int64 [B * H_q]: the launch's query row r (sequence * H_q + query head) is row
  // q_rows[r] of q (the outputs keep the launch's rows). Why: the shared-context bundles' query rows
  // are the members' rows regrouped (a bundle's KV head takes every member's group), and gathering
  // them into a copy first took a kernel (3.5 us a layer at Llama-3-8B batch 8, bench/kernels/NOTES.md
  // run 26) that also stood between the RoPE kernel and this launch's split.
  const int64_t* q_rows = nullptr;
};
// From the sweep of bench/kernels (NOTES.md run 14, H100, 512K): 0 / 192 / 384 / 768 rows took
// Llama-3 batch 1 from 137.5 to 133.6 / 129.4 / 129.8 us (the cap binds at per_cta / 4 there) and
// Llama-2 batch 1 from 413.1 to 410.4 / 408.2 / 406.0 us; batch 8 within noise of all of them.
constexpr int32_t kDefaultPieceStartRows = 768;

// A launch without the pruned-cluster estimate takes groups of up to 32 query heads per KV head:
// every row of the kernel's 16-row MMA tile (up to kMaxGroup, rows 8..15 are padding), and above 16
// two warps that share each tile, 16 query heads each. The engine's shared-context bundles use
// them: several dense questions' query heads as one group over the context they share
// (engine/kernel_attention.h), which streams once for all of them; so do squeezed bundles
// (kernels/bundle_selection.h).
constexpr int kMaxDecodeGroup = 32;

size_t decode_attention_workspace_bytes(const AttentionShape& shape, const DecodeLaunch& launch);

// seqs: device array of B views. q, out: device bf16 [B][Hq][D] (q: its rows where
// DecodeLaunch::q_rows says). lse: nullable device fp32 [B][Hq]
// (natural log). selection: device arrays from select_clusters(). top: read-ahead's outputs
// (squeeze_types.h; device [B][Hq]; needs every view's perm and window_len), default none.
// Requires head_dim in {64, 128}, any group 1..8 (3, 5, 6, 7 included) or, without the estimate,
// 9..kMaxDecodeGroup (there with TopKeys only a squeezed bundles' launch); B * H_kv <= 2048. A
// squeezed bundles' launch (Selection::member_masks; its union from bundle_selections) needs
// member_group to divide the group; its estimate, if any, is the union's (estimate_masks with
// estimate_log_sizes, no estimate_logits), and any other estimate arrays are refused.
// The workspace (decode_attention_workspace_bytes) serves launches with and without `top`.
// Returns a cudaError_t value.
int sparse_decode_attention(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                            const Selection& selection, void* out, float* lse, void* workspace,
                            const DecodeLaunch& launch, void* stream, const TopKeys& top = {});

// After a launch with DecodeLaunch::defer_merge (the same shape, launch and workspace, on the same
// stream, before the workspace's next use): for each query row r < rows, out[r] = the attention over
// the keys of that launch's query row a_row[r] (a_row null: r; a row is sequence * H_q + query head,
// as the launch's `out`), united with part B's keys for row r where b_out is set (part B: bf16
// [rows][head_dim] normalized over its keys, b_lse its natural-log LSE, -inf = no keys; CPU
// reference of the merge: merge_parts_ref.h).
// A head's pieces merge in order, as the launch would have merged them. out: bf16 [rows][head_dim];
// lse: nullable fp32 [rows].
// top: read-ahead's outputs of row r ([rows]; none by default), for a launch that had top keys
// (the same `seqs`): the top key of a_row[r]'s pieces, its share over their context sum and part
// B's (b_context_lse [rows], natural log, nullable: B's TopKeys::context_lse, e.g. a squeezed
// bundle member's estimate and window). masked: the launch's selection had member masks (a
// squeezed bundles' launch: its variant's grid). Returns a cudaError_t value.
int merge_decode_pieces(const AttentionShape& shape, const DecodeLaunch& launch, const void* workspace, int rows,
                        const int32_t* a_row, const void* b_out, const float* b_lse, void* out, float* lse,
                        void* stream, const SequenceLayerBf16* seqs = nullptr, const TopKeys& top = {},
                        const float* b_context_lse = nullptr, bool masked = false);

// Diagnosis (bench/kernels' kernels_bench --trace, docs in bench/kernels/NOTES.md run 13): in a build
// with SQZ_DECODE_TRACE defined, every later launch's CTA c < max_ctas writes, at each of its
// kDecodeTraceEvents phases, the %globaltimer (ns) and its SM's clock64 to
// trace[(c * kDecodeTraceEvents + event) * 2 + {0, 1}] (device memory); null stops it. Elsewhere it
// returns cudaErrorNotSupported and the kernel has no trace code. Returns a cudaError_t value.
// Phases: 0 entry, 1 after the wait for the selection, 2 the CTA's range known (after the split),
// 3 the first piece's rows attended, 4 its partial written and its ticket taken, 5 its merge done
// (= 4 when another piece merges), 6 exit; slot 7 holds (pieces, merges) instead of times.
constexpr int kDecodeTraceEvents = 8;
int set_decode_trace(unsigned long long* trace, int max_ctas);

}  // namespace squeezeserve::kernels
