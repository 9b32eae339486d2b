// The one seam through which the model attends during generation (docs/attention.md).
//
// A generation attends with one SequenceAttention, made when it starts by the AttentionBackend that
// will serve it: TorchAttention (libtorch: dense over the stored context, or the Squeezed lookup of
// engine/squeeze/; every device, every shape) or KernelAttention (the CUDA kernels of kernels/:
// dense or squeezed, a GPU and a kernel shape). A forward groups its sequences by backend and drives
// each backend through three phases:
//   Plan(steps)   once, before the layers: everything about the step that is decided on the host
//                 (thresholds, kernel views, their upload), so that the layers are device work only
//                 and a decode step can be replayed as a CUDA graph (decode_graphs.h);
//   Attend(layer) per layer: stores the new tokens' K/V in each sequence's own KV and returns their
//                 attention over the stored context and their own tokens;
//   Finish()      after the layers: the own lengths advance, the lookup statistics fold in.
// libtorch; internal to engine/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace squeezeserve {

class AttentionBackend;

// K/V buffers of one sequence's own tokens: per layer [H_kv, capacity, D]; rows [0, length) are
// filled.
struct KvCache {
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> values;
  int64_t length = 0;

  int64_t capacity() const { return keys.empty() ? 0 : keys[0].size(1); }
};

// Per-step statistics of one sequence's lookups, averaged into per-generation means: a step (query
// prefill or decode token) is the mean of its layers' samples.
class LookupStats {
 public:
  // One layer of the current step: the mean over KV heads of (keys read) / context tokens, and of
  // the centroid vectors scored.
  void AddLayer(double kv_fraction, double comparisons) {
    step_fraction_ += kv_fraction;
    step_comparisons_ += comparisons;
    ++step_layers_;
  }
  void FinishStep() {
    if (step_layers_ == 0) return;
    fraction_sum_ += step_fraction_ / step_layers_;
    comparisons_sum_ += step_comparisons_ / step_layers_;
    ++steps_;
    step_fraction_ = step_comparisons_ = 0;
    step_layers_ = 0;
  }
  // 1 before any squeezed step (dense reads everything).
  double kv_fraction_loaded() const { return steps_ == 0 ? 1.0 : fraction_sum_ / steps_; }
  double centroid_comparisons_per_token() const { return steps_ == 0 ? 0.0 : comparisons_sum_ / steps_; }

 private:
  double step_fraction_ = 0, step_comparisons_ = 0;
  int64_t step_layers_ = 0;
  double fraction_sum_ = 0, comparisons_sum_ = 0;
  int64_t steps_ = 0;
};

// One sequence's attention state: its own KV (query + generated tokens) and what it reads of the
// stored context. Owned by its generation; driven only by its backend.
class SequenceAttention {
 public:
  virtual ~SequenceAttention() = default;
  virtual AttentionBackend& backend() const = 0;
  // Own tokens stored so far: the next step's K/V go to rows [length, length + n).
  virtual int64_t length() const = 0;
  virtual int64_t capacity() const = 0;
  virtual const LookupStats& stats() const = 0;
};

// One sequence's part of a forward: its new tokens are rows [offset, offset + num_tokens) of the
// stacked batch.
struct SequenceStep {
  SequenceAttention* sequence = nullptr;
  int64_t offset = 0;
  int64_t num_tokens = 0;
  // A chunk of the query (the squeezed lookup's prefill selection: one cluster set shared by the
  // chunk's tokens, prefill thresholds) rather than a decode token (one set per token).
  bool query_prefill = false;
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  // Short name for statistics and logs: "torch", "kernels".
  virtual const char* name() const = 0;

  // The sequences of this backend in one forward (all made by it, distinct, with room for their
  // tokens). Throws std::runtime_error on failure (the forward fails as a whole).
  virtual void Plan(const std::vector<SequenceStep>& steps) = 0;
  // Layer `layer` of the planned step: q [H, N, D], k and v [H_kv, N, D] are the post-RoPE
  // projections of every row of the batch (rows of other backends' sequences included). Returns,
  // per planned step in order, its attention output [num_tokens, H·D] in the model dtype.
  virtual std::vector<at::Tensor> Attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v) = 0;
  // After every layer ran: lengths advance, statistics fold in. At most one host synchronisation.
  virtual void Finish() = 0;
  // Drops a planned step whose forward failed midway (nothing advances).
  virtual void Abandon() = 0;
};

}  // namespace squeezeserve
