#include "server/metrics_http.h"

#include <httplib.h>

#include <utility>

namespace squeezeserve::server {

MetricsHttpServer::MetricsHttpServer(std::function<std::string()> render, std::function<bool()> serving)
    : render_(std::move(render)), serving_(std::move(serving)) {
  http_.routes().Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(render_(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http_.routes().Get("/healthz", [this](const httplib::Request&, httplib::Response& response) {
    AnswerHealth(serving_(), response);
  });
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

absl::StatusOr<std::string> MetricsHttpServer::Start(const std::string& listen) {
  return http_.Start(listen, "--metrics_listen", "metrics");
}

void MetricsHttpServer::Stop() { http_.Stop(); }

}  // namespace squeezeserve::server
