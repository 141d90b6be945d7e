#pragma once

// A table read by its key, the way the backfill, the background verifier and
// `pgderive verify` walk it: the key the chunks follow, a range of rows in key order,
// and which of a page of key values have no row. Statements on the source only
// (cdc/sql_session.h); every value as PostgreSQL's text output.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cdc/change_batch.h"
#include "cdc/sql_session.h"
#include "snapshot/watermark_window.h"

namespace pgderive {

// (column, type as format_type gives it) of the key `table`'s chunks follow: the replica
// identity's index when it names one (its columns are what a delete carries), else the
// primary key. A permanent error naming the table when it has neither.
using KeyColumnList = std::vector<std::pair<std::string, std::string>>;
Result<KeyColumnList> KeyColumns(SqlSession& sql, const std::string& table);

// The table `regclass` (an SQL expression) and, when partitioned, its partitions, as a
// subquery of OIDs. (pg_partition_tree returns no row at all for a plain table.)
std::string TableAndPartitions(const std::string& regclass);

// How large `table` is, its partitions included: a backfill's chunk size and its
// progress line's "of ~N rows", never exact.
struct TableEstimate {
  uint64_t rows = 0;       // about; 0 for an empty table
  uint64_t row_bytes = 0;  // a row's mean size; 0 when not known (no row)
  bool partitioned = false;
};
// From pg_class.reltuples (the last ANALYZE or VACUUM) and the tables' size. For a table
// never analyzed (reltuples -1; the planner's own figure there is a guess from its
// columns' default widths, 3.7 times too many for rows of a 200-byte text): the size of
// its heap over the mean size of the first 1,000 rows it returns (pg_column_size of the
// row, plus its line pointer). Values moved out of line (TOAST) count in full there, so
// a table of large values comes out low.
Result<TableEstimate> EstimateTable(SqlSession& sql, const std::string& table);

// Up to `limit` rows of `table` (every column of `schema`, in its order) whose key is
// after `after` and, when `through` is set, not after `through`, in key order. `after`
// and `through` are key positions: a JSON array of the key columns' values as text
// (KeyJson, as WatermarkWindow::ChunkPosition gives them); unset `after`: from the
// start. `partitioned`: the table's partitions are read too (else `only` the table).
Result<ChunkRows> ReadRows(SqlSession& sql, const std::string& table,
                           const std::shared_ptr<const RelationSchema>& schema,
                           const KeyColumnList& key, const std::optional<std::string>& after,
                           size_t limit, bool partitioned,
                           const std::optional<std::string>& through = std::nullopt);

// The position (KeyJson of the key columns' values) of `row`, a row of `schema`.
std::string RowPosition(const RelationSchema& schema, const KeyColumnList& key,
                        const std::vector<std::optional<std::string>>& row);

// The one row key `readings` name, in `key`'s order: `readings` are the ways a store's
// key reads back to a row key (ViewInspector::RowKeys: each the values of `schema`'s
// row key columns, in column order). nullopt when there are several readings, or none
// (another view's key, not one a row makes), or `key` is not those columns (the
// table's key is another now).
std::optional<std::vector<std::string>> OrderedRowKey(
    const RelationSchema& schema, const KeyColumnList& key,
    const std::vector<std::vector<std::string>>& readings);

// Of `rows` (each the key columns' values as text, in `key`'s order), the ordinals of
// those `table` has no row for, in one statement (each value cast to its column's type,
// so the key's index is used). A value its column's type does not take is a key no row
// can have: absent.
Result<std::vector<size_t>> AbsentKeys(SqlSession& sql, const std::string& table,
                                       const KeyColumnList& key,
                                       const std::vector<std::vector<std::string>>& rows);

}  // namespace pgderive
