// squeezectl list | get | delete | info: the unary RPCs, as human text or --json.
#include <iostream>
#include <string>

#include "client/squeezectl/cli.h"
#include "client/squeezectl/rpc_util.h"

namespace squeezectl {
namespace {

namespace pb = squeezeserve::v1;

// The context id from the first positional argument or --context.
std::string ContextIdArg(const Cli& cli) { return !cli.args.empty() ? cli.args[0] : cli.context; }

void PrintContextLine(const pb::ContextInfo& info) {
  std::cout << info.context_id() << "\t" << info.num_tokens() << " tokens\t"
            << (info.indexed() ? "indexed" : "dense-only") << "\t" << info.tier() << "\n";
}

}  // namespace

int RunList(const Cli& cli) {
  auto stub = MakeStub(cli);
  grpc::ClientContext context;
  ApplyCallOptions(cli, &context);
  pb::ListContextsResponse response;
  grpc::Status status = stub->ListContexts(&context, pb::ListContextsRequest(), &response);
  if (!status.ok()) return ReportStatus(status);
  if (cli.json) {
    std::cout << ToJson(response) << "\n";
  } else {
    for (const pb::ContextInfo& info : response.contexts()) PrintContextLine(info);
  }
  return kExitOk;
}

int RunGet(const Cli& cli) {
  pb::GetContextRequest request;
  request.set_context_id(ContextIdArg(cli));
  if (request.context_id().empty()) return UsageError("get: give the context id (squeezectl get ID)");
  auto stub = MakeStub(cli);
  grpc::ClientContext context;
  ApplyCallOptions(cli, &context);
  pb::ContextInfo info;
  grpc::Status status = stub->GetContext(&context, request, &info);
  if (!status.ok()) return ReportStatus(status);
  if (cli.json) {
    std::cout << ToJson(info) << "\n";
  } else {
    std::cout << info.DebugString();
  }
  return kExitOk;
}

int RunDelete(const Cli& cli) {
  pb::DeleteContextRequest request;
  request.set_context_id(ContextIdArg(cli));
  if (request.context_id().empty()) return UsageError("delete: give the context id (squeezectl delete ID)");
  auto stub = MakeStub(cli);
  grpc::ClientContext context;
  ApplyCallOptions(cli, &context);
  pb::DeleteContextResponse response;
  grpc::Status status = stub->DeleteContext(&context, request, &response);
  if (!status.ok()) return ReportStatus(status);
  if (cli.json) {
    std::cout << ToJson(response) << "\n";
  } else {
    std::cout << "deleted " << request.context_id() << "\n";
  }
  return kExitOk;
}

int RunInfo(const Cli& cli) {
  auto stub = MakeStub(cli);
  grpc::ClientContext context;
  ApplyCallOptions(cli, &context);
  pb::ServerInfo info;
  grpc::Status status = stub->GetServerInfo(&context, pb::GetServerInfoRequest(), &info);
  if (!status.ok()) return ReportStatus(status);
  if (cli.json) {
    std::cout << ToJson(info) << "\n";
  } else {
    std::cout << info.DebugString();
  }
  return kExitOk;
}

}  // namespace squeezectl
