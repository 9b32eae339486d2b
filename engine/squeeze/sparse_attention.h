// Query-time lookup and sparse attention over one layer's index: the libtorch reference for the
// CPU engine path (the CUDA kernels implement the same contract, docs/index_layout.md). The result
// covers the stored context only (selected clusters + window); the engine merges it with the
// request's own causal attention by log-sum-exp.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "engine/squeeze/calibration.h"
#include "engine/squeeze/index_builder.h"

namespace squeezeserve::squeeze {

struct SelectionOptions {
  bool hierarchical = false;  // coarse lookup, then only the children of kept coarse clusters
  // false: one cluster set per KV head for all T query tokens, p̂ averaged over them (prefill, as
  // the authors do). true: one set per token (decode). Per-token gathers [H_kv, T, kept, D]: meant
  // for small T.
  bool per_token = false;
  Thresholds thresholds;      // one_level, or coarse + fine when hierarchical
  // Per-KV-head thresholds [3, H_kv] (ThresholdKind order, float32, any device): when defined they
  // replace `thresholds` (a calibrated level's LayerIndex::head_thresholds slice).
  at::Tensor head_thresholds;
  double softmax_scale = 0;   // 0 = 1/sqrt(D)
  // Pruned clusters still attend, each as ONE key: its centroid, with logit s·q·c + log n (n keys
  // of weight exp(s·q·c) each) and its mean value (LayerIndex::cluster_values; hierarchical: a
  // pruned coarse cluster as one key too). The selected clusters stay exact. Why: the paper drops
  // pruned clusters; in a small model many heads spread their attention over thousands of keys,
  // and dropping 90% of that mass derails the hidden state (docs/index_layout.md "Pruned-cluster
  // estimate"). Costs no extra centroid comparisons: the logits are the selection's.
  bool estimate_pruned = false;
  // With estimate_pruned: only the pruned clusters whose score reaches this fraction of their
  // level's threshold (score >= floor × τ) are estimated; the rest are dropped. 0 = all of them.
  // Why: the estimate's rows are most of what the accurate lookup adds to a decode step, and the
  // clusters far below τ carry little of the pruned mass (docs/index_layout.md "Estimate floor").
  float estimate_floor = 0;
  // Read-ahead (read_ahead.h): the fine clusters holding these context positions ([H_q] int64,
  // −1 = none; undefined = none) are selected whatever their score (hierarchical: their coarse
  // parents expanded too), and AttendSelected reports each query head's most attended key.
  bool read_ahead = false;
  at::Tensor read_ahead_positions;
};

struct ClusterSelection {
  at::Tensor selected;  // [H_kv, T', K] bool: T' = 1 (shared) or T (per token); empty clusters never
  at::Tensor kept_keys;  // [H_kv, T'] int64: keys in the selected clusters
  // [H_kv, T'] int64: centroid vectors scored per KV head and selection (one-level: K;
  // hierarchical: Kc + the children of the kept coarse clusters).
  at::Tensor centroid_comparisons;
  // With SelectionOptions::estimate_pruned (else undefined): the pruned clusters as one key each,
  // logits [H_kv, T', M, P] (s·q·c + log n; −inf for padding) and [H_kv, T', P] int64 ids of their
  // mean values in cat(cluster_values, coarse_values) along the cluster dimension.
  at::Tensor pruned_logits;
  at::Tensor pruned_ids;
};

struct ContextAttention {
  at::Tensor out;  // [H_q, T, Dv] float32, normalized over the selected keys + window
  at::Tensor lse;  // [H_q, T] float32 natural-log sum of exp(s·q·k); −inf when nothing attended
  ClusterSelection selection;
  // With locate_top (read-ahead; else undefined): per query head and token, the context position
  // of its most attended key among the selected clusters (−1 when none) and that key's share of
  // the head's context attention (selected + window + pruned estimate). [H_q, T] int64 / float32.
  at::Tensor top_position;
  at::Tensor top_share;
};

// queries: post-RoPE [H_q, T, D] of the current tokens. Requires levels == 2 for hierarchical.
ClusterSelection SelectClusters(const LayerIndex& index, const at::Tensor& queries, const SelectionOptions& options);

// Exact attention of `queries` over the rows of the selected clusters plus the window, plus the
// pruned clusters' estimate when the selection carries one.
ContextAttention AttendSelected(const LayerIndex& index, const at::Tensor& queries, const ClusterSelection& selection,
                                double softmax_scale = 0, bool locate_top = false);

// SelectClusters + AttendSelected (locating the top keys with options.read_ahead).
ContextAttention SparseContextAttention(const LayerIndex& index, const at::Tensor& queries,
                                        const SelectionOptions& options);

// Merges two partial attentions over disjoint key sets: out = Σ_i exp(lse_i − lse)·out_i.
std::pair<at::Tensor, at::Tensor> MergeAttention(const at::Tensor& out_a, const at::Tensor& lse_a,
                                                 const at::Tensor& out_b, const at::Tensor& lse_b);

}  // namespace squeezeserve::squeeze
