// longctx_eval's pure parts: the attention configurations compared, the exact-match rule, the
// aggregation per task x length x configuration, and the paper-style table. No gRPC, no torch.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

namespace longctx_eval {

// One attention configuration a query is answered under.
struct Config {
  std::string name;   // "dense", "flat50", ..., "hier90" (the --configs spelling)
  std::string label;  // table row: "dense", "squeezed 1-level 50%", "hierarchical 90%"
  bool squeezed = false;
  float sparsity = 0;
  bool hierarchical = false;
  bool dropped = false;  // AttentionOptions.pruned = DROPPED (the paper) instead of the server default
  bool no_read_ahead = false;  // AttentionOptions.read_ahead = OFF (the paper) instead of the server default
};

// "all" (dense + flat and hierarchical at 50/70/80/90%), or a comma-separated list of names:
// "dense", "flatNN", "hierNN" with NN a sparsity percentage, each squeezed one optionally with the
// suffixes "-noahead" (no read-ahead) and "-dropped" (pruned clusters left out), in that order:
// "flat90-noahead-dropped" is the paper's lookup; without them, the server's defaults (read-ahead
// on, pruned clusters estimated). nullopt (message in *error) otherwise.
std::optional<std::vector<Config>> ParseConfigs(const std::string& spec, std::string* error);

// The scoring rule: the answer counts as correct iff, after removing leading and trailing whitespace
// from the expected answer and leading whitespace from the generated text, the generated text starts
// with the expected answer. (Whitespace inside the answer, e.g. a function body's indentation and
// newlines, must match exactly; whatever the model generates after the answer is ignored.)
bool ExactMatch(const std::string& answer, const std::string& generated);

// Sums of one task x length x configuration cell.
struct Cell {
  int64_t n = 0;        // scored retrieval queries
  int64_t correct = 0;
  int64_t errors = 0;   // RPCs that failed (not counted in n)
  double kv_fraction_sum = 0;  // over every generation (retrieval and perplexity)
  int64_t kv_fraction_n = 0;
  double logprob_sum = 0;  // perplexity: teacher-forced log-probs of the continuation tokens
  int64_t scored_tokens = 0;

  void Add(const Cell& other);
  double accuracy() const { return n == 0 ? 0 : static_cast<double>(correct) / n; }
  double kv_fraction() const { return kv_fraction_n == 0 ? 0 : kv_fraction_sum / kv_fraction_n; }
  double perplexity() const;  // exp(-mean log-prob); 0 when nothing was scored
};

// Key: task, context length target, configuration name.
using CellKey = std::tuple<std::string, int64_t, std::string>;

class Results {
 public:
  explicit Results(std::vector<Config> configs) : configs_(std::move(configs)) {}

  Cell& at(const std::string& task, int64_t length, const std::string& config) {
    return cells_[CellKey{task, length, config}];
  }
  const std::vector<Config>& configs() const { return configs_; }

  // Retrieval tasks (those with scored queries) in a fixed order: kv_retrieval, passkey,
  // function_copy, then any other by name. Perplexity-only tasks are not listed.
  std::vector<std::string> AccuracyTasks() const;
  std::vector<int64_t> Lengths() const;

  // One row per configuration, as the paper's LongBench table: accuracy (%) per task, their
  // unweighted mean ("Avg."), the mean KV fraction loaded, and the held-out perplexity.
  // `length` = 0 sums every length.
  std::string MarkdownTable(int64_t length) const;

  // {"results": [per task x length x config], "summary": [per task x config, all lengths]}.
  nlohmann::json ToJson() const;

 private:
  Cell Sum(const std::string& task, int64_t length, const std::string& config) const;

  std::vector<Config> configs_;
  std::map<CellKey, Cell> cells_;
};

}  // namespace longctx_eval
