#include "base/log.h"

#include <chrono>
#include <ctime>

#include "base/json_text.h"
#include "base/redact.h"

namespace pgderive {
namespace {

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

// 2026-11-22T03:04:05.678Z
std::string Now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(millis));
  return buffer;
}

// logfmt: bare when it can be, else quoted with \" and \\ escaped.
void AppendLogfmtValue(std::string& out, std::string_view value) {
  bool bare = !value.empty();
  for (char c : value) {
    bare = bare && c > ' ' && c != '"' && c != '=' && c != '\\' && c != 0x7f;
  }
  if (bare) {
    out += value;
    return;
  }
  out += '"';
  AppendBackslashEscaped(out, value);
  out += '"';
}

}  // namespace

void AppendBackslashEscaped(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

std::string Logger::Format(LogLevel level, std::string_view message,
                           std::initializer_list<LogField> fields) const {
  std::string line;
  const std::string time = Now();
  if (config_.format == LogFormat::kJson) {
    line += "{\"ts\":\"" + time + "\",\"level\":\"" + LevelName(level) + "\",\"msg\":";
    AppendJsonString(line, RedactSecrets(message));
    for (const LogField& f : fields) {
      line += ',';
      AppendJsonString(line, f.key);
      line += ':';
      AppendJsonString(line, RedactSecrets(f.value));
    }
    line += '}';
  } else {
    line += "ts=" + time + " level=" + LevelName(level) + " msg=";
    AppendLogfmtValue(line, RedactSecrets(message));
    for (const LogField& f : fields) {
      line += ' ';
      line += f.key;
      line += '=';
      AppendLogfmtValue(line, RedactSecrets(f.value));
    }
  }
  return line;
}

void Logger::Write(LogLevel level, std::string_view message,
                   std::initializer_list<LogField> fields) {
  if (level < config_.level) return;
  std::string line = Format(level, message, fields);
  line += '\n';
  std::lock_guard lock(mutex_);
  std::fputs(line.c_str(), out_);
  std::fflush(out_);
}

}  // namespace pgderive
