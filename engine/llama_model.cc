#include "engine/llama_model.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/attention.h"

#ifdef SQUEEZESERVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <stdexcept>

#include "kernels/norm_rope.h"
#include "kernels/skinny_gemm.h"
#endif

namespace squeezeserve {
namespace {

// The ingest prefill's largest attention unit on a GPU (LlamaModel::Prefill).
constexpr int64_t kMaxAttentionBlock = 131072;

absl::StatusOr<at::ScalarType> FloatScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    default: return absl::InvalidArgumentError("weights must be F32, F16 or BF16");
  }
}

// Copies a checkpoint tensor (possibly unaligned inside the mapping) into a `dtype` tensor on `device`,
// checking its shape.
absl::StatusOr<at::Tensor> LoadWeight(const SafetensorsCheckpoint& weights, const std::string& name,
                                      const std::vector<int64_t>& expected_shape, at::Device device,
                                      at::ScalarType dtype) {
  const TensorView* view = weights.Find(name);
  if (view == nullptr) return absl::InvalidArgumentError(absl::StrCat("checkpoint: missing tensor ", name));
  if (view->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: tensor ", name, " has shape [",
                                                   absl::StrJoin(view->shape, ", "), "], expected [",
                                                   absl::StrJoin(expected_shape, ", "), "]"));
  }
  auto source_type = FloatScalarType(view->dtype);
  if (!source_type.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: tensor ", name, ": ", source_type.status().message()));
  }
  at::Tensor host = at::empty(expected_shape, at::TensorOptions().dtype(*source_type));
  std::memcpy(host.data_ptr(), view->data, view->nbytes);
  return host.to(device, dtype);
}

#ifdef SQUEEZESERVE_CUDA_KERNELS
constexpr bool kFusedKernelsCompiled = true;

const uint16_t* Bf16Data(const at::Tensor& t) { return static_cast<const uint16_t*>(t.data_ptr()); }
uint16_t* Bf16Data(at::Tensor& t) { return static_cast<uint16_t*>(t.data_ptr()); }

void CheckLaunch(int err, const char* what) {
  if (err != 0) {
    throw std::runtime_error(
        absl::StrCat(what, " failed: ", cudaGetErrorString(static_cast<cudaError_t>(err))));
  }
}

// x: contiguous bf16 [N, hidden] on `device`.
at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, float eps, at::Device device) {
  const c10::cuda::CUDAGuard guard(device);
  at::Tensor out = at::empty_like(x);
  CheckLaunch(kernels::rms_norm_bf16(Bf16Data(x), Bf16Data(weight), Bf16Data(out), static_cast<int>(x.size(0)),
                                     static_cast<int>(x.size(1)), eps,
                                     c10::cuda::getCurrentCUDAStream(device.index()).stream()),
              "rms_norm_bf16");
  return out;
}

// x: bf16 [n, heads·D] with unit column stride; cos, sin: contiguous bf16 [n, D]. The first q_heads
// heads as q [q_heads, n, D] over token-major memory ([n, q_heads, D]: the attention kernels' query
// layout, so their transposing copy is gone), the others as k [heads - q_heads, n, D].
std::pair<at::Tensor, at::Tensor> FusedRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                            int64_t head_dim, int64_t q_heads, at::Device device) {
  const c10::cuda::CUDAGuard guard(device);
  const int64_t n = x.size(0), heads = x.size(1) / head_dim;
  at::Tensor out = at::empty({heads * n * head_dim}, x.options());
  CheckLaunch(kernels::rope_bf16(Bf16Data(x), Bf16Data(out), Bf16Data(cos), Bf16Data(sin), static_cast<int>(n),
                                 static_cast<int>(heads), static_cast<int>(head_dim), x.stride(0),
                                 static_cast<int>(q_heads), c10::cuda::getCurrentCUDAStream(device.index()).stream()),
              "rope_bf16");
  const int64_t q_elems = n * q_heads * head_dim;
  return {out.narrow(0, 0, q_elems).view({n, q_heads, head_dim}).transpose(0, 1),
          out.narrow(0, q_elems, out.numel() - q_elems).view({heads - q_heads, n, head_dim})};
}

// x [M, K] times W [N, K] transposed, plus bias [N] and residual [M, N] where defined, on
// kernels::skinny_gemm: the decode batch's products (LlamaModel::SkinnyRows chose the rows), which
// cuBLAS reads the weights of well below the copy rate (kernels/skinny_gemm.h). Undefined when the
// kernel does not take the operands (other dtypes or layouts): the caller then runs libtorch's.
at::Tensor SkinnyProduct(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& residual,
                         const at::Tensor& workspace) {
  const bool bf16 = x.scalar_type() == at::kBFloat16 && w.scalar_type() == at::kBFloat16;
  if (!x.is_cuda() || !bf16 || x.stride(1) != 1 || w.dim() != 2 || !w.is_contiguous() || x.size(1) != w.size(1)) {
    return {};
  }
  const int64_t m = x.size(0), n = w.size(0), k = w.size(1);
  if (bias.defined() && (bias.scalar_type() != at::kBFloat16 || !bias.is_contiguous() || bias.numel() != n)) return {};
  if (residual.defined() && (residual.scalar_type() != at::kBFloat16 || !residual.is_contiguous() ||
                             residual.dim() != 2 || residual.size(0) != m || residual.size(1) != n)) {
    return {};
  }
  at::Tensor out = at::empty({m, n}, x.options());
  kernels::SkinnyGemm g;
  g.m = static_cast<int>(m);
  g.n = static_cast<int>(n);
  g.k = static_cast<int>(k);
  g.x = x.data_ptr();
  g.x_stride = x.stride(0);
  g.w = w.data_ptr();
  g.bias = bias.defined() ? bias.data_ptr() : nullptr;
  g.residual = residual.defined() ? residual.data_ptr() : nullptr;
  g.out = out.data_ptr();
  if (!kernels::skinny_gemm_supports(g)) return {};
  const c10::cuda::CUDAGuard guard(x.device());
  CheckLaunch(kernels::skinny_gemm(g, workspace.data_ptr(), c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
              "skinny_gemm");
  return out;
}

// silu(gate) * up of gate_up [M, 2·inter] (bf16, unit column stride) in one launch
// (kernels::silu_mul_bf16); undefined where the kernel does not take it.
at::Tensor FusedSiluMul(const at::Tensor& gate_up, int64_t inter) {
  const int64_t rows = gate_up.size(0);
  at::Tensor act = at::empty({rows, inter}, gate_up.options());
  const c10::cuda::CUDAGuard guard(gate_up.device());
  const int err = kernels::silu_mul_bf16(gate_up.data_ptr(), gate_up.stride(0), act.data_ptr(), static_cast<int>(rows),
                                         static_cast<int>(inter),
                                         c10::cuda::getCurrentCUDAStream(gate_up.device().index()).stream());
  if (err == cudaErrorInvalidValue) return {};
  CheckLaunch(err, "silu_mul_bf16");
  return act;
}
#else
constexpr bool kFusedKernelsCompiled = false;
#endif

// x [M, K] times W [N, K] transposed. On the CPU a one-row product (a decode step of one sequence)
// is a matrix-vector product: BLAS's gemm copies W into its packed layout on every call, which for
// one row is most of the work (perf, the shipped model decoding on the CPU: 51% of the step in
// OpenBLAS's sgemm_incopy), where gemv reads W once.
bool OneRowOnCpu(const at::Tensor& x) { return !x.is_cuda() && x.dim() == 2 && x.size(0) == 1; }

}  // namespace

at::Tensor JoinRows(const std::vector<at::Tensor>& parts) {
  if (parts.size() <= 1) return parts.empty() ? at::Tensor() : parts[0];
  const at::Tensor& first = parts[0];
  const int64_t width = first.size(1);
  int64_t rows = 0;
  for (const at::Tensor& part : parts) {
    if (!part.is_contiguous() || part.size(1) != width || !part.is_alias_of(first) ||
        part.storage_offset() != first.storage_offset() + rows * width) {
      return at::cat(parts, 0);
    }
    rows += part.size(0);
  }
  return first.as_strided({rows, width}, {width, 1}, first.storage_offset());
}

LlamaModel::LlamaModel(const ModelConfig& config, at::Device device, at::ScalarType dtype,
                       const LlamaModelOptions& options)
    : config_(config),
      device_(device),
      dtype_(dtype),
      fused_(kFusedKernelsCompiled && options.fused_norm_rope && device.is_cuda() && dtype == at::kBFloat16) {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  skinny_min_rows_ = options.skinny_min_rows;
  // Zero before the first product, as every product leaves it (kernels/skinny_gemm.h).
  if (fused_ && options.skinny_min_rows > 0) {
    skinny_workspace_ = at::zeros({static_cast<int64_t>(kernels::kSkinnyGemmWorkspaceBytes)},
                                  at::TensorOptions().device(device).dtype(at::kByte));
  }
#endif
}

bool LlamaModel::SkinnyRows(const at::Tensor& x) const {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  return skinny_workspace_.defined() && x.dim() == 2 && x.size(0) >= skinny_min_rows_ &&
         x.size(0) <= kernels::kSkinnyMaxRows;
#else
  (void)x;
  return false;
#endif
}

at::Tensor LlamaModel::Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                              const at::Tensor& residual) const {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  if (SkinnyRows(x)) {
    if (at::Tensor out = SkinnyProduct(x, w, bias, residual, skinny_workspace_); out.defined()) return out;
  }
#endif
  if (OneRowOnCpu(x)) {
    if (residual.defined() && !bias.defined()) return at::addmv(residual[0], w, x[0]).unsqueeze(0);
    at::Tensor y = (bias.defined() ? at::addmv(bias, w, x[0]) : at::mv(w, x[0])).unsqueeze(0);
    return residual.defined() ? residual + y : y;
  }
  if (!residual.defined()) return at::linear(x, w, bias);
  if (bias.defined()) return residual + at::linear(x, w, bias);
  return at::addmm(residual, x, w.t());  // the residual add inside the matmul
}

at::Tensor LlamaModel::AddSwiGluDown(const at::Tensor& residual, const at::Tensor& gate_up,
                                     const at::Tensor& w) const {
  const int64_t inter = w.size(1);
#ifdef SQUEEZESERVE_CUDA_KERNELS
  // Where the down product runs on our kernel: SiLU * up in one launch, not libtorch's two.
  if (SkinnyRows(gate_up) && gate_up.scalar_type() == at::kBFloat16 && gate_up.stride(1) == 1) {
    if (const at::Tensor act = FusedSiluMul(gate_up, inter); act.defined()) return Linear(act, w, at::Tensor(), residual);
  }
#endif
  const at::Tensor act = at::silu(gate_up.narrow(1, 0, inter)).mul_(gate_up.narrow(1, inter, inter));
  return Linear(act, w, at::Tensor(), residual);
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(const ModelConfig& config,
                                                               const SafetensorsCheckpoint& weights,
                                                               at::Device device, at::ScalarType dtype,
                                                               const LlamaModelOptions& options) {
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, device, dtype, options));
  const int64_t hidden = config.hidden_size, inter = config.intermediate_size, dim = config.head_dim;
  const int64_t q_out = config.num_attention_heads * dim, kv_out = config.num_kv_heads * dim;
  absl::Status status;
  // Loads one weight into `out`, remembering the first failure.
  auto load = [&](at::Tensor& out, const std::string& name, std::vector<int64_t> shape) {
    if (!status.ok()) return;
    auto tensor = LoadWeight(weights, name, shape, device, dtype);
    if (tensor.ok()) out = *tensor;
    else status = tensor.status();
  };
  // Loads weights and stacks them along the output dimension (one matmul instead of several).
  auto load_stacked = [&](at::Tensor& out, const std::vector<std::pair<std::string, std::vector<int64_t>>>& parts) {
    std::vector<at::Tensor> loaded(parts.size());
    for (size_t i = 0; i < parts.size(); ++i) load(loaded[i], parts[i].first, parts[i].second);
    if (status.ok()) out = at::cat(loaded, 0);
  };
  try {
    load(model->embed_tokens_, "model.embed_tokens.weight", {config.vocab_size, hidden});
    load(model->final_norm_, "model.norm.weight", {hidden});
    // Tied checkpoints usually omit lm_head.weight; when tied, the embedding is the head.
    if (config.tie_word_embeddings) {
      model->lm_head_ = model->embed_tokens_;
    } else {
      load(model->lm_head_, "lm_head.weight", {config.vocab_size, hidden});
    }
    model->layers_.resize(config.num_layers);
    for (int64_t i = 0; i < config.num_layers; ++i) {
      Layer& layer = model->layers_[i];
      const std::string prefix = absl::StrCat("model.layers.", i, ".");
      load(layer.input_norm, prefix + "input_layernorm.weight", {hidden});
      load(layer.post_attention_norm, prefix + "post_attention_layernorm.weight", {hidden});
      load_stacked(layer.qkv_proj, {{prefix + "self_attn.q_proj.weight", {q_out, hidden}},
                                    {prefix + "self_attn.k_proj.weight", {kv_out, hidden}},
                                    {prefix + "self_attn.v_proj.weight", {kv_out, hidden}}});
      if (config.qkv_bias) {
        load_stacked(layer.qkv_bias, {{prefix + "self_attn.q_proj.bias", {q_out}},
                                      {prefix + "self_attn.k_proj.bias", {kv_out}},
                                      {prefix + "self_attn.v_proj.bias", {kv_out}}});
      }
      load(layer.o_proj, prefix + "self_attn.o_proj.weight", {hidden, q_out});
      if (config.o_bias) load(layer.o_bias, prefix + "self_attn.o_proj.bias", {hidden});
      load_stacked(layer.gate_up_proj, {{prefix + "mlp.gate_proj.weight", {inter, hidden}},
                                        {prefix + "mlp.up_proj.weight", {inter, hidden}}});
      load(layer.down_proj, prefix + "mlp.down_proj.weight", {hidden, inter});
    }
    const std::vector<float> inv_freq = RopeInverseFrequencies(config.rope, dim);
    model->inv_freq_ = at::tensor(at::ArrayRef<float>(inv_freq), at::kFloat).to(device);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("loading weights: ", e.what_without_backtrace()));
  }
  if (!status.ok()) return status;
  return model;
}

KvCache LlamaModel::NewCache(int64_t capacity) const {
  KvCache cache;
  const auto options = at::TensorOptions().dtype(dtype_).device(device_);
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    cache.keys.push_back(at::empty({config_.num_kv_heads, capacity, config_.head_dim}, options));
    cache.values.push_back(at::empty({config_.num_kv_heads, capacity, config_.head_dim}, options));
  }
  return cache;
}

at::Tensor LlamaModel::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  if (fused_ && x.dim() == 2 && x.is_contiguous()) {
    return FusedRmsNorm(x, weight, static_cast<float>(config_.rms_norm_eps), device_);
  }
#endif
  // As HF: normalize in float32, cast back, then scale.
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + config_.rms_norm_eps);
  return weight * normed.to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> LlamaModel::ApplyRope(const at::Tensor& x, const at::Tensor& cos,
                                                        const at::Tensor& sin) const {
  const int64_t q_heads = config_.num_attention_heads;
#ifdef SQUEEZESERVE_CUDA_KERNELS
  if (fused_ && x.stride(1) == 1) {
    return FusedRope(x, cos.contiguous(), sin.contiguous(), config_.head_dim, q_heads, device_);
  }
#endif
  const int64_t n = x.size(0), dim = config_.head_dim;
  const at::Tensor heads = x.view({n, -1, dim}).transpose(0, 1);  // [heads, n, D]
  // rotate_half: (x1, x2) → (−x2, x1) on the two halves of the head dimension.
  const at::Tensor rotated = at::cat({-heads.narrow(-1, dim / 2, dim / 2), heads.narrow(-1, 0, dim / 2)}, -1);
  const at::Tensor roped = (heads * cos + rotated * sin).contiguous();
  return {roped.narrow(0, 0, q_heads), roped.narrow(0, q_heads, roped.size(0) - q_heads)};
}

std::pair<at::Tensor, at::Tensor> LlamaModel::RopeTables(const at::Tensor& positions) const {
  // Computed in float32 as HF does.
  const at::Tensor freqs = at::outer(positions.to(at::kFloat), inv_freq_);  // [N, D/2]
  const at::Tensor angles = at::cat({freqs, freqs}, -1);                    // [N, D]
  return {angles.cos().to(dtype_), angles.sin().to(dtype_)};
}

LlamaModel::Projected LlamaModel::Project(const Layer& layer, const at::Tensor& x, const at::Tensor& cos,
                                          const at::Tensor& sin) const {
  const int64_t total = x.size(0), dim = config_.head_dim;
  const int64_t q_out = config_.num_attention_heads * dim, kv_out = config_.num_kv_heads * dim;
  const at::Tensor qkv = Linear(RmsNorm(x, layer.input_norm), layer.qkv_proj, layer.qkv_bias);  // [N, q_out + 2·kv_out]
  // q and k are adjacent columns: one RoPE pass over both heads.
  Projected p;
  std::tie(p.q, p.k) = ApplyRope(qkv.narrow(1, 0, q_out + kv_out), cos, sin);
  p.v = qkv.narrow(1, q_out + kv_out, kv_out).reshape({total, -1, dim}).transpose(0, 1);
  return p;
}

at::Tensor LlamaModel::AddMlp(const Layer& layer, const at::Tensor& x) const {
  const at::Tensor gate_up = Linear(RmsNorm(x, layer.post_attention_norm), layer.gate_up_proj);  // [N, 2·intermediate]
  return AddSwiGluDown(x, gate_up, layer.down_proj);
}

at::Tensor LlamaModel::AddAttentionOutput(const Layer& layer, const at::Tensor& residual,
                                          const at::Tensor& attended) const {
  return Linear(attended, layer.o_proj, layer.o_bias, residual);
}

at::Tensor LlamaModel::Forward(const ForwardArgs& args) const { return ForwardBatch({&args})[0]; }

PlannedStep LlamaModel::PlanStep(const std::vector<const ForwardArgs*>& batch) const {
  PlannedStep plan;
  std::vector<std::vector<SequenceStep>> steps;
  for (size_t b = 0; b < batch.size(); ++b) {
    const ForwardArgs& args = *batch[b];
    if (args.attention == nullptr) throw std::logic_error("ForwardArgs::attention is not set");
    plan.offsets.push_back(plan.total_tokens);
    AttentionBackend* backend = &args.attention->backend();
    size_t g = 0;
    while (g < plan.backends.size() && plan.backends[g] != backend) ++g;
    if (g == plan.backends.size()) {
      plan.backends.push_back(backend);
      plan.members.emplace_back();
      steps.emplace_back();
    }
    plan.members[g].push_back(b);
    steps[g].push_back(SequenceStep{args.attention, plan.total_tokens, args.num_tokens, args.query_prefill});
    plan.total_tokens += args.num_tokens;
  }
  for (size_t g = 0; g < plan.backends.size(); ++g) {
    try {
      plan.backends[g]->Plan(steps[g]);
    } catch (...) {
      for (size_t done = 0; done < g; ++done) plan.backends[done]->Abandon();
      throw;
    }
  }
  return plan;
}

at::Tensor LlamaModel::RunLayers(const at::Tensor& ids, const at::Tensor& positions, const PlannedStep& plan,
                                 const std::vector<const ForwardArgs*>& batch) const {
  const auto [cos, sin] = RopeTables(positions);
  for (const ForwardArgs* args : batch) {
    if (args->captured_queries != nullptr) args->captured_queries->assign(config_.num_layers, at::Tensor());
  }
  at::Tensor x = at::embedding(embed_tokens_, ids);  // [N, hidden]
  std::vector<at::Tensor> outputs(batch.size());
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    const Layer& layer = layers_[l];
    const Projected p = Project(layer, x, cos, sin);
    for (size_t b = 0; b < batch.size(); ++b) {
      if (batch[b]->captured_queries != nullptr) {
        (*batch[b]->captured_queries)[l] =
            p.q.narrow(1, plan.offsets[b], batch[b]->num_tokens).clone(at::MemoryFormat::Contiguous);
      }
    }
    for (size_t g = 0; g < plan.backends.size(); ++g) {
      std::vector<at::Tensor> attended = plan.backends[g]->Attend(l, p.q, p.k, p.v);
      for (size_t i = 0; i < attended.size(); ++i) outputs[plan.members[g][i]] = std::move(attended[i]);
    }
    const at::Tensor merged = JoinRows(outputs);  // [N, H·D]
    x = AddAttentionOutput(layer, x, merged);
    x = AddMlp(layer, x);
  }
  return x;
}

void LlamaModel::FinishStep(const PlannedStep& plan) const {
  for (AttentionBackend* backend : plan.backends) backend->Finish();
}

void LlamaModel::AbandonStep(const PlannedStep& plan) const {
  for (AttentionBackend* backend : plan.backends) backend->Abandon();
}

at::Tensor LlamaModel::Logits(const at::Tensor& hidden) const {
  return Linear(RmsNorm(hidden, final_norm_), lm_head_).to(at::kFloat);
}

std::vector<at::Tensor> LlamaModel::ForwardBatch(const std::vector<const ForwardArgs*>& batch) const {
  std::vector<at::Tensor> ids, positions;
  for (const ForwardArgs* args : batch) {
    const int64_t n = args->num_tokens;
    ids.push_back(at::from_blob(const_cast<int32_t*>(args->token_ids), {n}, at::kInt).to(device_, at::kLong));
    positions.push_back(at::arange(args->start_position, args->start_position + n,
                                   at::TensorOptions().dtype(at::kLong).device(device_)));
  }
  const PlannedStep plan = PlanStep(batch);
  if (plan.total_tokens == 0) {
    AbandonStep(plan);
    return std::vector<at::Tensor>(batch.size());
  }
  const bool alone = batch.size() == 1;
  at::Tensor hidden;
  try {
    hidden = RunLayers(alone ? ids[0] : at::cat(ids, 0), alone ? positions[0] : at::cat(positions, 0), plan, batch);
  } catch (...) {
    AbandonStep(plan);
    throw;
  }
  FinishStep(plan);
  // The rows whose logits are wanted (the last token of each sequence, or all of its tokens),
  // through the head in one matmul.
  std::vector<int64_t> rows;
  for (size_t b = 0; b < batch.size(); ++b) {
    const int64_t n = batch[b]->num_tokens;
    if (!batch[b]->compute_logits || n == 0) continue;
    for (int64_t r = batch[b]->logits_of_every_token ? 0 : n - 1; r < n; ++r) rows.push_back(plan.offsets[b] + r);
  }
  std::vector<at::Tensor> logits(batch.size());
  if (rows.empty()) return logits;
  const bool all_rows = static_cast<int64_t>(rows.size()) == plan.total_tokens;
  const at::Tensor all_logits =
      Logits(all_rows ? hidden : hidden.index_select(0, at::tensor(rows, at::kLong).to(device_)));  // [B', vocab]
  int64_t row = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    if (!batch[b]->compute_logits || batch[b]->num_tokens == 0) continue;
    if (batch[b]->logits_of_every_token) {
      logits[b] = all_logits.narrow(0, row, batch[b]->num_tokens);
      row += batch[b]->num_tokens;
    } else {
      logits[b] = all_logits[row++];
    }
  }
  return logits;
}

absl::StatusOr<PrefillResult> LlamaModel::Prefill(const std::vector<int32_t>& tokens, int64_t window,
                                                  const PrefillControl& control) const {
  c10::InferenceMode inference_mode;
  const int64_t total = static_cast<int64_t>(tokens.size());
  const int64_t block = std::max<int64_t>(1, control.block_tokens);
  const int64_t heads = config_.num_attention_heads, dim = config_.head_dim;
  window = std::min(window, total);
  PrefillResult result;
  try {
    result.kv = NewCache(total);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("allocating the context KV: ", e.what()));
  }
  // On a GPU attention runs in query blocks of up to 128K tokens: one fused causal call per layer up
  // to that length (libtorch's kernels run a whole square fastest; a block after the first splits
  // into an unmasked part over the keys before it and a causal square, merged), each well under a
  // second of an 8B model.
  const int64_t attention_block =
      device_.is_cuda() ? std::max(block, std::min<int64_t>(total, kMaxAttentionBlock)) : block;
  // Runs fn over [start, start + n) blocks of the sequence, each under the engine's lock. Units:
  // the embedding, then per layer the token-wise passes before and after attention over every
  // block, and attention over every attention block.
  const auto blocks = [total](int64_t size) { return (total + size - 1) / size; };
  const double units = static_cast<double>(blocks(block) * (1 + 2 * config_.num_layers) +
                                           blocks(attention_block) * config_.num_layers);
  int64_t done = 0;
  auto in_blocks = [&](const std::function<void(int64_t, int64_t)>& fn, int64_t size = 0) -> absl::Status {
    size = size > 0 ? size : block;
    for (int64_t start = 0; start < total; start += size) {
      if (control.cancelled && control.cancelled()) return absl::CancelledError("ingest cancelled");
      const int64_t n = std::min(size, total - start);
      control.exclusive([&] { fn(start, n); });
      if (control.progress) control.progress(static_cast<double>(++done) / units);
    }
    return absl::OkStatus();
  };
  try {
    at::Tensor x, queries, attended;  // [S, hidden] residual stream, [H, S, D], [S, H·D]
    absl::Status status = in_blocks([&](int64_t start, int64_t n) {
      if (!x.defined()) {
        x = at::empty({total, config_.hidden_size}, at::TensorOptions().dtype(dtype_).device(device_));
        queries = at::empty({heads, total, dim}, x.options());
        attended = at::empty({total, heads * dim}, x.options());
      }
      const at::Tensor ids = at::from_blob(const_cast<int32_t*>(tokens.data()) + start, {n}, at::kInt);
      x.narrow(0, start, n).copy_(at::embedding(embed_tokens_, ids.to(device_, at::kLong)));
    });
    for (int64_t l = 0; status.ok() && l < config_.num_layers; ++l) {
      const Layer& layer = layers_[l];
      at::Tensor& keys = result.kv.keys[l];
      at::Tensor& values = result.kv.values[l];
      // Token-wise: norm, q/k/v, RoPE; K/V into the context KV.
      status = in_blocks([&](int64_t start, int64_t n) {
        const at::Tensor positions = at::arange(start, start + n, at::TensorOptions().dtype(at::kLong).device(device_));
        const auto [cos, sin] = RopeTables(positions);
        const Projected p = Project(layer, x.narrow(0, start, n), cos, sin);
        queries.narrow(1, start, n).copy_(p.q);
        keys.narrow(1, start, n).copy_(p.k);
        values.narrow(1, start, n).copy_(p.v);
      });
      // Causal attention, a block of queries at a time over the keys up to its end.
      if (status.ok()) {
        status = in_blocks([&](int64_t start, int64_t n) {
          const AttentionPart part = AttendWithLse(queries.narrow(1, start, n), keys.narrow(1, 0, start + n),
                                                   values.narrow(1, 0, start + n), /*causal_offset=*/start);
          attended.narrow(0, start, n).copy_(part.out.transpose(0, 1).reshape({n, heads * dim}));
        }, attention_block);
      }
      // Token-wise: output projection and MLP on the residual stream.
      if (status.ok()) {
        status = in_blocks([&](int64_t start, int64_t n) {
          at::Tensor rows = x.narrow(0, start, n);
          const at::Tensor h = AddAttentionOutput(layer, rows, attended.narrow(0, start, n));
          rows.copy_(AddMlp(layer, h));
        });
      }
      if (status.ok()) {
        result.window_queries.push_back(window > 0 ? queries.narrow(1, total - window, window).clone() : at::Tensor());
      }
    }
    if (!status.ok()) return status;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("ingest prefill failed: ", e.what()));
  }
  result.kv.length = total;
  return result;
}

}  // namespace squeezeserve
