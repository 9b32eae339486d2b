#include "server/request_codec.h"

#include <cstdint>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/slice.h>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace squeezeserve::server {
namespace {

namespace gpb = ::google::protobuf;

std::string Join(const std::string& path, const std::string& name) {
  return path.empty() ? name : absl::StrCat(path, ".", name);
}

// Whether `bytes` is a sequence of varints (a packed repeated integer field's payload).
bool ValidPackedVarints(const std::string& bytes) {
  gpb::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
  uint64_t value;
  while (in.BytesUntilLimit() > 0) {
    if (!in.ReadVarint64(&value)) return false;
  }
  return true;
}

// Why `bytes` does not parse as `type`: the first field (by path, e.g. "sampling.stop") whose content
// is wrong, or "" when nothing more precise than "malformed" can be said.
std::string FindBadField(const std::string& bytes, const gpb::Descriptor& type, const std::string& path, int depth) {
  gpb::UnknownFieldSet fields;
  if (depth > 16 || !fields.ParseFromString(bytes)) return "";
  for (int i = 0; i < fields.field_count(); ++i) {
    const gpb::UnknownField& field = fields.field(i);
    const gpb::FieldDescriptor* descriptor = type.FindFieldByNumber(field.number());
    if (descriptor == nullptr || field.type() != gpb::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const std::string name = Join(path, descriptor->name());
    const std::string& payload = field.length_delimited();
    switch (descriptor->type()) {
      case gpb::FieldDescriptor::TYPE_STRING:
        if (!IsValidUtf8(payload)) return absl::StrCat(name, ": not valid UTF-8");
        break;
      case gpb::FieldDescriptor::TYPE_MESSAGE: {
        std::string inner = FindBadField(payload, *descriptor->message_type(), name, depth + 1);
        if (!inner.empty()) return inner;
        std::unique_ptr<gpb::Message> probe(
            gpb::MessageFactory::generated_factory()->GetPrototype(descriptor->message_type())->New());
        if (!probe->ParseFromString(payload)) return absl::StrCat(name, ": malformed message");
        break;
      }
      case gpb::FieldDescriptor::TYPE_BYTES:
        break;
      default:  // a packed repeated scalar
        if (descriptor->is_repeated() && !ValidPackedVarints(payload)) {
          return absl::StrCat(name, ": malformed packed values");
        }
    }
  }
  return "";
}

}  // namespace

void RouteProtobufLogsToDebug() {
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel level, const char* file, int line,
                                     const std::string& message) {
    if (level == google::protobuf::LOGLEVEL_FATAL) {
      spdlog::critical("protobuf {}:{}: {}", file, line, message);
      return;
    }
    spdlog::debug("protobuf {}:{}: {}", file, line, message);
  });
}

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int extra;
    uint32_t code;
    if ((c & 0xE0) == 0xC0) {
      extra = 1, code = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2, code = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3, code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= n) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (code < kMin[extra] || (code >= 0xD800 && code <= 0xDFFF) || code > 0x10FFFF) return false;
    i += extra + 1;
  }
  return true;
}

absl::Status ParseMessageBytes(std::string_view bytes, gpb::Message* message) {
  message->Clear();
  if (message->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return absl::OkStatus();
  message->Clear();
  const gpb::Descriptor& type = *message->GetDescriptor();
  const std::string bad = FindBadField(std::string(bytes), type, "", 0);
  if (!bad.empty()) return absl::InvalidArgumentError(absl::StrCat(bad, " (in the ", type.full_name(), " message)"));
  return absl::InvalidArgumentError(
      absl::StrCat("request: not a valid ", type.full_name(), " message (malformed protobuf encoding)"));
}

absl::Status ParseMessage(const grpc::ByteBuffer& buffer, gpb::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return absl::InvalidArgumentError("request: unreadable message");
  if (slices.size() == 1) {
    return ParseMessageBytes(std::string_view(reinterpret_cast<const char*>(slices[0].begin()), slices[0].size()),
                             message);
  }
  std::string bytes;
  bytes.reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  return ParseMessageBytes(bytes, message);
}

grpc::ByteBuffer SerializeMessage(const gpb::Message& message) {
  grpc::ByteBuffer buffer;
  bool own_buffer = false;
  // Fails only for messages over 2 GB, which the server never builds (max_message_bytes).
  (void)grpc::SerializationTraits<gpb::Message>::Serialize(message, &buffer, &own_buffer);
  return buffer;
}

}  // namespace squeezeserve::server
