#include "client/squeezectl/rpc_util.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace squeezectl {

std::unique_ptr<squeezeserve::v1::Squeezeserve::Stub> MakeStub(const Cli& cli) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(cli.server, grpc::InsecureChannelCredentials(), args);
  return squeezeserve::v1::Squeezeserve::NewStub(channel);
}

void ApplyDeadline(const Cli& cli, grpc::ClientContext* context) {
  if (cli.timeout_s > 0) {
    auto timeout = std::chrono::duration_cast<std::chrono::system_clock::duration>(
        std::chrono::duration<double>(cli.timeout_s));
    context->set_deadline(std::chrono::system_clock::now() + timeout);
  }
}

namespace {
const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                       "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  int index = static_cast<int>(code);
  return index >= 0 && index <= 16 ? kNames[index] : "UNKNOWN";
}
}  // namespace

int ReportStatus(const grpc::Status& status) {
  if (status.ok()) return kExitOk;
  std::cerr << "squeezectl: " << CodeName(status.error_code()) << ": " << status.error_message() << "\n";
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

std::optional<std::vector<int32_t>> ParseTokenIds(const std::string& text) {
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
