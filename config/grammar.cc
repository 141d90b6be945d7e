#include "config/grammar.h"

#include <algorithm>
#include <cctype>
#include <regex>
#include <string_view>

#include "base/number.h"
#include "base/table_name.h"
#include "config/config.h"

namespace pgderive {

bool IsIdentifier(const std::string& text) {
  static const std::regex kIdentifier("[a-z_][a-z0-9_]*");
  return std::regex_match(text, kIdentifier);
}

// "products" -> "public.products"; "sales.orders" stays (base/table_name.h).
std::string Qualify(const std::string& table) { return QualifyTableName(table); }

// `table` or `schema.table`, unquoted names: why not, or nullopt (base/table_name.h).
std::optional<std::string> TableNameProblem(const std::string& text) {
  return TableName::Problem(text);
}

// OpenSearch's rules for index names (the REST API refuses the rest).
std::optional<std::string> IndexNameProblem(const std::string& index) {
  if (index == "pgderive-checkpoints") return "is pgderive's own checkpoint index";
  if (index == "." || index == ".." || index.size() > 255 || index.front() == '_' ||
      index.front() == '-' || index.front() == '+' ||
      std::any_of(index.begin(), index.end(), [](char c) {
        return std::isupper(static_cast<unsigned char>(c)) ||
               std::isspace(static_cast<unsigned char>(c)) ||
               std::string_view("\\/*?\"<>|,#:").find(c) != std::string_view::npos;
      })) {
    return "is not a valid OpenSearch index name: lower-case, not starting with _ - +, none "
           "of \\ / * ? \" < > | , # : or spaces";
  }
  return std::nullopt;
}

// HOST:PORT ([v6]:PORT), port 1-65535.
bool IsListenAddress(const std::string& text) {
  size_t colon;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close == 1 || close + 1 >= text.size() ||
        text[close + 1] != ':') {
      return false;
    }
    colon = close + 1;
  } else {
    colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0 || text.find(':') != colon) return false;
  }
  auto port = ParseNumber<uint16_t>(std::string_view(text).substr(colon + 1));
  return port.ok() && port.value() >= 1;
}

std::optional<long long> ParseInteger(const std::string& text, long long min, long long max) {
  auto value = ParseNumber<long long>(text);
  if (!value.ok() || value.value() < min || value.value() > max) return std::nullopt;
  return value.value();
}

std::string FormatByteSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (unit < 4 && bytes >= (uint64_t{1} << (10 * (unit + 1)))) ++unit;
  const uint64_t scale = uint64_t{1} << (10 * unit);
  if (bytes % scale == 0) return std::to_string(bytes / scale) + kUnits[unit];
  // One decimal, rounded down (never more than the size).
  const uint64_t tenths = bytes / scale * 10 + bytes % scale * 10 / scale;
  if (tenths % 10 == 0) return std::to_string(tenths / 10) + kUnits[unit];
  return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + kUnits[unit];
}

std::optional<uint64_t> ParseByteSize(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 19) return std::nullopt;
  auto parsed = ParseUint64(std::string_view(text).substr(0, digits));
  if (!parsed.ok()) return std::nullopt;
  const uint64_t number = parsed.value();
  size_t unit_start = digits;
  while (unit_start < text.size() && text[unit_start] == ' ') ++unit_start;
  std::string unit = text.substr(unit_start);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  int shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else if (unit == "kb") {
    shift = 10;
  } else if (unit == "mb") {
    shift = 20;
  } else if (unit == "gb") {
    shift = 30;
  } else if (unit == "tb") {
    shift = 40;
  } else {
    return std::nullopt;
  }
  if (shift > 0 && number > (UINT64_MAX >> shift)) return std::nullopt;
  return number << shift;
}

std::optional<uint64_t> ParseDuration(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 12) return std::nullopt;
  auto parsed = ParseUint64(std::string_view(text).substr(0, digits));
  if (!parsed.ok()) return std::nullopt;
  const std::string unit = text.substr(digits);
  uint64_t scale = 0;
  if (unit.empty() || unit == "s") {
    scale = 1;
  } else if (unit == "m") {
    scale = 60;
  } else if (unit == "h") {
    scale = 3600;
  } else if (unit == "d") {
    scale = 86400;
  } else {
    return std::nullopt;
  }
  const uint64_t seconds = parsed.value() * scale;
  if (seconds > uint64_t{10} * 366 * 86400) return std::nullopt;
  return seconds;
}

}  // namespace pgderive
