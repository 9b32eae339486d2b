// Small batched tensor helpers shared by the squeeze sources. Every helper works per head on
// tensors whose leading dimension is the (KV) head, with no loops over clusters or tokens.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace squeezeserve::squeeze {

// rows[h, m, :] = x[h, index[h, m], :] for x [H, N, D] and index [H, M] (int64).
inline at::Tensor GatherRows(const at::Tensor& x, const at::Tensor& index) {
  return x.gather(1, index.unsqueeze(-1).expand({index.size(0), index.size(1), x.size(2)}));
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

// Indices of the true entries of mask [..., M] packed to the front of the last dimension, padded
// to the largest count: returns (index [..., Cmax] int64, valid [..., Cmax] bool, count [...]).
// A stable descending sort of the 0/1 mask is a batched "compact" without loops.
struct Compacted {
  at::Tensor index;
  at::Tensor valid;
  at::Tensor count;
};
inline Compacted CompactMask(const at::Tensor& mask) {
  at::Tensor count = mask.sum(-1);
  const int64_t cmax = mask.size(-1) == 0 ? 0 : count.max().item<int64_t>();
  at::Tensor order = std::get<1>(at::sort(mask.to(at::kInt), /*stable=*/true, /*dim=*/-1, /*descending=*/true));
  at::Tensor index = order.narrow(-1, 0, cmax);
  at::Tensor valid = at::arange(cmax, count.options()) < count.unsqueeze(-1);
  return {index, valid, count};
}

}  // namespace squeezeserve::squeeze
