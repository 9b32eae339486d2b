// Exact softmax attention over one part of the keys, returning the log-sum-exp of the scores so that
// parts computed separately can be merged exactly (the Squeezed Attention structure: stored context
// KV, later only selected clusters of it, merged with the request's own causal KV). libtorch.
//
// On a CUDA device with bf16/fp16 tensors the work goes to libtorch's fused attention (cuDNN or
// FlashAttention, whichever passed a check against the reference at first use; docs/attention.md);
// elsewhere (the CPU, libtorch 1.x) to the blocked reference below.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

namespace squeezeserve {

// Partial attention result: out [H, n, D] normalized over this part's keys (float32; in the inputs'
// dtype when one fused kernel computed the part alone), lse [H, n] (float32) = log Σ_j exp(s·q·k_j)
// over the same keys; -inf (and out = 0) for a row with no keys. MergeLse returns float32.
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
// belong to, query i sitting at key position causal_offset + i; then m = causal_offset + n).
AttentionPart AttendWithLse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t causal_offset, int64_t key_block = 0);  // 0 = from the budget

// The same on the blocked libtorch reference only (tests compare the fused kernels with it).
AttentionPart ReferenceAttendWithLse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     int64_t causal_offset, int64_t key_block = 0);

// Exact merge of two parts over disjoint key sets.
AttentionPart MergeLse(const AttentionPart& a, const AttentionPart& b);

// Which fused kernel AttendWithLse uses on CUDA ("cudnn", "flash") or why none ("reference: ...").
// Decided once per process at the first CUDA call (each candidate is checked against the reference
// on small random GQA inputs, causal and not); `preference` ("auto", "cudnn", "flash",
// "reference") may narrow the choice before that first call. Thread-safe.
std::string FusedAttentionKernel();
void SetFusedAttentionPreference(const std::string& preference);

}  // namespace squeezeserve
