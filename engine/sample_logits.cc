#include "engine/sample_logits.h"

#include <cstdint>
#include <tuple>

namespace squeezeserve {

at::Tensor ReduceGreedyRows(const at::Tensor& logits) {
  const at::Tensor log_normalizer = at::logsumexp(logits.to(at::kDouble), 1);  // as LogSoftmaxAt: double
  const auto best = logits.max(1);  // (value, index) of each row's first maximum
  return at::stack({std::get<0>(best).to(at::kDouble), std::get<1>(best).to(at::kDouble), log_normalizer}, 1);
}

std::vector<SampledToken> GreedyTokens(const at::Tensor& reduced) {
  const at::Tensor packed = reduced.contiguous();
  const double* v = packed.data_ptr<double>();
  std::vector<SampledToken> out;
  for (int64_t i = 0; i < packed.size(0); ++i, v += 3)
    out.push_back(SampledToken{static_cast<int32_t>(v[1]), static_cast<float>(v[0] - v[2])});
  return out;
}

std::vector<SampledToken> SampleGreedyRows(const std::vector<at::Tensor>& rows) {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& row : rows) flat.push_back(row.reshape({-1}));
  // One copy back (and the one wait for the step).
  return GreedyTokens(ReduceGreedyRows(at::stack(flat)).to(at::kCPU));
}

SampledToken SampleLogits(Sampler& sampler, const at::Tensor& row) {
  if (sampler.greedy()) return SampleGreedyRows({row})[0];
  // Sampler::Sample's draw (sampler.cc), as tensor operations on the row's device: the candidates
  // sorted, their temperature softmax in double, the nucleus, and the first candidate whose
  // cumulative probability exceeds the uniform number times the kept mass.
  const SamplerOptions& o = sampler.options();
  const at::Tensor logits = row.reshape({-1});
  const at::Tensor log_normalizer = at::logsumexp(logits.to(at::kDouble), 0);  // as LogSoftmaxAt: double
  const int64_t keep = sampler.candidates(logits.numel());
  const auto sorted = at::sort(logits, /*stable=*/true, /*dim=*/0, /*descending=*/true);  // ties: lower id first
  const at::Tensor values = std::get<0>(sorted).narrow(0, 0, keep), ids = std::get<1>(sorted).narrow(0, 0, keep);
  const double inv_t = 1.0 / o.temperature;
  const at::Tensor scaled = values.to(at::kDouble) * inv_t;
  at::Tensor probs = at::exp(scaled - scaled[0]);
  probs = probs / probs.sum();
  const at::Tensor cumulative = probs.cumsum(0);
  // Nucleus: the smallest prefix whose mass reaches top_p (at least one candidate).
  at::Tensor kept = at::scalar_tensor(keep, cumulative.options().dtype(at::kLong));
  if (o.top_p < 1) kept = at::clamp((cumulative < o.top_p).sum() + 1, 1, keep);
  const at::Tensor last = kept - 1;
  const at::Tensor u = cumulative.index_select(0, last.view({1})).squeeze(0) * sampler.NextUniform();
  const at::Tensor in_nucleus = at::arange(keep, cumulative.options().dtype(at::kLong)) < kept;
  const at::Tensor chosen = at::minimum((cumulative.le(u) & in_nucleus).sum(), last).view({1});
  const at::Tensor packed = at::cat({ids.index_select(0, chosen).to(at::kDouble),
                                     values.index_select(0, chosen).to(at::kDouble), log_normalizer.view({1})})
                                .to(at::kCPU);  // one copy back
  const double* v = packed.data_ptr<double>();
  return SampledToken{static_cast<int32_t>(v[0]), static_cast<float>(v[1] - v[2])};
}

}  // namespace squeezeserve
