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
  Result<std::optional<std::vector<Entry>>> ExpectedFromSource(const std::string& view,
                                                               SqlRunner& source) override;

  struct View {
    ViewConfig config;
    std::vector<std::string> tables;  // the source tables the query reads
    std::string target;               // quoted schema.table
    // For each view key column, the source key column it passes through unchanged (one
    // table, no aggregate or join); empty otherwise. Then the changed keys are the
    // affected keys, with no query over the mirror.
    std::vector<std::string> key_source;
    size_t index = 0;  // for its temporary table
  };

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
  // A row of pgderive.views: the definition, then "\ngeneration N" (the build that
  // serves, which names its shadow tables) and " made_schema" when pgderive created the
  // table's schema (a definition recorded before generations has neither).
  struct Record {
    std::string definition;
    uint64_t generation = 0;
    bool made_schema = false;
  };
  static Record ParseRecord(const std::string& text);
  static std::string RecordText(const std::string& definition, uint64_t generation,
                                bool made_schema);
  // Whether a recorded definition is the view's (one recorded before the OIDs were is).
  bool SameDefinition(const std::string& recorded, const View& view) const;
  Result<std::vector<const View*>> ChangedViews(SqlRunner& c);
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
  };
  Result<Shadow> BuildShadow(SqlRunner& c, const View& view);
  // In the caller's transaction: the shadow replaces the live table (drop, rename), and
  // pgderive.views records the definition and the generation that serves.
  Status SwapIn(SqlRunner& c, const View& view, const Shadow& shadow);
  // Where a batch writes a view's rows: its shadow while a rebuild in the batch fills it.
  const std::string& WriteTarget(const View& view) const {
    auto it = shadows_.find(view.index);
    return it == shadows_.end() || it->second.table.empty() ? view.target : it->second.table;
  }
  // A row of pgderive.checkpoints of this pipeline: the store's checkpoint (row name_)
  // or its SourceRows horizon (row HorizonRow()). Read: the LSN's text, nullopt when none.
  Result<std::optional<std::string>> ReadCheckpointRow(SqlRunner& c, const std::string& row);
  Status WriteCheckpointRow(SqlRunner& c, const std::string& row, Lsn lsn);
  // The definition pgderive.views records for the view; nullopt when none.
  Result<std::optional<std::string>> RecordedDefinition(SqlRunner& c, const View& view);
  Result<std::vector<Entry>> ReadEntries(SqlRunner& c, const View& view,
                                         const std::string& relation);
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
  // The rebuilds of the batch being applied, by view index: swapped in at its end.
  std::map<size_t, Shadow> shadows_;
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
