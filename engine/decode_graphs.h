// Decode steps replayed as CUDA graphs (docs/attention.md "CUDA graphs"). At batch 1 a 32-layer
// decode step launches ~25 kernels per layer; dispatched one by one from the host they take longer
// than the GPU needs to run them. A step whose sequences all decode one token on the CUDA kernels
// is captured once — every layer, the final norm and the lm_head — and replayed: the host plans the
// step (KernelAttention::Plan writes the views into persistent buffers), copies the token ids and
// positions into the graph's input buffers, and launches the graph.
//
// A graph is keyed by the step's launch signature (KernelAttention::launch_signature: batch size,
// selection launches, contexts of the estimate's libtorch ops) and the kernels' buffers version, so
// a batch of dense and squeezed sequences replays one graph whatever contexts they read; a new key
// is captured on first use (after one eager warm-up run of the same step). libtorch; internal.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "engine/kernel_attention.h"
#include "engine/llama_model.h"

namespace squeezeserve {

// A step's logits as DecodeGraphs::Run hands them over.
struct StepLogits {
  std::vector<at::Tensor> rows;  // float32 [vocab] per batch entry, on the device
  // ReduceGreedyRows (sample_logits.h) of every row, on the host [B, 3]: the greedy draws, reduced
  // on the device right after the forward and brought back with the step's one wait. Undefined
  // where the step ran eagerly (LlamaModel::ForwardBatch).
  at::Tensor greedy;
};

class DecodeGraphs {
 public:
  // Whether this build can capture graphs (a CUDA build).
  static bool Compiled();

  // `max_graphs`: captured graphs kept (least recently used evicted).
  DecodeGraphs(const LlamaModel& model, KernelAttention& kernels, size_t max_graphs = 32);
  ~DecodeGraphs();

  // Whether the forward of `batch` can be a graph: every entry one decode token of a sequence on the
  // CUDA kernels, wanting its last-token logits and nothing else.
  bool Eligible(const std::vector<const ForwardArgs*>& batch) const;

  // The forward of an eligible batch: the float32 logits [vocab] of each entry, on the device, and
  // their greedy draws, on the host and ready to read (Run waits for the step).
  // Throws on failure (the caller may run the step eagerly instead: the sequences have not advanced).
  StepLogits Run(const std::vector<const ForwardArgs*>& batch);

  size_t captured() const { return graphs_.size(); }

 private:
  struct Graph;
  class ReplayTimer;
  const LlamaModel& model_;
  KernelAttention& kernels_;
  size_t max_graphs_;
  std::list<std::unique_ptr<Graph>> graphs_;  // most recently used first
  std::unique_ptr<ReplayTimer> timer_;        // where replayed steps' time goes (logged)
};

class StepRange;

// An NVTX range around a step that runs eagerly, for Nsight Compute (scripts/gpu/profile_decode_graph.sh
// --step prefill): "query_prefill_B<n>" where a member feeds query tokens (the questions' prefill,
// whose time is the time to first token), else "eager_decode_B<n>" (a decode step before its graph
// is captured, or every decode step with EngineOptions::cuda_graphs off). Where the environment's
// SQUEEZESERVE_PROFILE_RANGE is a prefix of the name, the step runs between cudaProfilerStart and
// cudaProfilerStop (as the graphs' replays "decode_graph_B<n>" do). Nothing in a build without CUDA.
class EagerStepRange {
 public:
  explicit EagerStepRange(const std::vector<const ForwardArgs*>& batch);
  ~EagerStepRange();
  EagerStepRange(const EagerStepRange&) = delete;
  EagerStepRange& operator=(const EagerStepRange&) = delete;

 private:
  std::unique_ptr<StepRange> range_;
};

}  // namespace squeezeserve
