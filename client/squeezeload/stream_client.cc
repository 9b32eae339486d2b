#include "client/squeezeload/stream_client.h"

#include <algorithm>
#include <chrono>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace squeezeload {
namespace {

namespace pb = squeezeserve::v1;
using Clock = std::chrono::steady_clock;

constexpr size_t kTextChunkBytes = 1 << 20;  // well under the 4 MB default receive limit
constexpr size_t kTokenChunk = 256 * 1024;    // 1 MB of int32 ids

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

void PrepareContext(grpc::ClientContext& ctx, const std::string& context_id, absl::Duration timeout) {
  ctx.AddMetadata("x-context-id", context_id);
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

}  // namespace

RequestRecord RunGenerate(pb::Squeezeserve::Stub& stub, const std::string& context_id, const RequestSpec& spec,
                          const std::vector<int32_t>& query_tokens, const std::string& query_text,
                          absl::Duration timeout) {
  pb::GenerateRequest request;
  request.set_context_id(context_id);
  if (!query_text.empty()) {
    request.set_text(query_text);
  } else {
    request.mutable_tokens()->mutable_ids()->Assign(query_tokens.begin(), query_tokens.end());
  }
  request.mutable_sampling()->set_max_new_tokens(uint32_t(spec.output_tokens));
  request.mutable_sampling()->set_ignore_eos(true);
  request.mutable_sampling()->set_seed(spec.seed);
  request.mutable_attention()->set_mode(spec.dense ? pb::AttentionOptions::DENSE : pb::AttentionOptions::SQUEEZED);
  if (!spec.dense) request.mutable_attention()->set_sparsity(spec.sparsity);

  RequestRecord record;
  record.dense = spec.dense;
  record.input_tokens = int(query_tokens.size());
  grpc::ClientContext ctx;
  PrepareContext(ctx, context_id, timeout);

  const Clock::time_point sent = Clock::now();
  Clock::time_point last_chunk = sent;
  bool got_first = false;
  auto reader = stub.Generate(&ctx, request);
  pb::GenerateResponse response;
  while (reader->Read(&response)) {
    const Clock::time_point now = Clock::now();
    if (response.has_usage() && response.usage().prompt_tokens() > 0) {
      record.input_tokens = int(response.usage().prompt_tokens());
    }
    if (response.token_ids_size() == 0) continue;  // empty chunks do not count as tokens (vLLM/AIPerf)
    record.output_tokens += response.token_ids_size();
    if (!got_first) {
      record.ttft_ms = MsBetween(sent, now);
      got_first = true;
    } else {
      record.itl_ms.push_back(MsBetween(last_chunk, now));
    }
    last_chunk = now;
  }
  const grpc::Status status = reader->Finish();
  record.e2el_ms = MsBetween(sent, last_chunk);
  record.status_code = int(status.error_code());
  record.ok = status.ok() && got_first;
  if (!status.ok()) record.error = status.error_message();
  else if (!got_first) record.error = "stream ended without tokens";
  return record;
}

absl::StatusOr<pb::ContextInfo> IngestContext(pb::Squeezeserve::Stub& stub, const std::string& context_id,
                                             const ContextContent& content, const Workload& workload,
                                             absl::Duration timeout) {
  grpc::ClientContext ctx;
  PrepareContext(ctx, context_id, timeout);
  auto stream = stub.IngestContext(&ctx);

  pb::IngestContextRequest first;
  first.set_context_id(context_id);
  for (float s : workload.sparsity_levels) first.mutable_index()->add_sparsity_levels(s);
  first.mutable_index()->set_observation_window(workload.observation_window);
  first.mutable_index()->set_seed(workload.seed);

  // Chunks of text or tokens; the first chunk rides on the message carrying the options.
  bool first_sent = false;
  auto send = [&](pb::IngestContextRequest& msg) {
    if (!first_sent) {
      msg.MergeFrom(first);
      first_sent = true;
    }
    return stream->Write(msg);
  };
  bool writes_ok = true;
  if (!content.tokens.empty()) {
    for (size_t at = 0; at < content.tokens.size() && writes_ok; at += kTokenChunk) {
      pb::IngestContextRequest msg;
      const size_t end = std::min(content.tokens.size(), at + kTokenChunk);
      msg.mutable_tokens()->mutable_ids()->Assign(content.tokens.begin() + at, content.tokens.begin() + end);
      writes_ok = send(msg);
    }
  } else {
    for (size_t at = 0; at < content.text.size() && writes_ok; at += kTextChunkBytes) {
      pb::IngestContextRequest msg;
      msg.set_text(content.text.substr(at, kTextChunkBytes));
      writes_ok = send(msg);
    }
  }
  stream->WritesDone();

  pb::IngestContextProgress progress;
  pb::ContextInfo info;
  while (stream->Read(&progress)) {
    if (progress.has_context()) info = progress.context();
  }
  const grpc::Status status = stream->Finish();
  if (status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
    info.set_context_id(context_id);
    return info;
  }
  if (!status.ok()) {
    return absl::Status(absl::StatusCode(int(status.error_code())),
                        absl::StrCat("ingest ", context_id, ": ", status.error_message()));
  }
  return info;
}

}  // namespace squeezeload
