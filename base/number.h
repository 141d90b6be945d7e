#pragma once

// Checked number parsing for text that comes from outside: the server's result rows and
// the user's configuration. The whole text must be the number (no blanks, no trailing
// characters, no sign on an unsigned type, nothing out of the type's range); anything
// else is an Error, never an exception and never a silent zero. The error is permanent
// by default; a caller reading the server's own output passes ErrorKind::kCorrupt.

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "base/status.h"

namespace pgderive {

namespace number_detail {
// What the error message shows of the text: enough to find it, never a whole document.
std::string Excerpt(std::string_view text);
}  // namespace number_detail

template <typename T>
Result<T> ParseNumber(std::string_view text, ErrorKind kind = ErrorKind::kPermanent) {
  T value{};
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    const char* what = ec == std::errc::result_out_of_range ? " is out of range for " : " is not ";
    const char* type = std::is_floating_point_v<T> ? "a number"
                       : std::is_signed_v<T>       ? "a whole number"
                                                   : "a whole number from 0";
    return Error(kind, "'" + number_detail::Excerpt(text) + "'" + what + type);
  }
  return value;
}

inline Result<int64_t> ParseInt64(std::string_view text, ErrorKind kind = ErrorKind::kPermanent) {
  return ParseNumber<int64_t>(text, kind);
}
inline Result<uint64_t> ParseUint64(std::string_view text, ErrorKind kind = ErrorKind::kPermanent) {
  return ParseNumber<uint64_t>(text, kind);
}
inline Result<int32_t> ParseInt32(std::string_view text, ErrorKind kind = ErrorKind::kPermanent) {
  return ParseNumber<int32_t>(text, kind);
}
inline Result<uint32_t> ParseUint32(std::string_view text, ErrorKind kind = ErrorKind::kPermanent) {
  return ParseNumber<uint32_t>(text, kind);
}
inline Result<double> ParseDouble(std::string_view text, ErrorKind kind = ErrorKind::kPermanent) {
  return ParseNumber<double>(text, kind);
}

// A nullable value in the server's text output: `if_null` when NULL, else the number. A
// text that is not one is corrupt: the server wrote something pgderive did not ask for.
template <typename T>
Result<T> ParseServerNumber(const std::optional<std::string>& text, T if_null = T{}) {
  if (!text) return if_null;
  return ParseNumber<T>(*text, ErrorKind::kCorrupt);
}

}  // namespace pgderive
