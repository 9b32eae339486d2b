// CPU reference of read_ahead.h (same contract, host memory).
#pragma once

#include "kernels/read_ahead.h"

namespace squeezeserve::kernels {

void advance_read_ahead_ref(int batch, int query_len, int num_q_heads, const ReadAheadCursor* cursors,
                            const ReadAheadCursor* advanced, const TopKeys& top, const ReadAheadRule& rule);

}  // namespace squeezeserve::kernels
