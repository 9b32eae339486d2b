// A load-test workload: which contexts to ingest, and how the requests sent against them are shaped.
// Parsed from a JSON file (format documented in docs/operations.md, example in example_workload.json).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace squeezeload {

// A length distribution in tokens; samples are rounded and clamped to [min, max] (at least 1).
struct LengthDist {
  enum class Kind { kFixed, kUniform, kNormal };
  Kind kind = Kind::kFixed;
  double value = 32;  // kFixed
  double mean = 32, stddev = 0;  // kNormal
  double min = 1, max = 1 << 20;  // bounds of kUniform, clamps of kNormal
  int Sample(std::mt19937_64& rng) const;
};

// One context to ingest: exactly one of `file`, `synthetic_tokens` or `synthetic_words` is set.
struct ContextSource {
  std::string id;
  std::string file;            // text file, sent as text
  int64_t synthetic_tokens = 0;  // random token ids, sent as tokens
  int64_t synthetic_words = 0;   // random words, sent as text
};

// A dataset question: real text asked against one of the contexts (sent as text, so the server's
// tokenizer is part of what is measured).
struct Question {
  int context_index = 0;
  std::string text;
};

struct Workload {
  uint64_t seed = 1;
  std::vector<ContextSource> contexts;
  // Dataset mode: requests draw a question (and so its context) instead of a synthetic query.
  std::vector<Question> questions;
  LengthDist query_tokens;
  LengthDist output_tokens;
  double dense_fraction = 0;          // share of requests asking for dense attention
  std::vector<float> sparsity_levels;  // squeezed requests pick one uniformly; empty = server default
  uint32_t observation_window = 0;     // index option at ingest; 0 = server default
};

// What one request asks for; drawn by RequestSampler.
struct RequestSpec {
  int context_index = 0;
  int query_tokens = 0;
  int output_tokens = 0;
  bool dense = false;
  float sparsity = 0;  // 0 = server default (squeezed requests only)
  uint64_t seed = 0;   // seeds this request's synthetic query
  int question_index = -1;  // dataset mode: the question asked (query_tokens is then unused)
};

// `base_dir`: relative context files and the questions file are looked up there when they are not
// found from the working directory (LoadWorkloadFile passes the workload file's directory).
absl::StatusOr<Workload> ParseWorkload(const nlohmann::json& json, const std::string& base_dir = "");
absl::StatusOr<Workload> LoadWorkloadFile(const std::string& path);

// Deterministic stream of RequestSpecs for a workload. Not thread-safe: callers serialise Next().
class RequestSampler {
 public:
  RequestSampler(const Workload& workload, uint64_t seed) : workload_(workload), rng_(seed) {}
  RequestSpec Next();

 private:
  const Workload& workload_;
  std::mt19937_64 rng_;
};

}  // namespace squeezeload
