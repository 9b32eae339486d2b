// libFuzzer target over the real RPC handlers: the SqueezeserveService (raw-bytes methods, reactors,
// batching scheduler, tenants and quotas, the context store on a real directory) on a loopback port,
// with a model-free engine (fake_engine.h). Each input is a sequence of calls with bytes the fuzzer
// controls — unparseable frames, valid messages, streams half-closed, cancelled or left unread, with
// or without a bearer token — run one after another against one long-lived server.
//
// Beyond "no crash, hang or sanitizer report": the server never answers UNKNOWN, UNIMPLEMENTED or
// INTERNAL (a request it cannot parse is INVALID_ARGUMENT; the fake engine never fails), and an
// IngestContext stream with a frame that does not parse is never acknowledged.
//
// Input: a sequence of [op][...] records; lengths are one byte (payloads up to 255 bytes).
//   op % 5 == 0  unary call: method byte, token byte, payload
//   op % 5 == 1  Generate: token byte, read-mode byte, payload
//   op % 5 == 2  IngestContext: token byte, end-mode byte, count byte, then `count % 6` payloads
//   op % 5 == 3  a valid ingest of context "c<n>" (token byte, n byte, size byte)
//   op % 5 == 4  a valid Generate on "c<n>" (token byte, n byte, read-mode byte)
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/rpc_method.h>
#include <grpcpp/impl/codegen/sync_stream.h>

#include "server/request_codec.h"
#include "server/service.h"
#include "spdlog/spdlog.h"
#include "squeezeserve/v1/squeezeserve.grpc.pb.h"
#include "tests/fuzz/fake_engine.h"

namespace {

namespace pb = ::squeezeserve::v1;
using squeezeserve::server::ServerConfig;
using squeezeserve::server::SqueezeserveService;

const char* const kTokens[] = {"", "admin-a", "reader-a", "all-b", "legacy", "wrong"};

struct Harness {
  std::unique_ptr<SqueezeserveService> service;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Squeezeserve::Stub> stub;
};

Harness* g_harness = nullptr;
std::string g_store;

// At exit, while spdlog's registry still stands: the gRPC server and the service go down in the
// order main.cc takes them, which joins the batching loop. Left running, a stream finishing
// during exit logged into the already destroyed registry (AddressSanitizer: heap-use-after-free in
// GenerateReactor::OnFinish, seen once in a fresh-clone CI run).
void StopHarness() {
  if (g_harness == nullptr) return;
  g_harness->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  g_harness->server->Wait();
  g_harness->stub.reset();
  g_harness->channel.reset();
  g_harness->service.reset();
  g_harness->server.reset();
  std::error_code ignored;
  std::filesystem::remove_all(g_store, ignored);
}

Harness* TheHarness() {
  static Harness* harness = [] {
    auto* h = new Harness;
    squeezeserve::server::RouteProtobufLogsToDebug();  // every malformed string would be logged
    spdlog::set_level(spdlog::level::err);  // constructs spdlog's registry before StopHarness is registered
    const std::string store =
        (std::filesystem::temp_directory_path() / ("squeezeserve-rpc-fuzz-" + std::to_string(getpid()))).string();
    std::filesystem::remove_all(store);
    ServerConfig config;
    config.store_dir = store;
    config.store_revalidate_ms = 0;
    config.limits.max_context_tokens = 4096;
    config.limits.max_query_tokens = 256;
    config.limits.max_new_tokens = 64;
    config.limits.max_concurrent_streams = 4;
    config.limits.max_queued_requests = 4;
    config.limits.max_message_bytes = 1 << 16;
    config.limits.max_context_bytes = 1 << 16;
    config.max_stream_backlog = 4;
    config.stream_stall_timeout_ms = 200;
    absl::StatusOr<squeezeserve::server::TokenFile> tokens = squeezeserve::server::ParseTokenFile(
        "admin-a tenant=a\nreader-a tenant=a scopes=read\nall-b tenant=b\nlegacy\nquota a contexts=3\n");
    config.auth = *tokens;
    h->service = std::make_unique<SqueezeserveService>(config);
    h->service->SetEngine(std::make_unique<squeezeserve::fuzz::FakeEngine>());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(h->service.get());
    builder.SetMaxReceiveMessageSize(1 << 16);
    h->server = builder.BuildAndStart();
    h->channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
    h->stub = pb::Squeezeserve::NewStub(h->channel);
    g_harness = h;
    g_store = store;
    std::atexit(StopHarness);  // runs before the destructors of statics constructed earlier
    return h;
  }();
  return harness;
}

// Reads the input front to back; past the end every read is 0 / empty.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::string Bytes() {
    const size_t n = std::min<size_t>(Byte(), size_ - std::min(pos_, size_));
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

std::unique_ptr<grpc::ClientContext> Context(uint8_t token) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  const char* t = kTokens[token % 6];
  if (*t != '\0') context->AddMetadata("authorization", std::string("Bearer ") + t);
  return context;
}

grpc::ByteBuffer Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

void Check(const grpc::Status& status, const char* what) {
  const grpc::StatusCode code = status.error_code();
  if (code == grpc::StatusCode::UNKNOWN || code == grpc::StatusCode::UNIMPLEMENTED ||
      code == grpc::StatusCode::INTERNAL) {
    std::fprintf(stderr, "%s answered %d: %s\n", what, static_cast<int>(code), status.error_message().c_str());
    std::abort();
  }
}

void Unary(Harness& h, Input& in) {
  static const char* const kMethods[] = {"GetContext", "ListContexts", "DeleteContext", "GetServerInfo"};
  const std::string path = std::string("/squeezeserve.v1.Squeezeserve/") + kMethods[in.Byte() % 4];
  auto context = Context(in.Byte());
  grpc::internal::RpcMethod method(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC, h.channel);
  grpc::ByteBuffer response;
  Check(grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(h.channel.get(), method, context.get(),
                                                                            Buffer(in.Bytes()), &response),
        path.c_str());
}

// read_mode: 0 read all, 1 read one then cancel, 2 cancel without reading.
void Drive(grpc::ClientReaderInterface<pb::GenerateResponse>& reader, grpc::ClientContext& context, uint8_t mode,
           const char* what) {
  pb::GenerateResponse response;
  if (mode % 3 == 1) reader.Read(&response);
  if (mode % 3 != 0) context.TryCancel();
  while (reader.Read(&response)) {
  }
  Check(reader.Finish(), what);
}

void RawGenerate(Harness& h, Input& in) {
  auto context = Context(in.Byte());
  const uint8_t mode = in.Byte();
  grpc::internal::RpcMethod method("/squeezeserve.v1.Squeezeserve/Generate",
                                   grpc::internal::RpcMethod::SERVER_STREAMING, h.channel);
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(h.channel.get(), method, context.get(),
                                                                    Buffer(in.Bytes())));
  grpc::ByteBuffer response;
  if (mode % 3 == 1) reader->Read(&response);
  if (mode % 3 != 0) context->TryCancel();
  while (reader->Read(&response)) {
  }
  Check(reader->Finish(), "Generate");
}

void RawIngest(Harness& h, Input& in) {
  auto context = Context(in.Byte());
  const uint8_t end = in.Byte();
  const int count = in.Byte() % 6;
  grpc::internal::RpcMethod method("/squeezeserve.v1.Squeezeserve/IngestContext",
                                   grpc::internal::RpcMethod::BIDI_STREAMING, h.channel);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(h.channel.get(), method,
                                                                                            context.get()));
  bool unparseable = false;
  for (int i = 0; i < count; ++i) {
    const std::string bytes = in.Bytes();
    pb::IngestContextRequest probe;
    unparseable |= !probe.ParseFromString(bytes);
    if (!stream->Write(Buffer(bytes))) break;
  }
  if (end % 2 == 0) {
    stream->WritesDone();
  } else {
    context->TryCancel();
  }
  grpc::ByteBuffer response;
  bool acknowledged = false;
  while (stream->Read(&response)) {
    pb::IngestContextProgress progress;
    std::vector<grpc::Slice> slices;
    (void)response.Dump(&slices);
    std::string bytes;
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    acknowledged |= progress.ParseFromString(bytes) && progress.stage() == "done";
  }
  const grpc::Status status = stream->Finish();
  Check(status, "IngestContext");
  if (unparseable && (acknowledged || status.ok())) {
    std::fprintf(stderr, "an ingest with an unparseable frame was acknowledged\n");
    std::abort();
  }
}

void ValidIngest(Harness& h, Input& in) {
  auto context = Context(in.Byte());
  pb::IngestContextRequest request;
  request.set_context_id("c" + std::to_string(in.Byte() % 4));
  const int n = 1 + in.Byte() % 64;
  for (int i = 0; i < n; ++i) request.mutable_tokens()->add_ids(3 + i);
  auto stream = h.stub->IngestContext(context.get());
  stream->Write(request);
  stream->WritesDone();
  pb::IngestContextProgress progress;
  while (stream->Read(&progress)) {
  }
  Check(stream->Finish(), "IngestContext (valid)");
}

void ValidGenerate(Harness& h, Input& in) {
  auto context = Context(in.Byte());
  pb::GenerateRequest request;
  request.set_context_id("c" + std::to_string(in.Byte() % 4));
  for (int i = 0; i < 20; ++i) request.mutable_tokens()->add_ids(3 + i);
  request.mutable_sampling()->set_max_new_tokens(32);
  auto reader = h.stub->Generate(context.get(), request);
  Drive(*reader, *context, in.Byte(), "Generate (valid)");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Harness& h = *TheHarness();
  Input in(data, size);
  for (int calls = 0; !in.done() && calls < 16; ++calls) {
    switch (in.Byte() % 5) {
      case 0: Unary(h, in); break;
      case 1: RawGenerate(h, in); break;
      case 2: RawIngest(h, in); break;
      case 3: ValidIngest(h, in); break;
      case 4: ValidGenerate(h, in); break;
    }
  }
  return 0;
}
