#include "engine/sample_logits.h"

#include <cstdint>
#include <tuple>

namespace squeezeserve {

std::vector<SampledToken> SampleGreedyRows(const std::vector<at::Tensor>& rows) {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& row : rows) flat.push_back(row.reshape({-1}));
  const at::Tensor logits = at::stack(flat);                                   // [n, vocab]
  const at::Tensor log_normalizer = at::logsumexp(logits.to(at::kDouble), 1);  // as LogSoftmaxAt: double
  const auto best = logits.max(1);  // (value, index) of each row's first maximum
  const at::Tensor packed =
      at::stack({std::get<0>(best).to(at::kDouble), std::get<1>(best).to(at::kDouble), log_normalizer}, 1)
          .to(at::kCPU)
          .contiguous();  // [n, 3]: one copy back (and the one wait for the step)
  const double* v = packed.data_ptr<double>();
  std::vector<SampledToken> out;
  for (size_t i = 0; i < rows.size(); ++i, v += 3)
    out.push_back(SampledToken{static_cast<int32_t>(v[1]), static_cast<float>(v[0] - v[2])});
  return out;
}

SampledToken SampleLogits(Sampler& sampler, const at::Tensor& row) {
  if (sampler.greedy()) return SampleGreedyRows({row})[0];
  const at::Tensor logits = row.reshape({-1});
  const at::Tensor log_normalizer = at::logsumexp(logits.to(at::kDouble), 0);  // as LogSoftmaxAt: double
  const int64_t keep = sampler.candidates(logits.numel());
  const auto sorted = at::sort(logits, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  const at::Tensor values = std::get<0>(sorted).narrow(0, 0, keep).to(at::kCPU).contiguous();
  const at::Tensor ids = std::get<1>(sorted).narrow(0, 0, keep).to(at::kInt).to(at::kCPU).contiguous();
  return sampler.SampleSorted(absl::MakeConstSpan(ids.data_ptr<int32_t>(), static_cast<size_t>(keep)),
                              absl::MakeConstSpan(values.data_ptr<float>(), static_cast<size_t>(keep)),
                              log_normalizer.item<double>());
}

}  // namespace squeezeserve
