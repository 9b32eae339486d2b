#include "server/reflection_v1.h"

#include <set>
#include <utility>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include "grpc/health/v1/health.pb.h"

namespace squeezeserve::server {
namespace {

namespace pb = grpc::reflection::v1;
using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

// Adds `file` and, first, every file it imports that this stream has not sent yet: a client builds
// its own pool from the answers and needs the dependencies before the file.
void AddFileAndDependencies(const FileDescriptor* file, std::set<std::string>* sent,
                            pb::FileDescriptorResponse* response) {
  if (!sent->insert(file->name()).second) return;
  for (int i = 0; i < file->dependency_count(); ++i) AddFileAndDependencies(file->dependency(i), sent, response);
  google::protobuf::FileDescriptorProto proto;
  file->CopyTo(&proto);
  proto.SerializeToString(response->add_file_descriptor_proto());
}

void SetError(pb::ServerReflectionResponse* response, grpc::StatusCode code, const std::string& message) {
  response->mutable_error_response()->set_error_code(static_cast<int>(code));
  response->mutable_error_response()->set_error_message(message);
}

}  // namespace

std::vector<std::string> StandardServiceNames() {
  // The health service's descriptor is linked through health.pb.cc; naming a message of it here keeps
  // the linker from dropping that object file (it registers the descriptor from a static initializer).
  return {grpc::health::v1::HealthCheckRequest::descriptor()->file()->service(0)->full_name(),
          pb::ServerReflection::service_full_name(), "grpc.reflection.v1alpha.ServerReflection"};
}

ReflectionV1Service::ReflectionV1Service(std::vector<std::string> services) : services_(std::move(services)) {}

grpc::Status ReflectionV1Service::ServerReflectionInfo(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<pb::ServerReflectionResponse, pb::ServerReflectionRequest>* stream) {
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  std::set<std::string> sent;  // files already sent on this stream
  pb::ServerReflectionRequest request;
  while (!context->IsCancelled() && stream->Read(&request)) {
    pb::ServerReflectionResponse response;
    response.set_valid_host(request.host());
    *response.mutable_original_request() = request;
    switch (request.message_request_case()) {
      case pb::ServerReflectionRequest::kListServices:
        for (const std::string& name : services_) response.mutable_list_services_response()->add_service()->set_name(name);
        break;
      case pb::ServerReflectionRequest::kFileByFilename:
        if (const FileDescriptor* file = pool->FindFileByName(request.file_by_filename())) {
          AddFileAndDependencies(file, &sent, response.mutable_file_descriptor_response());
        } else {
          SetError(&response, grpc::StatusCode::NOT_FOUND, "file not found: " + request.file_by_filename());
        }
        break;
      case pb::ServerReflectionRequest::kFileContainingSymbol:
        if (const FileDescriptor* file = pool->FindFileContainingSymbol(request.file_containing_symbol())) {
          AddFileAndDependencies(file, &sent, response.mutable_file_descriptor_response());
        } else {
          SetError(&response, grpc::StatusCode::NOT_FOUND, "symbol not found: " + request.file_containing_symbol());
        }
        break;
      case pb::ServerReflectionRequest::kFileContainingExtension: {
        const auto& wanted = request.file_containing_extension();
        const auto* type = pool->FindMessageTypeByName(wanted.containing_type());
        const auto* extension = type == nullptr ? nullptr : pool->FindExtensionByNumber(type, wanted.extension_number());
        if (extension != nullptr) {
          AddFileAndDependencies(extension->file(), &sent, response.mutable_file_descriptor_response());
        } else {
          SetError(&response, grpc::StatusCode::NOT_FOUND, "extension not found");
        }
        break;
      }
      case pb::ServerReflectionRequest::kAllExtensionNumbersOfType:
        if (const auto* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type())) {
          std::vector<const google::protobuf::FieldDescriptor*> extensions;
          pool->FindAllExtensions(type, &extensions);
          auto* numbers = response.mutable_all_extension_numbers_response();
          numbers->set_base_type_name(type->full_name());
          for (const auto* extension : extensions) numbers->add_extension_number(extension->number());
        } else {
          SetError(&response, grpc::StatusCode::NOT_FOUND, "type not found: " + request.all_extension_numbers_of_type());
        }
        break;
      case pb::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
        SetError(&response, grpc::StatusCode::INVALID_ARGUMENT, "message_request: none of its fields is set");
        break;
    }
    if (!stream->Write(response)) break;
  }
  return grpc::Status::OK;
}

}  // namespace squeezeserve::server
