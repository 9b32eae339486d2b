#include "kernels/read_ahead_ref.h"

#include "kernels/read_ahead_rule.h"

namespace squeezeserve::kernels {

void advance_read_ahead_ref(int batch, int query_len, int num_q_heads, const ReadAheadCursor* cursors,
                            const ReadAheadCursor* advanced, const TopKeys& top, const ReadAheadRule& rule) {
  for (int b = 0; b < batch; ++b) {
    if (cursors[b].next == nullptr) continue;
    for (int h = 0; h < num_q_heads; ++h) detail::advance_one(b, h, query_len, num_q_heads, cursors[b], advanced[b], top, rule);
  }
}

}  // namespace squeezeserve::kernels
