#include "base/table_name.h"

#include <algorithm>
#include <cctype>

namespace pgderive {

TableName TableName::Parse(std::string_view text) {
  const size_t dot = text.find('.');
  if (dot == std::string_view::npos) return {"public", std::string(text)};
  return {std::string(text.substr(0, dot)), std::string(text.substr(dot + 1))};
}

std::optional<std::string> TableName::Problem(std::string_view text) {
  const size_t dot = text.find('.');
  const bool one_dot_at_most =
      dot == std::string_view::npos || text.find('.', dot + 1) == std::string_view::npos;
  const bool blank_or_quote = std::any_of(text.begin(), text.end(), [](char c) {
    return std::isspace(static_cast<unsigned char>(c)) || c == '"';
  });
  if (text.empty() || !one_dot_at_most || dot == 0 || dot + 1 == text.size() || blank_or_quote) {
    return "must be a table name, `table` or `schema.table` (unquoted)";
  }
  return std::nullopt;
}

std::string TableName::Quoted() const {
  return QuoteSqlIdentifier(schema) + "." + QuoteSqlIdentifier(name);
}

std::string QuoteSqlIdentifier(std::string_view identifier) {
  std::string out;
  out.reserve(identifier.size() + 2);
  out += '"';
  for (const char c : identifier) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace pgderive
