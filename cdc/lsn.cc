#include "cdc/lsn.h"

#include <cstdio>

namespace pgderive {
namespace {

// Parses 1-8 hex digits into *out; false on anything else.
bool ParseHexHalf(std::string_view text, uint32_t* out) {
  if (text.empty() || text.size() > 8) return false;
  uint32_t value = 0;
  for (char c : text) {
    uint32_t digit;
    if (c >= '0' && c <= '9') {
      digit = static_cast<uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      digit = static_cast<uint32_t>(c - 'A' + 10);
    } else {
      return false;
    }
    value = (value << 4) | digit;
  }
  *out = value;
  return true;
}

}  // namespace

std::optional<Lsn> Lsn::Parse(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  uint32_t hi = 0;
  uint32_t lo = 0;
  if (!ParseHexHalf(text.substr(0, slash), &hi) || !ParseHexHalf(text.substr(slash + 1), &lo)) {
    return std::nullopt;
  }
  return Lsn{(static_cast<uint64_t>(hi) << 32) | lo};
}

std::string Lsn::ToString() const {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<uint32_t>(value >> 32),
                static_cast<uint32_t>(value));
  return buf;
}

}  // namespace pgderive
