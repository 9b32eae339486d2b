// The next token from one row of logits, reduced where the row lives (the model's device): the
// sampler's rules (sampler.h), without copying the vocabulary to the host.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "engine/sampler.h"

namespace squeezeserve {

// row: [vocab] float32 logits on any device. A greedy draw reduces the row to its first maximum and
// its log-normalizer there; a sampled draw makes Sampler::Sample's draw there (the row sorted
// stably, descending, so that ties keep the host's lower-id-first order; the temperature softmax,
// the nucleus and the cumulative search in double), taking only the uniform number from the
// sampler's seeded stream. Either way three numbers come back. Why: a 128K-token row is 0.5 MB, and
// the host's scans of it (argmax, then a double-precision exp of every logit for the logprob) took
// ~1.4 ms per token and sequence, serially: ~11 ms of every batch-8 step; a sampled draw without
// top_k sorted the whole row on the host (~25 ms). The same token as Sampler::Sample on the row but
// where a cumulative sum, added in another order, lands within rounding of the uniform number;
// logprobs equal to rounding. Throws what libtorch throws.
SampledToken SampleLogits(Sampler& sampler, const at::Tensor& row);

// The greedy draws of several rows ([vocab] float32, one device) in one reduction and one copy
// back: for each row what SampleLogits gives it with a greedy sampler (a batch step's rows).
// GreedyTokens(ReduceGreedyRows(rows stacked) copied to the host).
std::vector<SampledToken> SampleGreedyRows(const std::vector<at::Tensor>& rows);

// SampleGreedyRows in its two halves, so that a decode step can issue the reduction on the device
// right after its forward and read the tokens after the step's one wait (DecodeGraphs::Run).
// ReduceGreedyRows: logits [n, vocab] float32 → [n, 3] double on the same device, issued in stream
// order without waiting: each row's first maximum, its index, and the row's log-normalizer.
at::Tensor ReduceGreedyRows(const at::Tensor& logits);
// GreedyTokens: that [n, 3] tensor, on the host, as the n tokens and their logprobs.
std::vector<SampledToken> GreedyTokens(const at::Tensor& reduced);

}  // namespace squeezeserve
