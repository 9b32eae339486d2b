#include "engine/torch_attention.h"

#include <map>
#include <optional>
#include <stdexcept>
#include <utility>

#include "engine/attention.h"

namespace squeezeserve {
namespace {

class TorchSequence : public SequenceAttention {
 public:
  TorchSequence(TorchAttention& backend, KvPrefix prefix, std::optional<SqueezedLookup> lookup, KvCache own)
      : backend_(backend), prefix_(std::move(prefix)), lookup_(std::move(lookup)), own_(std::move(own)) {}

  AttentionBackend& backend() const override { return backend_; }
  int64_t length() const override { return own_.length; }
  int64_t capacity() const override { return own_.capacity(); }
  const LookupStats& stats() const override { return lookup_ ? lookup_->stats() : dense_stats_; }

  // Attention of the step's n new tokens (queries [H, n, D], keys/values [H_kv, n, D]) at `layer`,
  // after storing their K/V at rows [length, length + n) of the own KV. [n, H·D] in the model dtype.
  // prefix_part: their attention over the prefix, computed with other sequences' (dense only).
  at::Tensor Attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    bool query_prefill, const AttentionPart* prefix_part = nullptr) {
    const int64_t n = q.size(1), length = own_.length;
    own_.keys[layer].narrow(1, length, n).copy_(k);
    own_.values[layer].narrow(1, length, n).copy_(v);
    // Own tokens so far, causal: new token i sits at row length + i.
    AttentionPart attended = AttendWithLse(q, own_.keys[layer].narrow(1, 0, length + n),
                                           own_.values[layer].narrow(1, 0, length + n), length);
    if (lookup_) {
      // Prefill: one cluster set for the whole chunk (as the authors); decode: one per token.
      attended = MergeLse(lookup_->Attend(layer, q, /*per_token=*/!query_prefill), attended);
    } else if (prefix_part != nullptr) {
      attended = MergeLse(*prefix_part, attended);
    } else if (HasPrefix(layer)) {
      attended = MergeLse(AttendWithLse(q, prefix_.keys[layer], prefix_.values[layer], /*causal_offset=*/-1), attended);
    }
    return attended.out.to(q.scalar_type()).transpose(0, 1).reshape({n, -1});
  }

  // Whether this sequence has stored prefix rows at `layer` (a squeezed one reads its lookup instead).
  bool HasPrefix(int64_t layer) const { return !prefix_.keys.empty() && prefix_.keys[layer].size(1) > 0; }
  // What identifies the prefix a dense sequence attends to unmasked at `layer` among the step's
  // sequences (its keys' storage); null for a squeezed sequence or an empty prefix.
  const void* DensePrefix(int64_t layer) const { return !lookup_ && HasPrefix(layer) ? prefix_.keys[layer].data_ptr() : nullptr; }
  const KvPrefix& prefix() const { return prefix_; }

  void Advance(int64_t n) {
    own_.length += n;
    if (lookup_) lookup_->FinishStep();
  }

 private:
  TorchAttention& backend_;
  KvPrefix prefix_;
  std::optional<SqueezedLookup> lookup_;
  KvCache own_;
  LookupStats dense_stats_;
};

TorchSequence& Member(const SequenceStep& step) { return static_cast<TorchSequence&>(*step.sequence); }

}  // namespace

std::unique_ptr<SequenceAttention> TorchAttention::NewDense(KvPrefix prefix, KvCache own) {
  return std::make_unique<TorchSequence>(*this, std::move(prefix), std::nullopt, std::move(own));
}

std::unique_ptr<SequenceAttention> TorchAttention::NewSqueezed(SqueezedLookup lookup, KvCache own) {
  return std::make_unique<TorchSequence>(*this, KvPrefix{}, std::move(lookup), std::move(own));
}

std::vector<at::Tensor> TorchAttention::Attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v) {
  // Dense sequences on one prefix: their rows' attention over it in one call, then split.
  std::vector<std::optional<AttentionPart>> shared(steps_.size());
  if (shared_prefix_ && steps_.size() > 1) {
    std::map<const void*, std::vector<size_t>> on_prefix;
    for (size_t i = 0; i < steps_.size(); ++i) {
      if (const void* prefix = Member(steps_[i]).DensePrefix(layer)) on_prefix[prefix].push_back(i);
    }
    for (const auto& [prefix, members] : on_prefix) {
      if (members.size() < 2) continue;
      std::vector<at::Tensor> rows;
      for (size_t i : members) rows.push_back(q.narrow(1, steps_[i].offset, steps_[i].num_tokens));
      const KvPrefix& kv = Member(steps_[members[0]]).prefix();
      const AttentionPart part = AttendWithLse(at::cat(rows, 1), kv.keys[layer], kv.values[layer], /*causal_offset=*/-1);
      int64_t at = 0;
      for (size_t i : members) {
        const int64_t n = steps_[i].num_tokens;
        shared[i] = AttentionPart{part.out.narrow(1, at, n), part.lse.narrow(1, at, n)};
        at += n;
      }
    }
  }
  std::vector<at::Tensor> outputs;
  outputs.reserve(steps_.size());
  for (size_t i = 0; i < steps_.size(); ++i) {
    const SequenceStep& step = steps_[i];
    // A lone sequence keeps the tensors as they are (bit for bit the one-at-a-time path).
    const bool whole = step.offset == 0 && step.num_tokens == q.size(1);
    const at::Tensor qs = whole ? q : q.narrow(1, step.offset, step.num_tokens).contiguous();
    const at::Tensor ks = whole ? k : k.narrow(1, step.offset, step.num_tokens);
    const at::Tensor vs = whole ? v : v.narrow(1, step.offset, step.num_tokens);
    outputs.push_back(Member(step).Attend(layer, qs, ks, vs, step.query_prefill, shared[i] ? &*shared[i] : nullptr));
  }
  return outputs;
}

void TorchAttention::Finish() {
  for (const SequenceStep& step : steps_) Member(step).Advance(step.num_tokens);
  steps_.clear();
}

}  // namespace squeezeserve
