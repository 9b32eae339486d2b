// Serving under load and in hostile places, through the real squeezeserve binary on loopback:
// TLS and mutual TLS (throwaway certificates made with the openssl CLI at test time), bearer tokens,
// request ids, the bounded wait queue (burst -> RESOURCE_EXHAUSTED, cancelled waiters free their
// slots) and the Prometheus endpoint.
#include <httplib.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "health.grpc.pb.h"
#include "squeezeserve/v1/squeezeserve.grpc.pb.h"
#include "tests/integration/subprocess.h"

namespace squeezeserve::testing {
namespace {

namespace pb = ::squeezeserve::v1;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// A CA, a server certificate for 127.0.0.1/localhost (SAN) and a client certificate, made once.
struct Certificates {
  std::string dir;
  std::string ca() const { return dir + "/ca.pem"; }
  std::string server_cert() const { return dir + "/server.pem"; }
  std::string server_key() const { return dir + "/server.key"; }
  std::string client_cert() const { return dir + "/client.pem"; }
  std::string client_key() const { return dir + "/client.key"; }
};

const Certificates& Certs() {
  static const Certificates* certs = [] {
    auto* c = new Certificates{::testing::TempDir() + "/squeezeserve-certs-" + std::to_string(getpid())};
    const std::string script = absl::StrCat(
        "set -e; mkdir -p ", c->dir, "; cd ", c->dir, "; ",
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null; ",
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext; ",
        "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null; ",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext "
        "-out server.pem 2>/dev/null; ",
        "openssl req -newkey rsa:2048 -nodes -subj /CN=test-client -keyout client.key -out client.csr 2>/dev/null; ",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out client.pem "
        "2>/dev/null");
    CommandResult made = RunCommand({"/bin/sh", "-c", script});
    EXPECT_EQ(made.exit_code, 0) << made.err;
    return c;
  }();
  return *certs;
}

// One server process per test, stopped (SIGTERM, must exit 0) at the end.
class Server {
 public:
  explicit Server(std::vector<std::string> extra_flags) {
    std::vector<std::string> argv = {SQUEEZESERVE_BIN, "--model", REFERENCE_MODEL_DIR, "--listen", "127.0.0.1:0",
                                     "--threads", "1", "--grace_period_s=2", "--log_level=warn"};
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    std::optional<std::string> address = process_.Start(argv, /*timeout_s=*/60);
    EXPECT_TRUE(address.has_value()) << "squeezeserve did not print its listening line";
    address_ = address.value_or("");
    const std::string prefix = "squeezeserve metrics on ";
    for (absl::string_view line : absl::StrSplit(process_.startup_output(), '\n')) {
      if (absl::StartsWith(line, prefix)) metrics_address_ = std::string(line.substr(prefix.size()));
    }
  }
  ~Server() { EXPECT_EQ(process_.Stop(/*timeout_s=*/60), 0) << "SIGTERM should drain and exit 0"; }

  const std::string& address() const { return address_; }
  const std::string& metrics_address() const { return metrics_address_; }

 private:
  ServerProcess process_;
  std::string address_;
  std::string metrics_address_;
};

std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(bool with_client_cert) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadFile(Certs().ca());
  if (with_client_cert) {
    options.pem_cert_chain = ReadFile(Certs().client_cert());
    options.pem_private_key = ReadFile(Certs().client_key());
  }
  return grpc::SslCredentials(options);
}

std::shared_ptr<grpc::Channel> Channel(const std::string& address,
                                       std::shared_ptr<grpc::ChannelCredentials> credentials) {
  return grpc::CreateChannel(address, std::move(credentials));
}

void SetTimeout(grpc::ClientContext* context, int seconds) {
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

// Health of the whole server; UNKNOWN when the call itself fails (e.g. the handshake).
HealthStatus::ServingStatus Health(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  SetTimeout(&context, 5);
  HealthStatus response;
  grpc::Status status =
      grpc::health::v1::Health::NewStub(channel)->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  return status.ok() ? response.status() : HealthStatus::UNKNOWN;
}

bool WaitUntilServing(const std::shared_ptr<grpc::Channel>& channel) {
  for (int i = 0; i < 600; ++i) {
    if (Health(channel) == HealthStatus::SERVING) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

grpc::Status ServerInfo(const std::shared_ptr<grpc::Channel>& channel, const std::string& token = "",
                        grpc::ClientContext* reuse = nullptr) {
  grpc::ClientContext own;
  grpc::ClientContext* context = reuse != nullptr ? reuse : &own;
  SetTimeout(context, 10);
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  pb::ServerInfo info;
  return pb::Squeezeserve::NewStub(channel)->GetServerInfo(context, pb::GetServerInfoRequest(), &info);
}

TEST(Tls, AcceptsTlsClientsAndRejectsPlaintext) {
  Server server({"--tls_cert", Certs().server_cert(), "--tls_key", Certs().server_key()});
  auto tls = Channel(server.address(), TlsCredentials(false));
  ASSERT_TRUE(WaitUntilServing(tls));
  EXPECT_TRUE(ServerInfo(tls).ok());
  auto plaintext = Channel(server.address(), grpc::InsecureChannelCredentials());
  grpc::Status refused = ServerInfo(plaintext);
  EXPECT_FALSE(refused.ok());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
}

TEST(Tls, MutualTlsRequiresAClientCertificate) {
  Server server({"--tls_cert", Certs().server_cert(), "--tls_key", Certs().server_key(), "--tls_client_ca",
                 Certs().ca()});
  auto with_cert = Channel(server.address(), TlsCredentials(true));
  ASSERT_TRUE(WaitUntilServing(with_cert));
  EXPECT_TRUE(ServerInfo(with_cert).ok());
  auto without_cert = Channel(server.address(), TlsCredentials(false));
  EXPECT_FALSE(ServerInfo(without_cert).ok());
  EXPECT_EQ(Health(without_cert), HealthStatus::UNKNOWN) << "no handshake, no health either";
  // squeezectl with and without its client certificate.
  CommandResult ok = RunCommand({SQUEEZECTL_BIN, "--server", server.address(), "--tls_ca", Certs().ca(),
                                 "--tls_cert", Certs().client_cert(), "--tls_key", Certs().client_key(), "info"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  CommandResult refused = RunCommand({SQUEEZECTL_BIN, "--server", server.address(), "--tls_ca", Certs().ca(),
                                      "--timeout", "10", "info"});
  EXPECT_NE(refused.exit_code, 0);
}

TEST(TokenAuth, RequiresAKnownBearerTokenButLeavesHealthOpen) {
  const std::string token_file = ::testing::TempDir() + "/tokens-" + std::to_string(getpid());
  {
    std::ofstream out(token_file);
    out << "# test tokens\nright-token\nsecond-token\n";
  }
  Server server({"--auth_token_file", token_file});
  auto channel = Channel(server.address(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(WaitUntilServing(channel)) << "health must answer without a token";
  EXPECT_EQ(ServerInfo(channel).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ServerInfo(channel, "wrong-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(ServerInfo(channel, "right-token").ok());
  EXPECT_TRUE(ServerInfo(channel, "second-token").ok());

  // Streaming RPCs are covered too.
  {
    grpc::ClientContext context;
    SetTimeout(&context, 10);
    pb::GenerateRequest request;
    request.set_context_id("anything");
    auto reader = pb::Squeezeserve::NewStub(channel)->Generate(&context, request);
    pb::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }

  // The request id comes back in the initial metadata: the client's, or a fresh one.
  {
    grpc::ClientContext context;
    context.AddMetadata("x-request-id", "trace-abc-123");
    ASSERT_TRUE(ServerInfo(channel, "right-token", &context).ok());
    auto echoed = context.GetServerInitialMetadata().find("x-request-id");
    ASSERT_NE(echoed, context.GetServerInitialMetadata().end());
    EXPECT_EQ(std::string(echoed->second.data(), echoed->second.size()), "trace-abc-123");
  }
  {
    grpc::ClientContext context;
    ASSERT_TRUE(ServerInfo(channel, "right-token", &context).ok());
    auto generated = context.GetServerInitialMetadata().find("x-request-id");
    ASSERT_NE(generated, context.GetServerInitialMetadata().end());
    EXPECT_EQ(generated->second.size(), 32u);
  }

  CommandResult without = RunCommand({SQUEEZECTL_BIN, "--server", server.address(), "info"});
  EXPECT_EQ(without.exit_code, 10 + static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) << without.err;
  CommandResult with = RunCommand({SQUEEZECTL_BIN, "--server", server.address(), "--token_file", token_file, "info"});
  EXPECT_EQ(with.exit_code, 0) << with.err;
}

// --- admission control and metrics ---

std::string Scrape(const std::string& metrics_address, const std::string& path = "/metrics", int* status = nullptr) {
  const size_t colon = metrics_address.rfind(':');
  httplib::Client client(metrics_address.substr(0, colon), std::stoi(metrics_address.substr(colon + 1)));
  client.set_read_timeout(5, 0);
  auto response = client.Get(path.c_str());
  if (status != nullptr) *status = response ? response->status : -1;
  return response ? response->body : "";
}

// The value of an unlabelled sample, or -1.
// The value of the series `name` (with whatever labels: every series carries the model label).
double MetricValue(const std::string& text, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, name + " ") || absl::StartsWith(line, name + "{")) {
      double value = -1;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) return value;
    }
  }
  return -1;
}

bool WaitForMetric(const std::string& address, const std::string& name, double expected) {
  for (int i = 0; i < 300; ++i) {  // 30 s
    if (MetricValue(Scrape(address), name) == expected) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// A Generate stream run on its own thread, read slowly so that it keeps its worker busy (the server
// blocks a generation whose client falls behind); Cancel() ends it from the client side.
class Stream {
 public:
  Stream(const std::shared_ptr<grpc::Channel>& channel, const std::string& context_id) {
    pb::GenerateRequest request;
    request.set_context_id(context_id);
    request.mutable_tokens()->add_ids(5);
    request.mutable_sampling()->set_max_new_tokens(4000);  // near the model's 4096 positions
    request.mutable_sampling()->set_ignore_eos(true);
    SetTimeout(&context_, 120);
    thread_ = std::thread([this, channel, request] {
      auto reader = pb::Squeezeserve::NewStub(channel)->Generate(&context_, request);
      pb::GenerateResponse response;
      while (reader->Read(&response)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      status_ = reader->Finish();
      auto retry = context_.GetServerTrailingMetadata().find("grpc-retry-pushback-ms");
      has_retry_hint_ = retry != context_.GetServerTrailingMetadata().end();
    });
  }
  ~Stream() { Join(); }
  void Cancel() { context_.TryCancel(); }
  grpc::Status Join() {
    if (thread_.joinable()) thread_.join();
    return status_;
  }
  bool has_retry_hint() const { return has_retry_hint_; }

 private:
  grpc::ClientContext context_;
  std::thread thread_;
  grpc::Status status_;
  bool has_retry_hint_ = false;
};

TEST(Admission, BurstBeyondTheQueueIsRefusedAndCancelledWaitersFreeTheirSlots) {
  Server server({"--max_concurrent_streams=1", "--max_queued_requests=2", "--max_new_tokens=4000",
                 "--metrics_listen=127.0.0.1:0"});
  ASSERT_FALSE(server.metrics_address().empty()) << "no 'squeezeserve metrics on' line";
  auto channel = Channel(server.address(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(WaitUntilServing(channel));
  int healthz = 0;
  EXPECT_EQ(Scrape(server.metrics_address(), "/healthz", &healthz), "ok\n");
  EXPECT_EQ(healthz, 200);

  // A small dense context to generate against.
  {
    grpc::ClientContext context;
    SetTimeout(&context, 60);
    auto stream = pb::Squeezeserve::NewStub(channel)->IngestContext(&context);
    pb::IngestContextRequest request;
    request.set_context_id("load");
    request.mutable_index()->set_dense_only(true);
    for (int i = 0; i < 64; ++i) request.mutable_tokens()->add_ids(3 + i);
    ASSERT_TRUE(stream->Write(request));
    stream->WritesDone();
    pb::IngestContextProgress progress;
    while (stream->Read(&progress)) {
    }
    ASSERT_TRUE(stream->Finish().ok());
  }

  // One runs, two wait, the rest of the burst is refused with a retry hint.
  std::vector<std::unique_ptr<Stream>> accepted;
  accepted.push_back(std::make_unique<Stream>(channel, "load"));
  ASSERT_TRUE(WaitForMetric(server.metrics_address(), "squeezeserve_num_requests_running", 1));
  for (int i = 0; i < 2; ++i) accepted.push_back(std::make_unique<Stream>(channel, "load"));
  ASSERT_TRUE(WaitForMetric(server.metrics_address(), "squeezeserve_queue_depth", 2));
  std::vector<std::unique_ptr<Stream>> refused;
  for (int i = 0; i < 4; ++i) refused.push_back(std::make_unique<Stream>(channel, "load"));
  for (auto& stream : refused) {
    grpc::Status status = stream->Join();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
    EXPECT_TRUE(stream->has_retry_hint());
  }

  // Cancelling the two waiters frees their slots: two new requests queue instead of being refused.
  accepted[1]->Cancel();
  accepted[2]->Cancel();
  EXPECT_EQ(accepted[1]->Join().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(accepted[2]->Join().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitForMetric(server.metrics_address(), "squeezeserve_queue_depth", 0));
  accepted.push_back(std::make_unique<Stream>(channel, "load"));
  accepted.push_back(std::make_unique<Stream>(channel, "load"));
  EXPECT_TRUE(WaitForMetric(server.metrics_address(), "squeezeserve_queue_depth", 2));

  // The server stays healthy; the refusals are counted by code.
  EXPECT_EQ(Health(channel), HealthStatus::SERVING);
  const std::string metrics = Scrape(server.metrics_address());
  const std::string model = "model=\"llama-gqa-llama3rope-tied\"";
  EXPECT_TRUE(absl::StrContains(
      metrics, "squeezeserve_requests_total{" + model + ",method=\"Generate\",code=\"RESOURCE_EXHAUSTED\"} 4"))
      << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "# TYPE squeezeserve_time_to_first_token_seconds histogram")) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "squeezeserve_contexts{" + model + ",tier=")) << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "squeezeserve_context_bytes{" + model + ",tier=\"device\",kind=\"kv\"}"))
      << metrics;
  EXPECT_TRUE(absl::StrContains(metrics, "squeezeserve_model_load_state{" + model + ",state=\"serving\"} 1"))
      << metrics;

  for (auto& stream : accepted) stream->Cancel();
  for (auto& stream : accepted) stream->Join();
  // The cancelled running stream reports its latencies.
  EXPECT_TRUE(WaitForMetric(server.metrics_address(), "squeezeserve_num_requests_running", 0));
  EXPECT_GT(MetricValue(Scrape(server.metrics_address()), "squeezeserve_time_to_first_token_seconds_count"), 0);
}

}  // namespace
}  // namespace squeezeserve::testing
