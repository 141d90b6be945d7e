#pragma once

// The contract between the pipeline and one store (SPEC.md §1.3, §1.5). The pipeline
// gives each store its own worker thread and queue; the store implements this.
//
// Checkpoints. A store keeps, inside itself, the LSN up to which it is complete,
// written atomically with the data wherever the store allows it. On start, and after
// every reconnect, the pipeline reads it back: a store that has no checkpoint, or one
// older than the slot's confirmed position (it lost data the slot no longer holds), is
// rebuilt from a snapshot instead of serving stale data.

#include <chrono>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cdc/change_batch.h"
#include "cdc/pg_connection.h"
#include "snapshot/view_state.h"

namespace pgderive {

// A row a store read again from the source while applying (sinks/common/source_rows.h):
// it lacked the previous value of a column an update left unchanged (TOAST).
struct SourceRead {
  std::string view;     // empty for a postgres store's mirror
  std::string table;    // schema.table
  std::string key;      // the entry's key (Redis key, document id, mirror key)
  Lsn lsn;              // the change's commit LSN
  std::string columns;  // the unchanged columns it lacked, comma-separated
  bool found = false;   // false: the source no longer has the row; nothing was written
  // true: the store lacked the value; false: the change commits before the store's
  // horizon (an earlier read may have left a newer value; source_rows.h).
  bool missing = true;
};

class Sink {
 public:
  virtual ~Sink() = default;

  virtual const std::string& name() const = 0;
  // The source tables its views read (schema.table).
  virtual std::vector<std::string> tables() const = 0;

  // Reads what the sink needs from the source catalog before anything is created (the
  // postgres sink: the tables its queries read, and whether it can maintain them).
  // `checked`: the configuration already passed validate's checks (run) or is only being
  // reported on (status), so the checks that read whole results - a postgres view's key
  // uniqueness - are not made again.
  virtual Status Resolve(PgConnection& source, bool checked = false) {
    (void)source;
    (void)checked;
    return Status::Ok();
  }

  // Checks the views that read `schema`'s table against its shape (columns named,
  // key columns in the replica identity). Called before anything is created.
  virtual Status Check(const std::shared_ptr<const RelationSchema>& schema) = 0;

  // (Re)connects to the store and prepares it (indexes, target tables). Transient
  // errors are retried by the caller with backoff.
  virtual Status Connect() = 0;
  // Creates or upgrades the store's own metadata (migrations/), once the checks have
  // passed; stores without metadata of their own have nothing to do.
  virtual Status Migrate() { return Status::Ok(); }
  // The store's checkpoint; nullopt when it holds none.
  virtual Result<std::optional<Lsn>> ReadCheckpoint() = 0;

  // A rebuild: remove every view's data and the checkpoint, take the snapshot's rows
  // (from several threads at once: must be thread-safe), then write the checkpoint.
  virtual Status BeginRebuild(Lsn snapshot_lsn) = 0;
  virtual Status ApplySnapshotRows(const std::shared_ptr<const RelationSchema>& schema,
                                   std::span<const TupleData> rows, const TypeRegistry& types) = 0;
  virtual Status EndRebuild(Lsn snapshot_lsn) = 0;
  // After a first start that failed before it streamed (no half-made state): removes
  // what BeginRebuild of this process made - the views' partial data, and the tables
  // or indexes it created - and nothing else.
  virtual Status UndoRebuild() { return Status::Ok(); }

  // Applies the group's batches in order, skipping every change with commit_lsn <
  // `checkpoint` (already applied), and, when the group completes a transaction, writes
  // its new checkpoint (CheckpointOf(group)) with the data.
  virtual Status Apply(const BatchGroup& group, Lsn checkpoint) = 0;

  // Views filled row by row from their table (Redis, OpenSearch) are backfilled by
  // chunks while the stream goes on; the store records each view's state. A store whose
  // views are queries (postgres) recomputes a view from its mirrors instead.
  virtual bool backfills_rows() const { return false; }
  // Every view's recorded state; nullopt when the store records none yet (filled by a
  // pgderive without per-view state): its views are then taken as live.
  virtual Result<std::optional<std::map<std::string, ViewState>>> ReadViewStates() {
    return std::optional<std::map<std::string, ViewState>>();
  }
  // Records `view`'s state outside the stream (at start, before anything is applied),
  // removing its data first when `clear` (a view new to the store starts empty).
  virtual Status WriteViewState(const std::string& view, const ViewState& state, bool clear) {
    (void)view;
    (void)state;
    (void)clear;
    return Status::Ok();
  }

  // The rows read again from the source during the Apply calls since the last call (for
  // the worker's log line and metric).
  virtual std::vector<SourceRead> TakeSourceReads() { return {}; }

  // How long after Apply returns its checkpoint is durable (Redis with
  // `appendfsync everysec` needs up to a second or two); the slot is confirmed only
  // past durable checkpoints.
  virtual std::chrono::milliseconds durability_delay() const { return {}; }

  // For `verify`. The view names of this store; every entry of one view as (key, JSON
  // object); and the entry a source row must produce in that view (nullopt when the
  // view does not read the row's table).
  using Entry = std::pair<std::string, std::string>;
  virtual std::vector<std::string> views() const = 0;
  // Views stopped on their own while the store goes on (a column they name was
  // dropped): (view, reason). Such a view is no longer written until the configuration
  // is fixed; the others keep flowing.
  virtual std::vector<std::pair<std::string, std::string>> failed_views() { return {}; }
  // Each view's name with the source tables it reads (for per-view metrics).
  virtual std::vector<std::pair<std::string, std::vector<std::string>>> view_sources() const = 0;
  virtual Result<std::vector<Entry>> ReadView(const std::string& view) = 0;
  virtual Result<std::optional<Entry>> Expected(const std::string& view,
                                                const std::shared_ptr<const RelationSchema>& schema,
                                                const TupleData& row,
                                                const TypeRegistry& types) = 0;
  // Or, for views defined by a query, every entry computed on the source directly (in
  // the snapshot `source` is in); nullopt for views made row by row.
  virtual Result<std::optional<std::vector<Entry>>> ExpectedFromSource(const std::string& view,
                                                                       PgConnection& source) {
    (void)view;
    (void)source;
    return std::optional<std::vector<Entry>>();
  }
};

}  // namespace pgderive
