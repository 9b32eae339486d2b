// Stores the new tokens' keys and values of a batch of sequences in their dense parts (the window,
// then the own tokens: SequenceLayer::dense_keys / dense_values), reading every destination from
// the device views. One launch for the whole batch and no host data: a decode step that appends
// this way can be replayed as a CUDA graph whatever sequences the batch holds. Plain C++ header;
// CPU reference with the same contract: append_kv_ref.h.
#pragma once

#include <cstdint>

#include "kernels/squeeze_types.h"

namespace squeezeserve::kernels {

// Source rows of one launch: element (h, r, d) of the keys at keys[h * head_stride + r * row_stride + d]
// (the same strides for the values), bf16, d contiguous.
struct NewKv {
  const uint16_t* keys = nullptr;
  const uint16_t* values = nullptr;
  int64_t key_head_stride = 0, key_row_stride = 0;
  int64_t value_head_stride = 0, value_row_stride = 0;
};

// For every sequence b < shape.batch, KV head h and new token t < shape.query_len: copies source
// row src_rows[b] + t to dense row seqs[b].dense_len - query_len + t (the new tokens are the last
// query_len rows of the dense part). seqs: device array of B views; src_rows: device int64 [B].
// head_dim a multiple of 8. Returns a cudaError_t value.
int append_dense_kv(const AttentionShape& shape, const SequenceLayerBf16* seqs, const NewKv& source,
                    const int64_t* src_rows, void* stream);

}  // namespace squeezeserve::kernels
