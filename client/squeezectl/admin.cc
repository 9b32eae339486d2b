// squeezectl list | get | delete | info: the unary RPCs, as human text or --json; health: grpc.health.v1.
#include <functional>
#include <iostream>
#include <string>

#include "client/squeezectl/cli.h"
#include "client/squeezectl/rpc_util.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace squeezectl {
namespace {

namespace pb = squeezeserve::v1;
using Stub = pb::Squeezeserve::Stub;

// The context id from the first positional argument or --context.
std::string ContextIdArg(const Cli& cli) { return !cli.args.empty() ? cli.args[0] : cli.context; }

void PrintContextLine(const pb::ContextInfo& info) {
  std::cout << info.context_id() << "\t" << info.num_tokens() << " tokens\t"
            << (info.indexed() ? "indexed" : "dense-only") << "\t" << info.tier() << "\n";
}

// One unary call: stub, deadline and token, the call, then the response as JSON (--json) or as
// `print_text` prints it. Returns the exit code.
template <typename Request, typename Response>
int CallUnary(const Cli& cli, const Request& request,
              grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
              const std::function<void(const Response&)>& print_text) {
  auto stub = MakeStub(cli);
  grpc::ClientContext context;
  ApplyCallOptions(cli, &context);
  Response response;
  grpc::Status status = ((*stub).*method)(&context, request, &response);
  if (!status.ok()) return ReportStatus(status);
  if (cli.json) {
    std::cout << ToJson(response) << "\n";
  } else {
    print_text(response);
  }
  return kExitOk;
}

void PrintDebugString(const google::protobuf::Message& message) { std::cout << message.DebugString(); }

}  // namespace

int RunList(const Cli& cli) {
  return CallUnary<pb::ListContextsRequest, pb::ListContextsResponse>(
      cli, pb::ListContextsRequest(), &Stub::ListContexts, [](const pb::ListContextsResponse& response) {
        for (const pb::ContextInfo& info : response.contexts()) PrintContextLine(info);
      });
}

int RunGet(const Cli& cli) {
  pb::GetContextRequest request;
  request.set_context_id(ContextIdArg(cli));
  if (request.context_id().empty()) return UsageError("get: give the context id (squeezectl get ID)");
  return CallUnary<pb::GetContextRequest, pb::ContextInfo>(cli, request, &Stub::GetContext,
                                                            [](const pb::ContextInfo& info) { PrintDebugString(info); });
}

int RunDelete(const Cli& cli) {
  pb::DeleteContextRequest request;
  request.set_context_id(ContextIdArg(cli));
  if (request.context_id().empty()) return UsageError("delete: give the context id (squeezectl delete ID)");
  return CallUnary<pb::DeleteContextRequest, pb::DeleteContextResponse>(
      cli, request, &Stub::DeleteContext,
      [&request](const pb::DeleteContextResponse&) { std::cout << "deleted " << request.context_id() << "\n"; });
}

int RunInfo(const Cli& cli) {
  return CallUnary<pb::GetServerInfoRequest, pb::ServerInfo>(cli, pb::GetServerInfoRequest(), &Stub::GetServerInfo,
                                                              [](const pb::ServerInfo& info) { PrintDebugString(info); });
}

int RunHealth(const Cli& cli) {
  namespace health = grpc::health::v1;
  auto stub = health::Health::NewStub(MakeChannel(cli));
  grpc::ClientContext context;
  ApplyCallOptions(cli, &context);  // the health service is open: a token is ignored there
  health::HealthCheckRequest request;
  request.set_service(cli.args.empty() ? "" : cli.args[0]);
  health::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return ReportStatus(status);
  if (cli.json) {
    std::cout << ToJson(response) << "\n";
  } else {
    std::cout << health::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  }
  return response.status() == health::HealthCheckResponse::SERVING ? kExitOk : kExitNotServing;
}

}  // namespace squeezectl
