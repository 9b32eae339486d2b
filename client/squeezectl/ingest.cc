// squeezectl ingest: streams a context (text from --file/stdin, or --tokens) in 1 MiB chunks and
// prints the stored context's id and summary.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "client/squeezectl/cli.h"
#include "client/squeezectl/progress.h"
#include "client/squeezectl/rpc_util.h"

namespace squeezectl {
namespace {

namespace pb = squeezeserve::v1;

// The first request: id and index options, no content yet.
std::optional<pb::IngestContextRequest> FirstRequest(const Cli& cli) {
  pb::IngestContextRequest request;
  request.set_context_id(cli.id);
  request.set_no_bos(cli.no_bos);
  pb::IndexOptions* index = request.mutable_index();
  index->set_centroid_fraction(cli.centroid_fraction);
  index->set_observation_window(cli.observation_window);
  index->set_max_iterations(cli.max_iterations);
  index->set_seed(cli.index_seed);
  index->set_levels(cli.levels);
  index->set_coarse_centroid_fraction(cli.coarse_centroid_fraction);
  index->set_head_floor_share(cli.head_floor_share);
  index->set_dense_only(cli.dense_only);
  for (const std::string& level : cli.sparsity_levels) {
    float value = 0;
    if (!absl::SimpleAtof(level, &value)) {
      std::cerr << "squeezectl: --sparsity_levels: \"" << level << "\" is not a number\n";
      return std::nullopt;
    }
    index->add_sparsity_levels(value);
  }
  return request;
}

void PrintSummary(const pb::ContextInfo& info) {
  std::cout << "context_id: " << info.context_id() << "\n"
            << "tokens: " << info.num_tokens() << "\n"
            << "indexed: " << (info.indexed() ? "yes" : "no (dense only)") << "\n";
  if (info.indexed()) {
    std::cout << "centroids per level:";
    for (uint64_t count : info.centroids_per_level()) std::cout << " " << count;
    std::cout << "\nsparsity levels:";
    for (const pb::SparsityLevel& level : info.sparsity_levels()) {
      std::cout << " " << level.sparsity() << " (kept " << level.kept_fraction() << ")";
    }
    std::cout << "\n";
  }
  std::cout << "kv bytes: " << info.kv_bytes() << "\nindex bytes: " << info.index_bytes() << "\n"
            << "tier: " << info.tier() << "\n";
}

}  // namespace

int RunIngest(const Cli& cli) {
  if (!cli.file.empty() && !cli.tokens.empty()) return UsageError("ingest: give --file or --tokens, not both");
  std::optional<pb::IngestContextRequest> first = FirstRequest(cli);
  if (!first) return kExitUsage;

  // Content messages, built up front (a context is at most a few MB of text).
  std::vector<pb::IngestContextRequest> requests;
  if (!cli.tokens.empty()) {
    std::optional<std::vector<int32_t>> ids = ParseTokenIds(cli.tokens);
    if (!ids) return kExitUsage;
    requests = IngestTokenRequests(*std::move(first), *ids);
  } else {
    std::optional<std::string> text = ReadAll(cli.file.empty() ? "-" : cli.file);
    if (!text) return kExitUsage;
    requests = IngestTextRequests(*std::move(first), *text);
  }

  auto stub = MakeStub(cli);
  grpc::ClientContext context;
  ApplyCallOptions(cli, &context);
  auto stream = stub->IngestContext(&context);
  for (const pb::IngestContextRequest& request : requests) {
    if (!stream->Write(request)) break;  // the server ended the call early; Finish says why
  }
  stream->WritesDone();

  ProgressReporter progress;
  pb::IngestContextProgress message;
  std::optional<pb::ContextInfo> info;
  while (stream->Read(&message)) {
    progress.Update(message);
    if (message.has_context()) info = message.context();
  }
  progress.Done();
  grpc::Status status = stream->Finish();
  if (!status.ok()) return ReportStatus(status);
  if (!info) {
    std::cerr << "squeezectl: the server finished without a context summary\n";
    return kExitRpcBase + static_cast<int>(grpc::StatusCode::INTERNAL);
  }
  if (cli.json) {
    std::cout << ToJson(*info) << "\n";
  } else {
    PrintSummary(*info);
  }
  return kExitOk;
}

}  // namespace squeezectl
