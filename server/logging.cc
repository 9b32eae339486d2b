#include "server/logging.h"

#include <atomic>
#include <chrono>
#include <regex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/ansicolor_sink.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace squeezeserve::server {
namespace {

std::atomic<LogFormat> current_format{LogFormat::kText};

// The native logger's messages arrive pre-parsed as "SRC\x1fMSG" so the JSON formatter can give the
// source its own field (spdlog 1.10 has no structured fields).
constexpr char kSourceSeparator = '\x1f';

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::ordered_json line;
    line["time"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromChrono(msg.time), absl::UTCTimeZone());
    const auto level = spdlog::level::to_string_view(msg.level);
    line["level"] = std::string(level.data(), level.size());
    line["logger"] = std::string(msg.logger_name.data(), msg.logger_name.size());
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    if (line["logger"] == kAccessLogger) {
      // Access lines are logged as a JSON object of their fields (AccessRecord).
      nlohmann::ordered_json fields = nlohmann::ordered_json::parse(payload, nullptr, /*allow_exceptions=*/false);
      if (fields.is_object()) {
        for (auto& [key, value] : fields.items()) line[key] = value;
      } else {
        line["msg"] = payload;
      }
    } else if (const size_t split = payload.find(kSourceSeparator); split != std::string_view::npos) {
      line["src"] = payload.substr(0, split);
      line["msg"] = payload.substr(split + 1);
    } else {
      line["msg"] = payload;
    }
    // Invalid UTF-8 from a library must not throw here: replace it.
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(std::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(absl::StrCat("--log_format must be text or json, got ", std::string(name)));
}

LogFormat CurrentLogFormat() { return current_format.load(); }

std::unique_ptr<spdlog::formatter> MakeJsonFormatter() { return std::make_unique<JsonFormatter>(); }

void ConfigureLogging(LogFormat format, spdlog::level::level_enum level, FILE* out) {
  current_format.store(format);
  spdlog::sink_ptr sink;
  if (format == LogFormat::kJson) {
    sink = std::make_shared<spdlog::sinks::stdout_sink_base<spdlog::details::console_mutex>>(out);
    sink->set_formatter(MakeJsonFormatter());
  } else {
    sink = std::make_shared<spdlog::sinks::ansicolor_sink<spdlog::details::console_mutex>>(out,
                                                                                           spdlog::color_mode::automatic);
    sink->set_formatter(std::make_unique<spdlog::pattern_formatter>("[%Y-%m-%d %H:%M:%S.%e] [%n] [%^%l%$] %v"));
  }
  spdlog::drop_all();
  for (const char* name : {"squeezeserve", kAccessLogger, kNativeLogger}) {
    auto logger = std::make_shared<spdlog::logger>(name, sink);
    logger->set_level(level);
    logger->flush_on(spdlog::level::warn);
    spdlog::register_logger(logger);
    if (std::string_view(name) == "squeezeserve") spdlog::set_default_logger(logger);
  }
}

NativeLine ParseNativeLine(std::string_view line) {
  // glog / gRPC: "W1204 10:00:00.123456 42 file.cc:12] msg"; c10 without glog: "[W file.cpp:12] msg" or
  // "[W1204 10:00:00.123456 42 file.cpp:12] msg".
  static const std::regex kPrefix(R"(^\[?([IWEF])(?:\d{4,8} [\d:.]+ +\d+)? ?([^\]\s]+:\d+)\] ?(.*)$)");
  NativeLine parsed;
  std::match_results<std::string_view::const_iterator> match;
  if (std::regex_match(line.begin(), line.end(), match, kPrefix)) {
    switch (match[1].str()[0]) {
      case 'I': parsed.level = spdlog::level::info; break;
      case 'W': parsed.level = spdlog::level::warn; break;
      case 'E': parsed.level = spdlog::level::err; break;
      default: parsed.level = spdlog::level::critical; break;
    }
    parsed.source = match[2].str();
    parsed.message = match[3].str();
  } else {
    parsed.message = std::string(line);
  }
  return parsed;
}

}  // namespace squeezeserve::server

namespace squeezeserve::server {

std::string NativePayload(const NativeLine& line) {
  if (line.source.empty()) return line.message;
  if (CurrentLogFormat() == LogFormat::kJson) return absl::StrCat(line.source, std::string(1, kSourceSeparator), line.message);
  return absl::StrCat(line.source, ": ", line.message);
}

}  // namespace squeezeserve::server
