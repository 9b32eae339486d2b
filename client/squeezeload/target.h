// The system under test: one channel per replica, the router, and the workload's contexts ingested
// where the router will send their requests.
#pragma once

#include <optional>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/common/router.h"
#include "client/squeezeload/openai_client.h"
#include "client/squeezeload/workload.h"
#include "squeezeserve/v1/squeezeserve.grpc.pb.h"

namespace squeezeload {

struct Replica {
  std::string address;
  std::unique_ptr<squeezeserve::v1::Squeezeserve::Stub> stub;
};

struct Target {
  std::vector<Replica> replicas;
  std::unique_ptr<squeezeserve::routing::Router> router;
  std::string routing;  // "ring_hash" | "round_robin"
  Workload workload;
  int32_t vocab_size = 0;  // from GetServerInfo of the first replica; bounds synthetic token ids
  // OpenAI mode (--openai): requests go to this endpoint's /v1/completions instead of Generate.
  std::optional<OpenAiEndpoint> openai;
  // OpenAI mode: true = each prompt carries its context's text (any server); false = the context is
  // stored in squeezeserve (ingested over gRPC) and named by the context_id extension.
  bool openai_inline = true;
  std::vector<std::string> context_texts;  // inline prompts: the text of each workload context
};

// OpenAI mode: sets target.openai (the model from GET /v1/models when endpoint.model is empty) and,
// for inline prompts, reads the contexts' text (file or synthetic_words contexts only).
absl::Status AttachOpenAi(Target& target, OpenAiEndpoint endpoint, bool inline_contexts, absl::Duration timeout);

// Connects (insecure channels: squeezeload targets loopback, a cluster-internal Service or Envoy),
// waits for each replica to answer GetServerInfo, and ingests every context: on its ring-hash owner,
// or on every replica for round_robin (which has no affinity).
absl::StatusOr<std::unique_ptr<Target>> ConnectAndIngest(const std::vector<std::string>& servers,
                                                         const std::string& routing, Workload workload,
                                                         bool skip_ingest, absl::Duration timeout);

}  // namespace squeezeload
