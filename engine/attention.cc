#include "engine/attention.h"

#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "engine/engine_log.h"

// libtorch's fused attention ops with a log-sum-exp output: FlashAttention since 2.1, cuDNN with
// an attention bias argument since 2.6.
#define SQUEEZESERVE_HAS_FLASH_OP (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1))
#define SQUEEZESERVE_HAS_CUDNN_OP (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6))

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

AttentionPart ReferenceAttendWithLse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
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

namespace {

enum class FusedKind { kNone, kCudnn, kFlash };

const char* Name(FusedKind kind) { return kind == FusedKind::kCudnn ? "cudnn" : "flash"; }

AttentionPart EmptyPart(const at::Tensor& q) {
  const auto float_options = q.options().dtype(at::kFloat);
  return {at::zeros({q.size(0), q.size(1), q.size(2)}, float_options),
          at::full({q.size(0), q.size(1)}, kNegInf, float_options)};
}

// One fused call over keys that all precede the queries (causal = false) or over the queries' own
// keys, one per query (causal = true, square). Throws c10::Error when the op rejects the inputs.
AttentionPart CallFused(FusedKind kind, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal) {
  const int64_t heads = q.size(0), n = q.size(1);
  if (k.size(1) == 0) return EmptyPart(q);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(2)));
  // [1, H, n, D] views; the ops read them as [1, n, H, D] with the head dimension contiguous.
  const at::Tensor q4 = q.unsqueeze(0), k4 = k.unsqueeze(0), v4 = v.unsqueeze(0);
  at::Tensor out, lse;
#if SQUEEZESERVE_HAS_CUDNN_OP
  if (kind == FusedKind::kCudnn) {
    auto result = at::_scaled_dot_product_cudnn_attention(q4, k4, v4, /*attn_bias=*/std::nullopt,
                                                          /*compute_log_sumexp=*/true, /*dropout_p=*/0.0, causal,
                                                          /*return_debug_mask=*/false, scale);
    out = std::get<0>(result);
    lse = std::get<1>(result);
  }
#endif
#if SQUEEZESERVE_HAS_FLASH_OP
  if (kind == FusedKind::kFlash) {
    auto result = at::_scaled_dot_product_flash_attention(q4, k4, v4, /*dropout_p=*/0.0, causal,
                                                          /*return_debug_mask=*/false, scale);
    out = std::get<0>(result);
    lse = std::get<1>(result);
  }
#endif
  if (!out.defined()) throw std::logic_error("no fused attention op in this libtorch");
  // out stays in the inputs' dtype: a caller that merges parts converts it (MergeLse), one that
  // does not (the ingest prefill's first block) copies it as it is.
  return {out[0], lse.reshape({heads, n}).to(at::kFloat)};
}

// AttendWithLse's contract on one fused kernel: a causal call splits into the keys before the
// queries (unmasked) and the queries' own keys (square causal), merged by log-sum-exp.
AttentionPart FusedAttendWithLse(FusedKind kind, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 int64_t causal_offset) {
  if (causal_offset < 0) return CallFused(kind, q, k, v, /*causal=*/false);
  const int64_t n = q.size(1);
  const AttentionPart own =
      CallFused(kind, q, k.narrow(1, causal_offset, n), v.narrow(1, causal_offset, n), /*causal=*/true);
  if (causal_offset == 0) return own;
  return MergeLse(CallFused(kind, q, k.narrow(1, 0, causal_offset), v.narrow(1, 0, causal_offset), false), own);
}

// Whether `kind` runs and equals the reference on small random GQA inputs (head_dim 64 and 128,
// unmasked and causal with keys before the queries) on `device`.
bool FusedMatchesReference(FusedKind kind, at::Device device, std::string* why) {
  try {
    at::Generator gen = at::detail::createCPUGenerator(1234);
    for (int64_t dim : {64, 128}) {
      const auto cpu = at::TensorOptions().dtype(at::kFloat);
      const at::Tensor q = at::randn({8, 37, dim}, gen, cpu).to(device, at::kBFloat16);
      const at::Tensor k = at::randn({2, 300, dim}, gen, cpu).to(device, at::kBFloat16);
      const at::Tensor v = at::randn({2, 300, dim}, gen, cpu).to(device, at::kBFloat16);
      for (int64_t offset : {int64_t{-1}, int64_t{300 - 37}, int64_t{0}}) {
        const at::Tensor kk = offset == 0 ? k.narrow(1, 0, 37) : k;
        const at::Tensor vv = offset == 0 ? v.narrow(1, 0, 37) : v;
        const AttentionPart got = FusedAttendWithLse(kind, q, kk, vv, offset);
        const AttentionPart want = ReferenceAttendWithLse(q.to(at::kFloat), kk.to(at::kFloat), vv.to(at::kFloat), offset);
        const double out_error = (got.out - want.out).abs().max().item<double>();
        const double lse_error = (got.lse - want.lse).abs().max().item<double>();
        if (!(out_error < 3e-2 && lse_error < 2e-2)) {
          *why = absl::StrCat("differs from the reference (head_dim ", dim, ", causal offset ", offset,
                              "): max |out error| ", out_error, ", max |lse error| ", lse_error);
          return false;
        }
      }
    }
    return true;
  } catch (const std::exception& e) {
    *why = e.what();
    const size_t line = why->find('\n');
    if (line != std::string::npos) why->resize(line);
    return false;
  }
}

struct FusedChoice {
  std::once_flag once;
  std::mutex mu;
  std::string preference = "auto";  // guarded by mu until `once` ran
  FusedKind kind = FusedKind::kNone;
  std::string description = "reference: no CUDA attention call yet";
};

FusedChoice& Choice() {
  static FusedChoice* choice = new FusedChoice();
  return *choice;
}

FusedKind ChooseFused(at::Device device) {
  FusedChoice& choice = Choice();
  std::call_once(choice.once, [&] {
    std::string preference;
    {
      std::lock_guard<std::mutex> lock(choice.mu);
      preference = choice.preference;
    }
    FusedKind chosen = FusedKind::kNone;
    std::string rejected;  // "; cudnn: why"
    for (FusedKind kind : {FusedKind::kCudnn, FusedKind::kFlash}) {
      if (preference != "auto" && preference != Name(kind)) continue;
      std::string why;
      if (FusedMatchesReference(kind, device, &why)) {
        chosen = kind;
        break;
      }
      absl::StrAppend(&rejected, "; ", Name(kind), " rejected: ", why);
    }
    const std::string description =
        chosen != FusedKind::kNone ? std::string(Name(chosen))
                                   : absl::StrCat("reference", preference == "reference" ? " (as asked)" : "");
    if (chosen != FusedKind::kNone) {
      LogEngineInfo(absl::StrCat("dense attention on libtorch's fused ", description, " kernel", rejected));
    } else if (preference != "reference") {
      LogEngineWarning(absl::StrCat("dense attention on the blocked libtorch reference, off the fast path", rejected));
    }
    std::lock_guard<std::mutex> lock(choice.mu);
    choice.kind = chosen;
    choice.description = description;
  });
  return choice.kind;
}

// Inputs the fused kernels take: CUDA, 16-bit floats, head_dim a multiple of 8 up to 256, the
// head dimension contiguous.
bool FusedSuits(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const auto dtype = q.scalar_type();
  return q.is_cuda() && (dtype == at::kBFloat16 || dtype == at::kHalf) && k.scalar_type() == dtype &&
         v.scalar_type() == dtype && q.size(2) % 8 == 0 && q.size(2) <= 256 && q.stride(2) == 1 &&
         k.stride(2) == 1 && v.stride(2) == 1 && q.size(0) % k.size(0) == 0;
}

}  // namespace

AttentionPart AttendWithLse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t causal_offset,
                            int64_t key_block) {
  const bool shapes_fit = causal_offset < 0 || causal_offset + q.size(1) == k.size(1);
  if (shapes_fit && FusedSuits(q, k, v)) {
    const FusedKind kind = ChooseFused(q.device());
    if (kind != FusedKind::kNone) return FusedAttendWithLse(kind, q, k, v, causal_offset);
  }
  return ReferenceAttendWithLse(q, k, v, causal_offset, key_block);
}

std::string FusedAttentionKernel() {
  FusedChoice& choice = Choice();
  std::lock_guard<std::mutex> lock(choice.mu);
  return choice.description;
}

void SetFusedAttentionPreference(const std::string& preference) {
  FusedChoice& choice = Choice();
  std::lock_guard<std::mutex> lock(choice.mu);
  choice.preference = preference;
}

}  // namespace squeezeserve
