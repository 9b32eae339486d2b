// The real squeezeserve binary under test, one process per test, and the client calls the isolation
// tests share: typed calls through the generated stub, and raw calls that send bytes the generated
// client could never produce (malformed frames), through gRPC's byte-buffer codegen types.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <signal.h>

#include <grpcpp/grpcpp.h>

#include "squeezeserve/v1/squeezeserve.grpc.pb.h"
#include "tests/integration/subprocess.h"

namespace squeezeserve::testing {

namespace pb = ::squeezeserve::v1;

// The server binary: this build's, or $SQUEEZESERVE_TEST_BIN (to show a test failing on an older build).
std::string BinaryUnderTest();

// squeezeserve on 127.0.0.1 (port 0) with the reference checkpoint plus `flags` (a later --grace_period_s
// wins over the 1 s default); SIGTERM at the end must drain it and exit 0 (unless it was killed).
class TestServer {
 public:
  // `wrapper` runs the server (e.g. {"/usr/bin/prlimit", "--fsize=100000"}).
  explicit TestServer(std::vector<std::string> flags = {}, std::vector<std::string> wrapper = {});
  ~TestServer();
  // Starts it (again, after Kill) and waits until health says SERVING; false on failure.
  bool Start();
  // SIGKILL, as a crash.
  void Kill();
  // SIGTERM; the exit code.
  int Stop();
  // SIGTERM without waiting: the server drains while the test watches.
  void BeginStop() { process_->Signal(SIGTERM); }
  const std::string& address() const { return address_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  std::unique_ptr<pb::Squeezeserve::Stub> Stub() const { return pb::Squeezeserve::NewStub(channel_); }

 private:
  std::vector<std::string> argv_;
  std::unique_ptr<ServerProcess> process_;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  bool running_ = false;
};

// 0 = SERVING, 1 = NOT_SERVING, -1 = the health call failed.
int HealthOf(const std::shared_ptr<grpc::Channel>& channel);

// A deterministic context of `n` in-vocabulary token ids (the reference model has 1000).
std::vector<int32_t> ContextTokens(int n, int salt = 0);

// A client context with a deadline `seconds` away and, when set, a bearer token.
std::unique_ptr<grpc::ClientContext> CallContext(int seconds, const std::string& token = "");

// IngestContext of `tokens` (split in messages of 512) under `id`; the status and the final ContextInfo.
grpc::Status IngestTokens(pb::Squeezeserve::Stub& stub, const std::string& id, const std::vector<int32_t>& tokens,
                          const std::string& token = "", pb::ContextInfo* info = nullptr, bool dense_only = true);

struct GenerateResult {
  grpc::Status status;
  std::vector<int32_t> tokens;
};
// Generate greedily `max_new_tokens` tokens (EOS ignored) for a short query.
GenerateResult GenerateTokens(pb::Squeezeserve::Stub& stub, const std::string& id, int max_new_tokens,
                              const std::string& token = "", int seconds = 60);

// Unary call with raw request bytes.
grpc::Status RawUnary(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                      const std::string& request_bytes, std::string* response_bytes = nullptr);
// Server-streaming call with raw request bytes; the raw responses.
grpc::Status RawServerStream(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                             const std::string& request_bytes, std::vector<std::string>* responses = nullptr);
// A bidi call sending each of `messages` as raw bytes, then (unless cancel_instead) half-closing; or,
// with cancel_instead, cancelling the call instead of half-closing.
grpc::Status RawBidi(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::vector<std::string>& messages, bool cancel_instead = false);

std::string Serialized(const google::protobuf::Message& message);

}  // namespace squeezeserve::testing
