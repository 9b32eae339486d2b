#include "server/ingest_accumulator.h"

#include "absl/strings/str_cat.h"
#include "server/validation.h"

namespace squeezeserve::server {

namespace pb = ::squeezeserve::v1;

absl::Status IngestAccumulator::Add(const pb::IngestContextRequest& request) {
  if (messages_++ == 0) {
    if (!request.context_id().empty()) {
      if (absl::Status s = ValidateContextId(request.context_id(), "context_id"); !s.ok()) return s;
      context_id_ = request.context_id();
    }
    absl::StatusOr<IndexOptions> index = ToEngineIndexOptions(request.index());
    if (!index.ok()) return index.status();
    index_ = *std::move(index);
    add_bos_ = !request.no_bos();
  }

  Kind kind = Kind::kNone;
  if (request.content_case() == pb::IngestContextRequest::kText) kind = Kind::kText;
  if (request.content_case() == pb::IngestContextRequest::kTokens) kind = Kind::kTokens;
  if (kind == Kind::kNone) return absl::OkStatus();  // e.g. a first message with options only
  if (kind_ != Kind::kNone && kind_ != kind) {
    return absl::InvalidArgumentError(
        absl::StrCat("content: message ", messages_ - 1, " carries ", kind == Kind::kText ? "text" : "tokens",
                     " but the stream started with ", kind_ == Kind::kText ? "text" : "tokens",
                     "; one stream uses one kind"));
  }
  kind_ = kind;

  if (kind == Kind::kText) {
    bytes_ += static_cast<int64_t>(request.text().size());
    if (bytes_ > limits_.max_context_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("text: the context exceeds ", limits_.max_context_bytes, " bytes (max_context_bytes)"));
    }
    text_ += request.text();
    return absl::OkStatus();
  }

  const auto& ids = request.tokens().ids();
  if (static_cast<int64_t>(tokens_.size() + ids.size()) > limits_.max_context_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("tokens: the context exceeds ", limits_.max_context_tokens,
                                                   " tokens (max_context_tokens)"));
  }
  absl::Status valid = ValidateTokenIds(absl::MakeConstSpan(ids.data(), ids.size()), vocab_size_, "tokens.ids",
                                        static_cast<int64_t>(tokens_.size()));
  if (!valid.ok()) return valid;
  tokens_.insert(tokens_.end(), ids.begin(), ids.end());
  return absl::OkStatus();
}

absl::Status IngestAccumulator::Finish() const {
  if (messages_ == 0 || (text_.empty() && tokens_.empty())) {
    return absl::InvalidArgumentError("content: the context is empty (send text or tokens)");
  }
  return absl::OkStatus();
}

}  // namespace squeezeserve::server
