// Read-ahead's cursor update on the GPU (docs/index_layout.md "Read-ahead"): after the attention
// kernels reported each query head's most attended selected key (TopKeys), every sequence's cursor —
// the context position whose cluster the next step's selection forces (SequenceLayer::read_ahead) —
// moves on, as engine/squeeze's AdvanceReadAhead does. Device work only, one launch per layer for a
// batch. It reads one cursor and writes the advanced one to another, so that a step which runs twice
// (a CUDA graph's capture: an eager warm-up, then the replay) leaves the same state as running once;
// the caller makes the advanced cursor current between steps. Plain C++ header; CPU reference with
// the same contract: read_ahead_ref.h.
#pragma once

#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

// One sequence's cursor at one layer, device memory, [Hq] int32 each: `next` is what its
// SequenceLayer::read_ahead points at (−1 = none), `age` the tokens since the head last put
// min_share of its context attention on one key. next == nullptr: the sequence does not read ahead.
struct ReadAheadCursor {
  int32_t* next = nullptr;
  int32_t* age = nullptr;
};

struct ReadAheadRule {
  float min_share = 0.3f;  // share of the context attention on one key that makes a head copy
  int32_t max_age = 3;     // tokens a cursor keeps advancing without such a key
};

// For each sequence b < batch whose cursors[b].next is set, each query head h < num_q_heads, over
// its query_len tokens' top keys, writes advanced[b]'s next and age (both always; advanced[b] may be
// cursors[b] itself: in place) (top.position / top.share [batch][query_len][num_q_heads]): from
// the last token t with share >= min_share and position >= 0, next = position + (query_len − t) and
// age = query_len − 1 − t; without one, a live cursor (next >= 0) advances by query_len and ages by
// query_len. A cursor older than max_age becomes −1 (its age is kept). cursors, advanced: device
// arrays. Returns a cudaError_t value.
int advance_read_ahead(int batch, int query_len, int num_q_heads, const ReadAheadCursor* cursors,
                       const ReadAheadCursor* advanced, const TopKeys& top, const ReadAheadRule& rule, void* stream);

}  // namespace squeezeserve::kernels
