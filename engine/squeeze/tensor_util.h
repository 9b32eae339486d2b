// Small batched tensor helpers shared by the squeeze sources. Every helper works per head on
// tensors whose leading dimension is the (KV) head, with no loops over clusters or tokens.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace squeezeserve::squeeze {

// rows[h, m, :] = x[h, index[h, m], :] for x [H, N, D] and index [H, M] (int64). Where each head's
// rows are contiguous and the heads lie whole rows apart (a contiguous x, or the first N rows of
// every head of a longer one) the rows are copied whole, by one index_select over a row view of the
// heads: gather's per-element index arithmetic was a fifth of a CPU decode step of the squeezed
// lookup (perf, models/small).
inline at::Tensor GatherRows(const at::Tensor& x, const at::Tensor& index) {
  const int64_t H = x.size(0), N = x.size(1), D = x.size(2), M = index.size(1);
  const bool rows_whole = x.stride(2) == 1 && (N <= 1 || x.stride(1) == D) && D > 0 && x.stride(0) % D == 0;
  if (!rows_whole || H == 0 || N == 0) return x.gather(1, index.unsqueeze(-1).expand({H, M, D}));
  const int64_t head_rows = x.stride(0) / D;  // rows from one head's first to the next's
  const at::Tensor rows = x.as_strided({(H - 1) * head_rows + N, D}, {D, 1});
  const at::Tensor flat = (index + at::arange(H, index.options()).unsqueeze(1) * head_rows).reshape({-1});
  return rows.index_select(0, flat).view({H, M, D});
}

// out[h, k] = Σ_n weights[h, n] over the n with labels[h, n] == k; labels [H, N] int64 in [0, K).
// One index_add_ over the flattened (head, label) ids does all heads at once.
inline at::Tensor BatchedBincount(const at::Tensor& labels, const at::Tensor& weights, int64_t num_bins) {
  const int64_t H = labels.size(0);
  at::Tensor flat = (labels + at::arange(H, labels.options()).unsqueeze(1) * num_bins).reshape({-1});
  return at::zeros({H * num_bins}, weights.options()).index_add_(0, flat, weights.reshape({-1})).view({H, num_bins});
}

// out[h, k, :] = Σ_n rows[h, n, :] over the n with labels[h, n] == k.
inline at::Tensor BatchedSegmentSum(const at::Tensor& labels, const at::Tensor& rows, int64_t num_bins) {
  const int64_t H = labels.size(0), D = rows.size(2);
  at::Tensor flat = (labels + at::arange(H, labels.options()).unsqueeze(1) * num_bins).reshape({-1});
  return at::zeros({H * num_bins, D}, rows.options()).index_add_(0, flat, rows.reshape({-1, D})).view({H, num_bins, D});
}

// Exclusive prefix sums with a leading zero: [H, K] sizes -> [H, K+1] int32 offsets.
inline at::Tensor OffsetsFromSizes(const at::Tensor& sizes) {
  at::Tensor zero = at::zeros({sizes.size(0), 1}, sizes.options().dtype(at::kLong));
  return at::cat({zero, sizes.to(at::kLong).cumsum(1)}, 1).to(at::kInt);
}

// Segment sizes back from offsets: [H, K+1] -> [H, K] int64.
inline at::Tensor SizesFromOffsets(const at::Tensor& offsets) {
  const int64_t K = offsets.size(1) - 1;
  return (offsets.narrow(1, 1, K) - offsets.narrow(1, 0, K)).to(at::kLong);
}

// For every position p in [0, total) of a head, the segment j with off[j] <= p < off[j+1].
// offsets [H, K+1] -> [H, total] int64.
inline at::Tensor SegmentOfPosition(const at::Tensor& offsets, int64_t total) {
  const int64_t H = offsets.size(0), K = offsets.size(1) - 1;
  at::Tensor ends = offsets.narrow(1, 1, K).to(at::kLong).contiguous();
  at::Tensor pos = at::arange(total, ends.options()).unsqueeze(0).expand({H, total}).contiguous();
  // #(ends <= p) = index of the segment containing p.
  return at::searchsorted(ends, pos, /*out_int32=*/false, /*right=*/true);
}

// Indices of the true entries of mask [..., M] packed to the front of the last dimension, in
// ascending order, padded to the largest count with the false entries' indices, also ascending
// (the index is a prefix of a permutation: scattering through it never collides): returns (index
// [..., Cmax] int64, valid [..., Cmax] bool, count [...]). The order of a stable descending sort of
// the 0/1 mask, found without one: a true entry's slot is its rank among the true ones, a false
// entry's the count plus its rank among the false ones (two prefix sums and a scatter: O(M)).
struct Compacted {
  at::Tensor index;
  at::Tensor valid;
  at::Tensor count;
};
inline Compacted CompactMask(const at::Tensor& mask_in) {
  const at::Tensor mask = mask_in.to(at::kBool);
  at::Tensor count = mask.sum(-1);
  const int64_t M = mask.size(-1), cmax = M == 0 ? 0 : count.max().item<int64_t>();
  const at::Tensor true_rank = mask.to(at::kLong).cumsum(-1) - 1;
  const at::Tensor false_rank = (~mask).to(at::kLong).cumsum(-1) - 1 + count.unsqueeze(-1);
  const at::Tensor slot = at::where(mask, true_rank, false_rank);
  at::Tensor index = at::empty_like(slot).scatter_(-1, slot, at::arange(M, count.options()).expand_as(slot));
  at::Tensor valid = at::arange(cmax, count.options()) < count.unsqueeze(-1);
  return {index.narrow(-1, 0, cmax), valid, count};
}

}  // namespace squeezeserve::squeeze
