// squeeze_accuracy: ingests a long context with the Squeezed index, runs held-out windows of the
// same text as queries (each placed right after the context), and reports per layer and overall,
// for every calibrated sparsity level and for 1-level and hierarchical lookups: attention-mass
// recall, relative error of the context-attention output and the fraction of keys loaded.
//
// Each layer is measured on the queries that dense attention produces at that layer (the prefix is
// attended densely while capturing the queries), so errors do not compound across layers.
//
//   squeeze_accuracy --model_dir=models/reference/llama-gqa-llama3rope-tied --context_tokens=8192
//                    --max_position_override=16384 [--json_out=results.json]
//                    [--estimate_fractions=1,0.25,0.1: the pruned-cluster estimate's error, all or
//                    only the largest of the pruned clusters estimated]
//                    [--estimate_floors=0.25,0.0625: the same, estimating only the pruned clusters
//                    whose score reaches that fraction of their threshold: --estimate_floor)]
//                    [--bundle=N: the query windows in bundles of N consecutive ones, as questions on
//                    one document stepping together: the rows a bundle's shared read would move,
//                    the union of its members' selections, over the rows they move one by one]
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/squeeze_accuracy/accuracy_metrics.h"
#include "engine/context_builder.h"
#include "engine/llama_model.h"
#include "engine/torch_attention.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"

namespace squeezeserve::bench {
namespace {

namespace fs = std::filesystem;

struct Args {
  std::string model_dir;
  std::string tokens_file;  // whitespace-separated token ids; else the text files, tokenized
  std::string text_files;   // comma-separated; default: the repo's held-out corpus (bench/eval_long_context/heldout)
  int64_t context_tokens = 8192;
  int64_t query_tokens = 64;
  int64_t num_queries = 8;
  int window = 100;
  int levels = 2;
  std::string sparsity = "0.5,0.7,0.8,0.9";
  int64_t max_position_override = 0;
  bool per_token = false;
  int64_t chunk = 512;
  int64_t bundle = 0;  // questions per shared-context bundle (consecutive query windows); 0 = not measured
  std::string json_out;
  // The pruned-cluster estimate's error when only these fractions of the pruned clusters are
  // estimated (those of the largest estimated mass; 1 = all, as served); empty = not measured.
  std::vector<double> estimate_fractions;
  // One-level lookups: the same with the pruned clusters estimated only where their score reaches
  // these fractions of the head's threshold.
  std::vector<double> estimate_floors;
};

[[noreturn]] void Fail(const std::string& message) {
  std::cerr << "squeeze_accuracy: " << message << "\n";
  std::exit(2);
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) Fail("expected --name=value, got " + arg);
    const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    auto integer = [&](auto* out) {
      int64_t v = 0;
      if (!absl::SimpleAtoi(value, &v)) Fail("--" + name + " needs an integer");
      *out = static_cast<std::remove_pointer_t<decltype(out)>>(v);
    };
    if (name == "model_dir") a.model_dir = value;
    else if (name == "tokens_file") a.tokens_file = value;
    else if (name == "text_files") a.text_files = value;
    else if (name == "context_tokens") integer(&a.context_tokens);
    else if (name == "query_tokens") integer(&a.query_tokens);
    else if (name == "num_queries") integer(&a.num_queries);
    else if (name == "window") integer(&a.window);
    else if (name == "levels") integer(&a.levels);
    else if (name == "sparsity") a.sparsity = value;
    else if (name == "max_position_override") integer(&a.max_position_override);
    else if (name == "per_token") a.per_token = value == "1" || value == "true";
    else if (name == "chunk") integer(&a.chunk);
    else if (name == "bundle") integer(&a.bundle);
    else if (name == "json_out") a.json_out = value;
    else if (name == "estimate_fractions" || name == "estimate_floors") {
      for (const auto& f : absl::StrSplit(value, ',')) {
        double v = 0;
        if (!absl::SimpleAtod(f, &v) || !(v > 0 && v <= 1)) Fail("--" + name + " needs numbers in (0, 1]");
        (name == "estimate_floors" ? a.estimate_floors : a.estimate_fractions).push_back(v);
      }
    }
    else Fail("unknown flag --" + name);
  }
  if (a.model_dir.empty()) Fail("--model_dir is required");
  if (a.context_tokens <= a.window || a.query_tokens < 1 || a.num_queries < 1 || a.chunk < 1) {
    Fail("need context_tokens > window, query_tokens >= 1, num_queries >= 1, chunk >= 1");
  }
  if (a.bundle == 1 || a.bundle < 0 || a.bundle > a.num_queries) Fail("--bundle is 0 (off) or 2 .. num_queries");
  return a;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("cannot read " + path.string());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The token stream: ids from --tokens_file, or the text files tokenized and repeated as needed.
std::vector<int32_t> LoadTokens(const Args& a, const ModelConfig& config, int64_t needed, std::string* source) {
  std::vector<int32_t> ids;
  if (!a.tokens_file.empty()) {
    std::istringstream in(ReadText(a.tokens_file));
    for (int64_t id; in >> id;) ids.push_back(static_cast<int32_t>(id));
    *source = a.tokens_file;
  } else {
    std::vector<fs::path> files;
    if (a.text_files.empty()) {
      // Text shipped in the repo, so the same command reads the same tokens on every machine.
      for (const auto& e : fs::directory_iterator(SQUEEZESERVE_HELDOUT_DIR)) {
        if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
      }
      std::sort(files.begin(), files.end());
      *source = "bench/eval_long_context/heldout/*.txt (sorted, concatenated)";
    } else {
      for (const auto& f : absl::StrSplit(a.text_files, ',')) files.emplace_back(std::string(f));
      *source = a.text_files;
    }
    std::string text;
    for (const auto& f : files) text += ReadText(f) + "\n";
    auto tokenizer = Tokenizer::Load((fs::path(a.model_dir) / "tokenizer.model").string());
    if (!tokenizer.ok()) Fail(std::string(tokenizer.status().message()));
    ids = (*tokenizer)->Encode(text, /*add_bos=*/true, config.bos_token_id);
  }
  if (ids.empty()) Fail("no tokens");
  for (int32_t id : ids) {
    if (id < 0 || id >= config.vocab_size) Fail("token id " + std::to_string(id) + " outside the vocabulary");
  }
  const size_t original = ids.size();
  while (static_cast<int64_t>(ids.size()) < needed) ids.push_back(ids[ids.size() % original]);
  ids.resize(needed);
  return ids;
}

struct Sum {
  double recall = 0, error = 0, kv = 0, comparisons = 0, deviation = 0;
  BundleRows bundle;  // summed over the complete bundles
  // Over the members of the complete bundles: the paper lookup's error with each member's own
  // selection and with the bundle's union (DroppedPrunedErrors), and how many members.
  double own_error = 0, union_error = 0;
  int64_t bundle_members = 0;
  std::vector<double> estimate_errors;             // per estimate fraction
  std::vector<double> floor_errors, floor_shares;  // per estimate floor
  int64_t n = 0;
  void Add(const LookupAccuracy& m) {
    recall += m.recall;
    error += m.relative_error;
    kv += m.kv_fraction;
    comparisons += m.centroid_comparisons;
    deviation = std::max(deviation, m.library_deviation);
    Accumulate(estimate_errors, m.estimate_errors);
    Accumulate(floor_errors, m.floor_errors);
    Accumulate(floor_shares, m.floor_shares);
    ++n;
  }
  Sum& operator+=(const Sum& o) {
    recall += o.recall, error += o.error, kv += o.kv, comparisons += o.comparisons, n += o.n;
    bundle.union_rows += o.bundle.union_rows, bundle.member_rows += o.bundle.member_rows;
    own_error += o.own_error, union_error += o.union_error, bundle_members += o.bundle_members;
    deviation = std::max(deviation, o.deviation);
    Accumulate(estimate_errors, o.estimate_errors);
    Accumulate(floor_errors, o.floor_errors);
    Accumulate(floor_shares, o.floor_shares);
    return *this;
  }
  static void Accumulate(std::vector<double>& into, const std::vector<double>& e) {
    into.resize(std::max(into.size(), e.size()), 0.0);
    for (size_t i = 0; i < e.size(); ++i) into[i] += e[i];
  }
};

int Run(const Args& a) {
  c10::InferenceMode inference_mode;
  const auto t0 = std::chrono::steady_clock::now();
  auto config = ParseModelConfig(ReadText(fs::path(a.model_dir) / "config.json"));
  if (!config.ok()) Fail(std::string(config.status().message()));
  const int64_t trained_positions = config->max_position_embeddings;
  if (a.max_position_override > 0) config->max_position_embeddings = a.max_position_override;
  const int64_t needed = a.context_tokens + a.query_tokens * a.num_queries;
  if (a.context_tokens + a.query_tokens > config->max_position_embeddings) {
    Fail("context + query exceed max_position_embeddings " + std::to_string(config->max_position_embeddings) +
         "; pass --max_position_override");
  }
  auto weights = SafetensorsCheckpoint::Open(a.model_dir);
  if (!weights.ok()) Fail(std::string(weights.status().message()));
  auto model = LlamaModel::Create(*config, **weights, at::Device(at::kCPU), at::kFloat);
  if (!model.ok()) Fail(std::string(model.status().message()));
  std::string source;
  const std::vector<int32_t> tokens = LoadTokens(a, *config, needed, &source);

  IndexOptions index;
  index.observation_window = a.window;
  index.levels = a.levels;
  index.sparsity_levels.clear();
  for (const auto& s : absl::StrSplit(a.sparsity, ',')) {
    float v = 0;
    if (!absl::SimpleAtof(s, &v)) Fail("--sparsity needs comma-separated numbers");
    index.sparsity_levels.push_back(v);
  }
  PrefillControl control;
  control.block_tokens = a.chunk;
  auto context = BuildStoredContext(**model, "bench",
                                    std::vector<int32_t>(tokens.begin(), tokens.begin() + a.context_tokens), index,
                                    control, nullptr);
  if (!context.ok()) Fail(std::string(context.status().message()));
  const ContextSummary& summary = (*context)->summary();
  if (!summary.has_index) Fail("the context got no index (too short for the window?)");
  const auto t_ingest = std::chrono::steady_clock::now();

  // (level, hierarchical) -> per layer sums.
  const int64_t layers = config->num_layers;
  std::map<std::pair<size_t, bool>, std::vector<Sum>> sums;
  // With --bundle: the selections of the current bundle's members so far and their queries, per
  // lookup and layer.
  std::map<std::pair<size_t, bool>, std::vector<std::vector<at::Tensor>>> members, member_queries;
  for (int64_t w = 0; w < a.num_queries; ++w) {
    TorchAttention backend;
    auto own = backend.NewDense(KvPrefix{(*context)->keys(), (*context)->values()}, (*model)->NewCache(a.query_tokens));
    ForwardArgs args;
    args.token_ids = tokens.data() + a.context_tokens + w * a.query_tokens;
    args.num_tokens = a.query_tokens;
    args.start_position = a.context_tokens;
    args.attention = own.get();
    args.query_prefill = true;
    args.compute_logits = false;
    std::vector<at::Tensor> queries;
    args.captured_queries = &queries;
    (*model)->Forward(args);
    for (size_t level = 0; level < summary.sparsity_levels.size(); ++level) {
      const SparsityLevelInfo& info = summary.sparsity_levels[level];
      for (bool hierarchical : {false, true}) {
        if (hierarchical && info.thresholds.size() != 2) continue;
        squeeze::SelectionOptions options;
        options.hierarchical = hierarchical;
        options.per_token = a.per_token;
        // Per-token selection is what decode does: it uses the decode threshold set.
        const std::vector<float>& thresholds = a.per_token ? info.decode_thresholds : info.thresholds;
        options.thresholds.one_level = a.per_token ? info.decode_one_level_threshold : info.one_level_threshold;
        if (hierarchical) {
          options.thresholds.coarse = thresholds[0];
          options.thresholds.fine = thresholds[1];
        }
        auto& per_layer = sums[{level, hierarchical}];
        per_layer.resize(layers);
        for (int64_t l = 0; l < layers; ++l) {
          const squeeze::LayerIndex& index = (*context)->index()[l];
          // The per-head thresholds of the level replace the global ones, as in the engine.
          options.head_thresholds = index.head_thresholds[static_cast<int64_t>(level)][a.per_token ? 1 : 0];
          per_layer[l].Add(MeasureLookup(index, queries[l], options, a.estimate_fractions, a.estimate_floors));
          if (a.bundle > 0) {
            auto& bundle = members[{level, hierarchical}];
            auto& bundle_queries = member_queries[{level, hierarchical}];
            bundle.resize(layers);
            bundle_queries.resize(layers);
            bundle[l].push_back(squeeze::SelectClusters(index, queries[l], options).selected);
            bundle_queries[l].push_back(queries[l]);
            if (static_cast<int64_t>(bundle[l].size()) == a.bundle) {
              Sum& into = per_layer[l];
              const BundleRows rows = BundleReadRows(bundle[l], index.cluster_offsets);
              into.bundle.union_rows += rows.union_rows;
              into.bundle.member_rows += rows.member_rows;
              const at::Tensor all = at::stack(bundle[l], 0).any(0);
              for (size_t m = 0; m < bundle[l].size(); ++m) {
                const std::vector<double> errors = DroppedPrunedErrors(index, bundle_queries[l][m], {bundle[l][m], all});
                into.own_error += errors[0];
                into.union_error += errors[1];
                ++into.bundle_members;
              }
              bundle[l].clear();
              bundle_queries[l].clear();
            }
          }
        }
      }
    }
  }
  const auto t_done = std::chrono::steady_clock::now();
  const auto seconds = [](auto from, auto to) { return std::chrono::duration<double>(to - from).count(); };

  std::printf("squeeze_accuracy: model %s (%lld layers, %lld q / %lld kv heads, head_dim %lld)\n",
              a.model_dir.c_str(), static_cast<long long>(layers),
              static_cast<long long>(config->num_attention_heads), static_cast<long long>(config->num_kv_heads),
              static_cast<long long>(config->head_dim));
  std::printf("max_position_embeddings: %lld trained%s\n", static_cast<long long>(trained_positions),
              a.max_position_override > 0
                  ? (", overridden to " + std::to_string(a.max_position_override) +
                     " (--max_position_override; positions past the trained length are extrapolated)")
                        .c_str()
                  : "");
  std::printf("tokens: %s\ncontext %lld tokens (window %d, levels %d, centroids/kv head:", source.c_str(),
              static_cast<long long>(a.context_tokens), a.window, a.levels);
  for (int64_t k : summary.centroids_per_level) std::printf(" %lld", static_cast<long long>(k));
  std::printf("), %lld query windows of %lld held-out tokens, selection %s\n",
              static_cast<long long>(a.num_queries), static_cast<long long>(a.query_tokens),
              a.per_token ? "per token" : "shared per query window (prefill, as the authors)");
  std::printf("ingest %.1f s, measurement %.1f s\n\n", seconds(t0, t_ingest), seconds(t_ingest, t_done));
  std::printf("%-8s %-12s %-5s %9s %9s %9s %12s %10s", "sparsity", "lookup", "layer", "recall", "rel_err",
              "kv_loaded", "centroids/kvh", "calib_kept");
  for (const double f : a.estimate_fractions) std::printf(" %9s", ("est" + std::to_string(static_cast<int>(std::lround(100 * f))) + "%").c_str());
  for (const double f : a.estimate_floors) std::printf(" %16s", ("floor " + std::to_string(f).substr(0, 6)).c_str());
  if (a.bundle > 0) std::printf(" %9s %9s %9s", ("bundle" + std::to_string(a.bundle)).c_str(), "own_err", "union_err");
  std::printf("\n");

  nlohmann::json results = nlohmann::json::array();
  double max_deviation = 0;
  for (const auto& [key, per_layer] : sums) {
    const SparsityLevelInfo& info = summary.sparsity_levels[key.first];
    const char* lookup = key.second ? "hierarchical" : "1-level";
    Sum all;
    auto emit = [&](const std::string& layer, const Sum& s) {
      const double n = static_cast<double>(std::max<int64_t>(s.n, 1));
      std::printf("%-8.2f %-12s %-5s %9.4f %9.4f %9.4f %12.1f %10.4f", info.sparsity, lookup, layer.c_str(),
                  s.recall / n, s.error / n, s.kv / n, s.comparisons / n,
                  a.per_token ? info.decode_kept_fraction : info.kept_fraction);
      nlohmann::json estimate = nlohmann::json::array();
      for (size_t i = 0; i < s.estimate_errors.size(); ++i) {
        std::printf(" %9.4f", s.estimate_errors[i] / n);
        estimate.push_back({{"fraction_estimated", a.estimate_fractions[i]}, {"relative_error", s.estimate_errors[i] / n}});
      }
      for (size_t i = 0; i < s.floor_errors.size(); ++i) {
        std::printf(" %8.4f (%4.2f)", s.floor_errors[i] / n, s.floor_shares[i] / n);
        estimate.push_back({{"floor_of_tau", a.estimate_floors[i]},
                            {"share_estimated", s.floor_shares[i] / n},
                            {"relative_error", s.floor_errors[i] / n}});
      }
      const double bundle_share =
          s.bundle.member_rows > 0 ? s.bundle.union_rows / s.bundle.member_rows : std::nan("");
      const double members = static_cast<double>(std::max<int64_t>(s.bundle_members, 1));
      if (a.bundle > 0) {
        std::printf(" %9.4f %9.4f %9.4f", bundle_share, s.own_error / members, s.union_error / members);
      }
      std::printf("\n");
      results.push_back({{"sparsity", info.sparsity},
                         {"lookup", lookup},
                         {"layer", layer},
                         {"attention_mass_recall", s.recall / n},
                         {"relative_error", s.error / n},
                         {"kv_fraction_loaded", s.kv / n},
                         {"centroid_comparisons_per_kv_head", s.comparisons / n},
                         {"estimate", estimate}});
      if (a.bundle > 0) {
        results.back()["bundle_rows_share"] = bundle_share;
        results.back()["bundle_member_error_own"] = s.own_error / members;
        results.back()["bundle_member_error_union"] = s.union_error / members;
      }
    };
    for (int64_t l = 0; l < layers; ++l) {
      emit(std::to_string(l), per_layer[l]);
      all += per_layer[l];
      max_deviation = std::max(max_deviation, per_layer[l].deviation);
    }
    emit("all", all);
  }
  if (!a.per_token) std::printf("\nself-check: max |out - SparseContextAttention out| = %.3g\n", max_deviation);
  std::printf("(calib_kept: kept fraction of the clustered keys on the calibration queries with the %s\n"
              " threshold set; hierarchical for a 2-level index. rel_err: ||out_sparse - out_dense|| /\n"
              " ||out_dense|| of the context attention, pruned clusters dropped (the paper's lookup); estN%%:\n"
              " the same with the pruned-cluster estimate over the N%% of pruned clusters of the largest\n"
              " estimated mass; floor f: over the pruned clusters whose score reaches f x their\n"
              " threshold (--estimate_floor), with the share of the pruned clusters that is. bundleN: the\n"
              " clustered rows a bundle of N questions reads, the union of their selections, over the rows\n"
              " they read one by one; 1/N = the same rows, 1 = no row in common. own_err / union_err: a\n"
              " member's rel_err, pruned clusters dropped, over its own selection / over the union.)\n",
              a.per_token ? "decode (single-query)" : "prefill (window-averaged)");

  if (!a.json_out.empty()) {
    nlohmann::json out = {{"model_dir", a.model_dir},
                          {"tokens", source},
                          {"context_tokens", a.context_tokens},
                          {"query_tokens", a.query_tokens},
                          {"num_queries", a.num_queries},
                          {"observation_window", a.window},
                          {"levels", a.levels},
                          {"centroids_per_level", summary.centroids_per_level},
                          {"max_position_embeddings_trained", trained_positions},
                          {"max_position_override", a.max_position_override},
                          {"selection", a.per_token ? "per_token" : "shared"},
                          {"threshold_set", a.per_token ? "decode" : "prefill"},
                          {"ingest_seconds", seconds(t0, t_ingest)},
                          {"measure_seconds", seconds(t_ingest, t_done)},
                          {"library_max_deviation", max_deviation},
                          {"estimate_fractions", a.estimate_fractions},
                          {"estimate_floors", a.estimate_floors},
                          {"bundle", a.bundle},
                          {"results", results}};
    std::ofstream(a.json_out) << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace squeezeserve::bench

int main(int argc, char** argv) {
  try {
    return squeezeserve::bench::Run(squeezeserve::bench::ParseArgs(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "squeeze_accuracy: " << e.what() << "\n";
    return 1;
  }
}
