#include "engine/decode_graphs.h"

#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/engine_log.h"
#include "engine/sample_logits.h"

#ifdef SQUEEZESERVE_CUDA_KERNELS
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>

#include <cstdlib>
#endif

namespace squeezeserve {

// A step's NVTX range, for Nsight Compute. Where the environment names it
// (SQUEEZESERVE_PROFILE_RANGE=<prefix of the range's name>), the step also runs between
// cudaProfilerStart and cudaProfilerStop, so that `ncu --profile-from-start off` profiles those
// steps alone (scripts/gpu/profile_decode_graph.sh), whatever ran before them (the ingest).
// Nothing in a build without CUDA.
class StepRange {
 public:
  explicit StepRange(const std::string& name) {
#ifdef SQUEEZESERVE_CUDA_KERNELS
    static const char* const profiled = std::getenv("SQUEEZESERVE_PROFILE_RANGE");
    profiling_ = profiled != nullptr && *profiled != '\0' && name.rfind(profiled, 0) == 0;
    nvtxRangePushA(name.c_str());
    if (profiling_) cudaProfilerStart();
#else
    (void)name;
#endif
  }
  ~StepRange() {
#ifdef SQUEEZESERVE_CUDA_KERNELS
    // The step's kernels finish inside the range: a tracer (nsys) that stops collecting at
    // cudaProfilerStop would otherwise lose those still queued.
    if (profiling_) {
      cudaDeviceSynchronize();
      cudaProfilerStop();
    }
    nvtxRangePop();
#endif
  }
  StepRange(const StepRange&) = delete;
  StepRange& operator=(const StepRange&) = delete;

 private:
  bool profiling_ = false;
};

struct DecodeGraphs::Graph {
  std::string key;
#ifdef SQUEEZESERVE_CUDA_KERNELS
  at::cuda::CUDAGraph graph;
#endif
  at::Tensor inputs;  // device int64 [2, B]: token ids, then position ids (the graph reads them)
  at::Tensor logits;  // device float32 [B, vocab] (the graph writes them)
};

// Where a replayed step's time goes: the graph's time on the device (events around the replay)
// against the time from one replay's launch to the next (the host's planning, sampling and
// streaming of the step added). Logged per run of replays of one graph, when another graph
// replays, after kMaxSteps replays, or at shutdown, as one line:
//   "decode graph replays: batch 8, 31 steps, device 11.02 ms, launch to launch 11.85 ms (medians),
//    from 1796404422270 to 1796404422641 unix ms[; <KernelAttention::SharedContextNote()>]"
// (scripts/gpu/full_model_bench.py attributes the lines to its rows by time). Runs shorter than
// kMinSteps are not logged (a server under varied load changes graphs nearly every step).
class DecodeGraphs::ReplayTimer {
 public:
  ~ReplayTimer() {
#ifdef SQUEEZESERVE_CUDA_KERNELS
    Collect();
    Flush();
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (end_ != nullptr) cudaEventDestroy(end_);
#endif
  }

#ifdef SQUEEZESERVE_CUDA_KERNELS
  // Around graph.replay() on `stream`.
  void Before(cudaStream_t stream, const std::string& key, int64_t batch, const std::string& note) {
    Collect();
    if (key != key_ || device_ms_.size() >= kMaxSteps) {
      Flush();
      key_ = key;
      batch_ = batch;
      note_ = note;
    }
    const Clock::time_point now = Clock::now();
    if (!device_ms_.empty()) cycle_ms_.push_back(std::chrono::duration<double, std::milli>(now - last_launch_).count());
    last_unix_ms_ = UnixMs();  // the window ends at its last replay's launch
    if (device_ms_.empty() && cycle_ms_.empty()) first_unix_ms_ = last_unix_ms_;
    last_launch_ = now;
    if (start_ == nullptr && (cudaEventCreate(&start_) != cudaSuccess || cudaEventCreate(&end_) != cudaSuccess)) {
      cudaGetLastError();  // no timing then; the step itself is unaffected
      return;
    }
    pending_ = cudaEventRecord(start_, stream) == cudaSuccess;
  }
  void After(cudaStream_t stream) {
    if (pending_ && cudaEventRecord(end_, stream) != cudaSuccess) pending_ = false;
  }
#endif

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kMinSteps = 8, kMaxSteps = 256;

  static int64_t UnixMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  static double Median(std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  }

#ifdef SQUEEZESERVE_CUDA_KERNELS
  // The last replay's device time, once its end event is done (Run waited for it; never blocks
  // here).
  void Collect() {
    if (!pending_) return;
    pending_ = false;
    float ms = 0.f;
    if (cudaEventQuery(end_) == cudaSuccess && cudaEventElapsedTime(&ms, start_, end_) == cudaSuccess) {
      device_ms_.push_back(ms);
    } else {
      cudaGetLastError();
    }
  }
#endif

  void Flush() {
    if (device_ms_.size() >= kMinSteps && !cycle_ms_.empty()) {
      LogEngineInfo(absl::StrFormat(
          "decode graph replays: batch %d, %d steps, device %.2f ms, launch to launch %.2f ms (medians), "
          "from %d to %d unix ms%s",
          batch_, device_ms_.size(), Median(device_ms_), Median(cycle_ms_), first_unix_ms_, last_unix_ms_,
          note_.empty() ? "" : "; " + note_));
    }
    device_ms_.clear();
    cycle_ms_.clear();
  }

#ifdef SQUEEZESERVE_CUDA_KERNELS
  cudaEvent_t start_ = nullptr, end_ = nullptr;
#endif
  bool pending_ = false;
  std::string key_, note_;
  int64_t batch_ = 0, first_unix_ms_ = 0, last_unix_ms_ = 0;
  std::vector<double> device_ms_, cycle_ms_;
  Clock::time_point last_launch_;
};

bool DecodeGraphs::Compiled() {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

DecodeGraphs::DecodeGraphs(const LlamaModel& model, KernelAttention& kernels, size_t max_graphs)
    : model_(model), kernels_(kernels), max_graphs_(std::max<size_t>(1, max_graphs)),
      timer_(std::make_unique<ReplayTimer>()) {}

DecodeGraphs::~DecodeGraphs() = default;

bool DecodeGraphs::Eligible(const std::vector<const ForwardArgs*>& batch) const {
  if (batch.empty()) return false;
  for (const ForwardArgs* args : batch) {
    if (args->attention == nullptr || &args->attention->backend() != &kernels_) return false;
    if (args->num_tokens != 1 || args->query_prefill || !args->compute_logits || args->logits_of_every_token ||
        args->captured_queries != nullptr) {
      return false;
    }
  }
  return true;
}

#ifdef SQUEEZESERVE_CUDA_KERNELS

namespace {

// Captures the layers of the planned step into graph.graph (on a side stream, after one eager
// warm-up run there: libraries initialise lazily on first use, which a capture forbids), then
// replays it once on the current stream. The warm-up stores the step's K/V exactly as the replay
// does, so running the step twice changes nothing.
void Capture(const LlamaModel& model, const PlannedStep& plan, const std::vector<const ForwardArgs*>& batch,
             at::Device device, at::Tensor* logits, at::cuda::CUDAGraph* graph, const at::Tensor& inputs) {
  const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(device.index());
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
  at::cuda::CUDAEvent ready;
  ready.record(current);
  ready.block(side);
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    const at::Tensor ids = inputs[0], positions = inputs[1];
    model.RunLayers(ids, positions, plan, batch);  // warm-up
#if TORCH_VERSION_MAJOR >= 2
    // Thread-local: an ingest on another thread keeps allocating and launching meanwhile.
    graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
#else
    graph->capture_begin();
#endif
    try {
      *logits = model.Logits(model.RunLayers(ids, positions, plan, batch));
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(side.stream(), &broken);  // leave the stream usable
      if (broken != nullptr) cudaGraphDestroy(broken);
      throw;
    }
    graph->capture_end();
  }
  at::cuda::CUDAEvent captured;
  captured.record(side);
  captured.block(current);
  graph->replay();
}

// The greedy draws of the step's logits (ReduceGreedyRows), issued in stream order right behind the
// graph and copied into pinned host memory without waiting, so that the GPU runs them straight
// after the graph while the host goes on to FinishStep; `copied` is recorded behind the copy.
at::Tensor StartGreedyRows(const at::Tensor& logits, at::cuda::CUDAEvent* copied) {
  const at::Tensor reduced = ReduceGreedyRows(logits);
  at::Tensor host = at::empty(reduced.sizes(), reduced.options().device(at::kCPU).pinned_memory(true));
  host.copy_(reduced, /*non_blocking=*/true);
  copied->record();
  return host;
}

}  // namespace

StepLogits DecodeGraphs::Run(const std::vector<const ForwardArgs*>& batch) {
  const int64_t B = static_cast<int64_t>(batch.size());
  const at::Device device = model_.device();
  const c10::cuda::CUDAGuard guard(device);
  at::Tensor host = at::empty({2, B}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* values = host.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    values[b] = batch[b]->token_ids[0];
    values[B + b] = batch[b]->start_position;
  }
  const PlannedStep plan = model_.PlanStep(batch);
  try {
    const std::string key = absl::StrCat(kernels_.launch_signature(), " v", kernels_.buffers_version());
    auto found = graphs_.begin();
    while (found != graphs_.end() && (*found)->key != key) ++found;
    if (found != graphs_.end()) {
      graphs_.splice(graphs_.begin(), graphs_, found);  // most recently used first
      Graph& graph = *graphs_.front();
      graph.inputs.copy_(host, /*non_blocking=*/true);
      const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
      timer_->Before(stream, key, B, kernels_.SharedContextNote());
      {
        // Named for Nsight Compute (scripts/gpu/profile_decode_graph.sh): one batch size's replays.
        const StepRange range(absl::StrCat("decode_graph_B", B));
        graph.graph.replay();
      }
      timer_->After(stream);
    } else {
      auto graph = std::make_unique<Graph>();
      graph->key = key;
      graph->inputs = at::empty({2, B}, at::TensorOptions().dtype(at::kLong).device(device));
      graph->inputs.copy_(host, /*non_blocking=*/true);
      Capture(model_, plan, batch, device, &graph->logits, &graph->graph, graph->inputs);
      graphs_.push_front(std::move(graph));
      while (graphs_.size() > max_graphs_) graphs_.pop_back();
    }
    // A copy on the device, in stream order: the graph's buffer is rewritten by its next replay,
    // which another generation's step may start before these rows are sampled (SampleLogits).
    const at::Tensor logits = graphs_.front()->logits.clone();
    at::cuda::CUDAEvent greedy_copied;
    StepLogits out;
    out.greedy = StartGreedyRows(logits, &greedy_copied);
    // With a squeezed member FinishStep waits for the step (its blocking copy of the attention
    // statistics is enqueued behind the greedy copy, on the same stream), and this wait is free;
    // without one nothing has waited, and this is the step's one wait.
    model_.FinishStep(plan);
    greedy_copied.synchronize();
    for (int64_t b = 0; b < B; ++b) out.rows.push_back(logits[b]);
    return out;
  } catch (...) {
    model_.AbandonStep(plan);
    throw;
  }
}

#else  // !SQUEEZESERVE_CUDA_KERNELS: never constructed (the engine makes graphs with the kernels only).

StepLogits DecodeGraphs::Run(const std::vector<const ForwardArgs*>&) {
  throw std::logic_error("decode graphs: this build has no CUDA support");
}

#endif

EagerStepRange::EagerStepRange(const std::vector<const ForwardArgs*>& batch) {
#ifdef SQUEEZESERVE_CUDA_KERNELS  // else no range: nothing to name on every step
  const bool prefill = std::any_of(batch.begin(), batch.end(), [](const ForwardArgs* args) {
    return args->num_tokens > 1 || args->query_prefill;
  });
  range_ = std::make_unique<StepRange>(absl::StrCat(prefill ? "query_prefill_B" : "eager_decode_B", batch.size()));
#else
  (void)batch;
#endif
}

EagerStepRange::~EagerStepRange() = default;

}  // namespace squeezeserve
