#include "engine/llama_model.h"

#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/attention.h"
#include "engine/kernel_attention.h"

#ifdef SQUEEZESERVE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <stdexcept>

#include "kernels/norm_rope.h"
#endif

namespace squeezeserve {
namespace {

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

// x: bf16 [n, heads·D] with unit column stride; cos, sin: contiguous bf16 [n, D]. Returns [heads, n, D].
at::Tensor FusedRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, int64_t head_dim,
                     at::Device device) {
  const c10::cuda::CUDAGuard guard(device);
  const int64_t n = x.size(0), heads = x.size(1) / head_dim;
  at::Tensor out = at::empty({heads, n, head_dim}, x.options());
  CheckLaunch(kernels::rope_bf16(Bf16Data(x), Bf16Data(out), Bf16Data(cos), Bf16Data(sin), static_cast<int>(n),
                                 static_cast<int>(heads), static_cast<int>(head_dim), x.stride(0),
                                 c10::cuda::getCurrentCUDAStream(device.index()).stream()),
              "rope_bf16");
  return out;
}
#else
constexpr bool kFusedKernelsCompiled = false;
#endif

}  // namespace

LlamaModel::LlamaModel(const ModelConfig& config, at::Device device, at::ScalarType dtype,
                       const LlamaModelOptions& options)
    : config_(config),
      device_(device),
      dtype_(dtype),
      fused_(kFusedKernelsCompiled && options.fused_norm_rope && device.is_cuda() && dtype == at::kBFloat16) {}

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
      load(layer.q_proj, prefix + "self_attn.q_proj.weight", {q_out, hidden});
      load(layer.k_proj, prefix + "self_attn.k_proj.weight", {kv_out, hidden});
      load(layer.v_proj, prefix + "self_attn.v_proj.weight", {kv_out, hidden});
      load(layer.o_proj, prefix + "self_attn.o_proj.weight", {hidden, q_out});
      if (config.qkv_bias) {
        load(layer.q_bias, prefix + "self_attn.q_proj.bias", {q_out});
        load(layer.k_bias, prefix + "self_attn.k_proj.bias", {kv_out});
        load(layer.v_bias, prefix + "self_attn.v_proj.bias", {kv_out});
      }
      if (config.o_bias) load(layer.o_bias, prefix + "self_attn.o_proj.bias", {hidden});
      load(layer.gate_proj, prefix + "mlp.gate_proj.weight", {inter, hidden});
      load(layer.up_proj, prefix + "mlp.up_proj.weight", {inter, hidden});
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

at::Tensor LlamaModel::ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
#ifdef SQUEEZESERVE_CUDA_KERNELS
  if (fused_ && x.stride(1) == 1) return FusedRope(x, cos.contiguous(), sin.contiguous(), config_.head_dim, device_);
#endif
  const int64_t n = x.size(0), dim = config_.head_dim;
  const at::Tensor heads = x.view({n, -1, dim}).transpose(0, 1);  // [heads, n, D]
  // rotate_half: (x1, x2) → (−x2, x1) on the two halves of the head dimension.
  const at::Tensor rotated = at::cat({-heads.narrow(-1, dim / 2, dim / 2), heads.narrow(-1, 0, dim / 2)}, -1);
  return (heads * cos + rotated * sin).contiguous();
}

at::Tensor LlamaModel::Attention(int64_t layer_index, const Layer& layer, const at::Tensor& x,
                                 const at::Tensor& cos, const at::Tensor& sin,
                                 const std::vector<const ForwardArgs*>& batch,
                                 const std::vector<int64_t>& offsets) const {
  const int64_t total = x.size(0);
  const at::Tensor q_all = ApplyRope(at::linear(x, layer.q_proj, layer.q_bias), cos, sin);  // [H, N, D]
  const at::Tensor k_all = ApplyRope(at::linear(x, layer.k_proj, layer.k_bias), cos, sin);  // [H_kv, N, D]
  const at::Tensor v_all =
      at::linear(x, layer.v_proj, layer.v_bias).view({total, -1, config_.head_dim}).transpose(0, 1);

  std::vector<at::Tensor> outputs(batch.size());
  // Sequences whose attention the CUDA kernels compute, all in one call after this loop.
  std::vector<size_t> kernel_members;
  KernelAttention* kernels = nullptr;
  for (size_t b = 0; b < batch.size(); ++b) {
    const ForwardArgs& args = *batch[b];
    const int64_t n = args.num_tokens;
    // A lone sequence keeps the tensors as they are (the one-at-a-time path, bit for bit as before).
    const bool alone = batch.size() == 1;
    const at::Tensor k = alone ? k_all : k_all.narrow(1, offsets[b], n);
    const at::Tensor v = alone ? v_all : v_all.narrow(1, offsets[b], n);

    KvCache& cache = *args.cache;
    cache.keys[layer_index].narrow(1, cache.length, n).copy_(k);
    cache.values[layer_index].narrow(1, cache.length, n).copy_(v);
    if (args.kernel != nullptr && args.captured_queries == nullptr && args.kernel->runner->Accepts(*args.kernel, n)) {
      kernel_members.push_back(b);
      kernels = args.kernel->runner;
      continue;
    }
    const at::Tensor q = alone ? q_all : q_all.narrow(1, offsets[b], n).contiguous();
    if (args.captured_queries != nullptr && args.capture_from < n) {
      (*args.captured_queries)[layer_index] = q.narrow(1, args.capture_from, n - args.capture_from).clone();
    }

    // Part (b): the sequence's own tokens so far, causal; new token i sits at row cache.length + i.
    const int64_t own_len = cache.length + n;
    AttentionPart attended = AttendWithLse(q, cache.keys[layer_index].narrow(1, 0, own_len),
                                           cache.values[layer_index].narrow(1, 0, own_len), cache.length);
    // Part (a): the stored context, through the caller's lookup or as a read-only prefix, no mask.
    if (args.context_attention) {
      attended = MergeLse(args.context_attention(layer_index, q), attended);
    } else if (args.prefix.keys != nullptr && (*args.prefix.keys)[layer_index].size(1) > 0) {
      const AttentionPart prefix = AttendWithLse(q, (*args.prefix.keys)[layer_index],
                                                 (*args.prefix.values)[layer_index], /*causal_offset=*/-1);
      attended = MergeLse(prefix, attended);
    }
    outputs[b] = attended.out.to(dtype_).transpose(0, 1).reshape({n, -1});  // [n, H·D]
  }
  if (kernels != nullptr) kernels->Run(layer_index, q_all, batch, offsets, kernel_members, &outputs);
  const at::Tensor merged = outputs.size() == 1 ? outputs[0] : at::cat(outputs, 0);  // [N, H·D]
  return at::linear(merged, layer.o_proj, layer.o_bias);
}

at::Tensor LlamaModel::Forward(const ForwardArgs& args) const { return ForwardBatch({&args})[0]; }

std::vector<at::Tensor> LlamaModel::ForwardBatch(const std::vector<const ForwardArgs*>& batch) const {
  std::vector<int64_t> offsets;
  std::vector<at::Tensor> ids, positions;
  int64_t total = 0;
  for (const ForwardArgs* args : batch) {
    const int64_t n = args->num_tokens;
    offsets.push_back(total);
    total += n;
    ids.push_back(at::from_blob(const_cast<int32_t*>(args->token_ids), {n}, at::kInt).to(device_, at::kLong));
    positions.push_back(at::arange(args->start_position, args->start_position + n,
                                   at::TensorOptions().dtype(at::kLong).device(device_)));
  }
  if (total == 0) return std::vector<at::Tensor>(batch.size());
  const bool alone = batch.size() == 1;
  // RoPE tables for every stacked token's own position, computed in float32 as HF does.
  const at::Tensor position = (alone ? positions[0] : at::cat(positions, 0)).to(at::kFloat);
  const at::Tensor freqs = at::outer(position, inv_freq_);  // [N, D/2]
  const at::Tensor angles = at::cat({freqs, freqs}, -1);    // [N, D]
  const at::Tensor cos = angles.cos().to(dtype_), sin = angles.sin().to(dtype_);

  for (const ForwardArgs* args : batch) {
    if (args->captured_queries != nullptr) args->captured_queries->assign(config_.num_layers, at::Tensor());
  }
  // The CUDA kernel runner of the batch's kernel-path sequences (one per engine), if any.
  KernelAttention* kernels = nullptr;
  for (const ForwardArgs* args : batch) {
    if (args->kernel != nullptr) kernels = args->kernel->runner;
  }
  if (kernels != nullptr) kernels->BeginForward();
  at::Tensor x = at::embedding(embed_tokens_, alone ? ids[0] : at::cat(ids, 0));  // [N, hidden]
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    const Layer& layer = layers_[i];
    x = x + Attention(i, layer, RmsNorm(x, layer.input_norm), cos, sin, batch, offsets);
    const at::Tensor h = RmsNorm(x, layer.post_attention_norm);
    x = x + at::linear(at::silu(at::linear(h, layer.gate_proj)) * at::linear(h, layer.up_proj), layer.down_proj);
  }
  // The kernel path's selection statistics of this forward, to the sequences' lookups.
  if (kernels != nullptr) kernels->FinishForward();
  // The last token of every sequence that wants logits, through the head in one matmul.
  std::vector<int64_t> last_rows;
  for (size_t b = 0; b < batch.size(); ++b) {
    const int64_t n = batch[b]->num_tokens;
    batch[b]->cache->length += n;
    if (!batch[b]->compute_logits || n == 0) continue;
    // logits_of_every_token (prompt log-probs): all of the sequence's rows.
    for (int64_t r = batch[b]->logits_of_every_token ? 0 : n - 1; r < n; ++r) last_rows.push_back(offsets[b] + r);
  }
  std::vector<at::Tensor> logits(batch.size());
  if (last_rows.empty()) return logits;
  const at::Tensor rows = at::tensor(last_rows, at::kLong).to(device_);
  const at::Tensor last = RmsNorm(x.index_select(0, rows), final_norm_);
  const at::Tensor all_logits = at::linear(last, lm_head_).to(at::kFloat);  // [B', vocab]
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

}  // namespace squeezeserve
