#pragma once

// Query-plan analysis: what a view's query reads and whether pgderive can maintain it
// incrementally, judged before anything is created in the target database.
//
//   query text ──LexSql──> constructs refused (UnsupportedConstruct, query_rewrite.h)
//        │                 names the query writes (QueryNames) ─────────┐
//        ├──catalog──────> functions whose result can change (ChangingFunctions)
//        └──EXPLAIN (VERBOSE, FORMAT JSON)──> QueryPlan                 │
//                 │  scans ─── partition ancestors (I/O) ── NearestNamed ─> source tables
//                 │  scans × expressions ── generated columns (I/O) ── FirstColumnRead
//                 └─ plan of `select <view key> from (query)` ── KeyPassThrough
//                      ─> the view key is the table's key: changed keys = affected keys
//
// The pure core (ParsePlan, MentionsReference, FirstColumnRead, NearestNamed,
// KeyPassThrough, LookupColumns) takes text and returns values; it is unit-tested with
// captured EXPLAIN output (tests/unit/sinks/postgres/query_plan_test.cc). The rest reads
// the source's catalog through the caller's session (values bound as parameters) and
// returns its errors unprefixed: the caller names the view. ChangingFunctions and
// CheckGeneratedColumns take the session the pipeline resolves with (the first opens
// and rolls back a transaction on it; the second reads through cdc/publication).

#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "cdc/sql_session.h"

namespace pgderive {

// ---- Pure core ------------------------------------------------------------------------

// A scan of a table in a plan: its alias and the table as the plan names it.
struct PlanScan {
  std::string alias;
  std::string table;  // schema.table
};

// What an EXPLAIN (VERBOSE, FORMAT JSON) plan says about a query.
struct QueryPlan {
  std::vector<std::string> relations;  // the tables it scans, each once, in plan order
  std::vector<PlanScan> scans;         // every scan, in plan order
  // Every expression the plan holds (outputs, filters, conditions, keys).
  std::vector<std::string> expressions;
};

// Text that is not JSON gives an empty plan.
QueryPlan ParsePlan(std::string_view explain_json);

// Whether `text` holds the column reference `ref` (`alias.column` as EXPLAIN VERBOSE
// writes it) as a whole, not as part of a longer name.
bool MentionsReference(const std::string& text, const std::string& ref);

// The first of `columns` (in their order) that an expression of `plan` reads through
// `scan`; nullopt when none. EXPLAIN qualifies columns by their scan's alias, except in a
// plan of one scan.
std::optional<size_t> FirstColumnRead(const QueryPlan& plan, const PlanScan& scan,
                                      const std::vector<std::string>& columns);

// The words and quoted names a query writes (lexed; empty when it does not lex).
std::set<std::string> QueryNames(std::string_view query);

// Of a scanned table's partition ancestors (relation names, the scanned table first, the
// root last; not empty), the one a query stands for: the nearest it names, else the root
// (named through a view). A partition's changes are published as its root's.
size_t NearestNamed(const std::set<std::string>& named,
                    const std::vector<std::string>& ancestor_names);

// When a view's key is its one table's key passed through (no aggregate, join, DISTINCT
// or subquery: the plan of `select <view key> from (query)` is a single scan of the
// table whose output is exactly the table's key columns), a changed source row can
// affect only the view row of the same key. Returns, for each view key column, its
// source column; empty when the plan is anything else.
std::vector<std::string> KeyPassThrough(std::string_view explain_json, const std::string& table,
                                        const std::vector<std::string>& source_key,
                                        size_t view_key_columns);

// The `columns` the query names where it joins, filters or groups (ON, WHERE, GROUP BY,
// HAVING): the affected-key queries look rows up by them. Empty when it does not lex.
std::set<std::string> LookupColumns(std::string_view query,
                                    const std::vector<std::string>& columns);

// PostgreSQL's error about a statement that wraps the user's query (`prefix` + query,
// e.g. "explain (verbose, format json) "), as if about the query alone: the prefix
// taken out of its "LINE 1: " quote and the caret under it moved back with it. Other
// messages are returned as they are.
std::string WithoutStatementPrefix(std::string message, std::string_view prefix);

// ---- Reading the source ---------------------------------------------------------------

// The functions the query calls whose result can change while its rows do not (not
// IMMUTABLE: now(), random(), a STABLE overload), as "name(argument types)" joined by
// ", "; nullopt when there are none.
Result<std::optional<std::string>> ChangingFunctions(SqlSession& source, const std::string& query);

// EXPLAIN (VERBOSE, FORMAT JSON) of `query`, parsed.
Result<QueryPlan> ExplainQuery(SqlRunner& source, const std::string& query);

// The source tables a query reads, from the tables its plan scans: a partition stands
// for the partitioned table the query names, a partition the query names itself stays;
// a relation PostgreSQL cannot publish is refused with the reason.
Result<std::vector<std::string>> SourceTablesOf(SqlRunner& source, const std::string& query,
                                                const std::vector<std::string>& scanned);

// Refuses a plan that reads a generated column of a source table (PostgreSQL before 18
// does not publish them), with the way out.
Status CheckGeneratedColumns(SqlRunner& source, const QueryPlan& plan);

// The query's output column names.
Result<std::vector<std::string>> OutputColumns(SqlRunner& source, const std::string& query);

// KeyPassThrough of the view key `key_columns` over `table` (keyed by `source_key`).
Result<std::vector<std::string>> KeyPassThroughOf(SqlRunner& source, const std::string& query,
                                                  const std::vector<std::string>& key_columns,
                                                  const std::string& table,
                                                  const std::vector<std::string>& source_key);

// Whether two rows of the query's result share a value of `key_columns` (reads the
// whole result).
Result<bool> KeyRepeats(SqlRunner& source, const std::string& query,
                        const std::vector<std::string>& key_columns);

}  // namespace pgderive
