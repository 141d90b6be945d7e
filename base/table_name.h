#pragma once

// A table as the configuration names it: `table` or `schema.table`, unquoted, no dot
// meaning the public schema. Every layer that turns such a name into its parts or into
// SQL text goes through here, so that "sales.orders" means the same table to validate,
// the publication, the snapshot and every store.

#include <compare>
#include <optional>
#include <string>
#include <string_view>

namespace pgderive {

struct TableName {
  std::string schema;
  std::string name;

  // "schema.table" -> {schema, table}, split at the first dot; "table" -> {public, table}.
  // The text is taken as written (configuration names are unquoted; config/ refuses
  // quotes, blanks and a second dot, see Problem).
  static TableName Parse(std::string_view text);
  // Why `text` is not `table` or `schema.table` with unquoted names, or nullopt.
  static std::optional<std::string> Problem(std::string_view text);

  // schema.table, as the configuration, the catalog queries and the logs write it.
  std::string Qualified() const { return schema + "." + name; }
  // "schema"."table": each part an SQL identifier (see QuoteSqlIdentifier).
  std::string Quoted() const;

  auto operator<=>(const TableName&) const = default;
};

// `identifier` between double quotes, an embedded double quote doubled: SQL's quoted
// identifier, the same text PQescapeIdentifier writes for valid UTF-8.
std::string QuoteSqlIdentifier(std::string_view identifier);

// "products" -> "public.products"; "sales.orders" stays.
inline std::string QualifyTableName(std::string_view text) {
  return TableName::Parse(text).Qualified();
}

}  // namespace pgderive
