#include "server/http_listener.h"

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace squeezeserve::server {

HttpListener::HttpListener() : http_(std::make_unique<httplib::Server>()) {}

HttpListener::~HttpListener() { Stop(); }

absl::StatusOr<std::string> HttpListener::Start(const std::string& listen, const char* flag, const char* what) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " must be HOST:PORT, got '", listen, "'"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port == 0) {
    port = http_->bind_to_any_port(host);
  } else if (!http_->bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) return absl::UnavailableError(absl::StrCat(what, ": could not listen on ", listen));
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  return absl::StrCat(listen.substr(0, colon), ":", port);
}

void HttpListener::Stop() {
  if (thread_.joinable()) {
    http_->stop();
    thread_.join();
  }
}

void AnswerHealth(bool serving, httplib::Response& response) {
  response.status = serving ? 200 : 503;
  response.set_content(serving ? "ok\n" : "not serving\n", "text/plain");
}

}  // namespace squeezeserve::server
