// The server's log output: one sink, text or JSON lines (--log_format), shared by three loggers:
//   squeezeserve  the server's and the engine's own lines (the default logger)
//   access        one line per finished RPC (server/access_log.h)
//   native        lines that libraries print on stderr themselves: libtorch's glog/c10 messages,
//                 gRPC's, sentencepiece's (server/native_log_capture.h)
// In JSON every line is one object: {"time","level","logger","msg"}; an access line carries its fields
// instead of "msg", a native line its source location as "src" when the library printed one.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "spdlog/spdlog.h"

namespace squeezeserve::server {

enum class LogFormat { kText, kJson };
absl::StatusOr<LogFormat> ParseLogFormat(std::string_view name);
LogFormat CurrentLogFormat();

inline constexpr char kAccessLogger[] = "access";
inline constexpr char kNativeLogger[] = "native";

// Replaces the default logger with "squeezeserve" and registers "access" and "native", all writing to
// `out` (stderr, or the saved stderr while native output is captured) at `level`.
void ConfigureLogging(LogFormat format, spdlog::level::level_enum level, FILE* out);

// A line a library wrote on stderr, taken apart: glog and gRPC ("W1204 10:00:00.123456  42 file.cc:12]
// msg"), c10 without glog ("[W file.cpp:12] msg"); anything else is kept whole at warn.
struct NativeLine {
  spdlog::level::level_enum level = spdlog::level::warn;
  std::string source;  // "file.cc:12", or empty
  std::string message;
};
NativeLine ParseNativeLine(std::string_view line);
// The native logger's message for `line` in the current format (JSON: the source becomes "src").
std::string NativePayload(const NativeLine& line);

// spdlog formatter for --log_format json, exposed for tests.
std::unique_ptr<spdlog::formatter> MakeJsonFormatter();

}  // namespace squeezeserve::server
