#include "config/grammar.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <regex>
#include <string_view>

#include "config/config.h"

namespace pgderive {

bool IsIdentifier(const std::string& text) {
  static const std::regex kIdentifier("[a-z_][a-z0-9_]*");
  return std::regex_match(text, kIdentifier);
}

// "products" -> "public.products"; "sales.orders" stays.
std::string Qualify(const std::string& table) {
  return table.find('.') == std::string::npos ? "public." + table : table;
}

// `table` or `schema.table`, unquoted names: why not, or nullopt.
std::optional<std::string> TableNameProblem(const std::string& text) {
  const size_t dot = text.find('.');
  const bool ok =
      !text.empty() && text.find('.', dot == std::string::npos ? 0 : dot + 1) == std::string::npos;
  if (!ok || dot == 0 || dot + 1 == text.size() ||
      std::any_of(text.begin(), text.end(),
                  [](char c) { return std::isspace(static_cast<unsigned char>(c)) || c == '"'; })) {
    return "must be a table name, `table` or `schema.table` (unquoted)";
  }
  return std::nullopt;
}

// A Redis key template: literal text and {column}s, at least one column, braces
// balanced. Why not, or nullopt. (sinks/common's KeyTemplate parses it the same way.)
std::optional<std::string> KeyTemplateProblem(const std::string& text, std::string* prefix) {
  bool column = false;
  size_t open = std::string::npos;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '{') {
      if (open != std::string::npos) return "has a '{' inside a {column}; braces must balance";
      open = i;
    } else if (text[i] == '}') {
      if (open == std::string::npos) return "has a '}' without its '{'; braces must balance";
      if (i == open + 1) return "has an empty {}; write the column's name between the braces";
      open = std::string::npos;
      column = true;
    }
  }
  if (open != std::string::npos) return "has a '{' that is never closed; braces must balance";
  if (!column) {
    return "names no {column}: every row would share one key (e.g. \"product:{id}\")";
  }
  *prefix = text.substr(0, text.find('{'));
  return std::nullopt;
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
  const std::string port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(c); })) {
    return false;
  }
  const long value = std::stol(port);
  return value >= 1 && value <= 65535;
}

std::optional<long long> ParseInteger(const std::string& text, long long min, long long max) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (*end != '\0' || errno != 0 || value < min || value > max) return std::nullopt;
  return value;
}

std::optional<uint64_t> ParseByteSize(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 19) return std::nullopt;
  const uint64_t number = std::stoull(text.substr(0, digits));
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

}  // namespace pgderive
