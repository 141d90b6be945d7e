#pragma once

// The contract between the pipeline and one store's write path (SPEC.md §1.3, §1.5). The
// pipeline gives each store its own worker thread and queue; the store implements this.
// What `verify` reads back from a store is apart, in view_inspector.h.
//
// Delivery guarantee: at least once, made exactly once by the store.
//   The pipeline promises: every change of the views' tables reaches Apply, in batches
//   in commit order, each transaction whole before the next begins (a group may end
//   inside a transaction; CheckpointOf(group) is then unset). After a restart, a
//   reconnect of the source or of the store, or a detach, it delivers again from the
//   store's own checkpoint (ReadCheckpoint): changes the store already holds come again.
//   A store without a checkpoint, or with one the slot has passed (it lost data the slot
//   no longer holds), is filled again by the backfill instead (BeginRebuild, then its
//   views' - a postgres store: its mirrors' - recorded states).
//   The store promises: Apply skips every change that commits below the checkpoint it
//   is given (already applied; one place in each store, saying why that is safe), and
//   applying a change twice leaves what applying it once left. It writes the new
//   checkpoint with the data, in one atomic step wherever the store allows it (Redis
//   MULTI/EXEC, a PostgreSQL transaction); where it does not (OpenSearch), after the
//   data, writes that make the replay of the gap a no-op (versions). A checkpoint
//   is durable durability_delay() after Apply returns; the slot is confirmed only up to
//   the slowest store's durable checkpoint.
//
// Errors: a transient error is retried with backoff - the pipeline reconnects
// (Connect), reads the checkpoint back and delivers again from it; a permanent one
// stops the store while the others go on (a view that alone cannot go on stops alone:
// failed_views()).
//
// The methods, in the order the pipeline calls them: prepare (Resolve, Check, Connect,
// Migrate), checkpoint, rebuild, apply, view states. Teardown is `pgderive teardown`'s,
// called while no `run` of the pipeline is active.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cdc/change_batch.h"
#include "sinks/common/view_versions.h"
#include "snapshot/view_state.h"

namespace pgderive {

class SqlSession;  // a SQL session on the source (cdc/sql_session.h)

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

// What a store check found (Sink::CheckStore): a view's container in the store - an
// OpenSearch index, a postgres target table, a Redis view's recorded state - vanished or
// was replaced behind pgderive's back while it ran. `view` empty: the whole store (its
// checkpoint is gone: it was flushed).
struct StoreChange {
  std::string view;
  std::string what;  // names the index, table or key, e.g. "index products was deleted"
};

// A line for the log about what a store did on its own (Sink::TakeNotices): routine
// (info: a version switched to, a retained version dropped, an index migrated) or what
// an operator should look at (warn: an alias moved by someone else, a version that can
// no longer be built or maintained).
struct SinkNotice {
  enum class Level { kInfo, kWarn };
  // Implicit from the text: a routine notice.
  SinkNotice(std::string text, Level level = Level::kInfo)  // NOLINT(google-explicit-constructor)
      : text(std::move(text)), level(level) {}
  static SinkNotice Warning(std::string text) { return {std::move(text), Level::kWarn}; }
  std::string text;
  Level level;
};

class Sink {
 public:
  virtual ~Sink() = default;

  virtual const std::string& name() const = 0;
  // Each view's name with the source tables (schema.table) it reads.
  virtual std::vector<std::pair<std::string, std::vector<std::string>>> view_sources() const = 0;
  // The source tables its views read, each once, in order of first use.
  std::vector<std::string> tables() const;

  // --- Prepare: before anything is read or written.

  // Reads what the sink needs from the source catalog before anything is created (the
  // postgres sink: the tables its queries read, and whether it can maintain them).
  // `checked`: the configuration already passed validate's checks (run) or is only being
  // reported on (status), so the checks that read whole results - a postgres view's key
  // uniqueness - are not made again.
  virtual Status Resolve(SqlSession& source, bool checked = false) {
    (void)source;
    (void)checked;
    return Status::Ok();
  }
  // Checks the views that read `schema`'s table against its shape (columns named,
  // key columns in the replica identity).
  virtual Status Check(const std::shared_ptr<const RelationSchema>& schema) = 0;
  // (Re)connects to the store and prepares it (indexes, target tables). Transient
  // errors are retried by the caller with backoff.
  virtual Status Connect() = 0;
  // Creates or upgrades the store's own metadata (migrations/), once the checks have
  // passed; stores without metadata of their own have nothing to do.
  virtual Status Migrate() { return Status::Ok(); }

  // --- Checkpoint: the LSN up to which the store is complete.

  // nullopt when it holds none (a store never filled, or one that lost its data).
  virtual Result<std::optional<Lsn>> ReadCheckpoint() = 0;
  // Why the last ReadCheckpoint found none ("target table public.x is missing"), for the
  // log line that says the store is rebuilt; empty when it does not say.
  virtual std::string missing_checkpoint_reason() { return {}; }
  // How long after Apply returns its checkpoint is durable (Redis with
  // `appendfsync everysec` needs up to a second or two).
  virtual std::chrono::milliseconds durability_delay() const { return {}; }

  // --- Rebuild: every view from a snapshot taken at `snapshot_lsn`. `run` fills every
  // store by the backfill and calls only BeginRebuild (removes what the store held);
  // the pipeline does not call ApplySnapshotRows and EndRebuild.

  // Removes every view's data and the checkpoint.
  virtual Status BeginRebuild(Lsn snapshot_lsn) = 0;
  // Takes snapshot rows, from several threads at once: must be thread-safe.
  virtual Status ApplySnapshotRows(const std::shared_ptr<const RelationSchema>& schema,
                                   std::span<const TupleData> rows, const TypeRegistry& types) = 0;
  // Writes the checkpoint `snapshot_lsn`: the stream goes on from there.
  virtual Status EndRebuild(Lsn snapshot_lsn) = 0;
  // After a first start that failed before it streamed (no half-made state): removes
  // what BeginRebuild of this process made - the views' partial data, and the tables
  // or indexes it created - and nothing else.
  virtual Status UndoRebuild() { return Status::Ok(); }

  // --- Apply: the stream.

  // Applies the group's batches in order, skipping every change with commit_lsn <
  // `checkpoint` (already applied), and, when the group completes a transaction, writes
  // its new checkpoint (CheckpointOf(group)) with the data.
  virtual Status Apply(const BatchGroup& group, Lsn checkpoint) = 0;
  // The rows read again from the source during the Apply calls since the last call (for
  // the worker's log line and metric).
  virtual std::vector<SourceRead> TakeSourceReads() { return {}; }
  // A store whose views are queries (postgres): the rows each view got from its
  // rebuilds since the last call - EndRebuild's (counted as snapshot rows), or a rebuild
  // on demand inside Apply (counted as backfill rows): (view, rows).
  virtual std::vector<std::pair<std::string, uint64_t>> TakeRebuiltRows() { return {}; }

  // --- View states.

  // Views filled row by row from their table (Redis, OpenSearch) are backfilled by
  // chunks while the stream goes on; the store records each view's state. A store whose
  // views are queries (postgres) recomputes a view from its mirrors instead.
  virtual bool backfills_rows() const { return false; }
  // A store whose views are queries (postgres) keeps a copy of each source table they
  // read (its mirrors) and fills those by the backfill instead, each as a view of its own
  // of its table: (TableFillName(table), table). It records their states as a row store
  // records its views' (ReadViewStates, WriteViewState, the stream's kViewState) and
  // builds a view from the mirrors once every mirror it reads is filled.
  virtual std::vector<std::pair<std::string, std::string>> table_fills() const { return {}; }
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
  // Marks the recorded state of every view the store records for this pipeline that the
  // configuration no longer has as removed (ViewState::removed; a postgres store marks
  // its record of the view's definition): the stream stops keeping such a view current,
  // so should it come back (a reload, a restart) it is rebuilt, never served as it was.
  // Called at every start, a reload's too, before the store applies anything. Returns
  // the views it marked now (those marked before are not repeated).
  virtual Result<std::vector<std::string>> MarkRemovedViews() { return std::vector<std::string>{}; }
  // Called by the store's worker every 2 s between batches (and while idle): a round
  // trip that says the store is reachable (an error otherwise) and what vanished or was
  // replaced since the last call (each change is reported once). A container recreated
  // by pgderive itself (a rebuild, a backfill that empties a view) is not reported.
  virtual Result<std::vector<StoreChange>> CheckStore() { return std::vector<StoreChange>{}; }
  // Lines for the log about what the store did on its own since the last call (an index
  // migrated, a rebuilt view switched to, an alias someone else moved).
  virtual std::vector<SinkNotice> TakeNotices() { return {}; }
  // Views stopped on their own while the store goes on (a column they name was
  // dropped): (view, reason). Such a view is no longer written until the configuration
  // is fixed; the others keep flowing.
  virtual std::vector<std::pair<std::string, std::string>> failed_views() { return {}; }

  // --- Versions (view_versions.h): a view whose definition changed is built as a new
  // version next to the serving one. Called from other threads than the store's worker
  // (the HTTP endpoint, the monitor): the store serializes them with its writes.

  // Each view's versions as the store holds them (empty: a store without versions).
  virtual std::vector<VersionInfo> ViewVersions() { return {}; }
  enum class VersionSwitch { kPromote, kRollback };
  // Switches `view` to its ready version (promote) or back to its retained one
  // (rollback), in one atomic step of the store, then records it. Returns what it did;
  // a permanent error says why it cannot (not ready: `percent` built, nothing retained).
  virtual Result<std::string> SwitchVersion(const std::string& view, VersionSwitch what,
                                            double percent) {
    (void)what;
    (void)percent;
    return Error::Permanent("store " + name() + " keeps no versions of view " + view);
  }

  // --- Teardown: the pipeline is removed (no `run` of it is active).

  // Removes what pgderive keeps in the store for this pipeline - its checkpoint, the
  // views' states, its own metadata (a postgres store's mirror tables and rows of
  // pgderive.*) - and, when `views`, the views' data (their keys, index, table). Returns
  // what it removed, one item each ("key pgderive:shop:checkpoint"), empty when nothing
  // was left: what is gone already is no error, so a second teardown removes nothing.
  virtual Result<std::vector<std::string>> Teardown(bool views) = 0;
};

}  // namespace pgderive
