// grpc.reflection.v1.ServerReflection: what grpcurl, Postman and current gRPC tools ask first. gRPC 1.51
// (Debian 12) ships only the v1alpha service (registered too, for older tools); this serves the same
// answers under v1 from the process's generated descriptor pool.
#pragma once

#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace squeezeserve::server {

class ReflectionV1Service final : public grpc::reflection::v1::ServerReflection::Service {
 public:
  // `services`: full names of the services the server exposes (list_services answers them).
  explicit ReflectionV1Service(std::vector<std::string> services);

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<grpc::reflection::v1::ServerReflectionResponse,
                               grpc::reflection::v1::ServerReflectionRequest>* stream) override;

 private:
  const std::vector<std::string> services_;
};

// Full names of the standard services every squeezeserve exposes besides its own API.
std::vector<std::string> StandardServiceNames();

}  // namespace squeezeserve::server
