// The cursor rule of read_ahead.h for one (sequence, query head), shared by the CUDA kernel and its
// CPU reference so that both follow one definition.
#pragma once

#include <cstdint>

#include "kernels/read_ahead.h"

namespace squeezeserve::kernels::detail {

// Advances cursor c (next, age) of sequence b, query head h over its query_len tokens' top keys into
// `to` (which may be c).
SQUEEZESERVE_HOST_DEVICE inline void advance_one(int b, int h, int query_len, int num_q_heads,
                                                 const ReadAheadCursor& c, const ReadAheadCursor& to,
                                                 const TopKeys& top, const ReadAheadRule& rule) {
  int last = -1;
  for (int t = query_len - 1; t >= 0 && last < 0; --t) {
    const int64_t at = (static_cast<int64_t>(b) * query_len + t) * num_q_heads + h;
    if (top.position[at] >= 0 && top.share[at] >= rule.min_share) last = t;
  }
  int32_t next, age;
  bool found;
  if (last >= 0) {
    const int64_t at = (static_cast<int64_t>(b) * query_len + last) * num_q_heads + h;
    next = top.position[at] + (query_len - last);
    age = query_len - 1 - last;
    found = true;
  } else {
    found = c.next[h] >= 0;
    next = c.next[h] + query_len;
    age = c.age[h] + query_len;
  }
  to.next[h] = found && age <= rule.max_age ? next : -1;
  to.age[h] = age;
}

}  // namespace squeezeserve::kernels::detail
