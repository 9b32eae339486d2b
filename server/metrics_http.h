// A small HTTP server on its own port for Prometheus scrapes and plain HTTP probes:
//   GET /metrics  -> the registry in the text exposition format
//   GET /healthz  -> 200 "ok" while the gRPC service is serving, 503 otherwise
// Kept off the gRPC port so scrapes never compete with (or need the credentials of) model traffic.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "server/http_listener.h"

namespace squeezeserve::server {

class MetricsHttpServer {
 public:
  MetricsHttpServer(std::function<std::string()> render, std::function<bool()> serving);
  ~MetricsHttpServer();  // stops and joins

  // Binds HOST:PORT (port 0 = any free port) and starts serving on a thread; returns the bound
  // "HOST:PORT".
  absl::StatusOr<std::string> Start(const std::string& listen);
  void Stop();

 private:
  std::function<std::string()> render_;
  std::function<bool()> serving_;
  HttpListener http_;  // last: stopped before the members its handlers use go
};

}  // namespace squeezeserve::server
