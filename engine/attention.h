// Exact softmax attention over one part of the keys, returning the log-sum-exp of the scores so that
// parts computed separately can be merged exactly (the Squeezed Attention structure: stored context
// KV, later only selected clusters of it, merged with the request's own causal KV). libtorch.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace squeezeserve {

// Partial attention result: out [H, n, D] (float32) normalized over this part's keys, lse [H, n]
// (float32) = log Σ_j exp(s·q·k_j) over the same keys; -inf (and out = 0) for a row with no keys.
struct AttentionPart {
  at::Tensor out;
  at::Tensor lse;
};

// Keys are processed in blocks so that one block's scores hold at most kAttentionScoreBudget floats
// (H × n × block) however long the context is; blocks are never shorter than kMinAttentionKeyBlock.
// A decode step (n = 1) thus reads a 64K context in one block instead of 64: each block costs a dozen
// kernel launches, which dominated decode time on a GPU.
constexpr int64_t kAttentionScoreBudget = int64_t{1} << 24;
constexpr int64_t kMinAttentionKeyBlock = 1024;

// q: [H, n, D]; k, v: [H_kv, m, D] with H a multiple of H_kv (query head h reads KV head
// h / (H / H_kv), as HF's repeat_kv). Scale 1/sqrt(D).
// causal_offset < 0: every query sees every key (the keys all precede the queries).
// causal_offset >= 0: query i sees keys j <= causal_offset + i (the keys are the sequence the queries
// belong to, query i sitting at key position causal_offset + i).
AttentionPart AttendWithLse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t causal_offset, int64_t key_block = 0);  // 0 = from the budget

// Exact merge of two parts over disjoint key sets.
AttentionPart MergeLse(const AttentionPart& a, const AttentionPart& b);

}  // namespace squeezeserve
