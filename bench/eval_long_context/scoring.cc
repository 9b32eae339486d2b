#include "bench/eval_long_context/scoring.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace longctx_eval {
namespace {

constexpr int kSparsityPercents[] = {50, 70, 80, 90};
const char* const kTaskOrder[] = {"kv_retrieval", "passkey", "function_copy"};

constexpr absl::string_view kDroppedSuffix = "-dropped";
constexpr absl::string_view kNoAheadSuffix = "-noahead";

Config MakeConfig(bool squeezed, int percent, bool hierarchical, bool dropped = false, bool no_read_ahead = false) {
  Config c;
  c.squeezed = squeezed;
  if (!squeezed) {
    c.name = c.label = "dense";
    return c;
  }
  c.sparsity = static_cast<float>(percent) / 100.0f;
  c.hierarchical = hierarchical;
  c.dropped = dropped;
  c.no_read_ahead = no_read_ahead;
  c.name = absl::StrCat(hierarchical ? "hier" : "flat", percent, no_read_ahead ? kNoAheadSuffix : "",
                        dropped ? kDroppedSuffix : "");
  c.label = absl::StrCat(hierarchical ? "hierarchical " : "squeezed 1-level ", percent, "%",
                         no_read_ahead ? ", no read-ahead" : "", dropped ? ", pruned dropped" : "");
  return c;
}

std::string Fixed(double value, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", digits, value);
  return buffer;
}

}  // namespace

std::optional<std::vector<Config>> ParseConfigs(const std::string& spec, std::string* error) {
  std::vector<Config> out;
  if (spec == "all" || spec.empty()) {
    out.push_back(MakeConfig(false, 0, false));
    for (bool hierarchical : {false, true}) {
      for (int percent : kSparsityPercents) out.push_back(MakeConfig(true, percent, hierarchical));
    }
    return out;
  }
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    absl::string_view stripped = absl::StripAsciiWhitespace(part);
    const bool dropped = absl::ConsumeSuffix(&stripped, kDroppedSuffix);
    const bool no_read_ahead = absl::ConsumeSuffix(&stripped, kNoAheadSuffix);
    const std::string name(stripped);
    int percent = 0;
    if (name == "dense" && !dropped && !no_read_ahead) {
      out.push_back(MakeConfig(false, 0, false));
    } else if ((absl::StartsWith(name, "flat") && absl::SimpleAtoi(name.substr(4), &percent)) ||
               (absl::StartsWith(name, "hier") && absl::SimpleAtoi(name.substr(4), &percent))) {
      if (percent <= 0 || percent >= 100) {
        *error = absl::StrCat("--configs: ", name, ": the sparsity must be a percentage in (0, 100)");
        return std::nullopt;
      }
      out.push_back(MakeConfig(true, percent, absl::StartsWith(name, "hier"), dropped, no_read_ahead));
    } else {
      *error = absl::StrCat("--configs: unknown configuration \"", part,
                            "\" (dense, flatNN, hierNN with NN a sparsity percentage and the optional "
                            "suffixes -noahead and -dropped in that order, or all)");
      return std::nullopt;
    }
  }
  if (out.empty()) {
    *error = "--configs: no configuration given";
    return std::nullopt;
  }
  return out;
}

bool ExactMatch(const std::string& answer, const std::string& generated) {
  const absl::string_view expected = absl::StripAsciiWhitespace(answer);
  const absl::string_view got = absl::StripLeadingAsciiWhitespace(generated);
  return absl::StartsWith(got, expected);
}

void Cell::Add(const Cell& other) {
  n += other.n;
  correct += other.correct;
  errors += other.errors;
  kv_fraction_sum += other.kv_fraction_sum;
  kv_fraction_n += other.kv_fraction_n;
  logprob_sum += other.logprob_sum;
  scored_tokens += other.scored_tokens;
}

double Cell::perplexity() const { return scored_tokens == 0 ? 0 : std::exp(-logprob_sum / scored_tokens); }

std::vector<std::string> Results::AccuracyTasks() const {
  std::set<std::string> present;
  for (const auto& [key, cell] : cells_) {
    if (cell.n > 0 || (cell.errors > 0 && cell.scored_tokens == 0 && std::get<0>(key) != "perplexity")) {
      present.insert(std::get<0>(key));
    }
  }
  std::vector<std::string> out;
  for (const char* task : kTaskOrder) {
    if (present.erase(task) > 0) out.push_back(task);
  }
  out.insert(out.end(), present.begin(), present.end());
  return out;
}

std::vector<int64_t> Results::Lengths() const {
  std::set<int64_t> lengths;
  for (const auto& [key, cell] : cells_) lengths.insert(std::get<1>(key));
  return {lengths.begin(), lengths.end()};
}

Cell Results::Sum(const std::string& task, int64_t length, const std::string& config) const {
  Cell sum;
  for (const auto& [key, cell] : cells_) {
    const auto& [t, l, c] = key;
    if ((task.empty() || t == task) && (length == 0 || l == length) && c == config) sum.Add(cell);
  }
  return sum;
}

std::string Results::MarkdownTable(int64_t length) const {
  const std::vector<std::string> tasks = AccuracyTasks();
  bool any_ppl = false;
  for (const auto& [key, cell] : cells_) {
    if ((length == 0 || std::get<1>(key) == length) && cell.scored_tokens > 0) any_ppl = true;
  }
  std::string header = "| config | KV loaded |";
  std::string rule = "|---|---:|";
  for (const std::string& task : tasks) {
    absl::StrAppend(&header, " ", task, " |");
    rule += "---:|";
  }
  if (!tasks.empty()) {
    header += " Avg. |";
    rule += "---:|";
  }
  if (any_ppl) {
    header += " ppl |";
    rule += "---:|";
  }
  std::string out = header + "\n" + rule + "\n";
  for (const Config& config : configs_) {
    const Cell all = Sum("", length, config.name);
    std::string row = absl::StrCat("| ", config.label, " | ",
                                   all.kv_fraction_n == 0 ? "–" : Fixed(all.kv_fraction(), 3), " |");
    double accuracy_sum = 0;
    int accuracy_tasks = 0;
    for (const std::string& task : tasks) {
      const Cell cell = Sum(task, length, config.name);
      if (cell.n == 0) {
        row += " – |";
        continue;
      }
      absl::StrAppend(&row, " ", Fixed(100.0 * cell.accuracy(), 1), cell.errors > 0 ? "*" : "", " |");
      accuracy_sum += 100.0 * cell.accuracy();
      ++accuracy_tasks;
    }
    if (!tasks.empty()) {
      absl::StrAppend(&row, " ", accuracy_tasks == 0 ? "–" : Fixed(accuracy_sum / accuracy_tasks, 1), " |");
    }
    if (any_ppl) {
      const Cell ppl = Sum("perplexity", length, config.name);
      absl::StrAppend(&row, " ", ppl.scored_tokens == 0 ? "–" : Fixed(ppl.perplexity(), 3), " |");
    }
    out += row + "\n";
  }
  return out;
}

nlohmann::json Results::ToJson() const {
  auto cell_json = [](const Cell& cell) {
    nlohmann::json j = {{"n", cell.n},
                        {"correct", cell.correct},
                        {"errors", cell.errors},
                        {"kv_fraction_loaded", cell.kv_fraction()}};
    if (cell.n > 0) j["accuracy"] = cell.accuracy();
    if (cell.scored_tokens > 0) {
      j["ppl"] = cell.perplexity();
      j["scored_tokens"] = cell.scored_tokens;
    }
    return j;
  };
  nlohmann::json results = nlohmann::json::array();
  for (const auto& [key, cell] : cells_) {
    nlohmann::json j = cell_json(cell);
    j["task"] = std::get<0>(key);
    j["context_tokens_target"] = std::get<1>(key);
    j["config"] = std::get<2>(key);
    results.push_back(std::move(j));
  }
  std::set<std::string> task_names;
  for (const auto& [key, cell] : cells_) task_names.insert(std::get<0>(key));
  nlohmann::json summary = nlohmann::json::array();
  for (const std::string& task : task_names) {
    for (const Config& config : configs_) {
      nlohmann::json j = cell_json(Sum(task, 0, config.name));
      j["task"] = task;
      j["config"] = config.name;
      summary.push_back(std::move(j));
    }
  }
  nlohmann::json configs = nlohmann::json::array();
  for (const Config& c : configs_) {
    configs.push_back({{"name", c.name},
                       {"label", c.label},
                       {"mode", c.squeezed ? "squeezed" : "dense"},
                       {"sparsity", c.sparsity},
                       {"hierarchical", c.hierarchical},
                       {"pruned", !c.squeezed ? "" : c.dropped ? "dropped" : "server default"},
                       {"read_ahead", !c.squeezed ? "" : c.no_read_ahead ? "off" : "server default"}});
  }
  return {{"configs", configs}, {"results", results}, {"summary", summary}};
}

}  // namespace longctx_eval
