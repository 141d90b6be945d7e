#include "config/dsn.h"

#include <libpq-fe.h>

#include <cctype>
#include <memory>

#include "base/number.h"
#include "base/redact.h"
#include "config/url.h"

namespace pgderive {
namespace {

struct ConninfoDeleter {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};

bool IsIdentifier(std::string_view text) {
  if (text.empty()) return false;
  for (const char c : text) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// True when `word` occurs in `dsn` as a key: followed, after spaces, by '='.
bool IsKeyIn(std::string_view dsn, std::string_view word) {
  for (size_t at = dsn.find(word); at != std::string_view::npos; at = dsn.find(word, at + 1)) {
    size_t next = at + word.size();
    while (next < dsn.size() && dsn[next] == ' ') ++next;
    if (next < dsn.size() && dsn[next] == '=') return true;
  }
  return false;
}

// libpq's parse errors quote pieces of the string ("missing "=" after "x"", "invalid
// percent-encoded token: "..."") and a piece may be part of a password. A quoted piece is
// kept only when it is a key of the string (an option name, never a value) or "=".
std::string SafeParseError(std::string message, std::string_view dsn) {
  while (!message.empty() && std::isspace(static_cast<unsigned char>(message.back()))) {
    message.pop_back();
  }
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t open = message.find('"', pos);
    const size_t close = open == std::string::npos ? open : message.find('"', open + 1);
    if (close == std::string::npos) break;
    const std::string_view piece = std::string_view(message).substr(open + 1, close - open - 1);
    out.append(message, pos, open - pos);
    const bool keep = piece == "=" || (IsIdentifier(piece) && IsKeyIn(dsn, piece));
    out += keep ? "\"" + std::string(piece) + "\"" : std::string("\"...\"");
    pos = close + 1;
  }
  out.append(message, pos);
  return RedactSecrets(out);
}

bool IsUri(std::string_view dsn) {
  return dsn.starts_with("postgresql://") || dsn.starts_with("postgres://");
}

}  // namespace

std::optional<std::string> DsnProblem(std::string_view dsn) {
  if (dsn.empty()) return "is empty";
  const std::string text(dsn);
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoDeleter> options(PQconninfoParse(text.c_str(), &error));
  if (options == nullptr) {
    std::string message = error != nullptr ? error : "out of memory";
    if (error != nullptr) PQfreemem(error);
    if (IsUri(dsn)) {
      // libcurl's reasons name the part at fault and never echo the URI.
      std::string why;
      if (!Url::Parse(dsn, &why)) return "is not a valid postgresql:// URI: " + why;
    }
    return "does not parse as a libpq connection string: " + SafeParseError(message, dsn);
  }
  std::string host, hostaddr, port;
  for (const PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
    const std::string_view keyword = option->keyword;
    const std::string value = option->val != nullptr ? option->val : "";
    if (keyword == "host") host = value;
    if (keyword == "hostaddr") hostaddr = value;
    if (keyword == "port") port = value;
  }
  if (host.empty() && hostaddr.empty()) {
    return "has no host (e.g. postgresql://user@HOST:5432/db or host=HOST dbname=db)";
  }
  // libpq takes a comma-separated port per host and checks them only when connecting.
  size_t start = 0;
  while (!port.empty() && start <= port.size()) {
    size_t end = port.find(',', start);
    if (end == std::string::npos) end = port.size();
    const std::string one = port.substr(start, end - start);
    if (!one.empty()) {
      auto value = ParseNumber<uint16_t>(one);
      if (!value.ok() || value.value() < 1) {
        return std::string("has a port that is not a number from 1 to 65535");
      }
    }
    start = end + 1;
  }
  return std::nullopt;
}

}  // namespace pgderive
