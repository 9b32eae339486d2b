#include "server/metrics_http.h"

#include <httplib.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace squeezeserve::server {

MetricsHttpServer::MetricsHttpServer(std::function<std::string()> render, std::function<bool()> serving)
    : render_(std::move(render)), serving_(std::move(serving)), http_(std::make_unique<httplib::Server>()) {
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(render_(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http_->Get("/healthz", [this](const httplib::Request&, httplib::Response& response) {
    const bool serving = serving_();
    response.status = serving ? 200 : 503;
    response.set_content(serving ? "ok\n" : "not serving\n", "text/plain");
  });
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

absl::StatusOr<std::string> MetricsHttpServer::Start(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics_listen must be HOST:PORT, got '", listen, "'"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port == 0) {
    port = http_->bind_to_any_port(host);
  } else if (!http_->bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) return absl::UnavailableError(absl::StrCat("metrics: could not listen on ", listen));
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  return absl::StrCat(listen.substr(0, colon), ":", port);
}

void MetricsHttpServer::Stop() {
  if (thread_.joinable()) {
    http_->stop();
    thread_.join();
  }
}

}  // namespace squeezeserve::server
