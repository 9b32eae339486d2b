// The next token from one row of logits, reduced where the row lives (the model's device): the
// sampler's rules (sampler.h), without copying the vocabulary to the host.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "engine/sampler.h"

namespace squeezeserve {

// row: [vocab] float32 logits on any device. A greedy draw reduces the row to its first maximum and
// its log-normalizer there and copies back three numbers; a sampled draw sorts the row there
// (stably, descending: ties keep the lower id first, the host's order) and copies back only the
// sampler's candidates (top_k of them, or all). Why: a 128K-token row is 0.5 MB, and the host's
// scans of it (argmax, then a double-precision exp of every logit for the logprob) took ~1.4 ms per
// token and sequence, serially: ~11 ms of every batch-8 step; a sampled draw without top_k sorted
// the whole row on the host (~25 ms). The same token as Sampler::Sample on the row (logprobs equal
// to rounding: the log-normalizer is summed in another order). Throws what libtorch throws.
SampledToken SampleLogits(Sampler& sampler, const at::Tensor& row);

// The greedy draws of several rows ([vocab] float32, one device) in one reduction and one copy
// back: for each row what SampleLogits gives it with a greedy sampler (a batch step's rows).
std::vector<SampledToken> SampleGreedyRows(const std::vector<at::Tensor>& rows);

}  // namespace squeezeserve
