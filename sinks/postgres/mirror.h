#pragma once

// Mirror tables: the target database's copy of each source table a postgres view reads
// (schema `pgderive`, same columns and primary key), so that a view's query can run
// next to its target table. A batch reaches the mirrors in one pass per table:
//
//   changes ──Add──> MirrorBatch: one final state per row key (inserts, updates,
//                    deletes, key moves folded; unchanged TOAST columns marked)
//      │
//      ├──Complete──> rows lacking unchanged columns take them from the mirror row they
//      │              came from, else from the source (sinks/common/source_rows.h)
//      ├──CopyTouchedKeys──> every key touched, old and new, into pgd_k_<n> (the view
//      │              queries read the affected keys through it, before and after)
//      └──Write──> COPY deletes into pgd_d_<n>, delete; COPY whole rows into pgd_u_<n>,
//                  upsert; rows with unchanged columns: UPDATE of the others
//
// The temporary tables pgd_k/d/u_<n> live in the sink's session (ON COMMIT DELETE
// ROWS). A batch runs inside the caller's transaction (SqlSession::Transaction, whose
// COPY takes the rows); nothing here commits. Row values go to the server as COPY
// text; the few statements that name values in SQL text (the key lists of Complete,
// the UPDATEs of rows with unchanged columns) are built for many rows at once, one
// statement - or one round trip - per table, so they quote instead of binding.

#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "cdc/change_batch.h"
#include "cdc/lsn.h"
#include "cdc/sql_session.h"
#include "sinks/common/source_rows.h"

namespace pgderive {

struct Mirror {
  std::string table;                 // source schema.table
  uint32_t oid = 0;                  // its OID when resolved
  std::string name;                  // "pgderive"."<pipeline>__<schema>__<table>"
  std::string temp;                  // suffix of its temporary tables
  std::vector<std::string> columns;  // names
  std::vector<std::string> types;    // format_type of each column
  std::vector<size_t> key;           // primary key columns (indexes)
  std::set<std::string> indexed;     // columns the queries mention, indexed

  // The key columns, quoted, joined by ", ".
  std::string KeyList() const;
  // Its temporary tables: the keys a batch touched, the keys it deletes, the whole rows
  // it upserts.
  std::string KeysTable() const { return "pgd_k_" + temp; }
  std::string DeletesTable() const { return "pgd_d_" + temp; }
  std::string UpsertsTable() const { return "pgd_u_" + temp; }
};

// Reads `table`'s mirror from the source: columns (without generated ones), their
// types and its row key. `pipeline` names it, `temp` suffixes its temporary tables.
// Refusals (a name over 63 bytes, no key) start with `context`; errors of the source
// come as they are.
Result<Mirror> ReadMirror(SqlRunner& source, const std::string& table, const std::string& pipeline,
                          std::string temp, const std::string& context);

// SQL text, each statement ended by "; ".
// (Re)creates the mirror table empty, with its primary key and lookup indexes.
std::string CreateMirrorSql(const Mirror& m);
// Creates its temporary tables in this session when missing / drops them.
std::string CreateTempTablesSql(const Mirror& m);
std::string DropTempTablesSql(const Mirror& m);

// The snapshot's rows of the mirror's table, by COPY (columns matched by name).
Status CopySnapshotRows(SqlSession& c, const Mirror& m, const RelationSchema& schema,
                        std::span<const TupleData> rows);

// Columns added to the source table since: added to the mirror and its upsert table.
Status AddMissingColumns(SqlRunner& c, Mirror& m, const RelationSchema& schema);

// The changes of one batch to the mirrors, per source table, folded to each row key's
// final state.
class MirrorBatch {
 public:
  // Folds an insert, update or delete of `m`'s table. A change committed before the
  // source-rows `horizon` takes what it leaves unchanged from the source.
  void Add(const Mirror& m, const RelationSchema& schema, const OwnedChange& change, Lsn horizon);
  bool empty() const { return finals_.empty(); }
  // The source tables with changes.
  std::set<std::string> tables() const;

  // Makes every row that leaves columns unchanged whole, or leaves it to an UPDATE of
  // the mirror row it keeps; a row the source no longer has is dropped from the batch.
  Status Complete(SqlRunner& c, const std::map<std::string, Mirror>& mirrors, SourceRows& source);
  // Every key the batch touched into each mirror's KeysTable().
  Status CopyTouchedKeys(SqlSession::Transaction& tx, const std::map<std::string, Mirror>& mirrors);
  // The final states into the mirrors (after Complete).
  Status Write(SqlSession::Transaction& tx, const std::map<std::string, Mirror>& mirrors);
  void Clear();

 private:
  using Values = std::vector<std::optional<std::string>>;
  // One row's final state in a batch, per mirror key.
  struct Final {
    bool deleted = false;
    Values values;              // by mirror column
    std::vector<bool> present;  // false: unchanged (TOAST), keep
    // Where the columns not present come from: the mirror row of this key as it was
    // before the batch (unset), or, when the row moved to this key leaving them out, the
    // mirror row of `from` (its key values) as it was before the batch.
    std::optional<Values> from;
    bool reread = false;          // no mirror row to take them from: read the row from the source
    Lsn lsn;                      // of the last change
    bool before_horizon = false;  // reread: a change before the horizon left them out
    bool whole() const;
  };
  Status Complete(SqlRunner& c, const Mirror& m, std::map<std::string, Final>& rows,
                  SourceRows& source);

  // Per source table: the final state of each changed row key (COPY text of the key
  // columns), and every key touched (old and new).
  std::map<std::string, std::map<std::string, Final>> finals_;
  std::map<std::string, std::set<std::string>> touched_;
};

}  // namespace pgderive
