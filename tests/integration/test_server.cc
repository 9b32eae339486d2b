#include "tests/integration/test_server.h"

#include <cstdlib>
#include <thread>

#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/rpc_method.h>
#include <grpcpp/impl/codegen/sync_stream.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "health.grpc.pb.h"

namespace squeezeserve::testing {

std::string BinaryUnderTest() {
  const char* other = std::getenv("SQUEEZESERVE_TEST_BIN");
  return other != nullptr && *other != '\0' ? other : SQUEEZESERVE_BIN;
}

TestServer::TestServer(std::vector<std::string> flags, std::vector<std::string> wrapper) {
  argv_ = std::move(wrapper);
  for (const std::string& arg : {BinaryUnderTest(), std::string("--model"), std::string(REFERENCE_MODEL_DIR),
                                 std::string("--listen"), std::string("127.0.0.1:0"), std::string("--threads"),
                                 std::string("1"), std::string("--grace_period_s=1"), std::string("--log_level=warn")}) {
    argv_.push_back(arg);
  }
  argv_.insert(argv_.end(), flags.begin(), flags.end());
  EXPECT_TRUE(Start()) << "the server did not start";
}

TestServer::~TestServer() {
  if (running_) EXPECT_EQ(Stop(), 0) << "SIGTERM should drain and exit 0";
}

bool TestServer::Start() {
  process_ = std::make_unique<ServerProcess>();
  std::optional<std::string> address = process_->Start(argv_, /*timeout_s=*/60);
  if (!address) {
    channel_ = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());  // calls fail, not crash
    return false;
  }
  running_ = true;
  address_ = *address;
  channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  for (int i = 0; i < 600; ++i) {
    if (HealthOf(channel_) == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

void TestServer::Kill() {
  process_->Kill();
  running_ = false;
}

int TestServer::Stop() {
  running_ = false;
  return process_->Stop(/*timeout_s=*/60);
}

int HealthOf(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status =
      grpc::health::v1::Health::NewStub(channel)->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  if (!status.ok()) return -1;
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

std::vector<int32_t> ContextTokens(int n, int salt) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(3 + (i * 37 + salt * 101 + 11) % 997);
  return ids;
}

std::unique_ptr<grpc::ClientContext> CallContext(int seconds, const std::string& token) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  return context;
}

grpc::Status IngestTokens(pb::Squeezeserve::Stub& stub, const std::string& id, const std::vector<int32_t>& tokens,
                          const std::string& token, pb::ContextInfo* info, bool dense_only) {
  auto context = CallContext(120, token);
  auto stream = stub.IngestContext(context.get());
  for (size_t begin = 0; begin < tokens.size() || begin == 0; begin += 512) {
    pb::IngestContextRequest request;
    if (begin == 0) {
      request.set_context_id(id);
      request.mutable_index()->set_dense_only(dense_only);
    }
    for (size_t i = begin; i < std::min(tokens.size(), begin + 512); ++i) request.mutable_tokens()->add_ids(tokens[i]);
    if (!stream->Write(request)) break;
    if (tokens.empty()) break;
  }
  stream->WritesDone();
  pb::IngestContextProgress progress;
  while (stream->Read(&progress)) {
    if (info != nullptr && progress.has_context()) *info = progress.context();
  }
  return stream->Finish();
}

GenerateResult GenerateTokens(pb::Squeezeserve::Stub& stub, const std::string& id, int max_new_tokens,
                              const std::string& token, int seconds) {
  auto context = CallContext(seconds, token);
  pb::GenerateRequest request;
  request.set_context_id(id);
  for (int t : {5, 9, 14}) request.mutable_tokens()->add_ids(t);
  request.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  request.mutable_sampling()->set_ignore_eos(true);
  request.mutable_attention()->set_mode(pb::AttentionOptions::DENSE);
  auto reader = stub.Generate(context.get(), request);
  GenerateResult result;
  pb::GenerateResponse response;
  while (reader->Read(&response)) result.tokens.insert(result.tokens.end(), response.token_ids().begin(),
                                                         response.token_ids().end());
  result.status = reader->Finish();
  return result;
}

namespace {

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  (void)buffer.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

std::string MethodPath(const std::string& method) { return absl::StrCat("/squeezeserve.v1.Squeezeserve/", method); }

}  // namespace

grpc::Status RawUnary(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                      const std::string& request_bytes, std::string* response_bytes) {
  const std::string path = MethodPath(method);
  grpc::internal::RpcMethod rpc(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC, channel);
  auto context = CallContext(30);
  grpc::ByteBuffer response;
  grpc::Status status = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel.get(), rpc, context.get(), ToBuffer(request_bytes), &response);
  if (response_bytes != nullptr) *response_bytes = FromBuffer(response);
  return status;
}

grpc::Status RawServerStream(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                             const std::string& request_bytes, std::vector<std::string>* responses) {
  const std::string path = MethodPath(method);
  grpc::internal::RpcMethod rpc(path.c_str(), grpc::internal::RpcMethod::SERVER_STREAMING, channel);
  auto context = CallContext(30);
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel.get(), rpc, context.get(),
                                                                    ToBuffer(request_bytes)));
  grpc::ByteBuffer response;
  while (reader->Read(&response)) {
    if (responses != nullptr) responses->push_back(FromBuffer(response));
  }
  return reader->Finish();
}

grpc::Status RawBidi(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::vector<std::string>& messages, bool cancel_instead) {
  const std::string path = MethodPath(method);
  grpc::internal::RpcMethod rpc(path.c_str(), grpc::internal::RpcMethod::BIDI_STREAMING, channel);
  auto context = CallContext(60);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel.get(), rpc,
                                                                                            context.get()));
  for (const std::string& message : messages) {
    if (!stream->Write(ToBuffer(message))) break;
  }
  if (cancel_instead) {
    context->TryCancel();
  } else {
    stream->WritesDone();
  }
  grpc::ByteBuffer response;
  while (stream->Read(&response)) {
  }
  return stream->Finish();
}

std::string Serialized(const google::protobuf::Message& message) {
  std::string bytes;
  message.SerializeToString(&bytes);
  return bytes;
}

}  // namespace squeezeserve::testing
