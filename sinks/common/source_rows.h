#pragma once

// Reading one row of a source table again (SPEC.md §4: a store never stops for good on
// what pgderive can resolve by reading the source again). An update that leaves a
// TOASTed value out ('u') expects the store to hold the row's previous value; when it
// does not (a replay after a crash meets a row the store no longer holds, an entry
// removed behind pgderive's back, a mirror row missing), the store reads the row by
// its key from the source and takes the unchanged columns from it.
//
// Why a read made now is exact once the store has caught up: the columns taken from it
// are those the change left unchanged. Every later change of the row is still ahead in
// the stream, and each either carries a column's value (which then replaces what was
// read) or leaves it unchanged too; so a column no later change sets has, at any later
// moment, the value it had at the change - the one read. A row gone from the source by
// the time of the read has a delete (or a key change) ahead in the stream: the store
// skips writing it. Until it catches up, the entry may show a newer value early, as
// any replay does. The store applies the row with the change, in the same transaction
// (Redis MULTI, the postgres batch) or with the change's version (OpenSearch).
//
// One exception makes a rule: the read may find, under that key, another row than the
// change's (the row moved to another key and another took its key, both after the
// change). What the entry then holds must not be carried on by a later change that
// takes an unchanged value from the store - a key change of the moved row. So every
// read raises the store's horizon, the WAL insert position when it was made (every
// commit it saw ends before it): a change that commits before the horizon takes its
// unchanged values from the source, never from the store. Past the horizon the store
// holds, for every entry, the value of the last change that touched it, as always. The
// horizon is recorded in the store before or with the data read (so a replay after a
// crash keeps to it); in the stream's normal course it is long passed.

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cdc/change_batch.h"
#include "cdc/sql_session.h"
#include "sinks/common/sink.h"
#include "sinks/common/view_shape.h"

namespace pgderive {

class SourceRows {
 public:
  using Row = std::vector<std::optional<std::string>>;

  explicit SourceRows(std::string dsn) : dsn_(std::move(dsn)) {}

  // The row of `table` (schema.table) whose key (the replica identity's index, else the
  // primary key) has the values `known` gives (column -> text; other columns may be
  // there too), as the text of `columns`, in that order; nullopt when the table has no
  // such row any more. A key column missing from `known` is a permanent error naming it.
  Result<std::optional<Row>> Read(const std::string& table, const std::vector<std::string>& columns,
                                  const std::map<std::string, std::string>& known);

  // The same for a change's row: its new tuple's text values (unchanged TOASTed values
  // already filled from the old tuple where it carries them) name the key; returns the
  // new tuple with every column still unchanged replaced by the source's value, backed
  // by `storage`; nullopt when the source has no such row.
  Result<std::optional<TupleData>> ReadChangedRow(const OwnedChange& change, Row& storage);

  // What was read again, for the worker's log line and metric (SourceRead).
  void Note(SourceRead read);
  std::vector<SourceRead> Take();

  // The horizon: changes that commit before it take unchanged values from the source.
  // The store sets what it recorded (when it loads it) and records it again whenever
  // a read raised it (TakeRaised).
  Lsn horizon();
  void SetHorizon(Lsn horizon);
  bool TakeRaised();

 private:
  struct Table {
    std::vector<std::pair<std::string, std::string>> key;  // (column, format_type)
    bool partitioned = false;
  };
  Result<SqlSession*> Connection();

  std::string dsn_;
  std::mutex mutex_;
  std::optional<SqlSession> sql_;
  std::vector<SourceRead> reads_;
  Lsn horizon_;
  bool raised_ = false;
};

// For a store of one entry per row (Redis, OpenSearch) that does not hold what `write`
// (for `change`, in view `view` of shape `shape`) leaves unchanged, or must not take it
// from the store (`missing` false: the change is before the horizon): the entry's whole
// value with those columns read from the source, the read noted; nullopt when the
// source no longer has the row (write nothing: a later change says what became of it).
Result<std::optional<std::string>> ValueFromSource(SourceRows& source, const ViewShape& shape,
                                                   const OwnedChange& change,
                                                   const TypeRegistry& types,
                                                   const std::string& view, const RowWrite& write,
                                                   bool missing);

}  // namespace pgderive
