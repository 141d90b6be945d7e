#include "pipeline/rebuild.h"

#include <unistd.h>

#include <algorithm>
#include <map>

#include "cdc/pg_connection.h"
#include "cdc/sql_session.h"
#include "cdc/type_catalog.h"
#include "pipeline/pipeline_worker.h"
#include "snapshot/snapshot_reader.h"

namespace pgderive {
namespace {

// Snapshot rows to every sink whose views read the table.
// Counts them per view (pgderive_changes_applied_total{source="snapshot"}); a store whose
// views are queries (postgres) counts the rows its views got instead (Count).
class SnapshotFanout : public TypedSnapshotConsumer {
 public:
  SnapshotFanout(std::vector<Sink*> sinks, TypeLearner& learner, Metrics& metrics)
      : TypedSnapshotConsumer(learner), sinks_(std::move(sinks)) {
    for (Sink* sink : sinks_) {
      for (const auto& [view, tables] : sink->view_sources()) {
        Counter& applied = ChangesApplied(metrics, sink->name(), view, AppliedSource::kSnapshot);
        views_[{sink, view}] = &applied;
        if (!sink->backfills_rows()) continue;
        for (const std::string& table : tables) counters_[{sink, table}].push_back(&applied);
      }
    }
  }

  // After `sink`'s EndRebuild: the rows its views got.
  void Count(Sink* sink) {
    for (const auto& [view, rows] : sink->TakeRebuiltRows()) {
      if (auto it = views_.find({sink, view}); it != views_.end()) {
        it->second->Add(static_cast<double>(rows));
      }
    }
  }

 protected:
  Status OnTypedRows(const std::shared_ptr<const RelationSchema>& schema,
                     std::span<const TupleData> rows, const TypeRegistry& types) override {
    const std::string table = schema->QualifiedName();
    for (Sink* sink : sinks_) {
      const auto tables = sink->tables();
      if (std::find(tables.begin(), tables.end(), table) == tables.end()) continue;
      Status status = sink->ApplySnapshotRows(schema, rows, types);
      if (!status.ok()) return status;
      if (auto it = counters_.find({sink, table}); it != counters_.end()) {
        for (Counter* counter : it->second) counter->Add(static_cast<double>(rows.size()));
      }
    }
    return Status::Ok();
  }

 private:
  std::vector<Sink*> sinks_;
  // (store, table) -> the counters of the store's views that read the table.
  std::map<std::pair<Sink*, std::string>, std::vector<Counter*>> counters_;
  std::map<std::pair<Sink*, std::string>, Counter*> views_;  // (store, view)
};

}  // namespace

// Fills `sinks` from the exported snapshot `snapshot_name` taken at `lsn`, which
// becomes their checkpoint. Each sink first drops its views' data and checkpoint, so a
// crash midway leaves no checkpoint and the next start rebuilds again.
Status SnapshotInto(const Config& config, const std::vector<Sink*>& sinks,
                    const std::string& snapshot_name, Lsn lsn, const std::atomic<bool>* stop,
                    Logger& log, RunMonitor& monitor) {
  std::vector<std::string> tables;
  for (Sink* sink : sinks) {
    for (const std::string& t : sink->tables()) {
      if (std::find(tables.begin(), tables.end(), t) == tables.end()) tables.push_back(t);
    }
  }
  auto reader = SnapshotReader::Open({.dsn = config.source.dsn,
                                      .snapshot_name = snapshot_name,
                                      .tables = tables,
                                      .workers = config.snapshot.workers,
                                      .stop = stop});
  if (!reader.ok()) return reader.error();
  auto sql = SqlSession::Connect(config.source.dsn, "pgderive-run");
  if (!sql.ok()) return sql.error();
  TypeLearner learner(sql.value());
  for (Sink* sink : sinks) {
    Status status = sink->BeginRebuild(lsn);
    if (!status.ok()) return status;
  }
  std::vector<std::string> names;
  for (Sink* sink : sinks) names.push_back(sink->name());
  std::string store_list;
  for (const std::string& n : names) store_list += (store_list.empty() ? "" : ",") + n;
  // A table never analyzed has no estimate: "unknown", never a misleading 0.
  const SnapshotProgress& planned = reader.value()->progress();
  const uint64_t unestimated = planned.rows_unestimated_tables.load();
  std::string estimated = std::to_string(planned.rows_estimated.load());
  if (unestimated == tables.size()) {
    estimated = "unknown (never analyzed)";
  } else if (unestimated > 0) {
    estimated += " and " + std::to_string(unestimated) + " table(s) never analyzed";
  }
  log.Info("snapshot started", {{"lsn", lsn.ToString()},
                                {"tables", std::to_string(tables.size())},
                                {"stores", store_list},
                                {"estimated_rows", estimated}});
  const auto started = std::chrono::steady_clock::now();
  monitor.SnapshotStarted(&reader.value()->progress(), names);
  SnapshotFanout fanout(sinks, learner, monitor.metrics());
  Status status = reader.value()->Run(fanout);
  for (Sink* sink : sinks) {
    if (status.ok()) status = sink->EndRebuild(lsn);
    if (status.ok()) fanout.Count(sink);
  }
  monitor.SnapshotEnded(names);
  if (!status.ok()) return status;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const uint64_t rows = reader.value()->progress().rows_read.load();
  log.Info("snapshot done", {{"lsn", lsn.ToString()},
                             {"stores", store_list},
                             {"rows", std::to_string(rows)},
                             {"seconds", std::to_string(seconds)}});
  return Status::Ok();
}

// A rebuild while the pipeline runs: a temporary slot exports a snapshot at the
// current WAL position; the store is filled from it and resumes from that point.
Result<Lsn> RebuildFromTemporarySlot(const Config& config, Sink& sink,
                                     const std::atomic<bool>* stop, Logger& log,
                                     RunMonitor& monitor) {
  static std::atomic<int> counter{0};
  auto repl = PgConnection::Connect(config.source.dsn, PgConnection::Mode::kReplication,
                                    "pgderive-rebuild");
  if (!repl.ok()) return repl.error();
  const std::string slot =
      "pgderive_rebuild_" + std::to_string(getpid()) + "_" + std::to_string(++counter);
  auto created =
      repl.value().CreateLogicalSlot(slot, "pgoutput", /*temporary=*/true, SlotSnapshot::kExport);
  if (!created.ok()) return created.error();
  Status status = SnapshotInto(config, {&sink}, *created.value().snapshot_name,
                               created.value().consistent_point, stop, log, monitor);
  if (!status.ok()) return status.error();
  return created.value().consistent_point;
}

}  // namespace pgderive
