#include "server/request_id.h"

#include "absl/random/random.h"
#include "absl/strings/str_format.h"

namespace squeezeserve::server {

std::string SanitizeRequestId(std::string_view header) {
  if (header.empty() || header.size() > 128) return "";
  for (char c : header) {
    if (c <= ' ' || c > '~') return "";
  }
  return std::string(header);
}

std::string NewRequestId() {
  thread_local absl::BitGen bits;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(bits), absl::Uniform<uint64_t>(bits));
}

std::string AssignRequestId(grpc::CallbackServerContext* context) {
  std::string id;
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find(kRequestIdHeader); it != metadata.end()) {
    id = SanitizeRequestId(std::string_view(it->second.data(), it->second.size()));
  }
  if (id.empty()) id = NewRequestId();
  context->AddInitialMetadata(kRequestIdHeader, id);
  return id;
}

}  // namespace squeezeserve::server
