#include "engine/kernel_attention.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/squeeze/scoring.h"
#include "engine/squeeze/sparse_attention.h"

#ifdef SQUEEZESERVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "kernels/decode_attention.h"
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
  return g == 1 || g == 2 || g == 4 || g == 8;
}

// select_clusters takes at most this many query rows (query_len × group) per launch.
constexpr int64_t kMaxSelectionRows = 16384;

const uint16_t* Bf16Data(const at::Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); }

// The thresholds of a step: the prefill set for the query prefill, the decode set per decode token.
kernels::SelectionParams ParamsFor(const KernelSequence& seq, bool decode) {
  const squeeze::Thresholds& t = decode ? seq.thresholds.decode : seq.thresholds.prefill;
  kernels::SelectionParams p;
  p.hierarchical = seq.hierarchical;
  if (seq.hierarchical) {
    p.tau_coarse = t.coarse;
    p.tau_fine = t.fine;
  } else {
    p.tau_fine = t.one_level;
  }
  return p;
}

// The layer's calibrated per-KV-head thresholds (LayerIndex::head_thresholds), when the context has them.
const at::Tensor* HeadThresholds(const KernelSequence& seq, int64_t layer) {
  const at::Tensor& t = seq.context->index()[layer].head_thresholds;
  return t.defined() ? &t : nullptr;
}

// The kernel view of one sequence at one layer: the context's clustered part plus its dense part
// (window + own tokens), `dense_tokens` rows after the window, and the per-head thresholds of the
// step (prefill or decode set of the request's level).
kernels::SequenceLayerBf16 ViewOf(const KernelSequence& seq, int64_t layer, int64_t own_tokens, bool decode) {
  kernels::SequenceLayerBf16 view = seq.context->kernel_views().layers[layer];
  if (const at::Tensor* t = HeadThresholds(seq, layer)) {
    if (!t->is_cuda() || !t->is_contiguous() || t->scalar_type() != at::kFloat) {
      throw std::logic_error("kernel attention: per-head thresholds must be contiguous float32 on the GPU");
    }
    const at::Tensor set = (*t)[seq.thresholds.level][decode ? 1 : 0];  // [3, H_kv]
    view.tau_fine = set[seq.hierarchical ? squeeze::kFine : squeeze::kOneLevel].data_ptr<float>();
    if (seq.hierarchical) view.tau_coarse = set[squeeze::kCoarse].data_ptr<float>();
  }
  const at::Tensor& k = seq.dense_keys[layer];
  view.dense_keys = Bf16Data(k);
  view.dense_values = Bf16Data(seq.dense_values[layer]);
  view.dense_head_stride = k.stride(0);
  view.dense_len = static_cast<int32_t>(seq.window + own_tokens);
  return view;
}

// One index level as the kernels read it: bf16 centroids and int32 offsets, kept alive in `storage`.
// The index's fp32 centroids are replaced by the bf16-rounded values, so that the libtorch path scores
// exactly the vectors the kernels score.
std::pair<const uint16_t*, const int32_t*> KernelLevel(at::Tensor* centroids, const at::Tensor& offsets,
                                                       std::vector<at::Tensor>* storage) {
  const at::Tensor bf16 = centroids->to(at::kBFloat16).contiguous();
  *centroids = bf16.to(at::kFloat);
  const at::Tensor int32 = offsets.to(at::kInt).contiguous();
  storage->push_back(bf16);
  storage->push_back(int32);
  return {Bf16Data(bf16), int32.data_ptr<int32_t>()};
}

}  // namespace

KernelContextViews BuildKernelContextViews(const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                                           std::vector<squeeze::LayerIndex>& index) {
  KernelContextViews views;
  if (index.empty() || index.size() != keys.size() || values.size() != keys.size()) return views;
  for (size_t l = 0; l < keys.size(); ++l) {
    for (const at::Tensor* t : {&keys[l], &values[l]}) {
      if (!t->is_cuda() || t->scalar_type() != at::kBFloat16 || !t->is_contiguous() || t->dim() != 3) return views;
    }
    if (index[l].num_clusters() < 1 || index[l].window() != index[0].window()) return views;
  }
  views.window = index[0].window();
  for (size_t l = 0; l < keys.size(); ++l) {
    squeeze::LayerIndex& layer = index[l];
    kernels::SequenceLayerBf16 view;
    view.keys = Bf16Data(keys[l]);
    view.values = Bf16Data(values[l]);
    view.head_stride = keys[l].stride(0);
    std::tie(view.centroids, view.offsets) = KernelLevel(&layer.centroids, layer.cluster_offsets, &views.storage);
    view.num_clusters = static_cast<int32_t>(layer.num_clusters());
    if (layer.levels == 2) {
      std::tie(view.coarse_centroids, view.coarse_offsets) =
          KernelLevel(&layer.coarse_centroids, layer.coarse_offsets, &views.storage);
      view.num_coarse = static_cast<int32_t>(layer.num_coarse_clusters());
    }
    views.layers.push_back(view);
  }
  return views;
}

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
                       config.num_kv_heads, " KV heads is not a kernel shape (head_dim 64 or 128, group 1, 2, 4 or 8)");
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

KernelAttention::KernelAttention(const ModelConfig& config, at::Device device)
    : num_q_heads_(config.num_attention_heads),
      num_kv_heads_(config.num_kv_heads),
      head_dim_(config.head_dim),
      device_(device) {}

KvCache KernelAttention::NewCache(const StoredContext& context, int64_t capacity, KernelSequence* seq) {
  const int64_t window = context.kernel_views().window;
  seq->runner = this;
  seq->window = window;
  seq->dense_keys.clear();
  seq->dense_values.clear();
  KvCache cache;
  for (size_t l = 0; l < context.keys().size(); ++l) {
    const at::Tensor& keys = context.keys()[l];
    const at::Tensor& values = context.values()[l];
    const int64_t stored = keys.size(1);
    at::Tensor k = at::empty({keys.size(0), window + capacity, keys.size(2)}, keys.options());
    at::Tensor v = at::empty({values.size(0), window + capacity, values.size(2)}, values.options());
    k.narrow(1, 0, window).copy_(keys.narrow(1, stored - window, window));
    v.narrow(1, 0, window).copy_(values.narrow(1, stored - window, window));
    cache.keys.push_back(k.narrow(1, window, capacity));
    cache.values.push_back(v.narrow(1, window, capacity));
    seq->dense_keys.push_back(std::move(k));
    seq->dense_values.push_back(std::move(v));
  }
  return cache;
}

bool KernelAttention::Accepts(const KernelSequence& seq, int64_t num_tokens) const {
  if (seq.runner != this || num_tokens < 1) return false;
  if (!seq.prefill) return num_tokens == 1;
  return num_tokens * (num_q_heads_ / num_kv_heads_) <= kMaxSelectionRows;
}

void KernelAttention::Run(int64_t layer, const at::Tensor& q_all, const std::vector<const ForwardArgs*>& batch,
                          const std::vector<int64_t>& offsets, const std::vector<size_t>& members,
                          std::vector<at::Tensor>* outputs) {
  std::vector<size_t> decode;
  for (size_t b : members) {
    if (batch[b]->kernel->prefill) {
      RunPrefill(layer, q_all, *batch[b], offsets[b], &(*outputs)[b]);
    } else {
      decode.push_back(b);
    }
  }
  if (!decode.empty()) RunDecode(layer, q_all, batch, offsets, std::move(decode), outputs);
}

void KernelAttention::FinishForward() {
  if (pending_.empty()) return;
  std::vector<at::Tensor> parts;
  for (const PendingStats& p : pending_) parts.push_back(p.counts);
  const at::Tensor host = at::cat(parts).to(at::kCPU);  // one copy for the whole forward
  const int32_t* counts = host.data_ptr<int32_t>();
  int64_t base = 0;
  for (const PendingStats& p : pending_) {
    const int64_t bh = p.counts.size(0) / 3;
    for (size_t i = 0; i < p.seqs.size(); ++i) {
      KernelSequence* seq = p.seqs[i];
      if (seq->stats == nullptr) continue;
      double rows = 0, comparisons = 0;
      for (int64_t h = 0; h < num_kv_heads_; ++h) {
        const int64_t pair = static_cast<int64_t>(i) * num_kv_heads_ + h;
        // An estimated pruned cluster reads its mean value: half a row (as SqueezedLookup counts).
        rows += counts[base + pair] + 0.5 * counts[base + 2 * bh + pair];
        comparisons += counts[base + bh + pair];
      }
      const double tokens = static_cast<double>(seq->context->summary().num_tokens);
      seq->stats->AddSample((rows / num_kv_heads_ + static_cast<double>(seq->window)) / tokens,
                            comparisons / num_kv_heads_);
    }
    base += 3 * bh;
  }
  pending_.clear();
}

namespace {

// The pruned-cluster estimate of `bc` sequences on one context at one layer (one-level lookup), in
// place: the kernels' out [bc, n, H, D] (bf16) and lse [bc, n, H] (fp32) cover the selected
// clusters and the dense part; the context's other non-empty fine clusters join as one key each —
// logit s·q·c + log size, value the cluster's mean — merged by log-sum-exp. The n query tokens of a
// sequence share its selection (ids [bc·H_kv, capacity], counts [bc·H_kv], int32). Writes the pruned
// cluster count of each (sequence, KV head) to pruned [bc·H_kv] (int32, for the statistics).
[[maybe_unused]] void AddPrunedEstimate(const squeeze::LayerIndex& index, const at::Tensor& q, const at::Tensor& ids,
                                        const at::Tensor& counts, const at::Tensor& out, const at::Tensor& lse,
                                        at::Tensor pruned) {
  const int64_t bc = q.size(0), n = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t Hkv = index.num_heads(), G = H / Hkv, K = index.num_clusters(), capacity = ids.size(1);
  if (K == 0) return;
  const at::Tensor sizes = squeeze::FineSizes(index);  // [H_kv, K]
  // The selections as masks [H_kv, bc, K] (T' = bc: one selection per sequence, as the lookup's).
  const at::Tensor valid = at::arange(capacity, counts.options()).unsqueeze(0) < counts.unsqueeze(1);
  const at::Tensor slot = at::where(valid, ids, at::full({}, static_cast<int32_t>(K), ids.options())).to(at::kLong);
  const at::Tensor selected = at::zeros({bc * Hkv, K + 1}, sizes.options().dtype(at::kBool))
                                  .scatter_(1, slot, true)
                                  .narrow(1, 0, K)
                                  .view({bc, Hkv, K})
                                  .transpose(0, 1);
  pruned.copy_((~selected & (sizes > 0).unsqueeze(1)).sum(-1).transpose(0, 1).reshape({bc * Hkv}));
  // Grouped queries [H_kv, bc, n·G, D] (Llama order: KV head h serves query heads h·G … h·G+G−1).
  const at::Tensor qg =
      q.to(at::kFloat).view({bc, n, Hkv, G, D}).permute({2, 0, 1, 3, 4}).reshape({Hkv, bc, n * G, D});
  const at::Tensor z = squeeze::CentroidLogits(qg, index.centroids, sizes, squeeze::SoftmaxScale(0, D));
  const at::Tensor logits = squeeze::PrunedClusterLogits(z, sizes.unsqueeze(1).expand({Hkv, bc, K}), selected);
  const at::Tensor est_lse = at::logsumexp(logits, {-1}, /*keepdim=*/true);  // [H_kv, bc, n·G, 1]
  const at::Tensor shift = at::where(at::isinf(est_lse), at::zeros_like(est_lse), est_lse);
  const at::Tensor est_out = at::matmul((logits - shift).exp(), index.cluster_values.to(at::kFloat).unsqueeze(1));
  const int64_t Dv = est_out.size(-1);
  const auto [merged, merged_lse] = squeeze::MergeAttention(
      out.to(at::kFloat), lse,
      est_out.view({Hkv, bc, n, G, Dv}).permute({1, 2, 0, 3, 4}).reshape({bc, n, H, Dv}),
      est_lse.view({Hkv, bc, n, G}).permute({1, 2, 0, 3}).reshape({bc, n, H}));
  out.copy_(merged);
}

}  // namespace

#ifdef SQUEEZESERVE_CUDA_KERNELS
namespace {

void Check(int err, const char* what) {
  if (err != 0) {
    throw std::runtime_error(
        absl::StrCat("kernel attention: ", what, " failed: ", cudaGetErrorString(static_cast<cudaError_t>(err))));
  }
}

void* CurrentStream(at::Device device) { return c10::cuda::getCurrentCUDAStream(device.index()).stream(); }

// The views as a device array (one small pinned host-to-device copy on the current stream).
at::Tensor Upload(const std::vector<kernels::SequenceLayerBf16>& views, at::Device device) {
  const int64_t bytes = static_cast<int64_t>(sizeof(kernels::SequenceLayerBf16) * views.size());
  at::Tensor host = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.data_ptr(), views.data(), static_cast<size_t>(bytes));
  return host.to(device, at::kByte, /*non_blocking=*/true);
}

const kernels::SequenceLayerBf16* Views(const at::Tensor& uploaded) {
  return static_cast<const kernels::SequenceLayerBf16*>(uploaded.data_ptr());
}

int64_t Aligned(int64_t n) { return (n + 63) / 64 * 64; }  // int32 elements: 256-byte starts

// Device storage of a kernels::Selection for bh (sequence, KV head) pairs, worst-case sized; rows
// and comparisons are adjacent so that the statistics are one slice.
struct SelectionBuffers {
  at::Tensor data;
  kernels::Selection selection;
  int64_t bh = 0, rows_at = 0;

  int64_t counts_at = 0;

  // rows, comparisons and the estimate's pruned-cluster counts are adjacent: Counts() is one slice.
  SelectionBuffers(int64_t pairs, int32_t capacity, at::Device device) : bh(pairs) {
    const int64_t ids = Aligned(bh * capacity);
    counts_at = 2 * ids;
    rows_at = counts_at + Aligned(bh);
    data = at::empty({rows_at + 3 * bh}, at::TensorOptions().dtype(at::kInt).device(device));
    PrunedCounts().zero_();  // stays 0 for pairs whose pruned clusters are dropped
    int32_t* p = data.data_ptr<int32_t>();
    selection.cluster_ids = p;
    selection.row_start = p + ids;
    selection.counts = p + counts_at;
    selection.rows = p + rows_at;
    selection.comparisons = p + rows_at + bh;
    selection.capacity = capacity;
  }
  // The selection of the sequences from `first` on (a sub-batch launch).
  kernels::Selection From(int64_t first, int64_t kv_heads) const {
    kernels::Selection s = selection;
    const int64_t pair = first * kv_heads;
    s.cluster_ids += pair * selection.capacity;
    s.row_start += pair * selection.capacity;
    s.counts += pair;
    s.rows += pair;
    s.comparisons += pair;
    return s;
  }
  at::Tensor Counts() const { return data.narrow(0, rows_at, 3 * bh); }
  // Pairs [first, first + n): selected fine-cluster ids [n, H_kv... as n pairs, capacity] and counts.
  at::Tensor ClusterIds(int64_t first, int64_t n) const {
    return data.narrow(0, first * selection.capacity, n * selection.capacity).view({n, selection.capacity});
  }
  at::Tensor ClusterCounts(int64_t first, int64_t n) const { return data.narrow(0, counts_at + first, n); }
  at::Tensor PrunedCounts() const { return data.narrow(0, rows_at + 2 * bh, bh); }
};

at::Tensor DeviceBytes(size_t bytes, at::Device device) {
  return at::empty({static_cast<int64_t>(std::max<size_t>(bytes, 256))},
                   at::TensorOptions().dtype(at::kByte).device(device));
}

}  // namespace

void KernelAttention::RunPrefill(int64_t layer, const at::Tensor& q_all, const ForwardArgs& args, int64_t offset,
                                 at::Tensor* output) {
  const c10::cuda::CUDAGuard guard(device_);
  KernelSequence& seq = *args.kernel;
  const int64_t n = args.num_tokens, H = num_q_heads_, D = head_dim_;
  const kernels::SequenceLayerBf16 view = ViewOf(seq, layer, args.cache->length + n, /*decode=*/false);
  const at::Tensor views = Upload({view}, device_);
  const at::Tensor q = q_all.narrow(1, offset, n).transpose(0, 1).contiguous();  // [n, H, D]

  kernels::AttentionShape shape;
  shape.batch = 1;
  shape.num_q_heads = static_cast<int32_t>(H);
  shape.num_kv_heads = static_cast<int32_t>(num_kv_heads_);
  shape.head_dim = static_cast<int32_t>(D);
  shape.query_len = static_cast<int32_t>(n);
  const kernels::SelectionParams params = ParamsFor(seq, /*decode=*/false);
  kernels::SelectionLimits limits;
  limits.max_clusters = view.num_clusters;
  limits.max_coarse = params.hierarchical ? view.num_coarse : 0;
  SelectionBuffers selection(num_kv_heads_, std::max(1, view.num_clusters), device_);
  const at::Tensor workspace = DeviceBytes(kernels::selection_workspace_bytes(shape, limits), device_);
  void* stream = CurrentStream(device_);
  Check(kernels::select_clusters(shape, Views(views), q.data_ptr(), params, limits, selection.selection,
                                 workspace.data_ptr(), nullptr, stream),
        "select_clusters (prefill)");
  at::Tensor out = at::empty({n, H, D}, q.options());
  const at::Tensor lse = seq.estimate_pruned ? at::empty({n, H}, q.options().dtype(at::kFloat)) : at::Tensor();
  Check(kernels::sparse_prefill_attention(shape, Views(views), q.data_ptr(), selection.selection, out.data_ptr(),
                                          seq.estimate_pruned ? lse.data_ptr<float>() : nullptr, stream),
        "sparse_prefill_attention");
  if (seq.estimate_pruned) {
    AddPrunedEstimate(seq.context->index()[layer], q.unsqueeze(0), selection.ClusterIds(0, num_kv_heads_),
                      selection.ClusterCounts(0, num_kv_heads_), out.unsqueeze(0), lse.unsqueeze(0),
                      selection.PrunedCounts());
  }
  *output = out.view({n, H * D});
  pending_.push_back(PendingStats{selection.Counts(), {&seq}});
}

void KernelAttention::RunDecode(int64_t layer, const at::Tensor& q_all, const std::vector<const ForwardArgs*>& batch,
                                const std::vector<int64_t>& offsets, std::vector<size_t> members,
                                std::vector<at::Tensor>* outputs) {
  const c10::cuda::CUDAGuard guard(device_);
  const int64_t H = num_q_heads_, Hkv = num_kv_heads_, D = head_dim_;
  // select_clusters takes one (hierarchical, launch-wide τ) per launch: sequences sharing them are
  // made contiguous and selected together (sequences with per-head thresholds ignore the launch-wide
  // τ, so all of them share one launch); the attention then runs over all of them at once.
  auto key = [&](size_t b) {
    const kernels::SelectionParams p = ParamsFor(*batch[b]->kernel, /*decode=*/true);
    const bool per_head = HeadThresholds(*batch[b]->kernel, layer) != nullptr;
    return std::make_tuple(p.hierarchical, per_head, per_head ? 0.f : p.tau_coarse, per_head ? 0.f : p.tau_fine);
  };
  std::stable_sort(members.begin(), members.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
  const int64_t B = static_cast<int64_t>(members.size());

  std::vector<kernels::SequenceLayerBf16> views;
  std::vector<int64_t> q_rows;
  std::vector<KernelSequence*> seqs;
  int32_t max_clusters = 1, max_coarse = 0;
  bool in_order = B == q_all.size(1);
  for (int64_t i = 0; i < B; ++i) {
    const ForwardArgs& args = *batch[members[i]];
    views.push_back(ViewOf(*args.kernel, layer, args.cache->length + 1, /*decode=*/true));
    max_clusters = std::max(max_clusters, views.back().num_clusters);
    if (args.kernel->hierarchical) max_coarse = std::max(max_coarse, views.back().num_coarse);
    q_rows.push_back(offsets[members[i]]);
    in_order = in_order && q_rows.back() == i;
    seqs.push_back(args.kernel);
  }
  const at::Tensor device_views = Upload(views, device_);
  // q as [B, H, D] (the decode token of each sequence).
  const at::Tensor q =
      in_order ? q_all.transpose(0, 1).contiguous()
               : q_all.index_select(1, at::tensor(at::ArrayRef<int64_t>(q_rows), at::kLong).to(device_))
                     .transpose(0, 1)
                     .contiguous();

  kernels::AttentionShape shape;
  shape.num_q_heads = static_cast<int32_t>(H);
  shape.num_kv_heads = static_cast<int32_t>(Hkv);
  shape.head_dim = static_cast<int32_t>(D);
  shape.query_len = 1;
  // Groups of equal selection parameters, and attention launches of at most 2048 (sequence, KV
  // head) pairs (sparse_decode_attention's limit).
  std::vector<std::pair<int64_t, int64_t>> groups;  // [first, end)
  for (int64_t i = 0; i < B; ++i) {
    if (i == 0 || key(members[i]) != key(members[i - 1])) groups.emplace_back(i, i);
    groups.back().second = i + 1;
  }
  const int64_t chunk = std::max<int64_t>(1, 2048 / Hkv);
  kernels::SelectionLimits limits;
  limits.max_clusters = max_clusters;
  limits.max_coarse = max_coarse;
  const kernels::DecodeLaunch launch;
  size_t workspace_bytes = 0;
  for (const auto& [first, end] : groups) {
    shape.batch = static_cast<int32_t>(end - first);
    workspace_bytes = std::max(workspace_bytes, kernels::selection_workspace_bytes(shape, limits));
  }
  shape.batch = static_cast<int32_t>(std::min(B, chunk));
  workspace_bytes = std::max(workspace_bytes, kernels::decode_attention_workspace_bytes(shape, launch));
  const at::Tensor workspace = DeviceBytes(workspace_bytes, device_);
  SelectionBuffers selection(B * Hkv, max_clusters, device_);
  void* stream = CurrentStream(device_);
  const uint16_t* q_data = Bf16Data(q);

  for (const auto& [first, end] : groups) {
    shape.batch = static_cast<int32_t>(end - first);
    const kernels::SelectionParams params = ParamsFor(*seqs[first], /*decode=*/true);
    kernels::SelectionLimits group_limits = limits;
    if (!params.hierarchical) group_limits.max_coarse = 0;
    Check(kernels::select_clusters(shape, Views(device_views) + first, q_data + first * H * D, params, group_limits,
                                   selection.From(first, Hkv), workspace.data_ptr(), nullptr, stream),
          "select_clusters (decode)");
  }
  at::Tensor out = at::empty({B, H, D}, q.options());
  uint16_t* out_data = static_cast<uint16_t*>(out.data_ptr());
  const bool any_estimate =
      std::any_of(seqs.begin(), seqs.end(), [](const KernelSequence* s) { return s->estimate_pruned; });
  const at::Tensor lse = any_estimate ? at::empty({B, H}, q.options().dtype(at::kFloat)) : at::Tensor();
  for (int64_t first = 0; first < B; first += chunk) {
    shape.batch = static_cast<int32_t>(std::min(chunk, B - first));
    Check(kernels::sparse_decode_attention(shape, Views(device_views) + first, q_data + first * H * D,
                                           selection.From(first, Hkv), out_data + first * H * D,
                                           any_estimate ? lse.data_ptr<float>() + first * H : nullptr,
                                           workspace.data_ptr(), launch, stream),
          "sparse_decode_attention");
  }
  // The estimate, one batched pass per run of consecutive estimating sequences on one context.
  for (int64_t first = 0; first < B;) {
    int64_t end = first + 1;
    if (seqs[first]->estimate_pruned) {
      while (end < B && seqs[end]->estimate_pruned && seqs[end]->context == seqs[first]->context) ++end;
      const int64_t bc = end - first;
      AddPrunedEstimate(seqs[first]->context->index()[layer], q.narrow(0, first, bc).unsqueeze(1),
                        selection.ClusterIds(first * Hkv, bc * Hkv), selection.ClusterCounts(first * Hkv, bc * Hkv),
                        out.narrow(0, first, bc).unsqueeze(1), lse.narrow(0, first, bc).unsqueeze(1),
                        selection.PrunedCounts().narrow(0, first * Hkv, bc * Hkv));
    }
    first = end;
  }
  for (int64_t i = 0; i < B; ++i) (*outputs)[members[i]] = out[i].view({1, H * D});
  pending_.push_back(PendingStats{selection.Counts(), std::move(seqs)});
}

#else  // !SQUEEZESERVE_CUDA_KERNELS: never constructed (ChooseKernelBackend says libtorch).

void KernelAttention::RunPrefill(int64_t, const at::Tensor&, const ForwardArgs&, int64_t, at::Tensor*) {
  throw std::logic_error("kernel attention: this build has no CUDA kernels");
}

void KernelAttention::RunDecode(int64_t, const at::Tensor&, const std::vector<const ForwardArgs*>&,
                                const std::vector<int64_t>&, std::vector<size_t>, std::vector<at::Tensor>*) {
  throw std::logic_error("kernel attention: this build has no CUDA kernels");
}

#endif

}  // namespace squeezeserve
