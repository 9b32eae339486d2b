// What every squeezectl subcommand needs around an RPC: the stub, a deadline, the exit code of a
// status, error printing, JSON of a proto message, parsing of comma-separated token ids, and the
// chunked messages of an IngestContext stream. A library (squeezectl_rpc) that other clients of the
// public API link too (bench/eval_long_context).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>

#include "client/squeezectl/cli.h"
#include "squeezeserve/v1/squeezeserve.grpc.pb.h"

namespace squeezectl {

// The context id a call is about (--context, else --id); empty for list/info.
std::string RouteKey(const Cli& cli);
// --server may list several replicas (comma-separated): a call about a context goes to the replica
// that owns the context on a consistent-hash ring (client/common/router.h); others go to the first.
std::string PickReplica(const Cli& cli);
std::shared_ptr<grpc::Channel> MakeChannel(const Cli& cli);
std::unique_ptr<squeezeserve::v1::Squeezeserve::Stub> MakeStub(const Cli& cli);
// Applies --timeout as the call's deadline and --token_file as its authorization metadata.
void ApplyCallOptions(const Cli& cli, grpc::ClientContext* context);
// Reads the --tls_* and --token_file files into `cli`; false (with an error on stderr) when one is
// unreadable.
bool LoadSecurityFiles(Cli& cli);

// Prints "squeezectl: CODE: message" to stderr and returns 10 + code (0 for OK).
int ReportStatus(const grpc::Status& status);
// Prints "squeezectl: message" to stderr and returns the usage exit code.
int UsageError(const std::string& message);

// Proto message -> JSON text with the .proto field names.
std::string ToJson(const google::protobuf::Message& message);

// "1,2, 3" -> {1, 2, 3}; nullopt (and an error on stderr) on anything else.
std::optional<std::vector<int32_t>> ParseTokenIds(const std::string& text);

// Reads a whole file ("-" = stdin); nullopt with an error on stderr when unreadable.
std::optional<std::string> ReadAll(const std::string& path);

// The whole request stream of an IngestContext call: `first` (id and options, no content), then the
// content in chunks of at most 1 MiB, so a long document never hits gRPC's message size limit. Text
// chunks never split a UTF-8 character (proto3 strings must be valid UTF-8).
std::vector<squeezeserve::v1::IngestContextRequest> IngestTextRequests(squeezeserve::v1::IngestContextRequest first,
                                                                      const std::string& text);
std::vector<squeezeserve::v1::IngestContextRequest> IngestTokenRequests(
    squeezeserve::v1::IngestContextRequest first, const std::vector<int32_t>& ids);

}  // namespace squeezectl
