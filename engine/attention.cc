#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace squeezeserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Replaces -inf by 0 so that exp(x - shift) stays finite (and 0 where x is -inf).
at::Tensor SafeShift(const at::Tensor& max) { return at::where(at::isinf(max), at::zeros_like(max), max); }

}  // namespace

AttentionPart MergeLse(const AttentionPart& a, const AttentionPart& b) {
  const at::Tensor shift = SafeShift(at::maximum(a.lse, b.lse));
  const at::Tensor wa = at::exp(a.lse - shift);  // [H, n]
  const at::Tensor wb = at::exp(b.lse - shift);
  const at::Tensor total = wa + wb;
  AttentionPart merged;
  merged.out = (a.out * wa.unsqueeze(-1) + b.out * wb.unsqueeze(-1)) / total.clamp_min(1e-30).unsqueeze(-1);
  merged.lse = shift + at::log(total);
  return merged;
}

AttentionPart AttendWithLse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t causal_offset, int64_t key_block) {
  const int64_t heads = q.size(0), n = q.size(1), dim = q.size(2);
  const int64_t kv_heads = k.size(0), m = k.size(1);
  const int64_t group = heads / kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  const auto float_options = q.options().dtype(at::kFloat);
  if (key_block <= 0) key_block = std::max(kMinAttentionKeyBlock, kAttentionScoreBudget / std::max<int64_t>(1, heads * n));

  AttentionPart result{at::zeros({heads, n, dim}, float_options), at::full({heads, n}, kNegInf, float_options)};
  // The group's query heads share their KV head: [H_kv, G·n, D] rows, g-major.
  const at::Tensor q_grouped = q.reshape({kv_heads, group * n, dim});
  const at::Tensor query_pos =
      causal_offset >= 0 ? at::arange(n, q.options().dtype(at::kLong)).add_(causal_offset).unsqueeze(1) : at::Tensor();

  for (int64_t start = 0; start < m; start += key_block) {
    // Under a causal mask, blocks after the last query's position contribute nothing.
    if (causal_offset >= 0 && start > causal_offset + n - 1) break;
    const int64_t len = std::min(key_block, m - start);
    const at::Tensor k_blk = k.narrow(1, start, len);
    const at::Tensor v_blk = v.narrow(1, start, len);
    // Scores in float32 whatever the storage dtype (bf16 on GPU).
    at::Tensor scores = at::bmm(q_grouped, k_blk.transpose(1, 2)).to(at::kFloat).mul_(scale);  // [H_kv, G·n, len]
    scores = scores.view({kv_heads, group, n, len});
    if (causal_offset >= 0) {
      const at::Tensor key_pos = at::arange(start, start + len, query_pos.options()).unsqueeze(0);
      scores.masked_fill_(key_pos > query_pos, kNegInf);  // [n, len] broadcast over heads
    }
    const at::Tensor row_max = SafeShift(std::get<0>(scores.max(-1, /*keepdim=*/true)));
    const at::Tensor probs = at::exp(scores - row_max);  // unnormalized, 0 where masked
    const at::Tensor row_sum = probs.sum(-1);            // [H_kv, G, n]
    at::Tensor out = at::bmm(probs.view({kv_heads, group * n, len}).to(v.scalar_type()), v_blk)
                         .to(at::kFloat)
                         .view({kv_heads, group, n, dim});
    out = out / row_sum.clamp_min(1e-30).unsqueeze(-1);
    AttentionPart block{out.view({heads, n, dim}), (row_max.squeeze(-1) + at::log(row_sum)).view({heads, n})};
    result = start == 0 ? block : MergeLse(result, block);
  }
  return result;
}

}  // namespace squeezeserve
