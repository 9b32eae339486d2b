#include "client/squeezeload/target.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/squeezeload/stream_client.h"
#include "client/squeezeload/synthetic.h"

namespace squeezeload {
namespace {

namespace pb = squeezeserve::v1;

// Retries while the replica answers UNAVAILABLE: squeezeserve listens (and answers UNAVAILABLE)
// while it still loads its model, and a fresh pod may not be reachable yet.
absl::StatusOr<pb::ServerInfo> GetInfo(Replica& replica, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  grpc::Status status;
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(std::min(deadline, absl::Now() + absl::Seconds(5))));
    ctx.set_wait_for_ready(true);
    pb::ServerInfo info;
    status = replica.stub->GetServerInfo(&ctx, pb::GetServerInfoRequest(), &info);
    if (status.ok()) return info;
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
        status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  return absl::UnavailableError(absl::StrCat(replica.address, ": GetServerInfo: ", status.error_message()));
}

absl::StatusOr<ContextContent> LoadContent(const ContextSource& source, int32_t vocab_size, uint64_t seed) {
  ContextContent content;
  if (!source.file.empty()) {
    std::ifstream in(source.file, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("context ", source.id, ": cannot read ", source.file));
    std::ostringstream text;
    text << in.rdbuf();
    content.text = text.str();
  } else if (source.synthetic_tokens > 0) {
    content.tokens = SyntheticTokens(source.synthetic_tokens, vocab_size, seed);
  } else {
    content.text = SyntheticText(source.synthetic_words, seed);
  }
  return content;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Target>> ConnectAndIngest(const std::vector<std::string>& servers,
                                                         const std::string& routing, Workload workload,
                                                         bool skip_ingest, absl::Duration timeout) {
  auto target = std::make_unique<Target>();
  target->routing = routing;
  target->workload = std::move(workload);
  auto router = squeezeserve::routing::MakeRouter(routing, servers);
  if (!router.ok()) return router.status();
  target->router = *std::move(router);
  for (const std::string& address : servers) {
    auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    target->replicas.push_back({address, pb::Squeezeserve::NewStub(channel)});
  }
  for (Replica& replica : target->replicas) {
    auto info = GetInfo(replica, timeout);
    if (!info.ok()) return info.status();
    if (target->vocab_size == 0) target->vocab_size = int32_t(info->model().vocab_size());
    spdlog::info("replica {}: model {} on {}", replica.address, info->model().name(), info->device());
  }
  if (target->vocab_size < 8) return absl::FailedPreconditionError("server reports no usable vocab_size");
  if (skip_ingest) return target;

  const Workload& w = target->workload;
  for (size_t i = 0; i < w.contexts.size(); ++i) {
    const ContextSource& source = w.contexts[i];
    auto content = LoadContent(source, target->vocab_size, w.seed + i);
    if (!content.ok()) return content.status();
    std::vector<size_t> owners;
    if (routing == "ring_hash") {
      owners.push_back(target->router->Pick(source.id));
    } else {
      for (size_t r = 0; r < target->replicas.size(); ++r) owners.push_back(r);
    }
    for (size_t r : owners) {
      const absl::Time start = absl::Now();
      auto info = IngestContext(*target->replicas[r].stub, source.id, *content, w, timeout);
      if (!info.ok()) return info.status();
      spdlog::info("ingested {} ({} tokens) on {} in {:.0f} ms", source.id, info->num_tokens(),
                   target->replicas[r].address, absl::ToDoubleMilliseconds(absl::Now() - start));
    }
  }
  return target;
}

absl::Status AttachOpenAi(Target& target, OpenAiEndpoint endpoint, bool inline_contexts, absl::Duration timeout) {
  if (endpoint.model.empty()) endpoint.model = FirstOpenAiModel(endpoint, timeout);
  if (endpoint.model.empty()) {
    return absl::UnavailableError(absl::StrCat(endpoint.base_url, ": GET /v1/models gave no model (set --openai_model)"));
  }
  spdlog::info("openai endpoint {}: model {}", endpoint.base_url, endpoint.model);
  target.openai = std::move(endpoint);
  target.openai_inline = inline_contexts;
  if (!inline_contexts) return absl::OkStatus();
  const Workload& w = target.workload;
  for (size_t i = 0; i < w.contexts.size(); ++i) {
    if (w.contexts[i].synthetic_tokens > 0) {
      return absl::InvalidArgumentError(absl::StrCat("context ", w.contexts[i].id,
                                                     ": OpenAI prompts are text; use \"file\" or \"synthetic_words\""));
    }
    auto content = LoadContent(w.contexts[i], 0, w.seed + i);
    if (!content.ok()) return content.status();
    target.context_texts.push_back(content->text);
  }
  return absl::OkStatus();
}

}  // namespace squeezeload
