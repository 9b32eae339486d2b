// The CUDA implementation of the attention seam (attention_backend.h): the kernels of kernels/
// (select_clusters, sparse_decode_attention, sparse_prefill_attention; contract in
// kernels/squeeze_types.h) serve dense and squeezed generations of a bf16 model on a GPU with a
// kernel shape. libtorch; internal to engine/. The CUDA calls and c10/cuda headers live in
// kernel_attention.cc only, under SQUEEZESERVE_CUDA_KERNELS (the CPU build compiles the rest and
// never constructs it).
//
// Data (docs/index_layout.md "On the GPU"): a context's clustered part (cluster-sorted bf16 KV,
// bf16 centroids, int32 offsets) is read where the StoredContext holds it, through per-context views
// built once by this backend. The kernels' dense part is one buffer per KV head — the context's
// window, then the sequence's own tokens — so a sequence's own KV is [H_kv, W + capacity, D] per
// layer with the window copied in front once.
// Dense generations run the same kernels with the whole clustered part as one selected cluster
// (docs/attention.md): their decode tokens on the decode kernel, their query prefill on the
// prefill kernel.
//
// A step: Plan writes every layer's views of every sequence into one pinned staging buffer and
// uploads it once; the layers then only launch kernels that read device memory (the selection's
// counts included), so a decode step has no host synchronisation and can be captured as a CUDA
// graph (decode_graphs.h). Finish copies the selection statistics of all layers back at once.
//
// Batch: the decode tokens of a step run as one dense launch and one squeezed launch per layer;
// their selections as one select_clusters launch per distinct (hierarchical, threshold kind); a
// query prefill runs alone (the prefill kernels take one query length per launch).
//
// Shared context (KernelAttentionOptions::shared_context_decode): a batch's dense questions on one
// stored context read it once per bundle of S = 32 / G of them instead of once each. A bundle is
// one sequence of a launch whose group is its members' query heads (S x G <= kernels::kMaxDecodeGroup
// rows: S = 8 for Llama-3's group 4, 32 for MHA; above 16 rows two warps share each tile),
// attending the context's clustered rows and window; a launch beside it (in its tail:
// DecodeLaunch::next_beside) attends each member's own tokens, and kernels::merge_decode_pieces
// merges the bundles' pieces (left unmerged by their launch: DecodeLaunch::defer_merge) with the
// own tokens' part by log-sum-exp, on many CTAs at once. At batch 8 on a 32K context the KV a step
// reads goes from 8 copies to 1.
//
// Pruned-cluster estimate (AttentionOptions::estimate_pruned): inside the kernels, flat and
// hierarchical — the selection lists each sequence's pruned non-empty clusters (and, decoding, their
// logits) and the attention kernels fold each in as one key (its mean value) in the same online
// softmax (kernels/squeeze_types.h).
//
// Read-ahead (AttentionOptions::read_ahead): each squeezed sequence keeps per layer a cursor on the
// GPU (next position per query head and its age); the selection forces the cluster at the cursor,
// the attention kernels report each query head's top key, and kernels/read_ahead.h writes the
// advanced cursor, on the device, into a second buffer that Finish makes current. A step thus reads
// only what it does not write, and runs twice as once: a CUDA graph's capture (an eager warm-up,
// then the replay) keeps read-ahead steps on the graphs.
//
// Squeezed bundles (KernelAttentionOptions::squeezed_bundles): the squeezed decode tokens of one
// selection launch on one context go in bundles of up to 8 / G (engine/shared_context_plan.h, as
// the dense bundles), each bundle reading the union of its members' selected clusters once
// (kernels/bundle_selection.h) with a member mask per cluster, its window and, over one-level
// indexes, the union of their estimated clusters (a mask each: each centroid and mean value read
// once per bundle); each member's own tokens (and, over two-level indexes, its estimate) are a
// launch of their own beside the bundles', and merge_decode_pieces merges the two parts
// (read-ahead's top keys included) into the members' rows. Each member attends exactly its own
// selection and estimate: its output does not depend on its batch. By default only where they
// pay (SqueezedBundles::kWherePays, measured on an H100: bench/kernels/NOTES.md run 33): one query
// head a KV head (Llama-2's MHA; a GQA group's bundles do more MMA work per byte saved and were
// slower) and four or more questions in the run (a bundle of 2 read 0.9 of its members' rows and
// was slower); estimating runs too since each estimated cluster's ln n travels with its mask (run
// 37: the default lookup 0.93x the TPOT without bundles at 32K batch 8, 0.87x at 64K).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "engine/attention_backend.h"
#include "engine/model_config.h"
#include "engine/squeezed_lookup.h"
#include "engine/stored_context.h"
#include "kernels/prefill_attention.h"

namespace squeezeserve {

// Which backend serves generations, decided once per engine from EngineOptions::attention_backend
// ("auto", "torch", "kernels"): true = kernels. `reason` says why (for the log). InvalidArgument
// for an unknown value; FailedPrecondition when "kernels" is asked and cannot be had (CPU device, a
// build without the kernels, head_dim not 64/128, GQA group above 8, KV not bf16).
absl::StatusOr<bool> ChooseKernelBackend(const std::string& backend, const ModelConfig& config, at::Device device,
                                         at::ScalarType dtype, std::string* reason);

// Squeezed bundles: never, where they pay (see above), or for every run of two or more (for
// comparisons and tests).
enum class SqueezedBundles { kOff, kWherePays, kAlways };

struct KernelAttentionOptions {
  kernels::PrefillKernel prefill_kernel = kernels::PrefillKernel::kWhereRangesAreLong;  // EngineOptions::prefill_kernel
  bool programmatic_launch = true;    // EngineOptions::programmatic_launch (kernels/launch.h's switch)
  bool shared_context_decode = true;  // EngineOptions::shared_context_decode (see above)
  SqueezedBundles squeezed_bundles = SqueezedBundles::kWherePays;  // EngineOptions::squeezed_bundles
};

class KernelAttention : public AttentionBackend {
 public:
  // Whether this build has the CUDA kernels (SQUEEZESERVE_CUDA_KERNELS).
  static bool Compiled();

  KernelAttention(const ModelConfig& config, at::Device device, const KernelAttentionOptions& options = {});
  ~KernelAttention() override;
  const char* name() const override { return "kernels"; }

  // For the log: which kernel runs the squeezed query prefill's attention, and why the
  // warp-specialized one does not where it was asked and cannot run (head_dim, device).
  std::string PrefillKernelNote() const;
  // For the log: whether squeezed questions on one context may go in bundles, and where not why.
  std::string SqueezedBundlesNote() const;

  // Empty when a squeezed generation with these options on `context` runs here; otherwise why not
  // (it then runs on libtorch, and its statistics and the log say so).
  static std::string WhyNotOnKernels(const StoredContext& context, const AttentionOptions& attention);

  // A dense generation on `context` with room for `capacity` own tokens. Throws on allocation failure.
  std::unique_ptr<SequenceAttention> NewDense(std::shared_ptr<const StoredContext> context, int64_t capacity);
  // A squeezed one (WhyNotOnKernels is empty for it).
  std::unique_ptr<SequenceAttention> NewSqueezed(std::shared_ptr<const StoredContext> context,
                                                 const AttentionOptions& attention, LookupThresholds thresholds,
                                                 int64_t capacity);

  void Plan(const std::vector<SequenceStep>& steps) override;
  std::vector<at::Tensor> Attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v) override;
  void Finish() override;
  void Abandon() override;

  // What a CUDA graph of the planned step's layers bakes in besides the persistent buffers (valid
  // between Plan and Finish): the launch structure (batch sizes, selection launches and their
  // launch-wide parameters) and the contexts of the estimate's libtorch ops. Two steps with the same
  // signature and buffers_version() can replay one graph (decode_graphs.h).
  const std::string& launch_signature() const { return signature_; }
  // For the log, between Plan and Finish: how the planned step's dense decode tokens share their
  // contexts ("dense questions in 2 shared-context bundles of up to 8"); empty when they do not.
  std::string SharedContextNote() const;
  // Bumped whenever Plan reallocates a persistent buffer: a CUDA graph captured under an older
  // value reads freed memory and must be captured again.
  int64_t buffers_version() const { return buffers_version_; }

  struct ContextViews;  // per context: the kernel views of its layers (kernel_attention.cc)
  struct Buffers;       // persistent device and pinned host buffers of a step

 private:
  std::shared_ptr<const ContextViews> ViewsOf(const std::shared_ptr<const StoredContext>& context);

  int64_t num_layers_, num_q_heads_, num_kv_heads_, head_dim_;
  at::Device device_;
  KernelAttentionOptions options_;
  // Whether squeezed bundles may run at all (options_.squeezed_bundles and the model's group): the
  // buffers have their regions only then.
  bool bundling_ = false;
  std::mutex views_mu_;  // guards views_ (sequences start on any thread)
  std::map<const StoredContext*, std::pair<std::weak_ptr<const StoredContext>, std::shared_ptr<const ContextViews>>>
      views_;
  // The planned step (between Plan and Finish; forward passes are serialized by the engine), in
  // launch order: query chunks [0, first_decode_), dense decode tokens [first_decode_,
  // first_squeezed_), squeezed decode tokens grouped by selection launch [first_squeezed_, end).
  std::vector<SequenceStep> steps_;
  std::vector<size_t> order_of_;  // order_of_[i]: index in Plan's argument of steps_[i]
  // The decode tokens' indices in Plan's argument, ascending: their outputs are gathered back to
  // that order on the device (Buffers::decode_rows_at), so the host mapping of a graph's outputs
  // does not depend on where dense and squeezed members sit in the batch.
  std::vector<size_t> decode_in_batch_order_;
  bool in_batch_order_ = false;   // every step a decode token, steps_[i] at stacked row i
  int64_t first_decode_ = 0, first_squeezed_ = 0;
  // The dense decode tokens' shared-context bundles (0: each reads the context on its own) and the
  // members per bundle (its largest; smaller bundles repeat a member's query in the spare slots).
  int64_t shared_bundles_ = 0, shared_slots_ = 0;
  // The squeezed bundles of the planned step: per selection launch of members [first, end) that
  // bundles, its bundles and slots and where its staged arrays start (Buffers' squeezed regions,
  // in elements).
  struct SqueezedRun {
    int64_t first = 0, end = 0, bundles = 0, slots = 0;
    int64_t views_at = 0;     // its bundle views: [layer][views_at + k]
    int64_t slots_at = 0;     // its slot table [bundles][slots] int32 (member - first, or -1)
    int64_t q_rows_at = 0;    // its bundle query rows int64 (PlanSharedContext::query_rows)
    int64_t out_rows_at = 0;  // its members' rows in the bundles' output int32 (output_rows)
    // Whether a member estimates: only then do the bundles and the members' part carry the
    // estimate's arrays (a step may estimate for another run).
    bool estimates = false;
  };
  std::vector<SqueezedRun> squeezed_runs_;
  std::string signature_;
  uint64_t next_context_serial_ = 0;  // ContextViews::serial (guarded by views_mu_)
  std::unique_ptr<Buffers> buffers_;
  int64_t buffers_version_ = 0;
};

}  // namespace squeezeserve
