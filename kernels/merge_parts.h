// The exact merge of two attention parts over disjoint key sets (the log-sum-exp merge every split
// here rests on), as a launch of its own: the engine's shared-context decode attends a batch's
// questions to their one stored context in one pass and to each question's own tokens in another
// (engine/kernel_attention.h), then merges the two. Device work only (CUDA-graph safe), launched
// chained (kernels/launch.h). Plain C++ header; CPU reference with the same contract:
// merge_parts_ref.h.
#pragma once

#include <cstdint>

namespace squeezeserve::kernels {

// For each query row r < rows: out[r] = the attention over the union of part A's keys for row
// a_row[r] (a_row null: row r) and part B's keys for row r. A part is its output normalized over
// its own keys (bf16 [*][head_dim], as sparse_decode_attention writes it) and the natural-log LSE
// of its scaled logits (fp32; -inf: the part has no keys, its output is not read). Rows where
// both parts are empty get zeros and lse -inf. lse: nullable fp32 [rows]. All pointers device
// memory; out may not alias the parts. Requires an even head_dim <= 256. Returns a cudaError_t value.
int merge_attention_parts(int rows, int head_dim, const void* a_out, const float* a_lse, const int32_t* a_row,
                          const void* b_out, const float* b_lse, void* out, float* lse, void* stream);

}  // namespace squeezeserve::kernels
