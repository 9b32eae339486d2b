// longctx_eval: the long-context accuracy evaluation (issue 7) through a running squeezeserve.
//
// Reads the JSONL written by make_tasks.py; for every fixed context: ingests it once (2-level index,
// sparsity levels 0.5/0.7/0.8/0.9, so flat and hierarchical lookups are both available), answers
// every query greedily under each configuration (dense; squeezed flat and hierarchical at each
// sparsity), scores exact match (scoring.h) and the KV fraction loaded, or — for a query without an
// answer (the perplexity task) — the teacher-forced log-probs of its tokens; deletes the context.
// Prints a table per context length and over all lengths (README.md: how to read it) and writes
// JSON. Exit status: 0 when every RPC succeeded, 2 when some failed (counted as "errors"), 1 on a
// usage or input error. A client of the public API only: no engine, no libtorch.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/eval_long_context/scoring.h"
#include "client/squeezectl/cli.h"
#include "client/squeezectl/rpc_util.h"
#include "grpc_code_name.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051",
          "squeezeserve address HOST:PORT (a comma-separated list routes each context to one replica)");
ABSL_FLAG(std::string, tasks, "", "Task file (JSONL) written by make_tasks.py. Required.");
ABSL_FLAG(std::string, out, "", "Write the results as JSON here (the tables are printed either way).");
ABSL_FLAG(std::string, outputs, "", "Also write every query's generated text and score here (JSONL).");
ABSL_FLAG(int32_t, max_contexts, 0, "Evaluate at most this many contexts per task and length (0 = all).");
ABSL_FLAG(std::string, lengths, "",
          "Only contexts of these target lengths, comma-separated tokens (e.g. 4096,8192; empty = all).");
ABSL_FLAG(std::string, configs, "all",
          "Configurations: all, or a comma-separated list of dense, flatNN, hierNN (NN = sparsity %, "
          "e.g. dense,flat90,hier90); a squeezed one with the suffixes -noahead (read-ahead off) and "
          "-dropped (pruned clusters left out), in that order (flat90-noahead-dropped = the paper's lookup); "
          "otherwise the server's defaults (read-ahead on, pruned clusters estimated).");
ABSL_FLAG(int32_t, concurrency, 8,
          "Generate calls in flight at once (the server batches them; keep <= its --max_concurrent_streams).");
ABSL_FLAG(double, timeout, 900, "Deadline of each RPC in seconds (ingest included).");
ABSL_FLAG(double, centroid_fraction, 0,
          "Index ablation: fine centroids per clustered key at ingest (0 = the server's default, 0.05).");
ABSL_FLAG(double, coarse_centroid_fraction, 0,
          "Index ablation: coarse centroids per clustered key (0 = the server's default, 0.01).");
ABSL_FLAG(double, head_floor_share, 0,
          "Index ablation: per-head floor of the calibration, in (0, 1] (0 = the server's default; negative "
          "= no floor, one global threshold per level as the paper).");
ABSL_FLAG(double, time_budget_s, 0,
          "Start no new context after this many seconds (0 = no limit); the results say how many were "
          "left out. make_tasks.py writes contexts in context-major order, so every cell gets some.");

namespace longctx_eval {
namespace {

namespace pb = squeezeserve::v1;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Query {
  std::string prompt;
  std::vector<int32_t> prompt_ids;  // preferred over prompt when present
  std::string answer;               // empty: scored by perplexity
  int max_new_tokens = 0;
};

struct TaskContext {
  std::string id, task;
  int64_t length = 0;           // context_tokens_target
  int64_t expected_tokens = 0;  // context_tokens as make_tasks counted them (0 = unknown)
  int64_t vocab_size = 0;
  std::string text;
  std::vector<Query> queries;
};

// Fails (message on stderr) on a malformed line.
std::optional<TaskContext> ParseLine(const std::string& line, int line_number) {
  try {
    const nlohmann::json j = nlohmann::json::parse(line);
    TaskContext c;
    c.id = j.at("id").get<std::string>();
    c.task = j.at("task").get<std::string>();
    c.length = j.at("context_tokens_target").get<int64_t>();
    c.expected_tokens = j.value("context_tokens", int64_t{0});
    c.vocab_size = j.value("vocab_size", int64_t{0});
    c.text = j.at("context").get<std::string>();
    for (const nlohmann::json& q : j.at("queries")) {
      Query query;
      query.prompt = q.value("prompt", std::string());
      if (q.contains("prompt_ids")) query.prompt_ids = q.at("prompt_ids").get<std::vector<int32_t>>();
      query.answer = q.value("answer", std::string());
      // Without make_tasks' count: ~1 token per 2 characters of the answer, plus a margin.
      query.max_new_tokens = q.value("max_new_tokens", static_cast<int>(query.answer.size() / 2 + 8));
      if (query.answer.empty()) query.max_new_tokens = 1;
      c.queries.push_back(std::move(query));
    }
    return c;
  } catch (const std::exception& e) {
    std::cerr << "longctx_eval: --tasks line " << line_number << ": " << e.what() << "\n";
    return std::nullopt;
  }
}

// A context id the server accepts ([A-Za-z0-9._-], at most 128 characters).
std::string ContextIdFor(const std::string& id) {
  std::string out = "longctx-";
  for (char ch : id) {
    const bool ok = std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-';
    out += ok ? ch : '_';
  }
  return out.substr(0, 128);
}

struct Outcome {
  grpc::Status status;
  std::string text;
  float kv_fraction = 0;
  std::vector<float> prompt_logprobs;
  pb::FinishReason finish = pb::FINISH_REASON_UNSPECIFIED;
};

class Evaluator {
 public:
  Evaluator(squeezectl::Cli cli, std::vector<Config> configs, int concurrency, std::ofstream* outputs)
      : cli_(std::move(cli)), results_(std::move(configs)), concurrency_(std::max(1, concurrency)), outputs_(outputs) {}

  const Results& results() const { return results_; }
  int64_t rpc_errors() const { return rpc_errors_; }
  nlohmann::json& contexts_json() { return contexts_; }

  // Checks that the server is up; returns its info.
  std::optional<pb::ServerInfo> ServerInfo() {
    auto stub = squeezectl::MakeStub(cli_);
    grpc::ClientContext context;
    squeezectl::ApplyCallOptions(cli_, &context);
    pb::ServerInfo info;
    grpc::Status status = stub->GetServerInfo(&context, pb::GetServerInfoRequest(), &info);
    if (!status.ok()) {
      squeezectl::ReportStatus(status);
      return std::nullopt;
    }
    return info;
  }

  void Evaluate(const TaskContext& task) {
    squeezectl::Cli cli = cli_;
    cli.context = ContextIdFor(task.id);  // routes every call about it to one replica
    auto stub = squeezectl::MakeStub(cli);
    nlohmann::json record = {{"id", task.id}, {"task", task.task}, {"context_tokens_target", task.length}};

    const Clock::time_point ingest_start = Clock::now();
    std::optional<pb::ContextInfo> info = Ingest(cli, *stub, task);
    record["ingest_s"] = SecondsSince(ingest_start);
    if (!info) {
      ++rpc_errors_;
      for (const Config& config : results_.configs()) {
        results_.at(task.task, task.length, config.name).errors += static_cast<int64_t>(task.queries.size());
      }
      record["error"] = "ingest failed";
      contexts_.push_back(record);
      return;
    }
    record["num_tokens"] = info->num_tokens();
    record["indexed"] = info->indexed();
    record["index_levels"] = info->centroids_per_level_size();
    if (task.expected_tokens > 0 && static_cast<int64_t>(info->num_tokens()) != task.expected_tokens) {
      std::cerr << "longctx_eval: warning: " << task.id << ": the server counts " << info->num_tokens()
                << " context tokens, make_tasks counted " << task.expected_tokens
                << " (is the server's tokenizer the one the tasks were made with?)\n";
    }

    // Every (query, configuration) pair, run `concurrency` at a time; the server batches them.
    const std::vector<Config>& configs = results_.configs();
    const size_t jobs = task.queries.size() * configs.size();
    std::atomic<size_t> next{0};
    std::mutex mu;
    const Clock::time_point generate_start = Clock::now();
    auto worker = [&] {
      for (size_t job = next++; job < jobs; job = next++) {
        const Query& query = task.queries[job / configs.size()];
        const Config& config = configs[job % configs.size()];
        Outcome outcome = Generate(cli, *stub, query, config);
        std::lock_guard<std::mutex> lock(mu);
        Record(task, job / configs.size(), query, config, outcome);
      }
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < concurrency_; ++i) threads.emplace_back(worker);
    for (std::thread& t : threads) t.join();
    record["generate_s"] = SecondsSince(generate_start);
    record["generations"] = jobs;
    contexts_.push_back(record);
    Delete(cli, *stub);
  }

 private:
  std::optional<pb::ContextInfo> Ingest(const squeezectl::Cli& cli, pb::Squeezeserve::Stub& stub,
                                        const TaskContext& task) {
    pb::IngestContextRequest first;
    first.set_context_id(cli.context);
    pb::IndexOptions* index = first.mutable_index();
    index->set_levels(2);  // coarse + fine: the flat lookup reads the fine level, hierarchical both
    index->set_centroid_fraction(static_cast<float>(absl::GetFlag(FLAGS_centroid_fraction)));
    index->set_coarse_centroid_fraction(static_cast<float>(absl::GetFlag(FLAGS_coarse_centroid_fraction)));
    index->set_head_floor_share(static_cast<float>(absl::GetFlag(FLAGS_head_floor_share)));
    for (float level : {0.5f, 0.7f, 0.8f, 0.9f}) index->add_sparsity_levels(level);
    std::vector<pb::IngestContextRequest> requests = squeezectl::IngestTextRequests(std::move(first), task.text);

    grpc::ClientContext context;
    squeezectl::ApplyCallOptions(cli, &context);
    auto stream = stub.IngestContext(&context);
    for (const pb::IngestContextRequest& request : requests) {
      if (!stream->Write(request)) break;  // the server ended the call early; Finish says why
    }
    stream->WritesDone();
    pb::IngestContextProgress progress;
    std::optional<pb::ContextInfo> info;
    while (stream->Read(&progress)) {
      if (progress.has_context()) info = progress.context();
    }
    grpc::Status status = stream->Finish();
    if (!status.ok()) {
      std::cerr << "longctx_eval: ingest " << task.id << ": ";
      squeezectl::ReportStatus(status);
      return std::nullopt;
    }
    return info;
  }

  void Delete(const squeezectl::Cli& cli, pb::Squeezeserve::Stub& stub) {
    grpc::ClientContext context;
    squeezectl::ApplyCallOptions(cli, &context);
    pb::DeleteContextRequest request;
    request.set_context_id(cli.context);
    pb::DeleteContextResponse response;
    stub.DeleteContext(&context, request, &response);  // best effort: frees the server's memory
  }

  Outcome Generate(const squeezectl::Cli& cli, pb::Squeezeserve::Stub& stub, const Query& query,
                   const Config& config) {
    pb::GenerateRequest request;
    request.set_context_id(cli.context);
    if (!query.prompt_ids.empty()) {
      request.mutable_tokens()->mutable_ids()->Add(query.prompt_ids.begin(), query.prompt_ids.end());
    } else {
      request.set_text(query.prompt);
    }
    pb::SamplingParams* sampling = request.mutable_sampling();
    sampling->set_max_new_tokens(static_cast<uint32_t>(std::max(1, query.max_new_tokens)));
    sampling->set_temperature(0);  // greedy
    pb::AttentionOptions* attention = request.mutable_attention();
    attention->set_mode(config.squeezed ? pb::AttentionOptions::SQUEEZED : pb::AttentionOptions::DENSE);
    attention->set_sparsity(config.sparsity);
    attention->set_hierarchical(config.hierarchical);
    if (config.dropped) attention->set_pruned(pb::AttentionOptions::DROPPED);
    if (config.no_read_ahead) attention->set_read_ahead(pb::AttentionOptions::READ_AHEAD_OFF);
    request.set_include_prompt_logprobs(query.answer.empty());

    Outcome outcome;
    // Overload (RESOURCE_EXHAUSTED, UNAVAILABLE) is retried after the server's hint; anything else is
    // the outcome.
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext context;
      squeezectl::ApplyCallOptions(cli, &context);
      auto stream = stub.Generate(&context, request);
      pb::GenerateResponse response;
      outcome = Outcome();
      while (stream->Read(&response)) {
        outcome.text += response.text();
        if (response.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
          outcome.finish = response.finish_reason();
          outcome.kv_fraction = response.stats().kv_fraction_loaded();
          outcome.prompt_logprobs.assign(response.prompt_logprobs().begin(), response.prompt_logprobs().end());
        }
      }
      outcome.status = stream->Finish();
      const auto code = outcome.status.error_code();
      if ((code != grpc::StatusCode::RESOURCE_EXHAUSTED && code != grpc::StatusCode::UNAVAILABLE) || attempt >= 100) {
        break;
      }
      int retry_ms = 200;
      const auto& trailers = context.GetServerTrailingMetadata();
      if (auto it = trailers.find("grpc-retry-pushback-ms"); it != trailers.end()) {
        int hinted = 0;
        if (absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()), &hinted)) {
          retry_ms = std::clamp(hinted, 10, 5000);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(retry_ms));
    }
    return outcome;
  }

  void Record(const TaskContext& task, size_t query_index, const Query& query, const Config& config,
              const Outcome& outcome) {
    Cell& cell = results_.at(task.task, task.length, config.name);
    nlohmann::json line = {{"id", task.id}, {"query", query_index}, {"config", config.name}};
    if (!outcome.status.ok()) {
      ++cell.errors;
      ++rpc_errors_;
      const std::string message = absl::StrCat(squeezeserve::GrpcCodeName(outcome.status.error_code()), ": ",
                                               outcome.status.error_message());
      if (reported_errors_++ < 10) std::cerr << "longctx_eval: " << task.id << " [" << config.name << "]: " << message << "\n";
      line["error"] = message;
    } else {
      cell.kv_fraction_sum += outcome.kv_fraction;
      ++cell.kv_fraction_n;
      line["kv_fraction_loaded"] = outcome.kv_fraction;
      if (query.answer.empty()) {
        double sum = 0;
        for (float lp : outcome.prompt_logprobs) sum += lp;
        cell.logprob_sum += sum;
        cell.scored_tokens += static_cast<int64_t>(outcome.prompt_logprobs.size());
        line["prompt_logprob_sum"] = sum;
        line["scored_tokens"] = outcome.prompt_logprobs.size();
        const size_t expected = query.prompt_ids.empty() ? 0 : query.prompt_ids.size();
        if (expected > 0 && outcome.prompt_logprobs.size() != expected) {
          std::cerr << "longctx_eval: " << task.id << ": " << outcome.prompt_logprobs.size()
                    << " prompt log-probs for " << expected << " prompt tokens\n";
        }
      } else {
        const bool correct = ExactMatch(query.answer, outcome.text);
        ++cell.n;
        cell.correct += correct ? 1 : 0;
        line["correct"] = correct;
        line["generated"] = outcome.text;
      }
    }
    if (outputs_ != nullptr) *outputs_ << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }

  squeezectl::Cli cli_;
  Results results_;
  int concurrency_;
  std::ofstream* outputs_;
  nlohmann::json contexts_ = nlohmann::json::array();
  int64_t rpc_errors_ = 0;
  int reported_errors_ = 0;
};

int Main(int argc, char** argv) {
  // --help lists the flags of this file (absl's default looks for a file named after the binary).
  absl::FlagsUsageConfig help;
  help.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "eval_long_context/main.cc");
  };
  help.contains_helpshort_flags = help.contains_help_flags;
  absl::SetFlagsUsageConfig(help);
  absl::SetProgramUsageMessage(
      "Long-context accuracy of squeezeserve, dense vs Squeezed Attention (bench/eval_long_context/README.md).\n"
      "  longctx_eval --server HOST:PORT --tasks tasks.jsonl [--out results.json] [--configs all]\n"
      "               [--concurrency 8] [--max_contexts N] [--lengths 4096,8192] [--timeout 900]\n"
      "               [--time_budget_s 0] [--outputs generations.jsonl]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::cerr << "longctx_eval: unexpected argument " << positional[1] << " (see --help)\n";
    return 1;
  }
  const std::string tasks_path = absl::GetFlag(FLAGS_tasks);
  if (tasks_path.empty()) {
    std::cerr << "longctx_eval: --tasks FILE is required (see --help)\n";
    return 1;
  }
  std::string error;
  std::optional<std::vector<Config>> configs = ParseConfigs(absl::GetFlag(FLAGS_configs), &error);
  if (!configs) {
    std::cerr << "longctx_eval: " << error << "\n";
    return 1;
  }
  std::set<int64_t> lengths;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_lengths), ',', absl::SkipWhitespace())) {
    int64_t length = 0;
    if (!absl::SimpleAtoi(part, &length) || length <= 0) {
      std::cerr << "longctx_eval: --lengths: \"" << std::string(part) << "\" is not a token count\n";
      return 1;
    }
    lengths.insert(length);
  }
  std::ifstream in(tasks_path);
  if (!in) {
    std::cerr << "longctx_eval: cannot read " << tasks_path << "\n";
    return 1;
  }
  std::ofstream outputs;
  if (!absl::GetFlag(FLAGS_outputs).empty()) {
    outputs.open(absl::GetFlag(FLAGS_outputs));
    if (!outputs) {
      std::cerr << "longctx_eval: cannot write " << absl::GetFlag(FLAGS_outputs) << "\n";
      return 1;
    }
  }

  squeezectl::Cli cli;
  cli.server = absl::GetFlag(FLAGS_server);
  cli.timeout_s = absl::GetFlag(FLAGS_timeout);
  Evaluator evaluator(cli, *configs, absl::GetFlag(FLAGS_concurrency), outputs.is_open() ? &outputs : nullptr);
  std::optional<pb::ServerInfo> server = evaluator.ServerInfo();
  if (!server) return 2;
  std::cerr << "longctx_eval: " << cli.server << ": model " << server->model().name() << " ("
            << server->model().architecture() << ", vocab " << server->model().vocab_size() << ") on "
            << server->device() << "\n";

  const Clock::time_point start = Clock::now();
  std::map<std::pair<std::string, int64_t>, int> seen;  // contexts per task and length
  std::string line;
  int line_number = 0;
  int evaluated = 0;
  int skipped_for_time = 0;
  const double budget = absl::GetFlag(FLAGS_time_budget_s);
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::optional<TaskContext> task = ParseLine(line, line_number);
    if (!task) return 1;
    if (!lengths.empty() && lengths.count(task->length) == 0) continue;
    int& count = seen[{task->task, task->length}];
    if (absl::GetFlag(FLAGS_max_contexts) > 0 && count >= absl::GetFlag(FLAGS_max_contexts)) continue;
    if (budget > 0 && SecondsSince(start) > budget) {
      ++skipped_for_time;
      continue;
    }
    ++count;
    if (task->vocab_size > 0 && task->vocab_size != static_cast<int64_t>(server->model().vocab_size())) {
      std::cerr << "longctx_eval: " << task->id << ": made with a " << task->vocab_size
                << "-piece tokenizer, the server's model has " << server->model().vocab_size()
                << " tokens: make the tasks with the model's tokenizer.model (make_tasks.py --tokenizer)\n";
      return 1;
    }
    const Clock::time_point context_start = Clock::now();
    evaluator.Evaluate(*task);
    ++evaluated;
    std::cerr << "longctx_eval: " << task->id << ": " << task->queries.size() << " queries x " << configs->size()
              << " configs in " << static_cast<int64_t>(SecondsSince(context_start)) << " s\n";
  }
  const double seconds = SecondsSince(start);

  const Results& results = evaluator.results();
  std::string tables;
  for (int64_t length : results.Lengths()) {
    absl::StrAppend(&tables, "\n### ", length, " context tokens\n\n", results.MarkdownTable(length));
  }
  if (results.Lengths().size() > 1) absl::StrAppend(&tables, "\n### all lengths\n\n", results.MarkdownTable(0));
  std::cout << tables;

  if (!absl::GetFlag(FLAGS_out).empty()) {
    nlohmann::json out = results.ToJson();
    out["tasks_file"] = tasks_path;
    out["server"] = cli.server;
    out["model"] = {{"name", server->model().name()},
                    {"architecture", server->model().architecture()},
                    {"fingerprint", server->model().fingerprint()},
                    {"vocab_size", server->model().vocab_size()}};
    out["device"] = server->device();
    out["dtype"] = server->dtype();
    out["index"] = {{"levels", 2},
                    {"centroid_fraction", absl::GetFlag(FLAGS_centroid_fraction)},  // 0 = server default
                    {"coarse_centroid_fraction", absl::GetFlag(FLAGS_coarse_centroid_fraction)},
                    {"head_floor_share", absl::GetFlag(FLAGS_head_floor_share)}};  // 0 = server default
    out["seconds"] = seconds;
    out["contexts"] = evaluator.contexts_json();
    out["rpc_errors"] = evaluator.rpc_errors();
    out["contexts_left_out_for_time"] = skipped_for_time;
    out["scoring"] =
        "exact match: the generated text, leading whitespace removed, starts with the answer stripped of "
        "leading and trailing whitespace; perplexity: exp(-mean teacher-forced log-prob of the continuation tokens)";
    out["tables_markdown"] = tables;
    std::ofstream file(absl::GetFlag(FLAGS_out));
    file << out.dump(2) << "\n";
    if (!file) {
      std::cerr << "longctx_eval: cannot write " << absl::GetFlag(FLAGS_out) << "\n";
      return 1;
    }
  }
  std::cerr << "longctx_eval: " << evaluated << " contexts in " << static_cast<int>(seconds) << " s, "
            << evaluator.rpc_errors() << " failed RPCs";
  if (skipped_for_time > 0) std::cerr << "; " << skipped_for_time << " contexts left out (--time_budget_s)";
  std::cerr << "\n";
  return evaluator.rpc_errors() == 0 ? 0 : 2;
}

}  // namespace
}  // namespace longctx_eval

int main(int argc, char** argv) { return longctx_eval::Main(argc, argv); }
