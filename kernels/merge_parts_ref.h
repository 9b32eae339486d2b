// CPU reference of the exact merge of two attention parts over disjoint key sets (the log-sum-exp
// merge every split here rests on): kernels::merge_decode_pieces (decode_attention.h) merges a
// deferred launch's pieces with a part B this way. Host memory, fp32.
// For each row r < rows: out[r] = the attention over part A's keys of row a_row[r] (a_row null: r)
// united with part B's keys of row r; a part is its normalized output [*][head_dim] and the
// natural-log LSE of its scaled logits (-inf: no keys, output not read). lse: nullable [rows].
#pragma once

#include <cstdint>

namespace squeezeserve::kernels {

void merge_attention_parts_ref(int rows, int head_dim, const float* a_out, const float* a_lse, const int32_t* a_row,
                               const float* b_out, const float* b_lse, float* out, float* lse);

}  // namespace squeezeserve::kernels
