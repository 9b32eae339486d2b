// Centroid scoring + selection: the host launcher. Contract: selection.h, reference:
// selection_ref.cc; the kernels live in one file per path (selection_common.cuh lists them).
#include <cmath>

#include "kernels/selection.h"
#include "kernels/selection_common.cuh"

namespace squeezeserve::kernels {
namespace detail {
namespace {

template <int D>
cudaError_t run_selection(const AttentionShape& s, const SequenceLayerBf16* seqs, const void* q,
                          const SelectionParams& params, const SelectionLimits& lim, const Selection& out,
                          void* workspace, float* scores_out, const SelectionLaunch& launch, cudaStream_t stream) {
  const Workspace ws(s, lim, workspace);
  const ProblemArgs p{seqs, static_cast<const __nv_bfloat16*>(q), s.query_len, s.num_q_heads, s.num_kv_heads,
                      s.group(), 1.f / sqrtf(static_cast<float>(D))};
  if (ws.fast_r > 0) {  // decode: rows <= kMaxFastRows, flat or hierarchical
    run_decode_selection<D>(s, p, params, ws, out, scores_out, launch, stream);
  } else if (!params.hierarchical) {  // prefill block, flat
    run_tensor_core_selection<D>(s, p, params, ws, out, scores_out, stream);
  } else {
    const cudaError_t err = run_generic_selection<D>(s, p, params, lim, ws, out, scores_out, stream);
    if (err != cudaSuccess) return err;
  }
  return cudaGetLastError();
}

}  // namespace
}  // namespace detail

size_t selection_workspace_bytes(const AttentionShape& shape, const SelectionLimits& limits) {
  return detail::Workspace(shape, limits, nullptr).bytes;
}

int select_clusters(const AttentionShape& shape, const SequenceLayerBf16* seqs, const void* q,
                    const SelectionParams& params, const SelectionLimits& limits, const Selection& out,
                    void* workspace, float* scores_out, void* stream, const SelectionLaunch& launch) {
  const int g = shape.group();
  if (g < 1 || g > kMaxGroup || shape.query_len * g > 16384 || shape.num_q_heads != g * shape.num_kv_heads)
    return cudaErrorInvalidValue;
  if (params.hierarchical && limits.max_coarse <= 0) return cudaErrorInvalidValue;
  if (!(params.estimate_floor >= 0.f && params.estimate_floor <= 1.f)) return cudaErrorInvalidValue;
  const auto st = static_cast<cudaStream_t>(stream);
  switch (shape.head_dim) {
    case 64: return detail::run_selection<64>(shape, seqs, q, params, limits, out, workspace, scores_out, launch, st);
    case 128: return detail::run_selection<128>(shape, seqs, q, params, limits, out, workspace, scores_out, launch, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace squeezeserve::kernels
