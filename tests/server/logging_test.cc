// Log output: native stderr lines parsed and routed into the logger, JSON lines, access records.
#include "server/logging.h"

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/access_log.h"
#include "server/native_log_capture.h"

namespace squeezeserve::server {
namespace {

std::string ReadAll(FILE* file) {
  std::fflush(file);
  std::rewind(file);
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
  return text;
}

std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    lines.push_back(nlohmann::json::parse(line));  // throws (fails the test) on a non-JSON line
  }
  return lines;
}

TEST(NativeLine, ParsesGlogGrpcAndC10Prefixes) {
  NativeLine glog = ParseNativeLine("W20261204 06:30:35.389045 32551 TensorAdvancedIndexing.cpp:1615] Warning: beta");
  EXPECT_EQ(glog.level, spdlog::level::warn);
  EXPECT_EQ(glog.source, "TensorAdvancedIndexing.cpp:1615");
  EXPECT_EQ(glog.message, "Warning: beta");
  NativeLine grpc = ParseNativeLine("E1204 06:30:35.389045000   77 chttp2_server.cc:1046] bind failed");
  EXPECT_EQ(grpc.level, spdlog::level::err);
  EXPECT_EQ(grpc.source, "chttp2_server.cc:1046");
  NativeLine c10 = ParseNativeLine("[I ProcessGroup.cpp:12] hello");
  EXPECT_EQ(c10.level, spdlog::level::info);
  EXPECT_EQ(c10.message, "hello");
  NativeLine fatal = ParseNativeLine("F1204 06:30:35.389045 1 check.cc:9] Check failed: x");
  EXPECT_EQ(fatal.level, spdlog::level::critical);
  NativeLine plain = ParseNativeLine("WARNING: Logging before InitGoogleLogging() is written to STDERR");
  EXPECT_EQ(plain.level, spdlog::level::warn);
  EXPECT_EQ(plain.source, "");
  EXPECT_EQ(plain.message, "WARNING: Logging before InitGoogleLogging() is written to STDERR");
}

TEST(NativeLogCapture, LibraryLinesOnStderrBecomeJsonRecords) {
  FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    absl::StatusOr<std::unique_ptr<NativeLogCapture>> capture = NativeLogCapture::Start();
    ASSERT_TRUE(capture.ok()) << capture.status();
    EXPECT_FALSE(NativeLogCapture::Start().ok());  // one per process
    ConfigureLogging(LogFormat::kJson, spdlog::level::info, out);
    spdlog::info("own line");
    const std::string library = "W1204 10:00:00.123456 42 alloc.cc:7] \"quoted\" warning\nplain line\nno newline";
    ASSERT_EQ(write(STDERR_FILENO, library.data(), library.size()), static_cast<ssize_t>(library.size()));
    std::fprintf(stderr, "\n");
  }  // the capture's end logs what is still in the pipe
  const std::vector<nlohmann::json> lines = JsonLines(ReadAll(out));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["logger"], "squeezeserve");
  EXPECT_EQ(lines[0]["msg"], "own line");
  EXPECT_EQ(lines[1]["logger"], "native");
  EXPECT_EQ(lines[1]["level"], "warning");
  EXPECT_EQ(lines[1]["src"], "alloc.cc:7");
  EXPECT_EQ(lines[1]["msg"], "\"quoted\" warning");
  EXPECT_EQ(lines[2]["msg"], "plain line");
  EXPECT_EQ(lines[3]["msg"], "no newline");
  for (const auto& line : lines) EXPECT_TRUE(line.contains("time"));
  // stderr is the real one again.
  EXPECT_NE(NativeLogCapture::Start().ok(), false) << "a capture can start again after the first ended";
  std::fclose(out);
}

TEST(AccessRecord, JsonLinesCarryTheFields) {
  FILE* out = std::tmpfile();
  ConfigureLogging(LogFormat::kJson, spdlog::level::info, out);
  AccessRecord record;
  record.method = "/squeezeserve.v1.Squeezeserve/Generate";
  record.code = "OK";
  record.duration_ms = 12.5;
  record.peer = "ipv4:127.0.0.1:1234";
  record.context_id = "doc";
  record.prompt_tokens = 4;
  record.completion_tokens = 16;
  spdlog::get(kAccessLogger)->info("{}", record.ToJson());
  const std::vector<nlohmann::json> lines = JsonLines(ReadAll(out));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["logger"], "access");
  EXPECT_EQ(lines[0]["method"], "/squeezeserve.v1.Squeezeserve/Generate");
  EXPECT_EQ(lines[0]["code"], "OK");
  EXPECT_EQ(lines[0]["completion_tokens"], 16);
  EXPECT_FALSE(lines[0].contains("msg"));
  EXPECT_EQ(record.ToText(),
            "Generate OK 12.5 ms peer=ipv4:127.0.0.1:1234 context=doc prompt_tokens=4 completion_tokens=16");
  std::fclose(out);
}

}  // namespace
}  // namespace squeezeserve::server
