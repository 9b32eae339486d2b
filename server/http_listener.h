// A cpp-httplib server on a port and a thread of its own: the one place that parses a
// --*_listen HOST:PORT, binds it, serves and stops (the metrics and OpenAI-compatible endpoints).
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
struct Response;
}  // namespace httplib

namespace squeezeserve::server {

class HttpListener {
 public:
  HttpListener();
  ~HttpListener();  // stops and joins

  // Where the owner adds its routes, before Start.
  httplib::Server& routes() { return *http_; }
  // Binds `listen` (HOST:PORT or [IPv6]:PORT; port 0 = any free port) and serves on a thread;
  // returns the bound "HOST:PORT". `flag` names the flag in the error (InvalidArgument for a
  // malformed address, Unavailable when it cannot be bound), `what` the endpoint.
  absl::StatusOr<std::string> Start(const std::string& listen, const char* flag, const char* what);
  void Stop();

 private:
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
};

// The plain HTTP probe: 200 "ok" while serving, 503 "not serving" otherwise.
void AnswerHealth(bool serving, httplib::Response& response);

}  // namespace squeezeserve::server
