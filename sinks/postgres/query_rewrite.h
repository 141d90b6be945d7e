#pragma once

// Just enough SQL lexing to point a view's query at other tables: the mirror tables of
// the target database instead of the source tables, or a handful of changed rows
// instead of a whole table. Pure (no libpq), unit-tested.
//
// A table is recognised where the query names it as `schema.table` (each part plain
// or "quoted"), or as a bare `table` right after FROM or JOIN. String literals
// ('...', E'...', $tag$...$tag$), quoted identifiers and comments are skipped.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pgderive {

struct SqlToken {
  enum class Kind { kWord, kQuotedName, kString, kNumber, kSymbol };
  Kind kind;
  std::string text;  // a word lower-cased; a quoted name without its quotes
  size_t begin = 0;  // byte range in the query
  size_t end = 0;
};

// Comments and whitespace are dropped. An unterminated literal or comment is an error.
Result<std::vector<SqlToken>> LexSql(std::string_view query);

struct QueryRewrite {
  // "schema.table" -> the SQL that replaces each reference (a table name or a
  // parenthesised subquery). An alias the query gives is kept; a reference without
  // one gets the table's name as alias, so `table.column` still resolves.
  std::map<std::string, std::string> replacements;
  // For this table, a LEFT [OUTER] JOIN that leads to it becomes an inner JOIN
  // (restricting the view to rows that involve the given rows of that table).
  std::optional<std::string> inner_join_to;
};

// `default_schema` qualifies bare names. Returns the rewritten query.
Result<std::string> RewriteQuery(std::string_view query, const QueryRewrite& rewrite,
                                 const std::string& default_schema = "public");

// Why a query cannot be maintained incrementally (a window function, LIMIT/OFFSET,
// RIGHT or FULL JOIN, a set operation), or nullopt. Functions are checked separately
// against the catalog (volatility).
std::optional<std::string> UnsupportedConstruct(std::string_view query);

// Names followed by '(' - candidate function calls, lower-cased.
std::vector<std::string> CalledFunctions(std::string_view query);

// `name` as a quoted SQL identifier ("a""b"); what PQescapeIdentifier makes of it, with
// no connection needed.
std::string QuoteIdent(std::string_view name);
// "schema.table" as configured -> "schema"."table".
std::string QuoteTable(std::string_view table);
// The names quoted, each after `prefix` ("t."), joined by ", ".
std::string QuotedList(const std::vector<std::string>& names, const std::string& prefix = "");

}  // namespace pgderive
