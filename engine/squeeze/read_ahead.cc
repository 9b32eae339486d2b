#include "engine/squeeze/read_ahead.h"

namespace squeezeserve::squeeze {

ReadAheadCursor AdvanceReadAhead(const ReadAheadCursor& cursor, const at::Tensor& top_position,
                                 const at::Tensor& top_share) {
  const int64_t T = top_position.size(1);
  const at::Tensor confident = (top_share >= kReadAheadShare) & (top_position >= 0);  // [H_q, T]
  // Index of each head's last confident token, −1 when none.
  const at::Tensor token = at::arange(T, top_position.options()).unsqueeze(0).expand_as(top_position);
  const at::Tensor last = at::where(confident, token, at::full_like(token, -1)).amax(1);  // [H_q]
  at::Tensor found = last >= 0;  // widened below by a live older cursor
  const at::Tensor seen = top_position.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1);
  // Token `last` read position `seen`; the token after this call reads seen + (T − last).
  at::Tensor next = seen + (T - last);
  at::Tensor age = (T - 1) - last;
  if (cursor.next_position.defined()) {
    next = at::where(found, next, cursor.next_position + T);
    age = at::where(found, age, cursor.age + T);
    found.logical_or_(cursor.next_position >= 0);
  }
  const at::Tensor keep = found & (age <= kReadAheadMaxAge);
  return ReadAheadCursor{at::where(keep, next, at::full_like(next, -1)), age};
}

at::Tensor ClustersAtPositions(const LayerIndex& index, const at::Tensor& positions) {
  const int64_t H = index.num_heads(), N = index.num_clustered(), K = index.num_clusters();
  const at::Tensor p = positions.to(index.perm.device(), at::kLong).view({H, -1});  // [H_kv, G]
  at::Tensor marked = at::zeros({H, K}, p.options());
  if (N == 0) return marked.to(at::kBool);
  const at::Tensor inside = (p >= 0) & (p < N);
  const at::Tensor cluster = index.cluster_of_position.gather(1, p.clamp(0, N - 1)).to(at::kLong);
  return marked.scatter_reduce_(1, cluster, inside.to(at::kLong), "amax", /*include_self=*/true) > 0;
}

}  // namespace squeezeserve::squeeze
