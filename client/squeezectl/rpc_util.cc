#include "client/squeezectl/rpc_util.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"
#include "client/common/router.h"
#include "grpc_code_name.h"

namespace squeezectl {

std::string RouteKey(const Cli& cli) {
  if (!cli.context.empty()) return cli.context;
  if (!cli.id.empty()) return cli.id;
  return cli.args.empty() ? "" : cli.args.front();  // "squeezectl get ID"
}

std::string PickReplica(const Cli& cli) {
  std::vector<std::string> replicas = absl::StrSplit(cli.server, ',', absl::SkipWhitespace());
  if (replicas.size() <= 1) return cli.server;
  const std::string key = RouteKey(cli);
  if (key.empty()) return replicas.front();  // list, info, content-addressed ingest
  // The ring of squeezeload and of the chart's Envoy (client/common/router.h): a context stays on one replica.
  return replicas[squeezeserve::routing::RingHashRouter(replicas).Pick(key)];
}

std::shared_ptr<grpc::Channel> MakeChannel(const Cli& cli) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (cli.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = cli.tls_ca_pem;  // empty = the system roots
    ssl.pem_cert_chain = cli.tls_cert_pem;
    ssl.pem_private_key = cli.tls_key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  return grpc::CreateCustomChannel(PickReplica(cli), credentials, args);
}

std::unique_ptr<squeezeserve::v1::Squeezeserve::Stub> MakeStub(const Cli& cli) {
  return squeezeserve::v1::Squeezeserve::NewStub(MakeChannel(cli));
}

bool LoadSecurityFiles(Cli& cli) {
  if (cli.tls_cert_file.empty() != cli.tls_key_file.empty()) {
    std::cerr << "squeezectl: --tls_cert and --tls_key must be given together\n";
    return false;
  }
  cli.tls = !cli.tls_ca_file.empty() || !cli.tls_cert_file.empty();
  for (auto [path, pem] : {std::pair{&cli.tls_ca_file, &cli.tls_ca_pem}, std::pair{&cli.tls_cert_file, &cli.tls_cert_pem},
                           std::pair{&cli.tls_key_file, &cli.tls_key_pem}}) {
    if (path->empty()) continue;
    std::optional<std::string> contents = ReadAll(*path);
    if (!contents) return false;
    *pem = *std::move(contents);
  }
  if (!cli.token_file.empty()) {
    std::optional<std::string> contents = ReadAll(cli.token_file);
    if (!contents) return false;
    // The first word of the first non-empty, non-comment line (the server's token file format, whose
    // lines may go on with tenant= and scopes=).
    for (absl::string_view line : absl::StrSplit(*contents, '\n')) {
      line = absl::StripAsciiWhitespace(line);
      if (!line.empty() && line[0] != '#') {
        cli.token = std::string(line.substr(0, line.find_first_of(" \t")));
        break;
      }
    }
    if (cli.token.empty()) {
      std::cerr << "squeezectl: --token_file " << cli.token_file << " holds no token\n";
      return false;
    }
  }
  return true;
}

void ApplyCallOptions(const Cli& cli, grpc::ClientContext* context) {
  if (!cli.token.empty()) context->AddMetadata("authorization", "Bearer " + cli.token);
  // Lets an L7 proxy (the chart's Envoy: ring hash on this header) keep a context on one replica.
  if (const std::string key = RouteKey(cli); !key.empty()) context->AddMetadata(squeezeserve::routing::kContextIdHeader, key);
  if (cli.timeout_s > 0) {
    auto timeout = std::chrono::duration_cast<std::chrono::system_clock::duration>(
        std::chrono::duration<double>(cli.timeout_s));
    context->set_deadline(std::chrono::system_clock::now() + timeout);
  }
}


int ReportStatus(const grpc::Status& status) {
  if (status.ok()) return kExitOk;
  std::cerr << "squeezectl: " << squeezeserve::GrpcCodeName(status.error_code()) << ": " << status.error_message() << "\n";
  return kExitRpcBase + static_cast<int>(status.error_code());
}

int UsageError(const std::string& message) {
  std::cerr << "squeezectl: " << message << "\nTry 'squeezectl help' or 'squeezectl help <command>'.\n";
  return kExitUsage;
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) return "{}";
  return json;
}

std::optional<std::vector<int32_t>> ParseTokenIds(const std::string& arg) {
  // "@FILE" reads the ids from a file: a long context does not fit in one command-line argument.
  std::string text = arg;
  if (!arg.empty() && arg[0] == '@') {
    std::optional<std::string> contents = ReadAll(arg.substr(1));
    if (!contents) return std::nullopt;
    text = *std::move(contents);
  }
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id)) {
      std::cerr << "squeezectl: --tokens: \"" << std::string(part) << "\" is not a token id\n";
      return std::nullopt;
    }
    ids.push_back(id);
  }
  return ids;
}

namespace {

constexpr size_t kChunkBytes = 1 << 20;
constexpr size_t kChunkTokens = kChunkBytes / sizeof(int32_t);

// Longest prefix of text[begin, begin + max) that ends on a UTF-8 character boundary.
size_t Utf8ChunkEnd(const std::string& text, size_t begin, size_t max) {
  size_t end = std::min(text.size(), begin + max);
  if (end == text.size()) return end;
  size_t boundary = end;
  while (boundary > begin && (static_cast<unsigned char>(text[boundary]) & 0xC0) == 0x80) --boundary;
  return boundary > begin ? boundary : end;
}

}  // namespace

std::vector<squeezeserve::v1::IngestContextRequest> IngestTextRequests(squeezeserve::v1::IngestContextRequest first,
                                                                      const std::string& text) {
  std::vector<squeezeserve::v1::IngestContextRequest> requests = {std::move(first)};
  for (size_t begin = 0; begin < text.size();) {
    size_t end = Utf8ChunkEnd(text, begin, kChunkBytes);
    squeezeserve::v1::IngestContextRequest chunk;
    chunk.set_text(text.substr(begin, end - begin));
    requests.push_back(std::move(chunk));
    begin = end;
  }
  return requests;
}

std::vector<squeezeserve::v1::IngestContextRequest> IngestTokenRequests(
    squeezeserve::v1::IngestContextRequest first, const std::vector<int32_t>& ids) {
  std::vector<squeezeserve::v1::IngestContextRequest> requests = {std::move(first)};
  for (size_t begin = 0; begin < ids.size(); begin += kChunkTokens) {
    squeezeserve::v1::IngestContextRequest chunk;
    size_t end = std::min(ids.size(), begin + kChunkTokens);
    chunk.mutable_tokens()->mutable_ids()->Add(ids.begin() + begin, ids.begin() + end);
    requests.push_back(std::move(chunk));
  }
  return requests;
}

std::optional<std::string> ReadAll(const std::string& path) {
  if (path == "-") {
    std::ostringstream out;
    out << std::cin.rdbuf();
    return out.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "squeezectl: cannot read " << path << "\n";
    return std::nullopt;
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace squeezectl
