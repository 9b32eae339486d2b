// Read-ahead (docs/index_layout.md "Read-ahead"): copying and induction heads read the context one
// position after another — a value's digits, a function's lines. A centroid stands for the content
// of its keys, not for their positions, so the cluster holding the next key to copy often scores
// low and is pruned, and the copy derails one token in. Read-ahead follows each query head: when
// it puts at least kReadAheadShare of its context attention on one key, the next step also loads
// the cluster holding the position after that key (and, while the head stays unsure, the one after
// that, for up to kReadAheadMaxAge tokens). At most one extra cluster per query head and step.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "engine/squeeze/index_builder.h"

namespace squeezeserve::squeeze {

// Share of a query head's context attention on one key that makes it a copying head for the next
// step, and how many tokens its cursor keeps advancing without such a key. Chosen on a tuning set
// of 4K-token key-value contexts (bench/eval_long_context/README.md).
constexpr double kReadAheadShare = 0.3;
constexpr int64_t kReadAheadMaxAge = 3;

// One layer's read-ahead state of one generation. Undefined tensors: nothing to read ahead.
struct ReadAheadCursor {
  at::Tensor next_position;  // [H_q] int64: context position to load at the next step, −1 = none
  at::Tensor age;            // [H_q] int64: tokens since that head last concentrated on one key
};

// The cursor after a call over T tokens that reported, per query head and token, its most attended
// selected key (top_position [H_q, T] int64, −1 = none) and that key's share of its context
// attention (top_share [H_q, T]): from the head's last token with share >= kReadAheadShare, the
// position after that key advanced to the next token; without one, the old cursor advanced by T.
// A cursor older than kReadAheadMaxAge tokens is dropped (−1).
ReadAheadCursor AdvanceReadAhead(const ReadAheadCursor& cursor, const at::Tensor& top_position,
                                 const at::Tensor& top_share);

// [H_kv, K] bool: the fine clusters holding `positions` ([H_q] int64, query head h_kv·G + g);
// positions outside [0, N) (none, or the window, which is always read) mark nothing.
at::Tensor ClustersAtPositions(const LayerIndex& index, const at::Tensor& positions);

}  // namespace squeezeserve::squeeze
