// Messages to and from gRPC's raw byte buffers. The service registers its methods as raw callback
// methods (server/service.h) and parses requests here, because gRPC's typed callback handlers hide a
// request that fails to parse: a unary or server-streaming call is answered UNIMPLEMENTED with an empty
// message, and a failed read of a client stream looks exactly like the client's half-close (an
// IngestContext would store the prefix received so far). Here a failed parse is INVALID_ARGUMENT
// naming what was wrong: the field whose string is not UTF-8, or the malformed encoding.
#pragma once

#include <string>
#include <string_view>

#include <google/protobuf/message.h>
#include <grpcpp/support/byte_buffer.h>

#include "absl/status/status.h"

namespace squeezeserve::server {

// Parses `buffer` into `message` (cleared first); INVALID_ARGUMENT naming the problem otherwise.
absl::Status ParseMessage(const grpc::ByteBuffer& buffer, google::protobuf::Message* message);
// The same over plain bytes (tests, fuzzers).
absl::Status ParseMessageBytes(std::string_view bytes, google::protobuf::Message* message);

// `message`'s wire form as a ByteBuffer to write.
grpc::ByteBuffer SerializeMessage(const google::protobuf::Message& message);

// protobuf logs every string field that is not UTF-8 at ERROR on stderr, so any client could flood
// the server's log; the failure reaches that client as INVALID_ARGUMENT instead. Sends protobuf's log
// lines to spdlog at debug level (fatal ones stay fatal). Idempotent.
void RouteProtobufLogsToDebug();

// Whether `text` is well-formed UTF-8 (what protobuf requires of proto3 string fields).
bool IsValidUtf8(std::string_view text);

}  // namespace squeezeserve::server
