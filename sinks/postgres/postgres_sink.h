#pragma once

// PostgreSQL materialized-view tables (SPEC.md §3): a target table that holds exactly
// what the view's query returns on the source at the store's checkpoint, maintained
// incrementally, exactly once. This file is the store contract (sinks/common/sink.h:
// checkpoint, rebuild, apply) and verify's reads (sinks/common/view_inspector.h). Two
// parts live apart:
//   query_plan.h  what a query reads and whether it can be maintained (Resolve);
//   mirror.h      the mirrors of the source tables and how a batch reaches them.
//
// Design. The target database keeps a mirror of each source table the queries read
// (schema `pgderive`, same columns and primary key). A batch is one transaction:
//
//   changes ─> MirrorBatch (mirror.h): final state per row key, made whole
//     1. the changed rows' keys go into temporary tables (pgd_k_<n>);
//     2. the view keys those rows touch now are collected into pgd_a_<view>: the query,
//        run over the mirrors with the changed table restricted to the changed rows (a
//        LEFT JOIN to it made inner, so only rows that involve them count) - or, when
//        the view key is the table's key passed through (query_plan.h KeyPassThrough),
//        the changed keys themselves;
//     3. the mirrors take the changes;
//     4. the view keys the rows touch afterwards are collected the same way;
//     5. just those keys are deleted from the target and recomputed from the query over
//        the mirrors (the keys also filter inside it, so an aggregate reads only its
//        groups);
//     6. the checkpoint row (pgderive.checkpoints) is updated.
// Commit makes rows and checkpoint visible together: a replay after a crash starts
// from a checkpoint that matches the rows exactly.
//
// Supported queries: projection and WHERE over one table, inner and left joins,
// GROUP BY with count, sum, min, max, avg - anything without window functions,
// LIMIT/OFFSET, RIGHT/FULL joins, set operations or volatile functions. Tables are
// named schema-qualified, or bare right after FROM/JOIN.

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "cdc/sql_session.h"
#include "config/config.h"
#include "sinks/common/sink.h"
#include "sinks/common/source_rows.h"
#include "sinks/common/view_inspector.h"
#include "sinks/common/view_list.h"
#include "sinks/postgres/mirror.h"

namespace pgderive {

class PostgresSink : public Sink, public ViewInspector {
 public:
  static Result<std::unique_ptr<PostgresSink>> Make(const Config& config, const StoreConfig& store);

  Status Resolve(SqlSession& source, bool checked = false) override;
  const std::string& name() const override { return name_; }
  Status Check(const std::shared_ptr<const RelationSchema>& schema) override;
  Status Connect() override;
  Status Migrate() override;
  Result<std::optional<Lsn>> ReadCheckpoint() override;
  std::string missing_checkpoint_reason() override {
    std::lock_guard lock(mutex_);
    return missing_reason_;
  }
  // The views' target tables and the mirrors against the OIDs recorded when pgderive
  // connected or built them: a table dropped, or dropped and created again, is reported
  // once (the store is rebuilt, which records them anew).
  Result<std::vector<StoreChange>> CheckStore() override;
  Status BeginRebuild(Lsn snapshot_lsn) override;
  Status ApplySnapshotRows(const std::shared_ptr<const RelationSchema>& schema,
                           std::span<const TupleData> rows, const TypeRegistry& types) override;
  Status EndRebuild(Lsn snapshot_lsn) override;
  Status UndoRebuild() override;
  Status Apply(const BatchGroup& group, Lsn checkpoint) override;
  // The records (pgderive.views) of views not in the configuration, marked removed: a
  // view that comes back differs from its record, so the store is rebuilt (its tables
  // swapped in, never emptied first), as for a changed definition.
  Result<std::vector<std::string>> MarkRemovedViews() override;
  // The mirrors are filled by the backfill, one per source table (TableFillName): their
  // states are rows of pgderive.views, written with the chunks they record. A view whose
  // mirrors are being filled is not maintained; its table keeps what it held (none on a
  // first fill) until the last of them is filled, then it is built from the mirrors into
  // a shadow table swapped in, in that chunk's transaction.
  std::vector<std::pair<std::string, std::string>> table_fills() const override;
  // Versions side by side: a view whose definition changed (same table name, every
  // table its old and new queries read mirrored) is built from the mirrors as a new
  // generation table in one transaction, next to the serving table; both are maintained
  // by the stream. A switch renames the two tables (and their indexes) in one
  // transaction with the view's record; the one switched away from is retained as
  // pgd_g<n>_<table> for `retain_previous`, maintained, then dropped.
  std::vector<VersionInfo> ViewVersions() override;
  Result<std::string> SwitchVersion(const std::string& view, VersionSwitch what,
                                    double percent) override;
  std::vector<SinkNotice> TakeNotices() override {
    std::lock_guard lock(mutex_);
    return std::exchange(notices_, {});
  }
  // The mirrors' states, and each view's: backfilling while a mirror it reads is.
  // nullopt when no mirror state is recorded (a store filled by an older pgderive).
  Result<std::optional<std::map<std::string, ViewState>>> ReadViewStates() override;
  // A mirror's state; with `clear`, the mirror made again empty first. Other views have
  // no state of their own.
  Status WriteViewState(const std::string& view, const ViewState& state, bool clear) override;
  // The store's rows of pgderive.checkpoints and pgderive.views, the pipeline's mirror
  // tables, and the schema pgderive once nothing else is in it; with `views`, the
  // target tables pgderive.views records as this store's (a table it never recorded is
  // the user's and stays).
  Result<std::vector<std::string>> Teardown(bool views) override;
  std::vector<std::pair<std::string, std::vector<std::string>>> view_sources() const override {
    return ViewSources(views_);
  }

  // ViewInspector (verify).
  std::vector<std::string> views() const override;
  std::vector<SourceRead> TakeSourceReads() override { return source_.Take(); }
  std::vector<std::pair<std::string, uint64_t>> TakeRebuiltRows() override {
    std::lock_guard lock(mutex_);
    return std::exchange(rebuilt_rows_, {});
  }
  Result<std::vector<Entry>> ReadView(const std::string& view) override;
  Result<std::optional<Entry>> Expected(const std::string& view,
                                        const std::shared_ptr<const RelationSchema>& schema,
                                        const TupleData& row, const TypeRegistry& types) override;
  Result<std::optional<std::string>> EntriesSql(const std::string& view, EntriesOf of) override;
  std::string store_dsn() const override { return dsn_; }
  // The keys recomputed from the mirrors into the table the stream writes, as a batch
  // recomputes the keys it affects, under the lock batches take.
  Status RepairEntries(const std::string& view, const std::vector<std::string>& keys) override;

  struct View {
    ViewConfig config;
    std::vector<std::string> tables;  // the source tables the query reads
    std::string target;               // quoted schema.table
    // For each view key column, the source key column it passes through unchanged (one
    // table, no aggregate or join); empty otherwise. Then the changed keys are the
    // affected keys, with no query over the mirror.
    std::vector<std::string> key_source;
    size_t index = 0;  // for its temporary table
    // Its versions (sinks/common/view_versions.h): generation `serving` is the table
    // named `table:`, every other one a table pgd_g<n>_<table> beside it. Each
    // definition is the Definition() text the generation was built from.
    Versions versions;
    // Where the stream writes the file's definition: empty for the view's table; a
    // generation table while a version of the file's definition is ready and another
    // serves. `unbuilt`: the file's definition has no table yet, so the stream writes it
    // nowhere; `pending`: a new version of it is built next (VersionSteps).
    std::string write_to;
    bool unbuilt = false;
    bool pending = false;
  };

  // A Definition() text taken apart (the serving or retained version of a view whose
  // definition changed is maintained with its own). nullopt: not a definition text.
  struct DefinitionParts {
    std::string table;
    std::vector<std::string> key;
    std::string query;
    std::vector<std::string> tables;  // the sources, schema.table
  };
  static std::optional<DefinitionParts> ParseDefinition(const std::string& text);

  // The shadow table of `table` (unquoted, without its schema) for build `generation`:
  // "pgd_g<generation>_<table>", cut to PostgreSQL's 63 bytes.
  static std::string ShadowTableName(const std::string& table, uint64_t generation);

 private:
  PostgresSink(std::string name, std::string dsn, std::string pipeline, std::string source_dsn)
      : name_(std::move(name)),
        dsn_(std::move(dsn)),
        pipeline_(std::move(pipeline)),
        source_(std::move(source_dsn)) {}
  Result<SqlSession*> Connection();
  Status EnsureMetadata(SqlSession& c);
  // What a view's table was built from: target, key, query and the OIDs of the source
  // tables (a table dropped and created again under the same name is another table).
  std::string Definition(const View& view) const;
  // A version built (or rolled back from) for a definition the file no longer has, while
  // the serving version is of the file's: VersionSteps drops it (never promoted stale).
  bool AbandonedBuilding(const View& view) const;
  // A row of pgderive.views: the definition, then "\ngeneration N" (the build that
  // serves, which names its shadow tables) and " made_schema" when pgderive created the
  // table's schema (a definition recorded before generations has neither).
  // A row of pgderive.views: "<definition>\ngeneration N[ made_schema][ oid O][ removed]".
  // Then "\nversions <json>" (VersionsToJson) once the view has versions.
  struct Record {
    std::string definition;
    uint64_t generation = 0;
    bool made_schema = false;
    std::string versions;  // the JSON text, empty when none is recorded
    // The OID of the table pgderive made for the view (0: not recorded, an older
    // pgderive's record): a table of that name with another OID is not pgderive's.
    uint32_t table_oid = 0;
    // The view went out of the configuration: its table is no longer kept current.
    bool removed = false;
  };
  static Record ParseRecord(const std::string& text);
  static std::string RecordText(const std::string& definition, uint64_t generation,
                                bool made_schema, uint32_t table_oid = 0, bool removed = false,
                                const std::string& versions = "");
  // Before a rebuild drops the live table `live` of `view`: refuses (a permanent error
  // naming the table and why) when it is not the table pgderive made for the view (its
  // OID is not the recorded one), or when something other than SQL views depends on it
  // (a foreign key referencing it, a publication, a trigger, a policy, ...): dropping it
  // would drop those, or fail.
  Status CheckReplaceable(SqlRunner& c, const View& view, const std::string& live,
                          const Record& record, bool in_place);
  // Whether a recorded definition is the view's (one recorded before the OIDs were is).
  bool SameDefinition(const std::string& recorded, const View& view) const;
  Result<std::vector<const View*>> ChangedViews(SqlRunner& c);
  // The mirrors' recorded states (empty when none is, or pgderive.views is missing).
  Result<std::map<std::string, ViewState>> ReadTableFills(SqlRunner& c);
  // Reads which mirrors are being filled into filling_.
  Status LoadFilling(SqlRunner& c);
  // Whether the view reads a mirror of `filling` (it is then not maintained).
  static bool Reads(const View& view, const std::set<std::string>& filling);
  // The mirror of a TableFillName; null when none.
  Mirror* MirrorOfFill(const std::string& fill);
  Status EnsureTempTables(SqlRunner& c);
  Result<std::string> MirrorQuery(const View& view, const std::optional<std::string>& restrict);
  // Inserts the view keys the changed rows touch into pgd_a_<view>: run before and after
  // the mirrors take the changes.
  Status CollectAffected(SqlRunner& c, const View& view, const std::set<std::string>& changed,
                         bool before);
  // Recompute the affected keys, or the whole view, into `target` (the view's table, or
  // the shadow a rebuild fills).
  Status Recompute(SqlRunner& c, const View& view, const std::string& target);
  Status RecomputeAll(SqlRunner& c, const View& view, const std::string& target);
  // A rebuild: a shadow table of the view (the next generation), filled from the
  // mirrors, with the live table's indexes and grants when its columns are the same.
  struct Shadow {
    std::string table;  // quoted schema.name; empty when rebuilt in place
    std::string name;   // unquoted, without schema
    uint64_t generation = 0;
    bool made_schema = false;  // the view's schema was created for it
    // The shadow's indexes renamed to the live table's names once it is swapped in.
    std::vector<std::pair<std::string, std::string>> index_names;  // (quoted now, new name)
    uint64_t rows = 0;
    uint32_t oid = 0;  // of the table that serves once it is swapped in
  };
  Result<Shadow> BuildShadow(SqlRunner& c, const View& view);
  // In the caller's transaction: the shadow replaces the live table (drop, rename), and
  // pgderive.views records the definition and the generation that serves.
  Status SwapIn(SqlRunner& c, const View& view, const Shadow& shadow);
  // Versions (ViewVersions). The quoted table of generation n when it does not serve.
  std::string GenerationTable(const View& view, int n) const;
  // Each view's versions from its record, then which need a new version built
  // (pending) and the views that maintain the other definitions (SyncVersionViews).
  Status LoadVersions(SqlRunner& c);
  void SyncVersionViews();
  // Whether the changed definition of `view` can be built as a version next to its
  // serving table (else the store is rebuilt, as before versions).
  Result<bool> Versionable(SqlRunner& c, const View& view, const Record& record);
  // In one transaction each: a pending version built (and promoted when it switches
  // on ready), a retained version whose time is up dropped. Called between batches.
  Status VersionSteps(SqlSession& session);
  // Inside the caller's transaction: the live table's lock, taken in short attempts.
  Status LockLive(SqlRunner& c, const std::string& target);
  // The serving table and generation `to`'s swap names (and index names); `versions`
  // is then recorded with the view's record. Returns the new serving table's OID.
  Status SwitchTables(SqlRunner& c, const View& view, int from, int to);
  Status WriteVersions(SqlRunner& c, const View& view, const Versions& versions);
  // What a switch made: the views' versions in memory follow, the temporary tables are
  // made again, CheckStore takes the view's table as it is now.
  Status AfterSwitch(SqlSession& session, View& view, Versions versions);
  std::string VersionWhere(const View& view, const Versions& versions, int n) const;
  // Where a batch writes a view's rows: its shadow while a rebuild in the batch fills it.
  // Else its version table while a version of the file's definition waits for its
  // promote.
  const std::string& WriteTarget(const View& view) const {
    auto it = shadows_.find(view.index);
    if (it != shadows_.end() && !it->second.table.empty()) return it->second.table;
    return view.write_to.empty() ? view.target : view.write_to;
  }
  // The views a batch maintains: the configuration's (not while a mirror they read
  // fills, nor while their new version waits to be built) and the version views.
  std::vector<const View*> Maintained(const std::set<std::string>& filling) const;
  // A row of pgderive.checkpoints of this pipeline: the store's checkpoint (row name_)
  // or its SourceRows horizon (row HorizonRow()). Read: the LSN's text, nullopt when none.
  Result<std::optional<std::string>> ReadCheckpointRow(SqlRunner& c, const std::string& row);
  Status WriteCheckpointRow(SqlRunner& c, const std::string& row, Lsn lsn);
  // The definition pgderive.views records for the view; nullopt when none.
  Result<std::optional<std::string>> RecordedDefinition(SqlRunner& c, const View& view);
  Result<std::vector<Entry>> ReadEntries(SqlRunner& c, const View& view,
                                         const std::string& relation);
  // The SELECT of `relation`'s rows as verify entries, `k` and `e`, and with `digest` the
  // digest form `d` (EntriesSql).
  // `floats`: the view's float columns, kept JSON numbers (every other number is given as
  // the string of its digits).
  std::string EntriesSelect(const View& view, const std::string& relation, bool digest = false,
                            const std::vector<std::string>& floats = {}) const;
  // The table verify compares for the file's definition of `view`: its table, or the
  // ready version's while another definition serves (a manual promote pending).
  Result<std::string> VerifiedTable(SqlRunner& c, const View& view);
  std::string KeyList(const View& view, const std::string& prefix = "") const;
  // The temporary table of the view keys a batch affects.
  static std::string AffectedTable(const View& view) {
    return "pgd_a_" + std::to_string(view.index);
  }
  // The row of pgderive.checkpoints that holds the store's SourceRows horizon.
  std::string HorizonRow() const { return name_ + "/reread"; }
  std::string KeyIndex(SqlRunner& c, const View& view) const {
    return KeyIndexOn(c, view, view.target);
  }
  std::string KeyIndexOn(SqlRunner& c, const View& view, const std::string& table) const;

  std::string name_;
  std::string dsn_;
  std::string pipeline_;
  std::vector<std::unique_ptr<View>> views_;
  std::map<std::string, Mirror> mirrors_;  // by source table
  std::mutex mutex_;
  std::optional<SqlSession> session_;  // on the target database
  bool temp_ready_ = false;
  // The source tables whose mirrors are being filled (their state backfilling), as the
  // store records them; read again when unset.
  std::optional<std::set<std::string>> filling_;
  // Those of them in their first fill (ViewState::first_fill), as recorded.
  std::set<std::string> first_fills_;
  // The rebuilds of the batch being applied, by view index: swapped in at its end.
  std::map<size_t, Shadow> shadows_;
  // The views that maintain a kept generation of another definition than the file's
  // (the serving one while a new version waits, a retained one): name "<view>@<n>".
  std::vector<std::unique_ptr<View>> version_views_;
  size_t next_index_ = 0;  // temporary-table numbers of version views
  std::vector<SinkNotice> notices_;
  std::mutex shown_mutex_;
  std::vector<VersionInfo> shown_;  // ViewVersions, for other threads
  // Rows each view got from a rebuild since TakeRebuiltRows.
  std::vector<std::pair<std::string, uint64_t>> rebuilt_rows_;
  // What BeginRebuild of this process created: target tables, their schemas, mirrors.
  std::vector<std::string> created_tables_;
  std::vector<std::string> created_schemas_;
  SourceRows source_;            // rows read again (an unchanged TOASTed value the mirror lacks)
  bool horizon_loaded_ = false;  // its horizon, from the row HorizonRow()
  std::string missing_reason_;   // why the last ReadCheckpoint found none
  // Each target table's and mirror's OID (0: absent) as pgderive last saw it, and the
  // ones already reported as changed; unset until first read.
  std::optional<std::map<std::string, uint32_t>> table_oids_;
  std::set<std::string> reported_tables_;
  // Reads the OIDs of the targets and the mirrors now.
  Result<std::map<std::string, uint32_t>> ReadTableOids(SqlRunner& c);
};

}  // namespace pgderive
