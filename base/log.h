#pragma once

// Structured logs (issue 5): one line per notable event, as JSON lines (the default) or
// logfmt for a terminal, with a level, the message and fields such as slot, lsn, view
// and store. Every message and field value goes through RedactSecrets: no password,
// token or full DSN reaches a log line.
//
// One Logger per process, made from the configuration and handed to whatever logs; it
// is thread-safe and writes each line with one call.

#include <cstdio>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>

namespace pgderive {

enum class LogFormat { kJson, kLogfmt };
enum class LogLevel { kDebug, kInfo, kWarn, kError };

struct LogConfig {
  LogFormat format = LogFormat::kJson;
  LogLevel level = LogLevel::kInfo;
};

// Appends `value` with backslash, double quote and newline escaped as \\, \" and \n
// (logfmt values and Prometheus label values share this escaping).
void AppendBackslashEscaped(std::string& out, std::string_view value);

struct LogField {
  std::string_view key;
  std::string value;
};

class Logger {
 public:
  explicit Logger(LogConfig config = {}, std::FILE* out = stderr) : config_(config), out_(out) {}

  void Write(LogLevel level, std::string_view message, std::initializer_list<LogField> fields = {});
  void Debug(std::string_view message, std::initializer_list<LogField> fields = {}) {
    Write(LogLevel::kDebug, message, fields);
  }
  void Info(std::string_view message, std::initializer_list<LogField> fields = {}) {
    Write(LogLevel::kInfo, message, fields);
  }
  void Warn(std::string_view message, std::initializer_list<LogField> fields = {}) {
    Write(LogLevel::kWarn, message, fields);
  }
  void Error(std::string_view message, std::initializer_list<LogField> fields = {}) {
    Write(LogLevel::kError, message, fields);
  }

  // The line Write would print (without the newline), for tests.
  std::string Format(LogLevel level, std::string_view message,
                     std::initializer_list<LogField> fields) const;

 private:
  LogConfig config_;
  std::FILE* out_;
  std::mutex mutex_;
};

}  // namespace pgderive
