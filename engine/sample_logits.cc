#include "engine/sample_logits.h"

#include <cstdint>
#include <tuple>

namespace squeezeserve {

SampledToken SampleLogits(Sampler& sampler, const at::Tensor& row) {
  const at::Tensor logits = row.reshape({-1});
  const at::Tensor log_normalizer = at::logsumexp(logits.to(at::kDouble), 0);  // as LogSoftmaxAt: double
  if (sampler.greedy()) {
    const auto best = logits.max(0);  // (value, index) of the first maximum
    const at::Tensor packed =
        at::stack({std::get<0>(best).to(at::kDouble), std::get<1>(best).to(at::kDouble), log_normalizer})
            .to(at::kCPU);  // one copy back (and the one wait for the step)
    const double* v = packed.data_ptr<double>();
    return SampledToken{static_cast<int32_t>(v[1]), static_cast<float>(v[0] - v[2])};
  }
  const int64_t keep = sampler.candidates(logits.numel());
  const auto sorted = at::sort(logits, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  const at::Tensor values = std::get<0>(sorted).narrow(0, 0, keep).to(at::kCPU).contiguous();
  const at::Tensor ids = std::get<1>(sorted).narrow(0, 0, keep).to(at::kInt).to(at::kCPU).contiguous();
  return sampler.SampleSorted(absl::MakeConstSpan(ids.data_ptr<int32_t>(), static_cast<size_t>(keep)),
                              absl::MakeConstSpan(values.data_ptr<float>(), static_cast<size_t>(keep)),
                              log_normalizer.item<double>());
}

}  // namespace squeezeserve
