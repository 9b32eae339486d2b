#include "client/squeezeload/workload.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace squeezeload {
namespace {

using nlohmann::json;

absl::Status FieldError(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("workload: ", field, ": ", why));
}

// {"dist": "fixed", "value": 32} | {"dist": "uniform", "min": 16, "max": 64}
// | {"dist": "normal", "mean": 32, "stddev": 8, "min": 1, "max": 128} | a bare number (fixed).
absl::StatusOr<LengthDist> ParseLength(const json& j, const std::string& field) {
  LengthDist d;
  if (j.is_number()) {
    d.value = j.get<double>();
  } else if (j.is_object()) {
    const std::string kind = j.value("dist", "fixed");
    d.min = j.value("min", 1.0);
    d.max = j.value("max", double(1 << 20));
    if (kind == "fixed") {
      if (!j.contains("value")) return FieldError(field, "fixed needs \"value\"");
      d.value = j["value"].get<double>();
    } else if (kind == "uniform") {
      if (!j.contains("min") || !j.contains("max")) return FieldError(field, "uniform needs \"min\" and \"max\"");
      d.kind = LengthDist::Kind::kUniform;
    } else if (kind == "normal") {
      if (!j.contains("mean")) return FieldError(field, "normal needs \"mean\"");
      d.kind = LengthDist::Kind::kNormal;
      d.mean = j["mean"].get<double>();
      d.stddev = j.value("stddev", 0.0);
      if (d.stddev < 0) return FieldError(field, "stddev must be >= 0");
    } else {
      return FieldError(field, absl::StrCat("unknown dist \"", kind, "\" (fixed, uniform, normal)"));
    }
  } else {
    return FieldError(field, "must be a number or an object");
  }
  if (d.min < 1 || d.max < d.min) return FieldError(field, "needs 1 <= min <= max");
  if (d.kind == LengthDist::Kind::kFixed && d.value < 1) return FieldError(field, "value must be >= 1");
  return d;
}

absl::StatusOr<ContextSource> ParseContext(const json& j, size_t index) {
  const std::string field = absl::StrCat("contexts[", index, "]");
  if (!j.is_object()) return FieldError(field, "must be an object");
  ContextSource c;
  // Explicit ids keep routing keys and x-context-id headers known before ingest.
  c.id = j.value("id", absl::StrCat("squeezeload-ctx-", index));
  c.file = j.value("file", "");
  c.synthetic_tokens = j.value("synthetic_tokens", int64_t{0});
  c.synthetic_words = j.value("synthetic_words", int64_t{0});
  const int sources = int(!c.file.empty()) + int(c.synthetic_tokens > 0) + int(c.synthetic_words > 0);
  if (sources != 1) {
    return FieldError(field, "set exactly one of \"file\", \"synthetic_tokens\" (> 0), \"synthetic_words\" (> 0)");
  }
  return c;
}

// `path` as given when it exists from the working directory, else relative to `base_dir`.
std::string Resolve(const std::string& path, const std::string& base_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (base_dir.empty() || fs::path(path).is_absolute() || fs::exists(path, ec)) return path;
  return (fs::path(base_dir) / path).string();
}

// "questions": a JSON-lines file (or an inline array) of {"context": <context id>, "question": text}.
absl::StatusOr<std::vector<Question>> ParseQuestions(const json& spec, const std::vector<ContextSource>& contexts,
                                                     const std::string& base_dir) {
  std::vector<json> lines;
  if (spec.is_string()) {
    const std::string path = Resolve(spec.get<std::string>(), base_dir);
    std::ifstream in(path);
    if (!in) return FieldError("questions", absl::StrCat("cannot read ", path));
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json q = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (q.is_discarded()) return FieldError("questions", absl::StrCat(path, ": line ", lines.size() + 1, " is not JSON"));
      lines.push_back(std::move(q));
    }
  } else if (spec.is_array()) {
    lines.assign(spec.begin(), spec.end());
  } else {
    return FieldError("questions", "must be a JSON-lines file name or an array");
  }
  std::vector<Question> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& q = lines[i];
    const std::string field = absl::StrCat("questions[", i, "]");
    if (!q.is_object() || !q.contains("question") || !q["question"].is_string() || q["question"].get<std::string>().empty()) {
      return FieldError(field, "needs a non-empty \"question\"");
    }
    Question question;
    question.text = q["question"].get<std::string>();
    const std::string context = q.value("context", contexts.size() == 1 ? contexts[0].id : "");
    auto it = std::find_if(contexts.begin(), contexts.end(), [&](const ContextSource& c) { return c.id == context; });
    if (it == contexts.end()) return FieldError(field, absl::StrCat("context \"", context, "\" is not among the contexts"));
    question.context_index = int(it - contexts.begin());
    out.push_back(std::move(question));
  }
  if (out.empty()) return FieldError("questions", "no questions");
  return out;
}

}  // namespace

int LengthDist::Sample(std::mt19937_64& rng) const {
  double x = value;
  switch (kind) {
    case Kind::kFixed: return std::max(1, int(std::lround(value)));
    case Kind::kUniform: x = std::uniform_real_distribution<double>(min, max)(rng); break;
    case Kind::kNormal: x = stddev > 0 ? std::normal_distribution<double>(mean, stddev)(rng) : mean; break;
  }
  return int(std::lround(std::clamp(x, min, max)));
}

absl::StatusOr<Workload> ParseWorkload(const json& j, const std::string& base_dir) {
  if (!j.is_object()) return FieldError("<root>", "must be an object");
  Workload w;
  try {
    w.seed = j.value("seed", uint64_t{1});
    if (!j.contains("contexts") || !j["contexts"].is_array() || j["contexts"].empty()) {
      return FieldError("contexts", "must be a non-empty array");
    }
    for (size_t i = 0; i < j["contexts"].size(); ++i) {
      auto c = ParseContext(j["contexts"][i], i);
      if (!c.ok()) return c.status();
      w.contexts.push_back(*std::move(c));
    }
    auto query = ParseLength(j.value("query_tokens", json(32)), "query_tokens");
    if (!query.ok()) return query.status();
    w.query_tokens = *query;
    auto output = ParseLength(j.value("output_tokens", json(32)), "output_tokens");
    if (!output.ok()) return output.status();
    w.output_tokens = *output;
    w.dense_fraction = j.value("dense_fraction", 0.0);
    if (w.dense_fraction < 0 || w.dense_fraction > 1) return FieldError("dense_fraction", "must be in [0, 1]");
    w.sparsity_levels = j.value("sparsity_levels", std::vector<float>{});
    for (float s : w.sparsity_levels) {
      if (!(s > 0 && s < 1)) return FieldError("sparsity_levels", "each level must be in (0, 1)");
    }
    w.observation_window = j.value("observation_window", uint32_t{0});
    for (ContextSource& c : w.contexts) {
      if (!c.file.empty()) c.file = Resolve(c.file, base_dir);
    }
    if (j.contains("questions")) {
      auto questions = ParseQuestions(j["questions"], w.contexts, base_dir);
      if (!questions.ok()) return questions.status();
      w.questions = *std::move(questions);
    }
  } catch (const json::exception& e) {
    return FieldError("<root>", e.what());  // wrong JSON types
  }
  return w;
}

absl::StatusOr<Workload> LoadWorkloadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("workload: cannot open ", path));
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat("workload: ", path, " is not valid JSON"));
  return ParseWorkload(j, std::filesystem::path(path).parent_path().string());
}

RequestSpec RequestSampler::Next() {
  RequestSpec r;
  r.context_index = std::uniform_int_distribution<int>(0, int(workload_.contexts.size()) - 1)(rng_);
  if (!workload_.questions.empty()) {
    r.question_index = std::uniform_int_distribution<int>(0, int(workload_.questions.size()) - 1)(rng_);
    r.context_index = workload_.questions[size_t(r.question_index)].context_index;
  }
  r.query_tokens = workload_.query_tokens.Sample(rng_);
  r.output_tokens = workload_.output_tokens.Sample(rng_);
  r.dense = std::uniform_real_distribution<double>(0, 1)(rng_) < workload_.dense_fraction;
  if (!r.dense && !workload_.sparsity_levels.empty()) {
    const auto& levels = workload_.sparsity_levels;
    r.sparsity = levels[std::uniform_int_distribution<size_t>(0, levels.size() - 1)(rng_)];
  }
  r.seed = rng_();
  return r;
}

}  // namespace squeezeload
