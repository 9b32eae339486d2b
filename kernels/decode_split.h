// The decode attention's work split (decode_attention.cu "Work split"): plain integer arithmetic,
// shared by the kernel and its CPU test (tests/kernels/decode_split_test.cc), so that what decides
// which CTA streams which rows, and which piece merges a head, is proved without a GPU.
//
// The heads of a launch are laid end to end in cost units, each as `start_cost` units of nothing
// then its rows, kRowCost units each: selected, estimated and dense rows alike (an estimated row
// takes about a selected row's time; charged less, it overloaded its CTAs: bench/kernels/NOTES.md
// run 18). CTA c takes units [c * per_cta, (c + 1) * per_cta). A row goes to the CTA whose range
// holds its last unit; a CTA's part of one head is a piece. With few heads per CTA the heads are
// aligned to CTA ranges instead (HeadLayout).
#pragma once

#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels::decode_split {

constexpr int kRowCost = 4;    // units of a selected or dense row
constexpr int kWarps = 4;      // warps per CTA, each streaming a contiguous part of a piece
constexpr int kTileRows = 16;  // rows per warp tile
// Smallest CTA range (two tiles per warp): tiny launches use fewer CTAs instead of 1-row pieces.
constexpr long long kMinCtaUnits = 2LL * kWarps * kTileRows * kRowCost;

SQUEEZESERVE_HOST_DEVICE constexpr long long min_ll(long long a, long long b) { return a < b ? a : b; }
SQUEEZESERVE_HOST_DEVICE constexpr long long max_ll(long long a, long long b) { return a > b ? a : b; }

struct FlatSplit {
  long long per_cta, start_cost;
};

// Units per CTA and the units of nothing ahead of each head: start_cost = min(cap, per_cta / 4),
// per_cta the smallest that covers `total` units plus num_heads start costs over `grid` CTAs (at
// least kMinCtaUnits).
SQUEEZESERVE_HOST_DEVICE inline FlatSplit flat_split(long long total, long long grid, long long num_heads,
                                                     long long cap) {
  FlatSplit f{(total + grid - 1) / grid, 0};
  if (cap > 0 && 4 * grid > num_heads) {
    // per_cta * (grid - num_heads / 4) >= total covers num_heads charges of per_cta / 4.
    f.per_cta = (4 * total + 4 * grid - num_heads - 1) / (4 * grid - num_heads);
    f.start_cost = f.per_cta / 4;
    if (f.start_cost > cap) f = {(total + cap * num_heads + grid - 1) / grid, cap};
  }
  f.per_cta = max_ll(f.per_cta, kMinCtaUnits);  // only grows: still covers
  return f;
}

// Every head starts at a CTA boundary (HeadLayout::aligned) when the grid has at least this many
// CTAs per head: then no CTA holds two pieces, at the price of ranges up to
// grid / (grid - heads) longer (at most 1 / 16 more). Why: at batch 1 a CTA's range is short
// (Llama-3 64K: ~230 rows) and a piece's fixed cost long (the head's views, the segment seek, the
// first tiles' round trips: ~10 us on an H100), so a CTA with two pieces ended ~13 us after the
// rest, a quarter of the attention (bench/kernels/NOTES.md run 20), which the start cost (capped
// at a quarter of a range) only partly made up for.
constexpr long long kAlignMinCtasPerHead = 16;

// How the heads lie end to end in cost units: each head takes extent(units) units, its rows
// starting lead() units into them.
struct HeadLayout {
  long long per_cta, start_cost;
  bool aligned;  // each head's extent is whole CTA ranges: every CTA has at most one piece

  SQUEEZESERVE_HOST_DEVICE long long lead() const { return aligned ? 0 : start_cost; }
  SQUEEZESERVE_HOST_DEVICE long long extent(long long units) const {
    return aligned ? (units + per_cta - 1) / per_cta * per_cta : start_cost + units;
  }
};

// The layout of a launch: aligned where `align` and the grid has min_ctas_per_head (at least 2)
// CTAs per head (per_cta covers `total` units in grid - num_heads ranges, so the heads' rounded-up
// extents fit the grid), else flat_split's. A launch of short heads sets the minimum to its grid's
// CTAs per head (DecodeLaunch::one_wave_per_heads).
SQUEEZESERVE_HOST_DEVICE inline HeadLayout head_layout(long long total, long long grid, long long num_heads,
                                                       long long cap, bool align,
                                                       long long min_ctas_per_head = kAlignMinCtasPerHead) {
  if (align && min_ctas_per_head >= 2 && grid >= min_ctas_per_head * num_heads) {
    return {max_ll((total + grid - num_heads - 1) / (grid - num_heads), kMinCtaUnits), 0, true};
  }
  const FlatSplit f = flat_split(total, grid, num_heads, cap);
  return {f.per_cta, f.start_cost, false};
}

// One head's rows in the split: its selected, estimated and dense rows, or the one masked row of a
// head without rows.
struct HeadCost {
  int num_rows;

  SQUEEZESERVE_HOST_DEVICE static HeadCost of(int sel, int est, int dense) {
    const int total = sel + est + dense;
    return {total > 0 ? total : 1};
  }
  SQUEEZESERVE_HOST_DEVICE int rows() const { return num_rows; }
  SQUEEZESERVE_HOST_DEVICE long long units() const { return static_cast<long long>(kRowCost) * num_rows; }
  // Rows whose last unit lies before cost offset c (0 <= c <= units()): a range [c0, c1) of the
  // head takes its rows [rows_before(c0), rows_before(c1)).
  SQUEEZESERVE_HOST_DEVICE int rows_before(long long c) const { return static_cast<int>(c / kRowCost); }
  // The cost offset just past the first row's last unit.
  SQUEEZESERVE_HOST_DEVICE int first_row_end() const { return kRowCost; }
};

// The piece of the CTA with range [f0, f1) in a head whose units start at `at`: head rows [r0, r1)
// (none when r1 <= r0: the range meets only part of a row's cost), and the head's pieces, the CTAs
// first_cta .. first_cta + num_pieces - 1 (those holding a row's last unit: every range is longer
// than a row's cost, so every CTA from the one holding the first row's last unit to the one holding
// the head's last unit has a piece).
struct Piece {
  long long c0, c1;  // the range's units in the head
  int r0, r1, first_cta, num_pieces;

  // Row where warp w (0..kWarps) starts: equal cost per warp, each start rounded to whole tiles from r0.
  SQUEEZESERVE_HOST_DEVICE int warp_start(const HeadCost& cost, int w) const {
    if (w >= kWarps) return r1;
    const long long per_warp = (c1 - c0 + kWarps - 1) / kWarps;
    const int r = cost.rows_before(min_ll(c0 + w * per_warp, c1)) - r0;
    return static_cast<int>(min_ll(r0 + (r + kTileRows / 2) / kTileRows * kTileRows, r1));
  }
};

SQUEEZESERVE_HOST_DEVICE inline Piece piece_of(const HeadCost& cost, long long at, long long f0, long long f1,
                                               long long per_cta) {
  Piece p;
  const long long units = cost.units();
  p.c0 = max_ll(f0, at) - at;
  p.c1 = min_ll(f1, at + units) - at;
  if (p.c1 < p.c0) p.c1 = p.c0;  // the range does not meet the head
  p.r0 = cost.rows_before(p.c0);
  p.r1 = cost.rows_before(p.c1);
  p.first_cta = static_cast<int>((at + cost.first_row_end() - 1) / per_cta);
  p.num_pieces = static_cast<int>((at + units - 1) / per_cta) - p.first_cta + 1;
  return p;
}

}  // namespace squeezeserve::kernels::decode_split
