// libFuzzer target over what a client controls before any model work: bytes -> GenerateRequest or a
// stream of IngestContextRequest messages -> the server's validation (server/validation.h) and ingest
// accumulation (server/ingest_accumulator.h) against a fake model. Must never crash, hang or trip a
// sanitizer; statuses are the expected outcome for garbage.
//
// Input layout: byte 0 picks the RPC (even: Generate, odd: IngestContext); for IngestContext the rest
// is split into messages by 2-byte little-endian length prefixes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "engine/engine.h"
#include "server/ingest_accumulator.h"
#include "server/server_config.h"
#include "server/validation.h"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace {

namespace pb = ::squeezeserve::v1;
using namespace squeezeserve::server;  // NOLINT: the functions under test

constexpr int64_t kVocab = 1000;  // the fake model

// Small limits so the fuzzer reaches them with small inputs.
ServerLimits Limits() {
  ServerLimits limits;
  limits.max_context_tokens = 4096;
  limits.max_query_tokens = 256;
  limits.max_new_tokens = 512;
  limits.default_max_new_tokens = 16;
  limits.max_context_bytes = 64 << 10;
  return limits;
}

// A stored context with a calibrated index, as ResolveAttention sees one.
squeezeserve::ContextSummary FakeContext(bool has_index) {
  squeezeserve::ContextSummary summary;
  summary.id = "fuzz-context";
  summary.num_tokens = 2048;
  summary.has_index = has_index;
  if (has_index) {
    for (float level : {0.5f, 0.7f, 0.9f}) {
      squeezeserve::SparsityLevelInfo info;
      info.sparsity = level;
      summary.sparsity_levels.push_back(info);
    }
  }
  return summary;
}

void FuzzGenerate(std::string_view bytes) {
  pb::GenerateRequest request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  const ServerLimits limits = Limits();
  (void)ValidateContextId(request.context_id(), "context_id");
  (void)ToEngineSampling(request.sampling(), limits);
  ServerDefaults defaults;
  (void)ResolveAttention(request.attention(), FakeContext(true), defaults);
  (void)ResolveAttention(request.attention(), FakeContext(false), defaults);
  if (request.has_tokens()) {
    const auto& ids = request.tokens().ids();
    (void)ValidateTokenIds(absl::MakeConstSpan(ids.data(), ids.size()), kVocab, "tokens.ids");
    (void)ValidatePromptLength(ids.size(), limits);
  }
}

void FuzzIngest(std::string_view bytes) {
  IngestAccumulator accumulator(Limits(), kVocab);
  while (bytes.size() >= 2) {
    size_t length = static_cast<uint8_t>(bytes[0]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[1])) << 8);
    bytes.remove_prefix(2);
    length = std::min(length, bytes.size());
    pb::IngestContextRequest request;
    if (request.ParseFromArray(bytes.data(), static_cast<int>(length))) {
      if (!accumulator.Add(request).ok()) return;  // the reactor ends the stream on the first error
    }
    bytes.remove_prefix(length);
  }
  if (accumulator.Finish().ok()) {
    (void)ToEngineIndexOptions(pb::IndexOptions());
    (void)accumulator.received_units();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // protobuf logs every malformed string: noise here
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    FuzzGenerate(bytes);
  } else {
    FuzzIngest(bytes);
  }
  return 0;
}
