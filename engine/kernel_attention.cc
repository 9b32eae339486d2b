#include "engine/kernel_attention.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/shared_context_plan.h"
#include "engine/squeeze/read_ahead.h"
#include "kernels/read_ahead.h"
#include "kernels/squeeze_types.h"

#ifdef SQUEEZESERVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "kernels/append_kv.h"
#include "kernels/bundle_selection.h"
#include "kernels/decode_attention.h"
#include "kernels/launch.h"
#include "kernels/prefill_attention.h"
#include "kernels/selection.h"
#endif

namespace squeezeserve {
namespace {

// Shapes the kernels are instantiated for (kernels/*.h "Requires").
bool IsKernelShape(const ModelConfig& c) {
  if (c.head_dim != 64 && c.head_dim != 128) return false;
  if (c.num_kv_heads <= 0 || c.num_attention_heads % c.num_kv_heads != 0) return false;
  const int64_t g = c.num_attention_heads / c.num_kv_heads;
  return g >= 1 && g <= kernels::kMaxGroup;
}

// select_clusters takes at most this many query rows (query_len × group) per launch.
constexpr int64_t kMaxSelectionRows = 16384;
// sparse_decode_attention takes at most this many (sequence, KV head) pairs per launch.
constexpr int64_t kMaxDecodePairs = 2048;
// Query heads per KV head of a shared-context bundle's launch at most (kernels::kMaxDecodeGroup,
// checked where decode_attention.h is included).
constexpr int64_t kMaxBundleGroup = 32;
// A squeezed bundle's at most: 8 query heads a KV head, the MMA rows a question's own launch pads
// its group to anyway. Larger bundles read fewer bytes but do more work per byte: Llama-3's bundle
// of 8 (group 32, pairs of warps) and its bundles of 4 (group 16) were slower than its members one
// by one (bundle_bench at 32K; end to end at 33K and 128K batch 8, 1.00-1.16x the TPOT), while
// Llama-2's bundle of 8 (group 8) gains (bench/kernels/NOTES.md runs 31 and 33).
constexpr int64_t kMaxSqueezedBundleGroup = 8;

// SqueezedBundles::kWherePays: the model's group (checked once) and a run's size (checked per
// step); engine/kernel_attention.h "Squeezed bundles" says why.
bool BundlesPayForGroup(int64_t group) { return group == 1; }
bool BundlesPayForRun(int64_t members) { return members >= 4; }

#ifdef SQUEEZESERVE_CUDA_KERNELS
// The own tokens' launch: short heads (~100 rows each), a few CTAs a head in one wave of the
// device (kernels::DecodeLaunch::one_wave_per_heads says why).
// It runs beside the bundles' launch before it (kernels::DecodeLaunch::beside_previous), on a
// workspace of its own after the bundles' (OwnTokensWorkspaceAt).
kernels::DecodeLaunch OwnTokensLaunch(kernels::DecodeLaunch launch) {
  launch.one_wave_per_heads = true;
  launch.static_selection = true;  // OwnTokensSelection: constants
  launch.beside_previous = true;
  return launch;
}
#endif

const uint16_t* Bf16Data(const at::Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); }

int64_t Aligned(int64_t bytes) { return (bytes + 255) / 256 * 256; }

#ifdef SQUEEZESERVE_CUDA_KERNELS
// Where the own tokens' workspace starts: after the region of the bundles' launch (shape
// `bundled`), which their merge reads after both.
int64_t OwnTokensWorkspaceAt(const kernels::AttentionShape& bundled) {
  return Aligned(static_cast<int64_t>(kernels::decode_attention_workspace_bytes(bundled, kernels::DecodeLaunch{})));
}
#endif

}  // namespace

// What the kernels read of one context, per layer: the squeezed view (clustered part + index) and
// the dense view (the same clustered rows as ONE cluster, which a dense decode selects whole).
struct KernelAttention::ContextViews {
  uint64_t serial = 0;    // unique per views ever built: names the context in launch signatures
  int64_t window = 0;     // W: rows [N, S) of the stored KV, copied into each sequence's dense part
  int64_t clustered = 0;  // N
  int32_t max_clusters = 1, max_coarse = 0;
  std::vector<kernels::SequenceLayerBf16> squeezed;  // empty without an index
  std::vector<kernels::SequenceLayerBf16> dense;
  std::vector<at::Tensor> storage;  // the bf16 centroids and int32 offsets the views point at
};

namespace {

// One index level as the kernels read it: bf16 centroids (the index rounds them to bf16 values at
// build on a bf16 model, so the conversion is exact) and int32 offsets, kept alive in `storage`.
std::pair<const uint16_t*, const int32_t*> KernelLevel(const at::Tensor& centroids, const at::Tensor& offsets,
                                                       std::vector<at::Tensor>* storage) {
  const at::Tensor bf16 = centroids.to(at::kBFloat16).contiguous();
  const at::Tensor int32 = offsets.to(at::kInt).contiguous();
  storage->push_back(bf16);
  storage->push_back(int32);
  return {Bf16Data(bf16), int32.data_ptr<int32_t>()};
}

// Why the kernels cannot read `context` at all (empty: they can).
std::string WhyContextNotOnKernels(const StoredContext& context) {
  for (size_t l = 0; l < context.keys().size(); ++l) {
    for (const at::Tensor* t : {&context.keys()[l], &context.values()[l]}) {
      if (!t->is_cuda() || t->scalar_type() != at::kBFloat16 || !t->is_contiguous() || t->dim() != 3) {
        return "the context's KV is not contiguous bf16 in GPU memory";
      }
    }
  }
  return "";
}

class KernelSequence : public SequenceAttention {
 public:
  KernelSequence(KernelAttention& backend, std::shared_ptr<const StoredContext> context,
                 std::shared_ptr<const KernelAttention::ContextViews> views, bool squeezed)
      : backend_(backend), context_(std::move(context)), views_(std::move(views)), squeezed_(squeezed) {}

  AttentionBackend& backend() const override { return backend_; }
  int64_t length() const override { return length_; }
  int64_t capacity() const override { return capacity_; }
  const LookupStats& stats() const override { return stats_; }

  KernelAttention& backend_;
  std::shared_ptr<const StoredContext> context_;
  std::shared_ptr<const KernelAttention::ContextViews> views_;
  bool squeezed_;
  bool hierarchical_ = false;
  bool estimate_pruned_ = false;
  float estimate_floor_ = 0;  // AttentionOptions::estimate_floor
  bool read_ahead_ = false;
  // With read_ahead_: per layer the cursor the selection reads (next position per query head) and
  // its age, [2][L][2][H_q] int32 on the GPU. Slot 0 is current (the selection reads it), slot 1 the
  // advanced cursor the attention's top keys give (written on the device, so that a step run twice —
  // a CUDA graph's capture — advances once); Finish makes slot 1 current.
  at::Tensor cursor_;
  LookupThresholds thresholds_;
  // Per layer [H_kv, W + capacity, D]: the context window, then the own tokens.
  std::vector<at::Tensor> dense_keys_, dense_values_;
  // Per layer, the view of a query chunk [0] and of a decode token [1] with everything but the
  // dense length filled in (BuildViews): a step only copies them.
  std::vector<kernels::SequenceLayerBf16> views_of_step_[2];
  int64_t capacity_ = 0, length_ = 0;
  LookupStats stats_;
};

KernelSequence& Member(const SequenceStep& step) { return static_cast<KernelSequence&>(*step.sequence); }
bool IsDecode(const SequenceStep& step) { return !step.query_prefill && step.num_tokens == 1; }

// The launch-wide thresholds of a step: the prefill set for a query chunk, the decode set per token.
kernels::SelectionParams ParamsFor(const KernelSequence& seq, bool decode) {
  const squeeze::Thresholds& t = decode ? seq.thresholds_.decode : seq.thresholds_.prefill;
  kernels::SelectionParams p;
  p.hierarchical = TwoLevelStep(seq.hierarchical_, decode);
  p.estimate_floor = seq.estimate_floor_;
  if (p.hierarchical) {
    p.tau_coarse = t.coarse;
    p.tau_fine = t.fine;
  } else {
    p.tau_fine = t.one_level;
  }
  return p;
}

// The layer's calibrated per-KV-head thresholds (LayerIndex::head_thresholds), when the context has them.
const at::Tensor* HeadThresholds(const KernelSequence& seq, int64_t layer) {
  const at::Tensor& t = seq.context_->index()[layer].head_thresholds;
  return t.defined() ? &t : nullptr;
}

// Sequences whose decode selections can share one select_clusters launch sort together.
std::tuple<bool, bool, float, float, float> SelectionKey(const KernelSequence& seq) {
  const kernels::SelectionParams p = ParamsFor(seq, /*decode=*/true);
  const bool per_head = HeadThresholds(seq, 0) != nullptr;
  return std::make_tuple(p.hierarchical, per_head, per_head ? 0.f : p.tau_coarse, per_head ? 0.f : p.tau_fine,
                         p.estimate_floor);
}

// Whether the decode selection launch of members [first, end) may score each chunk of centroids
// once for all of them (kernels::SelectionLaunch::shared_context): two or more members, all on the
// same context's views (the same index in every layer).
bool SharesOneIndex(const std::vector<SequenceStep>& steps, int64_t first, int64_t end) {
  if (end - first < 2) return false;
  for (int64_t i = first + 1; i < end; ++i) {
    if (Member(steps[i]).views_.get() != Member(steps[first]).views_.get()) return false;
  }
  return true;
}

// A level's cluster mean values [H_kv, K, D] as the estimate reads them (the index keeps them bf16,
// contiguous, beside the KV).
const uint16_t* EstimateValues(const at::Tensor& values) {
  if (!values.defined() || !values.is_cuda() || values.scalar_type() != at::kBFloat16 || !values.is_contiguous()) {
    throw std::logic_error("kernel attention: the index's cluster values must be contiguous bf16 on the GPU");
  }
  return Bf16Data(values);
}

// An index's int32 map (perm, cluster_of_position) as the kernels read it.
const int32_t* Int32Data(const at::Tensor& t) {
  if (!t.defined() || !t.is_cuda() || t.scalar_type() != at::kInt || !t.is_contiguous()) {
    throw std::logic_error("kernel attention: the index's position maps must be contiguous int32 on the GPU");
  }
  return t.data_ptr<int32_t>();
}

// The kernel views of a sequence, once: per layer the context's squeezed or dense view, the
// sequence's dense part and the per-head thresholds of query chunks and of decode tokens.
void BuildViews(KernelSequence* seq) {
  for (int decode = 0; decode < 2; ++decode) {
    std::vector<kernels::SequenceLayerBf16>& views = seq->views_of_step_[decode];
    views.clear();
    const bool two_levels = TwoLevelStep(seq->hierarchical_, decode);
    for (size_t layer = 0; layer < seq->dense_keys_.size(); ++layer) {
      kernels::SequenceLayerBf16 view = seq->squeezed_ ? seq->views_->squeezed[layer] : seq->views_->dense[layer];
      if (seq->squeezed_) {
        if (const at::Tensor* t = HeadThresholds(*seq, static_cast<int64_t>(layer))) {
          if (!t->is_cuda() || !t->is_contiguous() || t->scalar_type() != at::kFloat) {
            throw std::logic_error("kernel attention: per-head thresholds must be contiguous float32 on the GPU");
          }
          const at::Tensor set = (*t)[seq->thresholds_.level][decode];  // [3, H_kv]
          view.tau_fine = set[two_levels ? squeeze::kFine : squeeze::kOneLevel].data_ptr<float>();
          if (two_levels) view.tau_coarse = set[squeeze::kCoarse].data_ptr<float>();
        }
        const squeeze::LayerIndex& index = seq->context_->index()[layer];
        if (seq->estimate_pruned_) {
          // The estimate is on for this sequence where its view has the clusters' mean values.
          view.cluster_values = EstimateValues(index.cluster_values);
          if (two_levels) view.coarse_values = EstimateValues(index.coarse_values);
        }
        // Every squeezed view can sit in a launch that reports top keys (read-ahead of another
        // member): the row positions and window length they need; the cursor for its own.
        view.perm = Int32Data(index.perm);
        view.cluster_of_position = Int32Data(index.cluster_of_position);
        view.window_len = static_cast<int32_t>(seq->views_->window);
        if (seq->read_ahead_) view.read_ahead = seq->cursor_[0][static_cast<int64_t>(layer)][0].data_ptr<int32_t>();
      }
      const at::Tensor& k = seq->dense_keys_[layer];
      view.dense_keys = Bf16Data(k);
      view.dense_values = Bf16Data(seq->dense_values_[layer]);
      view.dense_head_stride = k.stride(0);
      views.push_back(view);
    }
  }
}

// The kernel view of a sequence at one layer for a step of `new_tokens` more rows in its dense part.
kernels::SequenceLayerBf16 ViewOf(const KernelSequence& seq, int64_t layer, int64_t new_tokens, bool decode) {
  kernels::SequenceLayerBf16 view = seq.views_of_step_[decode ? 1 : 0][layer];
  view.dense_len = static_cast<int32_t>(seq.views_->window + seq.length_ + new_tokens);
  return view;
}

}  // namespace

// Persistent buffers of a step, grown to the largest step seen (KernelAttention::buffers_version).
// Member i of the step (in launch order) owns (sequence, KV head) pairs [i·H_kv, (i+1)·H_kv) of
// every per-pair array.
struct KernelAttention::Buffers {
  int64_t steps = 0, pairs = 0, capacity = 0, layers = 0, workspace_bytes = 0;
  // Room for the pruned-cluster estimate's list per pair (0: no estimating member seen yet), and
  // the floats per estimated cluster of its logits (kernels::estimate_logit_stride of the group).
  int64_t estimate_capacity = 0, logit_stride = 1;
  // Staging, uploaded once per step (host pinned → device): views [layers][steps], then the dense
  // selection's rows [pairs] int32, then source rows [steps] int64 (the stacked row of each
  // member's first new token, in launch order).
  int64_t views_at = 0, dense_rows_at = 0, source_rows_at = 0, staging_bytes = 0;
  // decode_rows_at: [steps] int64, the launch row (in the decode queries / outputs) of each decode
  // token, in batch order; the decode outputs are gathered by it back to batch order.
  int64_t decode_rows_at = 0;
  // Read-ahead: staging also holds every layer's cursors [2][layers][steps] (current, then advanced;
  // null for members that do not read ahead), and the decode attention's top keys land in
  // top_position / top_share [steps][H_q] before the cursors advance.
  int64_t cursors_at = 0;
  // Shared-context decode (KernelAttention::shared_bundles_): staging also holds per layer the
  // bundles' views and the dense members' own-token views ([layers][steps] each), the bundles'
  // context rows per KV head [pairs] int32, each bundle query row's row in the decode queries
  // [kMaxBundleGroup x pairs] int64 (bundle, KV head, slot, group head), and each
  // dense member query row's row in the bundles' output [steps x H_q] int32 (the merge's a_row).
  int64_t shared_views_at = 0, own_views_at = 0, shared_rows_at = 0, shared_q_rows_at = 0, shared_out_rows_at = 0;
  // Squeezed bundles (KernelAttention::squeezed_runs_): staging also holds per layer the bundles'
  // views and every squeezed member's estimate-and-own-tokens view ([layers][steps] each), the
  // bundles' slot tables [steps x kMaxBundleGroup] int32, their query rows [kMaxBundleGroup x pairs]
  // int64 and the members' rows in their output [steps x H_q] int32; `squeezed_union` holds the
  // bundles' union selection: ids, row starts and member masks [pairs][capacity], counts and rows
  // [pairs] int32; `squeezed_estimate` the union of their estimate lists (one-level indexes): ids,
  // member masks and ln n (fp32) [pairs][estimate_capacity], counts [pairs] int32.
  int64_t squeezed_views_at = 0, squeezed_own_views_at = 0, squeezed_slots_at = 0, squeezed_q_rows_at = 0,
          squeezed_out_rows_at = 0;
  at::Tensor squeezed_union, squeezed_estimate;
  at::Tensor top_position, top_share;
  bool reading_ahead = false;
  at::Tensor staging_host, staging_device;
  // Selection of squeezed members: cluster ids and row starts [pairs][capacity], counts [pairs]
  // (shared by the layers); statistics [layers][3][pairs]: rows, centroids scored, pruned clusters
  // estimated (also the rows and comparisons the kernels write).
  at::Tensor selection, stats;
  // The dense members' constant selection: cluster 0, starting at row 0, one cluster, 0 comparisons.
  at::Tensor dense_constants;  // [3][pairs] int32: ids (0), counts (1), comparisons (0)
  at::Tensor workspace;
  // kernels::DecodeLaunch::tickets [kMaxDecodePairs] int32: zero, and left zero by every decode
  // attention launch, so no memset node stands between the selection and the attention.
  at::Tensor decode_tickets;
  // kernels::SelectionLaunch::head_sync [pairs] int32: zero, and left zero by every decode selection
  // launch (the fused coarse level's barrier counts).
  at::Tensor selection_sync;
  // The estimate (kernels::Selection): the clusters each pair attends as one key,
  // [pairs][estimate_capacity] int32, and their logits per query head of the group (decode),
  // [pairs][estimate_capacity][logit_stride] fp32. Their counts are stats [layers][2][pairs].
  at::Tensor estimate_ids, estimate_logits;
  // Whether the planned step has an estimating member: then every squeezed launch of the step
  // carries the estimate arrays (the others' counts are written 0).
  bool estimating = false;
};

#ifdef SQUEEZESERVE_CUDA_KERNELS
static_assert(kMaxBundleGroup == kernels::kMaxDecodeGroup, "a bundle's group is the decode kernel's largest");
namespace {

void Check(int err, const char* what) {
  if (err != 0) {
    throw std::runtime_error(
        absl::StrCat("kernel attention: ", what, " failed: ", cudaGetErrorString(static_cast<cudaError_t>(err))));
  }
}

void* CurrentStream(at::Device device) { return c10::cuda::getCurrentCUDAStream(device.index()).stream(); }

// A reading-ahead sequence's cursor at `layer`, slot 0 (current) or 1 (advanced): rows (slot, layer,
// 0) and (slot, layer, 1) of its [2][L][2][H_q] cursor_.
// Pointer arithmetic, not tensor indexing: Plan calls it 2·L times per member and step.
kernels::ReadAheadCursor CursorOf(KernelSequence& seq, int64_t slot, int64_t layer) {
  int32_t* base = seq.cursor_.data_ptr<int32_t>();
  const int64_t L = seq.cursor_.size(1), H = seq.cursor_.size(3);
  int32_t* next = base + ((slot * L + layer) * 2) * H;
  return {next, next + H};
}

// `bytes` of host data in device memory, through a pinned buffer (eager work only, never in a graph).
at::Tensor Upload(const void* data, size_t bytes, at::Device device) {
  at::Tensor host =
      at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.data_ptr(), data, bytes);
  return host.to(device, at::kByte, /*non_blocking=*/true);
}

}  // namespace
#endif

absl::StatusOr<bool> ChooseKernelBackend(const std::string& backend, const ModelConfig& config, at::Device device,
                                         at::ScalarType dtype, std::string* reason) {
  if (backend != "auto" && backend != "torch" && backend != "kernels") {
    return absl::InvalidArgumentError(
        absl::StrCat("attention_backend \"", backend, "\": expected auto, torch or kernels"));
  }
  std::string why;  // empty = the kernels can run
  if (backend == "torch") {
    why = "libtorch, as asked";
  } else if (!device.is_cuda()) {
    why = "libtorch: the device is not CUDA";
  } else if (!KernelAttention::Compiled()) {
    why = "libtorch: this build has no CUDA kernels (SQUEEZESERVE_CUDA off)";
  } else if (dtype != at::kBFloat16) {
    why = "libtorch: the KV is not bfloat16";
  } else if (!IsKernelShape(config)) {
    why = absl::StrCat("libtorch: head_dim ", config.head_dim, ", ", config.num_attention_heads, " query / ",
                       config.num_kv_heads, " KV heads is not a kernel shape (head_dim 64 or 128, group 1 to ",
                       kernels::kMaxGroup, ")");
  }
  if (backend == "kernels" && !why.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("attention_backend kernels: ", why));
  }
  if (reason != nullptr) *reason = why.empty() ? "CUDA kernels of kernels/" : why;
  return why.empty();
}

bool KernelAttention::Compiled() {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

KernelAttention::KernelAttention(const ModelConfig& config, at::Device device, const KernelAttentionOptions& options)
    : num_layers_(config.num_layers),
      num_q_heads_(config.num_attention_heads),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim),
      device_(device),
      options_(options),
      bundling_(options.squeezed_bundles == SqueezedBundles::kAlways ||
                (options.squeezed_bundles == SqueezedBundles::kWherePays &&
                 BundlesPayForGroup(config.num_attention_heads / config.num_kv_heads))) {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  kernels::set_programmatic_launch(options.programmatic_launch);
#endif
}

KernelAttention::~KernelAttention() = default;

std::string KernelAttention::PrefillKernelNote() const {
  if (options_.prefill_kernel == kernels::PrefillKernel::kMmaSync) return "query prefill attention: mma.sync";
  const char* asked = options_.prefill_kernel == kernels::PrefillKernel::kWarpSpecialized ? "warp_specialized" : "auto";
#ifdef SQUEEZESERVE_CUDA_KERNELS
  const c10::cuda::CUDAGuard guard(device_);
  if (head_dim_ == 128 && kernels::prefill_warp_specialized_available()) {
    return options_.prefill_kernel == kernels::PrefillKernel::kWarpSpecialized
               ? "query prefill attention: warp-specialized wgmma"
               : "query prefill attention: warp-specialized wgmma where each CTA streams half its head's "
                 "selection or more (long queries), mma.sync where split-K cuts it finer (questions) "
                 "(prefill_kernel auto)";
  }
#endif
  return absl::StrCat("query prefill attention: mma.sync (prefill_kernel ", asked,
                      ": the warp-specialized kernel needs head_dim 128 on an sm_90a device and build; head_dim is ",
                      head_dim_, ")");
}

std::string KernelAttention::SqueezedBundlesNote() const {
  switch (options_.squeezed_bundles) {
    case SqueezedBundles::kOff:
      return "squeezed questions on one context read their clusters once each (squeezed_bundles off)";
    case SqueezedBundles::kAlways:
      return "squeezed questions on one context read their selected clusters' union in bundles (squeezed_bundles on)";
    case SqueezedBundles::kWherePays:
      break;
  }
  if (!bundling_) {
    return absl::StrCat("squeezed questions on one context read their clusters once each (squeezed_bundles auto: ",
                        num_q_heads_ / num_kv_heads_, " query heads a KV head, where bundles were slower)");
  }
  return "squeezed questions on one context read their selected clusters' union in bundles where 4 or more of them "
         "share one index (squeezed_bundles auto)";
}

std::string KernelAttention::SharedContextNote() const {
  std::string note;
  if (shared_bundles_ > 0) {
    note = absl::StrCat("dense questions in ", shared_bundles_, " shared-context bundle", shared_bundles_ > 1 ? "s" : "",
                        " of up to ", shared_slots_);
  }
  for (const SqueezedRun& run : squeezed_runs_) {
    absl::StrAppend(&note, note.empty() ? "" : "; ", run.end - run.first, " squeezed questions in ", run.bundles,
                    " bundle", run.bundles > 1 ? "s" : "", " of up to ", run.slots);
  }
  return note;
}

std::string KernelAttention::WhyNotOnKernels(const StoredContext& context, const AttentionOptions& attention) {
  if (std::string why = WhyContextNotOnKernels(context); !why.empty()) return why;
  if (!context.summary().has_index || context.index().empty()) return "the context has no Squeezed index";
  const int64_t window = context.index()[0].window();
  for (const squeeze::LayerIndex& layer : context.index()) {
    if (layer.num_clusters() < 1 || layer.window() != window) return "a layer of the index has no clusters";
  }
  return "";
}

std::shared_ptr<const KernelAttention::ContextViews> KernelAttention::ViewsOf(
    const std::shared_ptr<const StoredContext>& context) {
  std::lock_guard<std::mutex> lock(views_mu_);
  for (auto it = views_.begin(); it != views_.end();) {  // forget contexts that are gone
    it = it->second.first.expired() ? views_.erase(it) : std::next(it);
  }
  auto found = views_.find(context.get());
  if (found != views_.end()) return found->second.second;

  auto views = std::make_shared<ContextViews>();
  views->serial = ++next_context_serial_;
  const bool indexed = context->summary().has_index && !context->index().empty();
  views->window = indexed ? context->index()[0].window() : 0;
  const int64_t total = context->summary().num_tokens;
  views->clustered = total - views->window;
  // The dense view's one cluster: rows [0, N) of every head.
  const std::vector<int32_t> bounds = {0, static_cast<int32_t>(views->clustered)};
  const at::Tensor one_cluster =
      at::tensor(at::ArrayRef<int32_t>(bounds), at::kInt).repeat({num_kv_heads_}).to(device_);
  views->storage.push_back(one_cluster);
  for (size_t l = 0; l < context->keys().size(); ++l) {
    kernels::SequenceLayerBf16 view;
    view.keys = Bf16Data(context->keys()[l]);
    view.values = Bf16Data(context->values()[l]);
    view.head_stride = context->keys()[l].stride(0);
    kernels::SequenceLayerBf16 dense = view;
    dense.offsets = one_cluster.data_ptr<int32_t>();
    dense.num_clusters = 1;
    views->dense.push_back(dense);
    if (!indexed) continue;
    const squeeze::LayerIndex& layer = context->index()[l];
    std::tie(view.centroids, view.offsets) = KernelLevel(layer.centroids, layer.cluster_offsets, &views->storage);
    view.num_clusters = static_cast<int32_t>(layer.num_clusters());
    views->max_clusters = std::max(views->max_clusters, view.num_clusters);
    if (layer.levels == 2) {
      std::tie(view.coarse_centroids, view.coarse_offsets) =
          KernelLevel(layer.coarse_centroids, layer.coarse_offsets, &views->storage);
      view.num_coarse = static_cast<int32_t>(layer.num_coarse_clusters());
      views->max_coarse = std::max(views->max_coarse, view.num_coarse);
    }
    views->squeezed.push_back(view);
  }
  views_[context.get()] = {context, views};
  return views;
}

namespace {

// The sequence's dense part per layer, with the context window copied in front.
void AllocateDenseParts(const StoredContext& context, int64_t window, int64_t capacity, KernelSequence* seq) {
  for (size_t l = 0; l < context.keys().size(); ++l) {
    const at::Tensor& keys = context.keys()[l];
    const at::Tensor& values = context.values()[l];
    const int64_t stored = keys.size(1);
    at::Tensor k = at::empty({keys.size(0), window + capacity, keys.size(2)}, keys.options());
    at::Tensor v = at::empty({values.size(0), window + capacity, values.size(2)}, values.options());
    k.narrow(1, 0, window).copy_(keys.narrow(1, stored - window, window));
    v.narrow(1, 0, window).copy_(values.narrow(1, stored - window, window));
    seq->dense_keys_.push_back(std::move(k));
    seq->dense_values_.push_back(std::move(v));
  }
  seq->capacity_ = capacity;
}

}  // namespace

std::unique_ptr<SequenceAttention> KernelAttention::NewDense(std::shared_ptr<const StoredContext> context,
                                                             int64_t capacity) {
  if (std::string why = WhyContextNotOnKernels(*context); !why.empty()) {
    throw std::logic_error(absl::StrCat("kernel attention: ", why));
  }
  auto views = ViewsOf(context);
  auto seq = std::make_unique<KernelSequence>(*this, context, views, /*squeezed=*/false);
  AllocateDenseParts(*context, views->window, capacity, seq.get());
  BuildViews(seq.get());
  return seq;
}

std::unique_ptr<SequenceAttention> KernelAttention::NewSqueezed(std::shared_ptr<const StoredContext> context,
                                                                const AttentionOptions& attention,
                                                                LookupThresholds thresholds, int64_t capacity) {
  if (std::string why = WhyNotOnKernels(*context, attention); !why.empty()) {
    throw std::logic_error(absl::StrCat("kernel attention: ", why));
  }
  auto views = ViewsOf(context);
  auto seq = std::make_unique<KernelSequence>(*this, context, views, /*squeezed=*/true);
  seq->hierarchical_ = attention.hierarchical;
  seq->estimate_pruned_ = attention.estimate_pruned;
  seq->estimate_floor_ = attention.estimate_pruned ? attention.estimate_floor : 0.f;
  seq->read_ahead_ = attention.read_ahead;
  if (seq->read_ahead_) {
    seq->cursor_ = at::empty({2, num_layers_, 2, num_q_heads_}, at::TensorOptions().dtype(at::kInt).device(device_));
    seq->cursor_.select(2, 0).fill_(-1);  // no position to read ahead yet
    seq->cursor_.select(2, 1).zero_();
  }
  seq->thresholds_ = thresholds;
  AllocateDenseParts(*context, views->window, capacity, seq.get());
  BuildViews(seq.get());
  return seq;
}

#ifdef SQUEEZESERVE_CUDA_KERNELS

namespace {

// Query tokens per prefill block (selection + attention launch) at GQA group `group`.
int64_t PrefillBlockTokens(int64_t group) { return std::max<int64_t>(1, kMaxSelectionRows / group); }
// The prefill attention's launch: split-K where a block's row tiles leave SMs idle (a 64-token
// question's attention over every SM instead of 2 x H_kv CTAs: 2.49 -> 0.47 ms a layer at Llama-3
// 512K on the H200), one key range for the long blocks of a long query; the kernel as
// EngineOptions::prefill_kernel asks.
kernels::PrefillLaunch PrefillLaunchOf(kernels::PrefillKernel kernel) {
  kernels::PrefillLaunch launch;
  launch.kernel = kernel;
  return launch;
}

}  // namespace

void KernelAttention::Plan(const std::vector<SequenceStep>& steps) {
  const c10::cuda::CUDAGuard guard(device_);
  // Launch order: query chunks, then dense decode tokens, then squeezed decode tokens grouped by
  // their selection launch.
  std::vector<SequenceStep> ordered;
  for (const SequenceStep& s : steps) if (!IsDecode(s)) ordered.push_back(s);
  for (const SequenceStep& s : steps) if (IsDecode(s) && !Member(s).squeezed_) ordered.push_back(s);
  const size_t first_squeezed = ordered.size();
  for (const SequenceStep& s : steps) if (IsDecode(s) && Member(s).squeezed_) ordered.push_back(s);
  first_squeezed_ = static_cast<int64_t>(first_squeezed);
  first_decode_ = 0;
  for (const SequenceStep& s : steps) first_decode_ += IsDecode(s) ? 0 : 1;
  std::stable_sort(ordered.begin() + static_cast<std::ptrdiff_t>(first_squeezed), ordered.end(),
                   [](const SequenceStep& a, const SequenceStep& b) {
                     return SelectionKey(Member(a)) < SelectionKey(Member(b));
                   });
  // The dense decode tokens' shared-context bundles (see the header).
  const int64_t group = num_q_heads_ / num_kv_heads_;
  SharedContextPlan shared;
  if (options_.shared_context_decode && (first_squeezed_ - first_decode_) * num_kv_heads_ <= kMaxDecodePairs) {
    std::vector<const void*> contexts;
    for (int64_t i = first_decode_; i < first_squeezed_; ++i) contexts.push_back(Member(ordered[i]).views_.get());
    shared = PlanSharedContext(contexts, num_kv_heads_, group, kMaxBundleGroup);
  }
  shared_bundles_ = static_cast<int64_t>(shared.bundles.size());
  shared_slots_ = shared.slots;
  // The squeezed decode tokens' bundles: per selection launch on one context (see the header).
  squeezed_runs_.clear();
  std::vector<SharedContextPlan> squeezed_plans;
  if (bundling_) {
    const int64_t B = static_cast<int64_t>(ordered.size());
    for (int64_t first = first_squeezed_, end = first; first < B; first = end) {
      end = first + 1;
      while (end < B && SelectionKey(Member(ordered[end])) == SelectionKey(Member(ordered[first]))) ++end;
      if (!SharesOneIndex(ordered, first, end) || (end - first) * num_kv_heads_ > kMaxDecodePairs) continue;
      if (options_.squeezed_bundles == SqueezedBundles::kWherePays && !BundlesPayForRun(end - first)) continue;
      const bool run_estimates = std::any_of(ordered.begin() + first, ordered.begin() + end,
                                             [](const SequenceStep& s) { return Member(s).estimate_pruned_; });
      std::vector<const void*> contexts;
      for (int64_t i = first; i < end; ++i) contexts.push_back(Member(ordered[i]).views_.get());
      SharedContextPlan plan = PlanSharedContext(contexts, num_kv_heads_, group, kMaxSqueezedBundleGroup);
      if (plan.empty()) continue;
      SqueezedRun run;
      run.first = first;
      run.end = end;
      run.bundles = static_cast<int64_t>(plan.bundles.size());
      run.slots = plan.slots;
      run.estimates = run_estimates;
      squeezed_runs_.push_back(run);
      squeezed_plans.push_back(std::move(plan));
    }
  }

  // Sizes of this step; the buffers grow to them.
  const int64_t B = static_cast<int64_t>(ordered.size()), Hkv = num_kv_heads_, L = num_layers_;
  int64_t capacity = 1, workspace = 256;
  int32_t max_coarse = 0;
  for (const SequenceStep& s : ordered) {
    const KernelSequence& seq = Member(s);
    if (seq.length_ + s.num_tokens > seq.capacity_) throw std::logic_error("kernel attention: no room for the step");
    if (!seq.squeezed_) continue;
    capacity = std::max<int64_t>(capacity, seq.views_->max_clusters);
    if (seq.hierarchical_) max_coarse = std::max(max_coarse, seq.views_->max_coarse);
  }
  kernels::AttentionShape shape;
  shape.num_q_heads = static_cast<int32_t>(num_q_heads_);
  shape.num_kv_heads = static_cast<int32_t>(Hkv);
  shape.head_dim = static_cast<int32_t>(head_dim_);
  // The estimate lists a sequence's pruned clusters: at most K (one level) or K + Kc (hierarchical).
  // In a step with an estimating member every squeezed launch carries the lists, sized for all.
  const bool estimating = std::any_of(ordered.begin(), ordered.end(), [](const SequenceStep& s) {
    return Member(s).squeezed_ && Member(s).estimate_pruned_;
  });
  int64_t estimate_capacity = 0;
  for (const SequenceStep& s : ordered) {
    const KernelSequence& seq = Member(s);
    if (estimating && seq.squeezed_) {
      estimate_capacity = std::max<int64_t>(estimate_capacity, seq.views_->max_clusters + seq.views_->max_coarse);
    }
  }
  kernels::SelectionLimits limits;
  limits.max_clusters = static_cast<int32_t>(capacity);
  limits.max_coarse = max_coarse;
  for (const SequenceStep& s : ordered) {
    shape.batch = IsDecode(s) ? static_cast<int32_t>(B) : 1;
    shape.query_len = static_cast<int32_t>(s.num_tokens);
    if (Member(s).squeezed_) {
      workspace = std::max<int64_t>(workspace, static_cast<int64_t>(kernels::selection_workspace_bytes(shape, limits)));
    }
    if (IsDecode(s)) continue;
    // The prefill attention's split partials reuse the selection's scratch once the block's
    // selection is done: sized for the chunk's whole blocks and its last one.
    const int64_t block = PrefillBlockTokens(num_q_heads_ / Hkv);
    for (const int64_t tokens : {std::min<int64_t>(block, s.num_tokens), s.num_tokens % block}) {
      if (tokens == 0) continue;
      shape.query_len = static_cast<int32_t>(tokens);
      workspace = std::max<int64_t>(
          workspace,
          static_cast<int64_t>(
              kernels::prefill_attention_workspace_bytes(shape, PrefillLaunchOf(options_.prefill_kernel))));
    }
  }
  shape.query_len = 1;
  shape.batch = static_cast<int32_t>(std::min<int64_t>(B, kMaxDecodePairs / Hkv));
  workspace = std::max<int64_t>(
      workspace, static_cast<int64_t>(kernels::decode_attention_workspace_bytes(shape, kernels::DecodeLaunch{})));
  if (shared_bundles_ > 0) {
    // The bundles' launch (fewer sequences, more query heads each), then beside it the own tokens'
    // after its region: as the line above (at most one wave of the device, as its default grid).
    kernels::AttentionShape bundled = shape;
    bundled.batch = static_cast<int32_t>(shared_bundles_);
    bundled.num_q_heads = static_cast<int32_t>(Hkv * group * shared_slots_);
    workspace = std::max<int64_t>(
        workspace, OwnTokensWorkspaceAt(bundled) + static_cast<int64_t>(kernels::decode_attention_workspace_bytes(
                                                       shape, kernels::DecodeLaunch{})));
  }
  for (const SqueezedRun& run : squeezed_runs_) {
    // The squeezed bundles' launch, then the members' estimate and own tokens after its region.
    kernels::AttentionShape bundled = shape;
    bundled.batch = static_cast<int32_t>(run.bundles);
    bundled.num_q_heads = static_cast<int32_t>(Hkv * group * run.slots);
    kernels::AttentionShape members = shape;
    members.batch = static_cast<int32_t>(run.end - run.first);
    workspace = std::max<int64_t>(
        workspace, OwnTokensWorkspaceAt(bundled) + static_cast<int64_t>(kernels::decode_attention_workspace_bytes(
                                                       members, kernels::DecodeLaunch{})));
  }

  Buffers* b = buffers_.get();
  if (b == nullptr || b->steps < B || b->capacity < capacity || b->workspace_bytes < workspace || b->layers != L ||
      b->estimate_capacity < estimate_capacity || (!squeezed_runs_.empty() && !b->squeezed_union.defined()) ||
      (!squeezed_runs_.empty() && estimating && !b->squeezed_estimate.defined())) {
    auto grown = std::make_unique<Buffers>();
    grown->steps = std::max<int64_t>(B, b ? b->steps : 0);
    grown->pairs = grown->steps * Hkv;
    grown->capacity = std::max<int64_t>(capacity, b ? b->capacity : 0);
    grown->workspace_bytes = std::max<int64_t>(workspace, b ? b->workspace_bytes : 0);
    grown->layers = L;
    grown->views_at = 0;
    grown->dense_rows_at =
        Aligned(static_cast<int64_t>(sizeof(kernels::SequenceLayerBf16)) * L * grown->steps);
    grown->source_rows_at = grown->dense_rows_at + Aligned(4 * grown->pairs);
    grown->decode_rows_at = grown->source_rows_at + Aligned(8 * grown->steps);
    grown->cursors_at = grown->decode_rows_at + Aligned(8 * grown->steps);
    const int64_t views_bytes = Aligned(static_cast<int64_t>(sizeof(kernels::SequenceLayerBf16)) * L * grown->steps);
    grown->shared_views_at =
        grown->cursors_at + Aligned(static_cast<int64_t>(sizeof(kernels::ReadAheadCursor)) * 2 * L * grown->steps);
    grown->own_views_at = grown->shared_views_at + views_bytes;
    grown->shared_rows_at = grown->own_views_at + views_bytes;
    grown->shared_q_rows_at = grown->shared_rows_at + Aligned(4 * grown->pairs);
    grown->shared_out_rows_at = grown->shared_q_rows_at + Aligned(8 * kMaxBundleGroup * grown->pairs);
    // The squeezed bundles' regions only where they may run: the whole buffer is uploaded each step.
    const int64_t bundling = bundling_ ? 1 : 0;
    grown->squeezed_views_at = grown->shared_out_rows_at + Aligned(4 * grown->steps * num_q_heads_);
    grown->squeezed_own_views_at = grown->squeezed_views_at + bundling * views_bytes;
    grown->squeezed_slots_at = grown->squeezed_own_views_at + bundling * views_bytes;
    grown->squeezed_q_rows_at = grown->squeezed_slots_at + bundling * Aligned(4 * kMaxBundleGroup * grown->steps);
    grown->squeezed_out_rows_at = grown->squeezed_q_rows_at + bundling * Aligned(8 * kMaxBundleGroup * grown->pairs);
    grown->staging_bytes = grown->squeezed_out_rows_at + bundling * Aligned(4 * grown->steps * num_q_heads_);
    const auto bytes = at::TensorOptions().dtype(at::kByte);
    grown->staging_host = at::empty({grown->staging_bytes}, bytes.pinned_memory(true));
    grown->staging_device = at::empty({grown->staging_bytes}, bytes.device(device_));
    const auto ints = at::TensorOptions().dtype(at::kInt).device(device_);
    grown->selection = at::empty({2 * grown->pairs * grown->capacity + grown->pairs}, ints);
    grown->stats = at::zeros({L, 3, grown->pairs}, ints);
    grown->dense_constants = at::zeros({3, grown->pairs}, ints);
    grown->dense_constants[1].fill_(1);
    grown->workspace = at::empty({grown->workspace_bytes}, bytes.device(device_));
    grown->decode_tickets = at::zeros({kMaxDecodePairs}, ints);
    grown->selection_sync = at::zeros({grown->pairs}, ints);
    if (bundling_) {
      grown->squeezed_union = at::empty({3 * grown->pairs * grown->capacity + 2 * grown->pairs}, ints);
    }
    grown->top_position = at::empty({grown->steps * num_q_heads_}, ints);
    grown->top_share = at::empty({grown->steps * num_q_heads_}, ints.dtype(at::kFloat));
    grown->estimate_capacity = std::max<int64_t>(estimate_capacity, b ? b->estimate_capacity : 0);
    if (grown->estimate_capacity > 0) {
      grown->estimate_ids = at::empty({grown->pairs * grown->estimate_capacity}, ints);
      grown->logit_stride = kernels::estimate_logit_stride(static_cast<int>(num_q_heads_ / num_kv_heads_));
      grown->estimate_logits =
          at::empty({grown->pairs * grown->estimate_capacity * grown->logit_stride}, ints.dtype(at::kFloat));
      if (bundling_) {
        grown->squeezed_estimate = at::empty({3 * grown->pairs * grown->estimate_capacity + grown->pairs}, ints);
      }
    }
    buffers_ = std::move(grown);
    b = buffers_.get();
    ++buffers_version_;
  }

  // Staging: every layer's views, the dense members' rows, the members' source rows.
  uint8_t* host = b->staging_host.data_ptr<uint8_t>();
  auto* views = reinterpret_cast<kernels::SequenceLayerBf16*>(host + b->views_at);
  auto* dense_rows = reinterpret_cast<int32_t*>(host + b->dense_rows_at);
  auto* source_rows = reinterpret_cast<int64_t*>(host + b->source_rows_at);
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t i = 0; i < B; ++i) {
      views[l * B + i] = ViewOf(Member(ordered[i]), l, ordered[i].num_tokens, IsDecode(ordered[i]));
    }
  }
  for (int64_t i = 0; i < B; ++i) {
    for (int64_t h = 0; h < Hkv; ++h) dense_rows[i * Hkv + h] = static_cast<int32_t>(Member(ordered[i]).views_->clustered);
    source_rows[i] = ordered[i].offset;
  }
  if (!shared.empty()) {
    auto* shared_views = reinterpret_cast<kernels::SequenceLayerBf16*>(host + b->shared_views_at);
    auto* own_views = reinterpret_cast<kernels::SequenceLayerBf16*>(host + b->own_views_at);
    auto* shared_rows = reinterpret_cast<int32_t*>(host + b->shared_rows_at);
    const int64_t dense_members = first_squeezed_ - first_decode_;
    for (int64_t l = 0; l < L; ++l) {
      for (size_t k = 0; k < shared.bundles.size(); ++k) {
        // The context's clustered rows as one cluster, and its window from the lead member's dense
        // part (every member holds the same copy).
        const KernelSequence& lead = Member(ordered[first_decode_ + shared.bundles[k][0]]);
        kernels::SequenceLayerBf16 view = lead.views_->dense[l];
        view.dense_keys = Bf16Data(lead.dense_keys_[l]);
        view.dense_values = Bf16Data(lead.dense_values_[l]);
        view.dense_head_stride = lead.dense_keys_[l].stride(0);
        view.dense_len = static_cast<int32_t>(lead.views_->window);
        shared_views[l * B + static_cast<int64_t>(k)] = view;
      }
      for (int64_t i = 0; i < dense_members; ++i) {
        // A member's own tokens: its dense part past the window, no cluster (OwnTokensSelection).
        kernels::SequenceLayerBf16 view = views[l * B + first_decode_ + i];
        const int64_t window = Member(ordered[first_decode_ + i]).views_->window;
        view.dense_keys += window * head_dim_;
        view.dense_values += window * head_dim_;
        view.dense_len -= static_cast<int32_t>(window);
        own_views[l * B + i] = view;
      }
    }
    for (size_t k = 0; k < shared.bundles.size(); ++k) {
      for (int64_t h = 0; h < Hkv; ++h) {
        shared_rows[static_cast<int64_t>(k) * Hkv + h] =
            static_cast<int32_t>(Member(ordered[first_decode_ + shared.bundles[k][0]]).views_->clustered);
      }
    }
    std::memcpy(host + b->shared_q_rows_at, shared.query_rows.data(), sizeof(int64_t) * shared.query_rows.size());
    std::memcpy(host + b->shared_out_rows_at, shared.output_rows.data(), sizeof(int32_t) * shared.output_rows.size());
  }
  if (!squeezed_runs_.empty()) {
    auto* bundle_views = reinterpret_cast<kernels::SequenceLayerBf16*>(host + b->squeezed_views_at);
    auto* own_views = reinterpret_cast<kernels::SequenceLayerBf16*>(host + b->squeezed_own_views_at);
    auto* slot_table = reinterpret_cast<int32_t*>(host + b->squeezed_slots_at);
    auto* q_rows = reinterpret_cast<int64_t*>(host + b->squeezed_q_rows_at);
    auto* out_rows = reinterpret_cast<int32_t*>(host + b->squeezed_out_rows_at);
    int64_t views_at = 0, slots_at = 0, q_rows_at = 0, out_rows_at = 0;
    for (size_t r = 0; r < squeezed_runs_.size(); ++r) {
      SqueezedRun& run = squeezed_runs_[r];
      const SharedContextPlan& plan = squeezed_plans[r];
      run.views_at = views_at;
      run.slots_at = slots_at;
      run.q_rows_at = q_rows_at;
      run.out_rows_at = out_rows_at;
      for (int64_t l = 0; l < L; ++l) {
        for (int64_t k = 0; k < run.bundles; ++k) {
          // The lead member's squeezed view with its dense part cut to the window (every member
          // holds the same copy): the bundle attends the union's rows and the window.
          kernels::SequenceLayerBf16 view = views[l * B + run.first + plan.bundles[k][0]];
          view.dense_len = static_cast<int32_t>(Member(ordered[run.first + plan.bundles[k][0]]).views_->window);
          // The mean values wherever a member estimates (one context: the same arrays), since the
          // bundle estimates for its members (a member without the estimate has no mask bits).
          for (const int64_t m : plan.bundles[k]) {
            const kernels::SequenceLayerBf16& member = views[l * B + run.first + m];
            if (view.cluster_values == nullptr) view.cluster_values = member.cluster_values;
            if (view.coarse_values == nullptr) view.coarse_values = member.coarse_values;
          }
          bundle_views[l * B + views_at + k] = view;
        }
        for (int64_t i = run.first; i < run.end; ++i) {
          // A member's estimate and own tokens: its dense part past the window, which is the bundle's.
          kernels::SequenceLayerBf16 view = views[l * B + i];
          const int64_t window = Member(ordered[i]).views_->window;
          view.dense_keys += window * head_dim_;
          view.dense_values += window * head_dim_;
          view.dense_len -= static_cast<int32_t>(window);
          view.window_len = 0;
          own_views[l * B + i] = view;
        }
      }
      for (int64_t k = 0; k < run.bundles; ++k) {
        for (int64_t m = 0; m < run.slots; ++m) {
          const auto& members = plan.bundles[k];
          slot_table[slots_at + k * run.slots + m] =
              m < static_cast<int64_t>(members.size()) ? static_cast<int32_t>(members[m]) : -1;
        }
      }
      std::memcpy(q_rows + q_rows_at, plan.query_rows.data(), sizeof(int64_t) * plan.query_rows.size());
      std::memcpy(out_rows + out_rows_at, plan.output_rows.data(), sizeof(int32_t) * plan.output_rows.size());
      views_at += run.bundles;
      slots_at += run.bundles * run.slots;
      q_rows_at += static_cast<int64_t>(plan.query_rows.size());
      out_rows_at += static_cast<int64_t>(plan.output_rows.size());
    }
  }
  b->reading_ahead = false;
  auto* cursors = reinterpret_cast<kernels::ReadAheadCursor*>(host + b->cursors_at);
  for (int64_t i = 0; i < B; ++i) {
    KernelSequence& seq = Member(ordered[i]);
    const bool reads = seq.squeezed_ && seq.read_ahead_;
    b->reading_ahead = b->reading_ahead || (reads && IsDecode(ordered[i]));
    for (int64_t slot = 0; slot < 2; ++slot) {
      for (int64_t l = 0; l < L; ++l) {
        cursors[(slot * L + l) * B + i] = reads ? CursorOf(seq, slot, l) : kernels::ReadAheadCursor{};
      }
    }
  }
  b->estimating = estimating;
  // Estimated-cluster counts: the selection writes them in a step with an estimating member.
  if (!b->estimating) b->stats.narrow(1, 2, 1).zero_();
  // The launch structure Attend will follow for the decode tokens (graph key, see the header).
  signature_ = absl::StrCat("B", B, " d", first_decode_, " s", first_squeezed_, " c", b->capacity,
                            b->estimating ? absl::StrCat(" e", b->estimate_capacity) : std::string(),
                            b->reading_ahead ? " ra" : "",
                            shared_bundles_ > 0 ? absl::StrCat(" sh", shared_bundles_, "x", shared_slots_) : std::string());
  for (const SqueezedRun& run : squeezed_runs_) {
    absl::StrAppend(&signature_, " qb", run.first, "-", run.end, ":", run.bundles, "x", run.slots,
                    run.estimates ? "e" : "");
  }
  for (int64_t first = first_squeezed_; first < B;) {
    int64_t end = first + 1;
    const auto key = SelectionKey(Member(ordered[first]));
    while (end < B && SelectionKey(Member(ordered[end])) == key) ++end;
    int32_t group_coarse = 0;
    for (int64_t i = first; i < end; ++i) group_coarse = std::max(group_coarse, Member(ordered[i]).views_->max_coarse);
    absl::StrAppend(&signature_, " g", first, "-", end, ":", std::get<0>(key), std::get<1>(key), ":",
                    std::get<2>(key), ":", std::get<3>(key), ":", std::get<4>(key), ":", group_coarse,
                    SharesOneIndex(ordered, first, end) ? " one-index" : "");
    first = end;
  }
  steps_ = std::move(ordered);
  order_of_.clear();
  in_batch_order_ = first_decode_ == 0;
  for (size_t i = 0; i < steps_.size(); ++i) {
    size_t original = 0;
    while (original < steps.size() && steps[original].sequence != steps_[i].sequence) ++original;
    order_of_.push_back(original);
    in_batch_order_ = in_batch_order_ && steps_[i].offset == static_cast<int64_t>(i);
  }
  absl::StrAppend(&signature_, in_batch_order_ ? " o" : " r");
  // The decode tokens' launch rows, in batch order.
  decode_in_batch_order_.clear();
  for (size_t original = 0; original < steps.size(); ++original) {
    if (IsDecode(steps[original])) decode_in_batch_order_.push_back(original);
  }
  auto* decode_rows = reinterpret_cast<int64_t*>(host + b->decode_rows_at);
  for (size_t k = 0; k < decode_in_batch_order_.size(); ++k) {
    int64_t i = first_decode_;
    while (order_of_[i] != decode_in_batch_order_[k]) ++i;
    decode_rows[k] = i - first_decode_;
  }
  // The staging buffer is reused by the next step only after this one's logits reached the host
  // (every forward ends with that copy), so the upload has long finished by then.
  b->staging_device.copy_(b->staging_host, /*non_blocking=*/true);
}

namespace {

// A Selection over the per-pair arrays of `buffers` at `layer`, from pair `first_pair` on; with the
// estimate's arrays in a step that estimates (the logits for decode launches only).
kernels::Selection SqueezedSelection(const KernelAttention::Buffers& b, int64_t layer, int64_t first_pair,
                                     bool decode) {
  int32_t* sel = b.selection.data_ptr<int32_t>();
  int32_t* stats = b.stats[layer].data_ptr<int32_t>();  // [3][pairs]
  kernels::Selection s;
  s.capacity = static_cast<int32_t>(b.capacity);
  s.cluster_ids = sel + first_pair * b.capacity;
  s.row_start = sel + b.pairs * b.capacity + first_pair * b.capacity;
  s.counts = sel + 2 * b.pairs * b.capacity + first_pair;
  s.rows = stats + first_pair;
  s.comparisons = stats + b.pairs + first_pair;
  if (b.estimating) {
    s.estimate_capacity = static_cast<int32_t>(b.estimate_capacity);
    s.estimate_ids = b.estimate_ids.data_ptr<int32_t>() + first_pair * b.estimate_capacity;
    s.estimated = stats + 2 * b.pairs + first_pair;
    if (decode)
      s.estimate_logits = b.estimate_logits.data_ptr<float>() + first_pair * b.estimate_capacity * b.logit_stride;
  }
  return s;
}

// The dense members' selection: their clustered part as cluster 0, whole.
kernels::Selection DenseSelection(const KernelAttention::Buffers& b, int64_t first_pair) {
  int32_t* constants = b.dense_constants.data_ptr<int32_t>();
  kernels::Selection s;
  s.capacity = 1;
  s.cluster_ids = constants + first_pair;  // 0
  s.row_start = constants + first_pair;    // 0
  s.counts = constants + b.pairs + first_pair;  // 1
  s.comparisons = constants + 2 * b.pairs + first_pair;  // 0
  s.rows = reinterpret_cast<int32_t*>(b.staging_device.data_ptr<uint8_t>() + b.dense_rows_at) + first_pair;
  return s;
}

// The shared-context bundles' selection: their context's clustered part as cluster 0, whole.
kernels::Selection SharedContextSelection(const KernelAttention::Buffers& b) {
  kernels::Selection s = DenseSelection(b, 0);
  s.rows = reinterpret_cast<int32_t*>(b.staging_device.data_ptr<uint8_t>() + b.shared_rows_at);
  return s;
}

// The dense members' own tokens alone: no cluster, no row (the constants' zero rows).
kernels::Selection OwnTokensSelection(const KernelAttention::Buffers& b) {
  int32_t* zeros = b.dense_constants.data_ptr<int32_t>();  // ids (0)
  kernels::Selection s;
  s.capacity = 1;
  s.cluster_ids = zeros;
  s.row_start = zeros;
  s.counts = zeros;
  s.comparisons = zeros + 2 * b.pairs;
  s.rows = zeros + 2 * b.pairs;
  return s;
}

// The squeezed bundles' union selection (Buffers::squeezed_union), with its member masks, and with
// `estimate` the union of the members' estimate lists (Buffers::squeezed_estimate), its masks and
// sizes.
kernels::Selection UnionSelection(const KernelAttention::Buffers& b, int64_t group, bool estimate) {
  int32_t* u = b.squeezed_union.data_ptr<int32_t>();
  kernels::Selection s;
  s.capacity = static_cast<int32_t>(b.capacity);
  s.cluster_ids = u;
  s.row_start = u + b.pairs * b.capacity;
  s.member_masks = reinterpret_cast<const uint32_t*>(u + 2 * b.pairs * b.capacity);
  s.member_group = static_cast<int32_t>(group);
  s.counts = u + 3 * b.pairs * b.capacity;
  s.rows = s.counts + b.pairs;
  s.comparisons = s.counts;  // not read by the attention
  if (estimate) {
    int32_t* e = b.squeezed_estimate.data_ptr<int32_t>();
    s.estimate_capacity = static_cast<int32_t>(b.estimate_capacity);
    s.estimate_ids = e;
    s.estimate_masks = reinterpret_cast<const uint32_t*>(e + b.pairs * b.estimate_capacity);
    s.estimate_log_sizes = reinterpret_cast<const float*>(e + 2 * b.pairs * b.estimate_capacity);
    s.estimated = e + 3 * b.pairs * b.estimate_capacity;
  }
  return s;
}

// engine/squeeze's read-ahead constants (read_ahead.h) for the cursor kernel.
kernels::ReadAheadRule CursorRule() {
  kernels::ReadAheadRule rule;
  rule.min_share = static_cast<float>(squeeze::kReadAheadShare);
  rule.max_age = static_cast<int32_t>(squeeze::kReadAheadMaxAge);
  return rule;
}

}  // namespace

std::vector<at::Tensor> KernelAttention::Attend(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v) {
  const c10::cuda::CUDAGuard guard(device_);
  const Buffers& b = *buffers_;
  const int64_t B = static_cast<int64_t>(steps_.size()), H = num_q_heads_, Hkv = num_kv_heads_, D = head_dim_;
  const int64_t G = H / Hkv;
  void* stream = CurrentStream(device_);
  std::vector<at::Tensor> outputs(B);
  kernels::AttentionShape shape;
  shape.num_q_heads = static_cast<int32_t>(H);
  shape.num_kv_heads = static_cast<int32_t>(Hkv);
  shape.head_dim = static_cast<int32_t>(D);

  // Query chunks, one at a time (eager).
  for (int64_t i = 0; i < first_decode_; ++i) {
    const SequenceStep& step = steps_[i];
    KernelSequence& seq = Member(step);
    const int64_t n = step.num_tokens, W = seq.views_->window;
    seq.dense_keys_[layer].narrow(1, W + seq.length_, n).copy_(k.narrow(1, step.offset, n));
    seq.dense_values_[layer].narrow(1, W + seq.length_, n).copy_(v.narrow(1, step.offset, n));
    const at::Tensor qs = q.narrow(1, step.offset, n);
    // Blocks of at most kMaxSelectionRows query rows through the prefill attention: a squeezed
    // chunk's blocks each select their clusters first (with read-ahead, every block forces the
    // cursor's clusters and reports its top keys; the cursor advances once over the whole chunk, as
    // the libtorch lookup's does); a dense chunk attends its whole context as one cluster, as its
    // decode tokens do (split-K over every SM: libtorch's fused attention gave a 64-token question's
    // ~32 row tiles one CTA each).
    std::vector<at::Tensor> blocks;
    const int64_t block = PrefillBlockTokens(G);
    const at::TensorOptions ints = q.options().dtype(at::kInt);
    const at::Tensor top_position = seq.read_ahead_ ? at::empty({n, H}, ints) : at::Tensor();
    const at::Tensor top_share = seq.read_ahead_ ? at::empty({n, H}, ints.dtype(at::kFloat)) : at::Tensor();
    for (int64_t a = 0; a < n; a += block) {
      const int64_t m = std::min(block, n - a);
      const at::Tensor q_block = qs.narrow(1, a, m).transpose(0, 1).contiguous();  // [m, H, D]
      kernels::SequenceLayerBf16 view = ViewOf(seq, layer, a + m, /*decode=*/false);
      const at::Tensor view_device = Upload(&view, sizeof(view), device_);  // a query chunk: eager
      const auto* views = reinterpret_cast<const kernels::SequenceLayerBf16*>(view_device.data_ptr());
      shape.batch = 1;
      shape.query_len = static_cast<int32_t>(m);
      kernels::Selection selection = DenseSelection(b, i * Hkv);
      if (seq.squeezed_) {
        selection = SqueezedSelection(b, layer, i * Hkv, /*decode=*/false);
        const kernels::SelectionParams params = ParamsFor(seq, /*decode=*/false);
        kernels::SelectionLimits limits;
        limits.max_clusters = view.num_clusters;
        limits.max_coarse = params.hierarchical ? view.num_coarse : 0;
        Check(kernels::select_clusters(shape, views, q_block.data_ptr(), params, limits, selection,
                                       b.workspace.data_ptr(), nullptr, stream),
              "select_clusters (prefill)");
      }
      at::Tensor out = at::empty({m, H, D}, q_block.options());
      kernels::TopKeys top;
      if (seq.read_ahead_) top = {top_position.data_ptr<int32_t>() + a * H, top_share.data_ptr<float>() + a * H};
      Check(kernels::sparse_prefill_attention(shape, views, q_block.data_ptr(), selection, out.data_ptr(),
                                              /*lse=*/nullptr, b.workspace.data_ptr(),
                                              PrefillLaunchOf(options_.prefill_kernel), stream, top),
            "sparse_prefill_attention");
      blocks.push_back(out.view({m, H * D}));
    }
    if (seq.read_ahead_) {
      const kernels::ReadAheadCursor own[2] = {CursorOf(seq, 0, layer), CursorOf(seq, 1, layer)};
      const at::Tensor cursor = Upload(own, sizeof(own), device_);
      const auto* current = reinterpret_cast<const kernels::ReadAheadCursor*>(cursor.data_ptr());
      Check(kernels::advance_read_ahead(1, static_cast<int>(n), static_cast<int>(H), current, current + 1,
                                        {top_position.data_ptr<int32_t>(), top_share.data_ptr<float>()},
                                        CursorRule(), stream),
            "advance_read_ahead (prefill)");
    }
    outputs[order_of_[i]] = blocks.size() == 1 ? blocks[0] : at::cat(blocks, 0);
  }
  if (first_decode_ == B) return outputs;

  // Decode tokens: every operation reads device memory only (CUDA-graph safe).
  const int64_t Bd = B - first_decode_;
  const auto* views =
      reinterpret_cast<const kernels::SequenceLayerBf16*>(b.staging_device.data_ptr<uint8_t>() + b.views_at) +
      layer * B;
  const at::Tensor source_rows =
      b.staging_device.narrow(0, b.source_rows_at, 8 * B).view(at::kLong).narrow(0, first_decode_, Bd);
  // [Bd, H, D]: the decode tokens' queries in launch order (no gather when that is the batch order).
  const at::Tensor qd = (in_batch_order_ ? q : q.index_select(1, source_rows)).transpose(0, 1).contiguous();
  shape.batch = static_cast<int32_t>(Bd);
  shape.query_len = 1;
  kernels::NewKv source;
  source.keys = Bf16Data(k);
  source.values = Bf16Data(v);
  source.key_head_stride = k.stride(0);
  source.key_row_stride = k.stride(1);
  source.value_head_stride = v.stride(0);
  source.value_row_stride = v.stride(1);
  Check(kernels::append_dense_kv(shape, views + first_decode_, source, source_rows.data_ptr<int64_t>(), stream),
        "append_dense_kv");

  const uint16_t* q_data = Bf16Data(qd);
  at::Tensor out = at::empty({Bd, H, D}, qd.options());
  auto* out_data = static_cast<uint16_t*>(out.data_ptr());
  const int64_t chunk = std::max<int64_t>(1, kMaxDecodePairs / Hkv);
  kernels::DecodeLaunch launch;
  launch.tickets = b.decode_tickets.data_ptr<int32_t>();
  // Attention of members [first, end), in launches of at most kMaxDecodePairs pairs.
  auto attend = [&](int64_t first, int64_t end, bool dense) {
    for (int64_t c = first; c < end; c += chunk) {
      shape.batch = static_cast<int32_t>(std::min(chunk, end - c));
      const int64_t row = c - first_decode_;  // row of qd / out
      const kernels::Selection selection =
          dense ? DenseSelection(b, c * Hkv) : SqueezedSelection(b, layer, c * Hkv, /*decode=*/true);
      kernels::TopKeys top;  // read-ahead's top keys of the squeezed members, [row][H_q]
      if (!dense && b.reading_ahead) {
        top = {b.top_position.data_ptr<int32_t>() + row * H, b.top_share.data_ptr<float>() + row * H};
      }
      kernels::DecodeLaunch this_launch = launch;
      this_launch.static_selection = dense;  // staged by the host, as the views
      Check(kernels::sparse_decode_attention(shape, views + c, q_data + row * H * D, selection,
                                             out_data + row * H * D, /*lse=*/nullptr, b.workspace.data_ptr(),
                                             this_launch, stream, top),
            "sparse_decode_attention");
    }
  };
  if (shared_bundles_ > 0) {
    // The dense members in bundles (see the header): the context once per bundle, each member's own
    // tokens, and their merge into the members' rows of `out` (rows 0 .. dense members - 1).
    const int64_t dense_members = first_squeezed_ - first_decode_;
    const uint8_t* staged = b.staging_device.data_ptr<uint8_t>();
    const at::Tensor own_part = at::empty({dense_members * H, D}, qd.options());
    const at::Tensor own_lse = at::empty({dense_members * H}, qd.options().dtype(at::kFloat));
    // The bundles leave their pieces in the workspace for the merge; the own tokens run beside
    // them, in their tail, on the workspace after theirs (kernels::DecodeLaunch::next_beside).
    kernels::AttentionShape bundled = shape;
    bundled.batch = static_cast<int32_t>(shared_bundles_);
    bundled.num_q_heads = static_cast<int32_t>(H * shared_slots_);
    kernels::DecodeLaunch deferred = launch;
    deferred.defer_merge = true;
    deferred.static_selection = true;  // SharedContextSelection: staged by the host
    deferred.next_beside = true;
    deferred.q_rows = reinterpret_cast<const int64_t*>(staged + b.shared_q_rows_at);  // the members' rows of q
    Check(kernels::sparse_decode_attention(
              bundled, reinterpret_cast<const kernels::SequenceLayerBf16*>(staged + b.shared_views_at) + layer * B,
              q_data, SharedContextSelection(b), /*out=*/nullptr, /*lse=*/nullptr, b.workspace.data_ptr(), deferred,
              stream),
          "sparse_decode_attention (shared context)");
    kernels::AttentionShape own = shape;
    own.batch = static_cast<int32_t>(dense_members);
    Check(kernels::sparse_decode_attention(
              own, reinterpret_cast<const kernels::SequenceLayerBf16*>(staged + b.own_views_at) + layer * B, q_data,
              OwnTokensSelection(b), own_part.data_ptr(), own_lse.data_ptr<float>(),
              b.workspace.data_ptr<uint8_t>() + OwnTokensWorkspaceAt(bundled), OwnTokensLaunch(launch), stream),
          "sparse_decode_attention (own tokens)");
    Check(kernels::merge_decode_pieces(bundled, deferred, b.workspace.data_ptr(), static_cast<int>(dense_members * H),
                                       reinterpret_cast<const int32_t*>(staged + b.shared_out_rows_at),
                                       own_part.data_ptr(), own_lse.data_ptr<float>(), out_data, /*lse=*/nullptr,
                                       stream),
          "merge_decode_pieces");
  } else if (first_squeezed_ > first_decode_) {
    attend(first_decode_, first_squeezed_, /*dense=*/true);
  }
  // Wide estimate tiles over flat indexes only (kernels::DecodeLaunch::wide_estimate_tiles).
  for (int64_t i = first_squeezed_; i < B; ++i)
    if (TwoLevelStep(Member(steps_[i]).hierarchical_, /*decode=*/true)) launch.wide_estimate_tiles = false;
  // A run's squeezed bundles (see the header): the union of their members' selections, the bundles
  // over it and the window (pieces left for the merge), the members' estimate and own tokens, and
  // the merge of the two into the members' rows of `out` (and of the read-ahead buffers).
  const uint8_t* staged = b.staging_device.data_ptr<uint8_t>();
  auto attend_bundles = [&](const SqueezedRun& run) {
    const int64_t n = run.end - run.first, row = run.first - first_decode_;
    // One-level indexes estimate in the bundle (each cluster's centroid and mean value read once
    // for its members, Selection::estimate_masks); two-level ones (coarse ids in the lists) beside
    // it, each member its own, with its own tokens.
    const bool estimate_in_bundle = run.estimates && !Member(steps_[run.first]).hierarchical_;
    kernels::AttentionShape bundled = shape, members = shape;
    bundled.batch = static_cast<int32_t>(run.bundles);
    bundled.num_q_heads = static_cast<int32_t>(H * run.slots);
    members.batch = static_cast<int32_t>(n);
    const kernels::Selection own = SqueezedSelection(b, layer, run.first * Hkv, /*decode=*/true);
    const kernels::Selection united = UnionSelection(b, G, estimate_in_bundle);
    const auto* bundle_views =
        reinterpret_cast<const kernels::SequenceLayerBf16*>(staged + b.squeezed_views_at) + layer * B + run.views_at;
    const kernels::BundleMembers slots{reinterpret_cast<const int32_t*>(staged + b.squeezed_slots_at) + run.slots_at,
                                       static_cast<int32_t>(run.bundles), static_cast<int32_t>(run.slots)};
    Check(kernels::bundle_selections(slots, static_cast<int>(Hkv), bundle_views, own, united,
                                     const_cast<uint32_t*>(united.member_masks),
                                     const_cast<uint32_t*>(united.estimate_masks),
                                     const_cast<float*>(united.estimate_log_sizes), stream),
          "bundle_selections");
    kernels::TopKeys top;  // the members' rows of the read-ahead buffers
    if (b.reading_ahead) top = {b.top_position.data_ptr<int32_t>() + row * H, b.top_share.data_ptr<float>() + row * H};
    kernels::DecodeLaunch deferred = launch;
    deferred.defer_merge = true;
    deferred.next_beside = true;  // the members' part runs in its tail (below)
    deferred.q_rows = reinterpret_cast<const int64_t*>(staged + b.squeezed_q_rows_at) + run.q_rows_at;
    Check(kernels::sparse_decode_attention(bundled, bundle_views, q_data + row * H * D, united, /*out=*/nullptr,
                                           /*lse=*/nullptr, b.workspace.data_ptr(), deferred, stream, top),
          "sparse_decode_attention (squeezed bundles)");
    // The members' part: their own tokens, and their estimate where the bundle does not take it;
    // no selected rows (the constants' zeros).
    kernels::Selection rest = own;
    rest.counts = rest.rows = b.dense_constants.data_ptr<int32_t>();  // row 0: zeros
    if (estimate_in_bundle || !run.estimates) {
      rest.estimate_ids = rest.estimated = nullptr;
      rest.estimate_logits = nullptr;
    }
    const bool rest_estimates = rest.estimated != nullptr;
    const at::Tensor part = at::empty({n * H, D}, qd.options());
    const at::Tensor part_lse = at::empty({n * H}, qd.options().dtype(at::kFloat));
    // The context LSE of the members' part (their estimate) for read-ahead's share: none without it.
    const bool part_context = b.reading_ahead && rest_estimates;
    const at::Tensor context_lse = at::empty({part_context ? n * H : 0}, qd.options().dtype(at::kFloat));
    kernels::TopKeys rest_top;
    if (part_context) rest_top.context_lse = context_lse.data_ptr<float>();
    // Beside the bundles, on the SMs their CTAs leave (as the dense bundles' own tokens): it reads
    // the selection's estimate lists, complete once the bundles' launch has waited for the union
    // (which waited for the selection), and writes nothing the bundles read. Run after them, its
    // ~60 us a layer (Llama-2-7B 32K batch 8, H100) added up (bench/kernels/NOTES.md run 32). Own
    // tokens only: short heads, one wave of the device; with the estimate, the device-sized grid.
    kernels::DecodeLaunch beside = OwnTokensLaunch(launch);
    beside.one_wave_per_heads = !rest_estimates;
    Check(kernels::sparse_decode_attention(
              members, reinterpret_cast<const kernels::SequenceLayerBf16*>(staged + b.squeezed_own_views_at) +
                           layer * B + run.first,
              q_data + row * H * D, rest, part.data_ptr(), part_lse.data_ptr<float>(),
              b.workspace.data_ptr<uint8_t>() + OwnTokensWorkspaceAt(bundled),
              beside, stream, rest_top),
          "sparse_decode_attention (squeezed members' own tokens)");
    Check(kernels::merge_decode_pieces(bundled, deferred, b.workspace.data_ptr(), static_cast<int>(n * H),
                                       reinterpret_cast<const int32_t*>(staged + b.squeezed_out_rows_at) +
                                           run.out_rows_at,
                                       part.data_ptr(), part_lse.data_ptr<float>(), out_data + row * H * D,
                                       /*lse=*/nullptr, stream, bundle_views, top,
                                       part_context ? context_lse.data_ptr<float>() : nullptr, /*masked=*/true),
          "merge_decode_pieces (squeezed bundles)");
  };
  // Selections: one launch per run of members sharing (hierarchical, thresholds).
  for (int64_t first = first_squeezed_; first < B;) {
    int64_t end = first + 1;
    while (end < B && SelectionKey(Member(steps_[end])) == SelectionKey(Member(steps_[first]))) ++end;
    const KernelSequence& lead = Member(steps_[first]);
    const kernels::SelectionParams params = ParamsFor(lead, /*decode=*/true);
    kernels::SelectionLimits limits;
    limits.max_clusters = static_cast<int32_t>(b.capacity);
    for (int64_t i = first; i < end; ++i) {
      if (params.hierarchical) limits.max_coarse = std::max(limits.max_coarse, Member(steps_[i]).views_->max_coarse);
    }
    shape.batch = static_cast<int32_t>(end - first);
    kernels::SelectionLaunch launch;  // questions on one document: its centroids read once for all
    launch.shared_context = SharesOneIndex(steps_, first, end);
    launch.head_sync = b.selection_sync.data_ptr<int32_t>();
    Check(kernels::select_clusters(shape, views + first, q_data + (first - first_decode_) * H * D, params, limits,
                                   SqueezedSelection(b, layer, first * Hkv, /*decode=*/true), b.workspace.data_ptr(),
                                   nullptr, stream, launch),
          "select_clusters (decode)");
    if (!squeezed_runs_.empty()) {  // each run's attention after its selection: bundled or not
      const auto run = std::find_if(squeezed_runs_.begin(), squeezed_runs_.end(),
                                    [&](const SqueezedRun& r) { return r.first == first; });
      if (run != squeezed_runs_.end()) attend_bundles(*run);
      else attend(first, end, /*dense=*/false);
    }
    first = end;
  }
  if (squeezed_runs_.empty() && B > first_squeezed_) attend(first_squeezed_, B, /*dense=*/false);
  if (b.reading_ahead && B > first_squeezed_) {
    // The squeezed members' advanced cursors from their top keys (members without read-ahead have
    // null cursors and are skipped), on the device: Finish makes them current for the next step.
    const auto* cursors =
        reinterpret_cast<const kernels::ReadAheadCursor*>(b.staging_device.data_ptr<uint8_t>() + b.cursors_at);
    const int64_t row = first_squeezed_ - first_decode_;
    Check(kernels::advance_read_ahead(static_cast<int>(B - first_squeezed_), 1, static_cast<int>(H),
                                      cursors + layer * B + first_squeezed_, cursors + (num_layers_ + layer) * B + first_squeezed_,
                                      {b.top_position.data_ptr<int32_t>() + row * H,
                                       b.top_share.data_ptr<float>() + row * H},
                                      CursorRule(), stream),
          "advance_read_ahead");
  }
  // Back to batch order on the device: a captured graph replays for any order of dense and squeezed
  // members with the same launch signature, so which output row is whose must not be baked in.
  const at::Tensor in_order =
      in_batch_order_ ? out
                      : out.index_select(
                            0, b.staging_device.narrow(0, b.decode_rows_at, 8 * Bd).view(at::kLong));
  for (int64_t k = 0; k < Bd; ++k) outputs[decode_in_batch_order_[k]] = in_order[k].view({1, H * D});
  return outputs;
}

void KernelAttention::Finish() {
  const int64_t B = static_cast<int64_t>(steps_.size()), Hkv = num_kv_heads_;
  const bool any_squeezed =
      std::any_of(steps_.begin(), steps_.end(), [](const SequenceStep& s) { return Member(s).squeezed_; });
  if (any_squeezed) {
    // One copy of every layer's statistics: [L][3][B·H_kv].
    const at::Tensor host = buffers_->stats.narrow(2, 0, B * Hkv).contiguous().to(at::kCPU);
    const int32_t* counts = host.data_ptr<int32_t>();
    for (int64_t i = 0; i < B; ++i) {
      KernelSequence& seq = Member(steps_[i]);
      if (!seq.squeezed_) continue;
      const double tokens = static_cast<double>(seq.context_->summary().num_tokens);
      for (int64_t l = 0; l < num_layers_; ++l) {
        const int32_t* layer = counts + l * 3 * B * Hkv;
        double rows = 0, comparisons = 0;
        for (int64_t h = 0; h < Hkv; ++h) {
          const int64_t pair = i * Hkv + h;
          // An estimated pruned cluster reads its mean value: half a row (as SqueezedLookup counts).
          rows += layer[pair] + 0.5 * layer[2 * B * Hkv + pair];
          comparisons += layer[B * Hkv + pair];
        }
        seq.stats_.AddLayer((rows / Hkv + static_cast<double>(seq.views_->window)) / tokens, comparisons / Hkv);
      }
      seq.stats_.FinishStep();
    }
  }
  for (const SequenceStep& step : steps_) {
    KernelSequence& seq = Member(step);
    seq.length_ += step.num_tokens;
    // The step's advanced read-ahead cursors become current (stream-ordered after the step).
    if (seq.squeezed_ && seq.read_ahead_) seq.cursor_[0].copy_(seq.cursor_[1], /*non_blocking=*/true);
  }
  steps_.clear();
}

#else  // !SQUEEZESERVE_CUDA_KERNELS: never constructed (ChooseKernelBackend says libtorch).

void KernelAttention::Plan(const std::vector<SequenceStep>&) {
  throw std::logic_error("kernel attention: this build has no CUDA kernels");
}

std::vector<at::Tensor> KernelAttention::Attend(int64_t, const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  throw std::logic_error("kernel attention: this build has no CUDA kernels");
}

void KernelAttention::Finish() { steps_.clear(); }

#endif

void KernelAttention::Abandon() { steps_.clear(); }

}  // namespace squeezeserve
