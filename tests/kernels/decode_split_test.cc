// The decode attention's work split (kernels/decode_split.h) on the CPU: the kernel's own
// arithmetic, run for every CTA of random launches as decode_attention.cu runs it, must give every
// row of every head to exactly one piece, in order, name each head's pieces as the CTAs that hold
// them (the last one to finish merges them by that count and those slots), and split each piece
// among the warps in order. A wrong count would leave a head unmerged on the GPU (its output never
// written) or merged early (rows missing): kernels_check would see it, but only on a GPU.
#include "kernels/decode_split.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace squeezeserve::kernels::decode_split {
namespace {

struct Launch {
  std::vector<HeadCost> heads;
  long long grid = 1, cap = 0;
  bool align = false;
  long long min_ctas_per_head = kAlignMinCtasPerHead;
};

struct PieceSeen {
  int cta, r0, r1, first_cta, num_pieces, slot;
  std::vector<int> warp_starts;  // kWarps + 1 rows
};

// Runs the split of every CTA as the kernel does (the first head by a scan of the laid-out heads,
// where the kernel uses per-thread prefix sums of the same extents) and checks the result.
void CheckLaunch(const Launch& l, const std::string& what) {
  long long units_total = 0;
  for (const HeadCost& h : l.heads) units_total += h.units();
  const long long num_heads = static_cast<long long>(l.heads.size());
  const HeadLayout split = head_layout(units_total, l.grid, num_heads, l.cap, l.align, l.min_ctas_per_head);
  ASSERT_EQ(split.aligned, l.align && l.min_ctas_per_head >= 2 && l.grid >= l.min_ctas_per_head * num_heads) << what;
  ASSERT_GE(split.per_cta, kMinCtaUnits) << what;
  ASSERT_LE(split.start_cost, std::max(l.cap, 0LL)) << what;
  long long total = 0;
  for (const HeadCost& h : l.heads) total += split.extent(h.units());
  ASSERT_GE(split.per_cta * l.grid, total) << what << ": the grid does not cover every unit";
  if (split.aligned) {  // ranges at most grid / (grid - heads) as long as the plain equal split's
    EXPECT_LE(split.per_cta, std::max((units_total + l.grid - num_heads - 1) / (l.grid - num_heads), kMinCtaUnits));
  }

  std::map<int, std::vector<PieceSeen>> by_head;
  std::set<int> slots;
  for (int cta = 0; cta < l.grid; ++cta) {
    const long long f0 = cta * split.per_cta;
    if (f0 >= total) continue;
    const long long f1 = std::min(f0 + split.per_cta, total);
    long long head_start = 0;
    int bh = 0;
    while (head_start + split.extent(l.heads[bh].units()) <= f0) {
      head_start += split.extent(l.heads[bh].units());
      ++bh;
    }
    long long rows_cost = 0;
    int pieces = 0;
    for (; head_start < f1; ++bh) {
      ASSERT_LT(bh, num_heads) << what << ": CTA " << cta << " runs past the last head";
      const HeadCost& cost = l.heads[bh];
      const long long at = head_start + split.lead();
      head_start += split.extent(cost.units());
      const Piece p = piece_of(cost, at, f0, f1, split.per_cta);
      if (p.r1 <= p.r0) continue;
      PieceSeen seen{cta, p.r0, p.r1, p.first_cta, p.num_pieces, cta + bh, {}};
      for (int w = 0; w <= kWarps; ++w) seen.warp_starts.push_back(p.warp_start(cost, w));
      ASSERT_TRUE(slots.insert(seen.slot).second) << what << ": slot " << seen.slot << " taken twice";
      ASSERT_LT(seen.slot, l.grid + num_heads) << what << ": slot past the workspace";
      rows_cost += static_cast<long long>(kRowCost) * (p.r1 - p.r0);
      by_head[bh].push_back(seen);
      ++pieces;
    }
    if (split.aligned) EXPECT_LE(pieces, 1) << what << ": CTA " << cta << " has two pieces in an aligned layout";
    // A CTA streams at most its range's units plus one row's (the row whose last unit it holds).
    EXPECT_LE(rows_cost, split.per_cta + kRowCost) << what << ": CTA " << cta;
  }

  for (int bh = 0; bh < num_heads; ++bh) {
    const HeadCost& cost = l.heads[bh];
    const std::vector<PieceSeen>& pieces = by_head[bh];
    ASSERT_FALSE(pieces.empty()) << what << ": head " << bh << " has no piece";
    int next_row = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const PieceSeen& p = pieces[i];
      EXPECT_EQ(p.r0, next_row) << what << ": head " << bh << " piece " << i;
      next_row = p.r1;
      EXPECT_EQ(p.first_cta, pieces[0].cta) << what << ": head " << bh;
      EXPECT_EQ(p.num_pieces, static_cast<int>(pieces.size())) << what << ": head " << bh;
      EXPECT_EQ(p.cta, pieces[0].cta + static_cast<int>(i)) << what << ": head " << bh << ": pieces not consecutive";
      // Warps: in order, from r0 to r1, each start on a whole tile from r0 (or at r1).
      EXPECT_EQ(p.warp_starts.front(), p.r0);
      EXPECT_EQ(p.warp_starts.back(), p.r1);
      for (int w = 0; w < kWarps; ++w) {
        EXPECT_LE(p.warp_starts[w], p.warp_starts[w + 1]) << what << ": head " << bh << " warp " << w;
        const int s = p.warp_starts[w + 1];
        EXPECT_TRUE(s == p.r1 || (s - p.r0) % kTileRows == 0) << what << ": warp " << w + 1 << " starts at " << s;
      }
    }
    EXPECT_EQ(next_row, cost.rows()) << what << ": head " << bh << " rows not all covered";
  }
}

TEST(DecodeSplit, EveryRowCostsTheSame) {
  const HeadCost h = HeadCost::of(/*sel=*/3, /*est=*/4, /*dense=*/2);
  EXPECT_EQ(h.units(), 9 * kRowCost);
  EXPECT_EQ(h.rows(), 9);
  for (int c = 0; c <= h.units(); ++c) EXPECT_EQ(h.rows_before(c), c / kRowCost) << c;
  EXPECT_EQ(h.first_row_end(), kRowCost);
  const HeadCost empty = HeadCost::of(0, 0, 0);  // no rows: one masked row
  EXPECT_EQ(empty.rows(), 1);
  EXPECT_EQ(empty.units(), kRowCost);
}

TEST(DecodeSplit, RandomLaunchesCoverEveryRowOnce) {
  std::mt19937_64 rng(20261205);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 3000; ++trial) {
    Launch l;
    const int num_heads = pick(1, trial % 10 == 0 ? 300 : 40);
    const bool big = trial % 50 == 0;  // 512K-sized heads
    for (int i = 0; i < num_heads; ++i) {
      const int sel = pick(0, 4) == 0 ? 0 : pick(1, big ? 60000 : 3000);
      const int est = pick(0, 3) == 0 ? 0 : pick(1, big ? 8000 : 900);
      const int dense = pick(0, 3) == 0 ? 0 : pick(1, 300);
      l.heads.push_back(HeadCost::of(sel, est, dense));
    }
    l.grid = pick(1, trial % 7 == 0 ? 400 : 40);
    const int caps[] = {0, 1, 7, 768 * kRowCost, 1 << 22};
    l.cap = caps[pick(0, 4)];
    l.align = pick(0, 1) == 1;
    if (trial % 3 == 0) l.min_ctas_per_head = pick(0, 5);  // one_wave_per_heads' thresholds (and 0, 1: never)
    CheckLaunch(l, "trial " + std::to_string(trial));
    if (HasFatalFailure() || HasNonfatalFailure()) return;
  }
}

TEST(DecodeSplit, AlignedWhereTheGridHasSixteenCtasPerHead) {
  // Llama-3 batch 1 on an H100's 264 CTAs: 8 heads, aligned; batch 8: 64 heads, the flat split.
  EXPECT_TRUE(head_layout(8 * 60000 * kRowCost, 264, 8, 768 * kRowCost, true).aligned);
  EXPECT_FALSE(head_layout(64 * 60000 * kRowCost, 264, 64, 768 * kRowCost, true).aligned);
  EXPECT_FALSE(head_layout(8 * 60000 * kRowCost, 264, 8, 768 * kRowCost, false).aligned);
  // Equal heads on a grid they divide: at most grid / heads CTAs each, none shared.
  const HeadLayout l = head_layout(8 * 33000 * kRowCost, 264, 8, 0, true);
  EXPECT_EQ(l.lead(), 0);
  EXPECT_EQ(l.extent(1), l.per_cta);
  EXPECT_LE(l.extent(33000 * kRowCost) / l.per_cta, 33);
}

TEST(DecodeSplit, ShortHeadsAlignedOnAFewCtasEach) {
  // The own tokens of Llama-3 at batch 8 (64 heads of ~100 rows) on one wave of an H100's 264 CTAs:
  // 4 CTAs a head, each head in one CTA, no CTA with two pieces; heads of 2000 rows take 3 each.
  const HeadLayout l = head_layout(64 * 100 * kRowCost, 256, 64, 768 * kRowCost, true, 4);
  EXPECT_TRUE(l.aligned);
  EXPECT_EQ(l.extent(100 * kRowCost), l.per_cta);
  const HeadLayout long_heads = head_layout(64 * 2000 * kRowCost, 256, 64, 768 * kRowCost, true, 4);
  EXPECT_TRUE(long_heads.aligned);
  EXPECT_EQ(long_heads.extent(2000 * kRowCost) / long_heads.per_cta, 3);
  EXPECT_FALSE(head_layout(64 * 100 * kRowCost, 256, 64, 768 * kRowCost, true, 5).aligned);  // 4 a head only
  EXPECT_FALSE(head_layout(64 * 100 * kRowCost, 64, 64, 768 * kRowCost, true, 1).aligned);   // needs 2 a head
}

}  // namespace
}  // namespace squeezeserve::kernels::decode_split
