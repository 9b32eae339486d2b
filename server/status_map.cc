#include "server/status_map.h"

namespace squeezeserve::server {

grpc::StatusCode ToGrpcCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return grpc::StatusCode::OK;
    case absl::StatusCode::kCancelled: return grpc::StatusCode::CANCELLED;
    case absl::StatusCode::kUnknown: return grpc::StatusCode::UNKNOWN;
    case absl::StatusCode::kInvalidArgument: return grpc::StatusCode::INVALID_ARGUMENT;
    case absl::StatusCode::kDeadlineExceeded: return grpc::StatusCode::DEADLINE_EXCEEDED;
    case absl::StatusCode::kNotFound: return grpc::StatusCode::NOT_FOUND;
    case absl::StatusCode::kAlreadyExists: return grpc::StatusCode::ALREADY_EXISTS;
    case absl::StatusCode::kPermissionDenied: return grpc::StatusCode::PERMISSION_DENIED;
    case absl::StatusCode::kResourceExhausted: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case absl::StatusCode::kFailedPrecondition: return grpc::StatusCode::FAILED_PRECONDITION;
    case absl::StatusCode::kAborted: return grpc::StatusCode::ABORTED;
    case absl::StatusCode::kOutOfRange: return grpc::StatusCode::OUT_OF_RANGE;
    case absl::StatusCode::kUnimplemented: return grpc::StatusCode::UNIMPLEMENTED;
    case absl::StatusCode::kInternal: return grpc::StatusCode::INTERNAL;
    case absl::StatusCode::kUnavailable: return grpc::StatusCode::UNAVAILABLE;
    case absl::StatusCode::kDataLoss: return grpc::StatusCode::DATA_LOSS;
    case absl::StatusCode::kUnauthenticated: return grpc::StatusCode::UNAUTHENTICATED;
  }
  return grpc::StatusCode::UNKNOWN;  // a code outside the canonical set
}

int ToHttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(ToGrpcCode(status.code()), std::string(status.message()));
}

void AddRetryHint(const grpc::Status& status, std::multimap<std::string, std::string>* trailers) {
  if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED || trailers == nullptr) return;
  if (trailers->find(kRetryPushbackKey) == trailers->end()) {
    trailers->emplace(kRetryPushbackKey, std::to_string(kRetryPushbackMs));
  }
}

void StatusCounter::Count(const std::string& method, grpc::StatusCode code) {
  absl::MutexLock lock(&mu_);
  ++counts_[{method, static_cast<int>(code)}];
}

int64_t StatusCounter::Get(const std::string& method, grpc::StatusCode code) const {
  absl::MutexLock lock(&mu_);
  auto it = counts_.find({method, static_cast<int>(code)});
  return it == counts_.end() ? 0 : it->second;
}

std::map<std::pair<std::string, std::string>, int64_t> StatusCounter::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::map<std::pair<std::string, std::string>, int64_t> out;
  for (const auto& [key, count] : counts_) {
    out[{key.first, GrpcCodeName(static_cast<grpc::StatusCode>(key.second))}] = count;
  }
  return out;
}

}  // namespace squeezeserve::server
