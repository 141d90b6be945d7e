#pragma once

// What the pipeline hands each store: owned, immutable batches of committed changes in
// commit order. One batch is shared by every store's queue (shared_ptr<const>), so a
// change is copied out of the replication buffer once, whatever the number of stores.
//
// A batch holds whole transactions and, for a transaction too large for one batch,
// consecutive pieces of it. `commits` marks where each transaction that completes in
// this batch ends. A store is complete up to the end_lsn of the last transaction it
// applied: that is its checkpoint.
//
// Skipping what is already applied: transactions do not overlap in the WAL, so a
// transaction T is covered by a checkpoint C (C >= T.end_lsn) exactly when
// T.commit_lsn < C. The same test holds for a snapshot taken at a slot's consistent
// point C: the snapshot contains exactly the transactions with commit_lsn < C. Every
// sink therefore skips a change when change.commit_lsn < its checkpoint.

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cdc/change_stream.h"
#include "cdc/value_json.h"

namespace pgderive {

enum class ChangeOp : char {
  kInsert = 'I',
  kUpdate = 'U',
  kDelete = 'D',
  kTruncate = 'T',
  // Made by the pipeline, not decoded (a watermark backfill, SPEC.md §1.4): a row of a
  // backfill chunk for `control->views`, placed at its chunk's watermark; and a change of
  // those views' state, recorded in the store with the data.
  kBackfillRow = 'B',
  kViewState = 'S',
};

// What a backfill row or a view-state change is for.
struct ViewControl {
  std::string store;
  std::vector<std::string> views;
  // kViewState: the views' new state.
  bool backfilling = false;
  // Remove the views' data first (a rebuild on demand, a new view); a postgres view
  // is recomputed from its mirrors instead.
  bool clear = false;
  // Backfilling: the key (JSON array of the key columns' text) of the last row filled,
  // where a restart resumes; unset: from the start.
  std::optional<std::string> after;
  // The table's columns ("name type_oid", in order) the views were filled with: a view
  // that follows its table is backfilled again when they change.
  std::vector<std::string> columns;
  // The OID of the table they were filled from (0: unknown).
  uint32_t table_oid = 0;
  // kBackfillRow: the row is not in the source (the background verifier found its entry
  // in the views, extra): the views' entry under its key is deleted. Only the row's key
  // columns are set.
  bool remove = false;

  bool Names(const std::string& store_name, const std::string& view) const {
    return store == store_name && std::find(views.begin(), views.end(), view) != views.end();
  }
};

struct OwnedChange {
  Lsn commit_lsn;
  uint32_t index = 0;
  ChangeOp op = ChangeOp::kInsert;
  // The changed table (I/U/D) or every truncated table (T).
  std::vector<std::shared_ptr<const RelationSchema>> relations;
  TupleData new_tuple;   // insert, update
  TupleData old_tuple;   // update with a changed key or REPLICA IDENTITY FULL; delete
  char old_kind = '\0';  // 'K' (key columns only), 'O' (whole row) or none
  size_t bytes = 0;      // the values' bytes, for queue accounting
  // Backs the views of both tuples; a heap block, so moving the change keeps them valid.
  std::unique_ptr<char[]> storage;
  std::shared_ptr<const ViewControl> control;  // kBackfillRow, kViewState

  const RelationSchema& relation() const { return *relations.front(); }
};

struct CommitMark {
  Lsn commit_lsn;
  Lsn end_lsn;
  PgTimestamp commit_time = 0;
  size_t changes_end = 0;  // the transaction's changes in this batch end before this index
};

struct ChangeBatch {
  std::vector<OwnedChange> changes;
  std::vector<CommitMark> commits;
  // The types the changes' columns have (resolved from pg_type); immutable, shared.
  std::shared_ptr<const TypeRegistry> types;
  size_t bytes = 0;

  // The checkpoint after applying the whole batch: the end of its last transaction.
  std::optional<Lsn> checkpoint() const {
    if (commits.empty()) return std::nullopt;
    return commits.back().end_lsn;
  }
};

// Consecutive batches a store applies in one round trip (its worker takes whatever is
// queued, up to a limit): order is the order of the vector, then of each batch.
using BatchGroup = std::vector<std::shared_ptr<const ChangeBatch>>;

// The checkpoint after applying the whole group: that of its last batch that has one.
std::optional<Lsn> CheckpointOf(const BatchGroup& group);
// The types of the group's newest batch (registries only grow, so it covers them all).
const TypeRegistry& TypesOf(const BatchGroup& group);

// Copies a change out of the replication buffer. Logical messages are not changes of a
// view and yield nullopt. An update's unchanged TOASTed values that its old tuple
// carries are taken from it (FillUnchangedFromOld).
std::optional<OwnedChange> CopyChange(const Change& change);

// An update's new tuple may name a TOASTed value as unchanged ('u') while its old tuple
// carries it: a replica identity key with an out-of-line value is logged whole in the
// old key ('K', PostgreSQL >= 15 and 14.3, 13.7, 12.11, 11.16), and REPLICA IDENTITY
// FULL logs the whole old row ('O'). Replaces each such 'u' in `new_tuple` with the old
// value (the views point into `old_tuple`'s bytes). Returns how many columns are still
// unchanged afterwards.
size_t FillUnchangedFromOld(const RelationSchema& schema, char old_kind, const TupleData& old_tuple,
                            TupleData& new_tuple);
// Whether the update moved the row to another key: a replica identity column whose new
// value differs from the old one (a column still unchanged did not change).
bool KeyChanged(const RelationSchema& schema, const TupleData& old_tuple,
                const TupleData& new_tuple);
// A change of the views' state (`control`), at a position of the stream.
OwnedChange ViewStateChange(Lsn commit_lsn, uint32_t index,
                            std::shared_ptr<const ViewControl> control);
// A backfill row: `row` copied, for the views `control` names.
OwnedChange BackfillRow(Lsn commit_lsn, uint32_t index,
                        std::shared_ptr<const RelationSchema> relation, const TupleData& row,
                        std::shared_ptr<const ViewControl> control);

}  // namespace pgderive
