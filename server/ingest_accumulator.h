// Collects the messages of one IngestContext stream: options from the first message, content chunks
// from every message, with the limits enforced while receiving (so an oversized upload is refused
// early instead of buffered). Pure logic, unit-tested without gRPC.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "server/server_config.h"
#include "squeezeserve/v1/squeezeserve.pb.h"

namespace squeezeserve::server {

class IngestAccumulator {
 public:
  IngestAccumulator(const ServerLimits& limits, int64_t vocab_size) : limits_(limits), vocab_size_(vocab_size) {}

  // Adds one request message; INVALID_ARGUMENT naming the field on the first problem.
  absl::Status Add(const ::squeezeserve::v1::IngestContextRequest& request);
  // After the last message: INVALID_ARGUMENT when nothing arrived.
  absl::Status Finish() const;

  // Empty: the server assigns a content address.
  const std::string& context_id() const { return context_id_; }
  const IndexOptions& index() const { return index_; }
  bool add_bos() const { return add_bos_; }
  bool is_text() const { return kind_ == Kind::kText; }
  std::string& text() { return text_; }
  std::vector<int32_t>& tokens() { return tokens_; }
  // Tokens so far (token content) or bytes so far (text content), for progress reports.
  int64_t received_units() const { return is_text() ? static_cast<int64_t>(text_.size()) : tokens_.size(); }
  int64_t messages() const { return messages_; }

 private:
  enum class Kind { kNone, kText, kTokens };

  ServerLimits limits_;
  int64_t vocab_size_;
  int64_t messages_ = 0;
  int64_t bytes_ = 0;
  Kind kind_ = Kind::kNone;
  std::string context_id_;
  IndexOptions index_;
  bool add_bos_ = true;
  std::string text_;
  std::vector<int32_t> tokens_;
};

}  // namespace squeezeserve::server
