#include "server/status_map.h"

#include <gtest/gtest.h>

namespace squeezeserve::server {
namespace {

TEST(StatusMap, MapsEveryCanonicalCodeOneToOne) {
  for (int code = 0; code <= 16; ++code) {
    absl::Status status(static_cast<absl::StatusCode>(code), code == 0 ? "" : "why");
    grpc::Status mapped = ToGrpcStatus(status);
    EXPECT_EQ(static_cast<int>(mapped.error_code()), code);
    if (code != 0) EXPECT_EQ(mapped.error_message(), "why");
  }
}

TEST(StatusMap, EngineErrorsKeepTheirMeaning) {
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("context_id: no context \"x\"")).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("sampling.top_p")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(absl::DataLossError("checksum")).error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(ToGrpcCode(static_cast<absl::StatusCode>(99)), grpc::StatusCode::UNKNOWN);
}

TEST(StatusCounter, CountsPerMethodAndCode) {
  StatusCounter counter;
  counter.Count("Generate", grpc::StatusCode::OK);
  counter.Count("Generate", grpc::StatusCode::OK);
  counter.Count("Generate", grpc::StatusCode::NOT_FOUND);
  counter.Count("GetContext", grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(counter.Get("Generate", grpc::StatusCode::OK), 2);
  EXPECT_EQ(counter.Get("Generate", grpc::StatusCode::NOT_FOUND), 1);
  EXPECT_EQ(counter.Get("Generate", grpc::StatusCode::INTERNAL), 0);
  auto snapshot = counter.Snapshot();
  EXPECT_EQ((snapshot[{"GetContext", "NOT_FOUND"}]), 1);
}

}  // namespace
}  // namespace squeezeserve::server
