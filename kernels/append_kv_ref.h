// CPU reference of append_kv.h (same contract, host memory, float elements).
#pragma once

#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

struct NewKvF32 {
  const float* keys = nullptr;
  const float* values = nullptr;
  int64_t key_head_stride = 0, key_row_stride = 0;
  int64_t value_head_stride = 0, value_row_stride = 0;
};

// seqs: host array of shape.batch views whose dense_keys / dense_values are writable host memory.
void append_dense_kv_ref(const AttentionShape& shape, const SequenceLayerF32* seqs, const NewKvF32& source,
                         const int64_t* src_rows);

}  // namespace squeezeserve::kernels
