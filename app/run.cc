#include "app/run.h"

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "app/sink_factory.h"
#include "app/validate.h"
#include "base/backoff.h"
#include "base/http_server.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/redact.h"
#include "cdc/publication.h"
#include "cdc/replication_stream.h"
#include "cdc/transaction_assembler.h"
#include "cdc/type_catalog.h"
#include "config/config.h"
#include "pipeline/pipeline_worker.h"
#include "pipeline/run_monitor.h"
#include "snapshot/backfill.h"
#include "snapshot/snapshot_reader.h"

namespace pgderive {
namespace {

constexpr size_t kBatchBytes = size_t{4} << 20;      // a batch closes at a commit past this
constexpr size_t kBatchChanges = 10000;              // ... or past this many changes
constexpr size_t kMaxBatchBytes = size_t{16} << 20;  // or mid-transaction past this
constexpr size_t kQueueBytes = size_t{64} << 20;     // per store
constexpr auto kOfferWait = std::chrono::seconds(1);
constexpr auto kStopGrace = std::chrono::seconds(8);
constexpr auto kIdleMarkInterval = std::chrono::seconds(1);
// When the stream pauses, a batch waits this long for more before it is dispatched:
// at thousands of small transactions a second this turns one worker wake-up and one
// store round trip per transaction into one per millisecond, which on a busy machine
// costs far less latency than it saves.
constexpr auto kLinger = std::chrono::milliseconds(2);

// Snapshot rows to every sink whose views read the table.
class SnapshotFanout : public SnapshotConsumer {
 public:
  SnapshotFanout(std::vector<Sink*> sinks, TypeLearner& learner)
      : sinks_(std::move(sinks)), learner_(learner) {}

  Status OnTable(const std::shared_ptr<const RelationSchema>& schema) override {
    schemas_[schema.get()] = schema;
    Status status = learner_.Learn(schema->columns);
    types_ = learner_.types();
    return status;
  }
  Status OnRows(const RelationSchema& schema, std::span<const TupleData> rows) override {
    const auto& shared = schemas_.at(&schema);
    const std::string table = schema.QualifiedName();
    for (Sink* sink : sinks_) {
      const auto tables = sink->tables();
      if (std::find(tables.begin(), tables.end(), table) == tables.end()) continue;
      Status status = sink->ApplySnapshotRows(shared, rows, *types_);
      if (!status.ok()) return status;
    }
    return Status::Ok();
  }

 private:
  std::vector<Sink*> sinks_;
  TypeLearner& learner_;
  std::map<const RelationSchema*, std::shared_ptr<const RelationSchema>> schemas_;
  std::shared_ptr<const TypeRegistry> types_;
};

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
  auto sql = PgConnection::Connect(config.source.dsn, PgConnection::Mode::kSql, "pgderive-run");
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
  log.Info("snapshot started",
           {{"lsn", lsn.ToString()},
            {"tables", std::to_string(tables.size())},
            {"stores", store_list},
            {"estimated_rows", std::to_string(reader.value()->progress().rows_estimated.load())}});
  const auto started = std::chrono::steady_clock::now();
  monitor.SnapshotStarted(&reader.value()->progress(), names);
  SnapshotFanout fanout(sinks, learner);
  Status status = reader.value()->Run(fanout);
  for (Sink* sink : sinks) {
    if (status.ok()) status = sink->EndRebuild(lsn);
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

// A partition's change presented as its partitioned table's (PartitionRoots): the
// tuples' columns in the root's order; what the change points into lives here.
struct MappedChange {
  PgOutputMessage message;
  std::vector<std::shared_ptr<const RelationSchema>> relations;
};

// nullopt when no relation of `change` is a partition standing for a table views read.
Result<std::optional<MappedChange>> MapPartitions(PartitionRoots& roots, const Change& change) {
  std::optional<MappedChange> out;
  const PartitionRoots::Mapping* single = nullptr;
  for (size_t i = 0; i < change.relations.size(); ++i) {
    auto found = roots.Find(change.relations[i]);
    if (!found.ok()) return found.error();
    if (found.value() == nullptr) continue;
    if (!out) {
      out.emplace();
      out->relations.assign(change.relations.begin(), change.relations.end());
    }
    out->relations[i] = found.value()->root;
    single = found.value();
  }
  if (!out) return out;
  out->message = *change.message;
  auto reorder = [&](TupleData& tuple) {
    TupleData mapped;
    for (int from : single->from) {
      mapped.columns.push_back(from >= 0 && static_cast<size_t>(from) < tuple.columns.size()
                                   ? tuple.columns[from]
                                   : TupleValue{});
    }
    tuple = std::move(mapped);
  };
  std::visit(
      [&](auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, InsertMessage>) {
          reorder(m.new_tuple);
        } else if constexpr (std::is_same_v<T, UpdateMessage>) {
          reorder(m.new_tuple);
          if (m.old_kind != '\0') reorder(m.old_tuple);
        } else if constexpr (std::is_same_v<T, DeleteMessage>) {
          reorder(m.old_tuple);
        }
      },
      out->message);
  return out;
}

// Decoded changes -> batches -> every attached worker's queue.
class Dispatcher : public ChangeConsumer {
 public:
  Dispatcher(TypeLearner& learner, PartitionRoots& roots,
             std::vector<std::unique_ptr<PipelineWorker>>& workers, Backfills& backfills)
      : learner_(learner),
        roots_(roots),
        workers_(workers),
        backfills_(backfills),
        batch_(std::make_unique<ChangeBatch>()) {}

  Status OnBegin(const TransactionInfo&) override { return Status::Ok(); }

  Status OnChange(const Change& decoded) override {
    auto mapped = MapPartitions(roots_, decoded);
    if (!mapped.ok()) return mapped.error();
    const Change change = mapped.value()
                              ? Change{decoded.commit_lsn, decoded.index, &mapped.value()->message,
                                       mapped.value()->relations}
                              : decoded;
    Touch();
    Status status = Learn(change.relations);
    if (!status.ok()) return status;
    // What a backfill places here: a chunk's rows at its watermark, views' states.
    backfills_.OnChange(change, injected_);
    for (OwnedChange& placed : injected_) {
      // A chunk's rows carry the table's shape as the backfill read it.
      status = Learn(placed.relations);
      if (!status.ok()) return status;
      batch_->bytes += placed.bytes + sizeof(OwnedChange);
      batch_->changes.push_back(std::move(placed));
    }
    injected_.clear();
    auto owned = CopyChange(change);
    if (!owned) return Status::Ok();  // a logical message
    batch_->bytes += owned->bytes + sizeof(OwnedChange);
    batch_->changes.push_back(std::move(*owned));
    if (batch_->bytes >= kMaxBatchBytes) Dispatch();
    return Status::Ok();
  }

  Status OnCommit(const TransactionInfo& transaction) override {
    Touch();
    batch_->commits.push_back(CommitMark{transaction.commit_lsn, transaction.end_lsn,
                                         transaction.commit_time, batch_->changes.size()});
    if (batch_->bytes >= kBatchBytes || batch_->changes.size() >= kBatchChanges) Dispatch();
    return Status::Ok();
  }

  bool pending() const { return !batch_->changes.empty() || !batch_->commits.empty(); }
  // When the pending batch got its first change or commit.
  std::chrono::steady_clock::time_point pending_since() const { return pending_since_; }

  // Nothing is open and everything received up to `received` has been dispatched: a
  // batch without changes whose checkpoint is `received` lets every store (and so the
  // slot) move past WAL that holds none of our changes - other tables' writes, a
  // checkpoint record at shutdown. Safe because a transaction that commits later has
  // its commit LSN at or after `received` (change_batch.h).
  // Whether a mark was sent.
  bool MarkIdle(Lsn received) {
    if (pending() || received <= last_mark_) return false;
    batch_->commits.push_back(CommitMark{received, received, 0, 0});
    Dispatch();
    return true;
  }

  void Dispatch() {
    if (!pending()) return;
    last_mark_ =
        std::max(last_mark_, batch_->commits.empty() ? Lsn{} : batch_->commits.back().end_lsn);
    batch_->types = learner_.types();
    std::shared_ptr<const ChangeBatch> batch(std::move(batch_));
    batch_ = std::make_unique<ChangeBatch>();
    for (auto& worker : workers_) worker->Offer(batch, kOfferWait);
  }
  // The stream restarts from the slot: what is not dispatched comes again.
  void Drop() {
    batch_ = std::make_unique<ChangeBatch>();
    last_mark_ = Lsn{};
  }

 private:
  TypeLearner& learner_;
  PartitionRoots& roots_;
  std::vector<std::unique_ptr<PipelineWorker>>& workers_;
  Backfills& backfills_;
  std::vector<OwnedChange> injected_;
  std::unique_ptr<ChangeBatch> batch_;
  std::shared_ptr<const RelationSchema> last_learned_;
  Lsn last_mark_;  // the highest checkpoint dispatched
  std::chrono::steady_clock::time_point pending_since_;

  // The types of the relations' columns, for the batch's registry.
  Status Learn(std::span<const std::shared_ptr<const RelationSchema>> relations) {
    for (const auto& relation : relations) {
      if (relation == last_learned_) continue;
      Status status = learner_.Learn(relation->columns);
      if (!status.ok()) return status;
      last_learned_ = relation;
    }
    return Status::Ok();
  }
  void Touch() {
    if (!pending()) pending_since_ = std::chrono::steady_clock::now();
  }
};

struct SlotState {
  bool exists = false;
  Lsn confirmed_flush;
};

Result<SlotState> ReadSlot(PgConnection& sql, const std::string& slot) {
  auto rows = sql.Query(
      "select confirmed_flush_lsn, plugin, database = current_database(), wal_status from "
      "pg_replication_slots where slot_name = " +
      sql.QuoteLiteral(slot));
  if (!rows.ok()) return rows.error();
  if (rows.value().rows.empty()) return SlotState{};
  const auto& row = rows.value().rows[0];
  if (row[1].value_or("") != "pgoutput" || row[2].value_or("") != "t") {
    return Error::Permanent("slot " + slot +
                            " exists but is not a pgoutput slot of this database; choose "
                            "another source.slot or drop it");
  }
  if (row[3].value_or("") == "lost") return Error::Permanent(RunMonitor::SlotLostMessage(slot));
  auto lsn = Lsn::Parse(row[0].value_or(""));
  return SlotState{true, lsn.value_or(Lsn{})};
}

// Which PostgreSQL server a connection reaches: its postmaster's start time and port
// (the same server under any address or DSN spelling; readable without privileges).
std::optional<std::string> ServerIdentity(const std::string& dsn) {
  auto c = PgConnection::Connect(dsn, PgConnection::Mode::kSql, "pgderive-run");
  if (!c.ok()) return std::nullopt;
  auto rows =
      c.value().Query("select pg_postmaster_start_time()::text || ' ' || current_setting('port')");
  if (!rows.ok() || rows.value().rows.empty()) return std::nullopt;
  return rows.value().rows[0][0];
}

// Calls `attempt` until it succeeds, fails for good, or `stopped`: a store's transient
// error at start (OpenSearch's shards still recovering after a crash, a store
// restarting) is retried with backoff, never the end of the run.
template <typename Attempt>
auto RetryTransient(Attempt attempt, const std::function<bool()>& stopped,
                    const std::function<void(const std::string&)>& log) {
  Backoff backoff(std::chrono::milliseconds(200), std::chrono::seconds(10));
  while (true) {
    auto result = attempt();
    if (result.ok() || result.error().kind() != ErrorKind::kTransient || stopped()) return result;
    const auto wait = backoff.Next();
    log(result.error().message() + "; retrying in " + std::to_string(wait.count()) + " ms");
    const auto until = std::chrono::steady_clock::now() + wait;
    while (!stopped() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

}  // namespace

int RunPipeline(const RunOptions& options) {
  const std::optional<Config> loaded = LoadConfigOrReport(options.config_path, stderr);
  if (!loaded) return 2;
  const Config& config = *loaded;
  Logger logger(config.log);
  auto Log = [&](const std::string& message) {
    logger.Info(message, {{"pipeline", config.pipeline}, {"slot", config.source.slot}});
  };
  auto Fail = [&](const std::string& message) {
    logger.Error(message, {{"pipeline", config.pipeline}, {"slot", config.source.slot}});
    return 1;
  };
  // The checks of `pgderive validate --connect`, before anything is made: a source or
  // store that cannot work exits 2 with every problem listed, creating nothing.
  {
    ConfigResult checked;
    checked.problems = CheckConnected(config);
    if (!checked.problems.empty()) {
      std::fputs(RedactSecrets(checked.Describe(options.config_path)).c_str(), stderr);
      logger.Error(
          "the configuration does not work with these servers; nothing was created",
          {{"pipeline", config.pipeline}, {"problems", std::to_string(checked.problems.size())}});
      return 2;
    }
  }
  Metrics metrics;
  RunMonitor monitor(config, logger, metrics);
  auto made = MakeSinks(config);
  if (!made.ok()) return Fail(made.error().message());
  std::vector<std::unique_ptr<Sink>> sinks = std::move(made).value();
  auto sql = PgConnection::Connect(config.source.dsn, PgConnection::Mode::kSql, "pgderive-run");
  if (!sql.ok()) return Fail(sql.error().message());
  // What each store needs from the source (a postgres view: the tables its query
  // reads); CheckConnected above has checked the tables and the views' queries.
  std::vector<std::string> tables;
  for (auto& sink : sinks) {
    Status resolved = sink->Resolve(sql.value(), /*checked=*/true);
    if (!resolved.ok()) return Fail("store " + sink->name() + ": " + resolved.error().message());
    for (const std::string& t : sink->tables()) {
      if (std::find(tables.begin(), tables.end(), t) == tables.end()) tables.push_back(t);
    }
  }
  // Every view takes its table's shape (checked above; a table altered since is still
  // refused here, before anything is created).
  Status status = Status::Ok();
  std::string problems;
  std::map<std::string, std::shared_ptr<const RelationSchema>> shapes;  // table -> its shape now
  for (const std::string& table : tables) {
    auto schema = DescribeTable(sql.value(), table);
    if (!schema.ok()) return Fail(schema.error().message());
    shapes[table] = schema.value();
    // A view without `columns` takes every column PostgreSQL publishes: said at start.
    auto generated = GeneratedColumns(sql.value(), table);
    if (!generated.ok()) return Fail(generated.error().message());
    for (const ViewConfig& view : config.views) {
      if (view.from != table || view.columns || generated.value().empty()) continue;
      std::string names;
      for (const auto& [name, expression] : generated.value()) {
        names += (names.empty() ? "" : ", ") + name;
      }
      logger.Info("view " + view.name + " leaves out the generated column(s) " + names + " of " +
                      table + ": PostgreSQL before 18 does not publish generated columns",
                  {{"view", view.name}, {"table", table}});
    }
    for (auto& sink : sinks) {
      status = sink->Check(schema.value());
      if (!status.ok()) problems += "\n  " + status.error().message();
    }
  }
  if (!problems.empty()) return Fail("the views do not fit their tables:" + problems);
  for (auto& sink : sinks) {
    status = sink->Connect();
    if (!status.ok()) return Fail("store " + sink->name() + ": " + status.error().message());
  }
  // The HTTP endpoint binds before anything is created: a taken port fails the start.
  auto http =
      HttpServer::Start(config.http.listen, {.not_ready = [&] { return monitor.NotReady(); },
                                             .metrics = [&] { return metrics.Render(); },
                                             .status_json = [&] { return monitor.StatusJson(); }});
  if (!http.ok()) return Fail(http.error().message());
  logger.Info("http endpoint listening",
              {{"listen", config.http.listen}, {"port", std::to_string(http.value()->port())}});
  {
    // The tables as the views were checked against (and their partitions now).
    auto identities = ReadTableIdentities(sql.value(), config.source.publication, tables);
    if (!identities.ok()) return Fail(identities.error().message());
    for (auto& [table, identity] : identities.value()) identity.oid = shapes.at(table)->id.value;
    monitor.WatchSourceTables(identities.value());
  }
  monitor.Start();
  for (auto& sink : sinks) {
    status = sink->Migrate();
    if (!status.ok()) return Fail("store " + sink->name() + ": " + status.error().message());
  }
  // What this run creates on the source and in the stores: should it fail before it
  // streams, it removes exactly that again (no half-made state) - the publication and
  // the slot if it created them, and what the first start's snapshot began to fill.
  bool made_publication = false;
  {
    auto present = sql.value().Query("select from pg_publication where pubname = " +
                                     sql.value().QuoteLiteral(config.source.publication));
    if (!present.ok()) return Fail(present.error().message());
    made_publication = present.value().rows.empty();
  }
  bool made_slot = false;
  std::vector<Sink*> filling;
  std::optional<PgConnection> replication;  // closed before the slot is dropped
  auto Undo = [&](int code) {
    std::vector<std::string> removed;
    for (Sink* sink : filling) {
      Status undone = sink->UndoRebuild();
      if (undone.ok()) {
        removed.push_back("what the snapshot wrote to store " + sink->name());
      } else {
        logger.Warn("could not remove what the snapshot wrote to store " + sink->name() + ": " +
                        undone.error().message(),
                    {{"pipeline", config.pipeline}});
      }
    }
    replication.reset();
    if (made_slot) {
      // The walsender that created the slot may still be ending: retry while active.
      Status dropped = Status::Ok();
      for (int attempt = 0; attempt < 100; ++attempt) {
        dropped = sql.value().Execute("select pg_drop_replication_slot(" +
                                      sql.value().QuoteLiteral(config.source.slot) + ")");
        if (dropped.ok()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // retry interval
      }
      if (dropped.ok()) {
        removed.push_back("slot " + config.source.slot);
      } else {
        logger.Warn("could not drop slot " + config.source.slot + ": " + dropped.error().message(),
                    {{"pipeline", config.pipeline}});
      }
    }
    if (made_publication) {
      Status dropped = sql.value().Execute("drop publication if exists " +
                                           sql.value().QuoteIdentifier(config.source.publication));
      if (dropped.ok()) {
        removed.push_back("publication " + config.source.publication);
      } else {
        logger.Warn("could not drop publication " + config.source.publication + ": " +
                        dropped.error().message(),
                    {{"pipeline", config.pipeline}});
      }
    }
    if (!removed.empty()) {
      std::string list;
      for (const std::string& r : removed) list += (list.empty() ? "" : ", ") + r;
      Log("removed what this run created: " + list);
    }
    return code;
  };
  status = EnsurePublication(sql.value(), config.source.publication, tables);
  if (!status.ok()) return Undo(Fail(status.error().message()));

  auto slot = ReadSlot(sql.value(), config.source.slot);
  if (!slot.ok()) return Undo(Fail(slot.error().message()));
  {
    auto connected =
        PgConnection::Connect(config.source.dsn, PgConnection::Mode::kReplication, "pgderive-run");
    if (!connected.ok()) return Undo(Fail(connected.error().message()));
    replication.emplace(std::move(connected).value());
  }
  std::map<Sink*, Lsn> checkpoints;
  Lsn confirmed;
  auto stopped = [&] { return options.stop != nullptr && options.stop->load(); };
  std::vector<Sink*> to_rebuild;
  if (!slot.value().exists) {
    // First start: the slot's exported snapshot fills every view, and the stream
    // continues from exactly its consistent point. Until every store has written its
    // checkpoint a crash leaves at least one without, which the next start rebuilds.
    auto created = replication->CreateLogicalSlot(config.source.slot, "pgoutput",
                                                  /*temporary=*/false, SlotSnapshot::kExport);
    if (!created.ok()) return Undo(Fail(created.error().message()));
    made_slot = true;
    Log("created slot " + config.source.slot + " at " +
        created.value().consistent_point.ToString());
    std::vector<Sink*> all;
    for (auto& sink : sinks) all.push_back(sink.get());
    filling = all;
    confirmed = created.value().consistent_point;
    status = SnapshotInto(config, all, *created.value().snapshot_name,
                          created.value().consistent_point, options.stop, logger, monitor);
    if (!status.ok()) {
      if (status.error().kind() != ErrorKind::kTransient) {
        return Undo(Fail("initial snapshot failed: " + status.error().message()));
      }
      Log("initial snapshot failed: " + status.error().message() +
          "; the stores are rebuilt from a new snapshot");
      to_rebuild = all;
    } else {
      for (Sink* sink : all) checkpoints[sink] = created.value().consistent_point;
    }
  } else {
    confirmed = slot.value().confirmed_flush;
    for (auto& sink : sinks) {
      auto stored =
          RetryTransient([&] { return sink->ReadCheckpoint(); }, stopped,
                         [&](const std::string& m) { Log("store " + sink->name() + ": " + m); });
      if (!stored.ok()) {
        return Undo(Fail("store " + sink->name() + ": " + stored.error().message()));
      }
      if (stored.value() && *stored.value() >= confirmed) {
        checkpoints[sink.get()] = *stored.value();
        Log("store " + sink->name() + " resumes from " + stored.value()->ToString());
        continue;
      }
      Log("store " + sink->name() + " has " +
          (stored.value() ? "checkpoint " + stored.value()->ToString() + ", behind the slot's " +
                                confirmed.ToString()
                          : std::string("no checkpoint")) +
          ": rebuilding its views");
      to_rebuild.push_back(sink.get());
    }
  }
  for (Sink* sink : to_rebuild) {
    Backoff backoff(std::chrono::milliseconds(200), std::chrono::seconds(10));
    while (true) {
      if (stopped()) return 0;  // nothing is confirmed; the next start rebuilds
      auto rebuilt = RebuildFromTemporarySlot(config, *sink, options.stop, logger, monitor);
      if (rebuilt.ok()) {
        checkpoints[sink] = rebuilt.value();
        break;
      }
      if (rebuilt.error().kind() != ErrorKind::kTransient) {
        return Undo(
            Fail("rebuild of store " + sink->name() + " failed: " + rebuilt.error().message()));
      }
      const auto wait = backoff.Next();
      Log("rebuild of store " + sink->name() + " failed: " + rebuilt.error().message() +
          "; retrying in " + std::to_string(wait.count()) + " ms");
      const auto until = std::chrono::steady_clock::now() + wait;
      while (!stopped() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }

  std::vector<BackfillView> backfill_views;
  for (const ViewConfig& view : config.views) {
    for (auto& sink : sinks) {
      if (sink->name() != view.store) continue;
      backfill_views.push_back(BackfillView{view.store, view.name, view.from,
                                            sink->backfills_rows(), !view.columns.has_value()});
    }
  }
  std::vector<std::unique_ptr<PipelineWorker>> workers;
  auto WorkerOf = [&workers](const std::string& store) -> PipelineWorker& {
    for (auto& worker : workers) {
      if (worker->sink().name() == store) return *worker;
    }
    std::abort();  // every store has a worker before the backfill starts
  };
  // After the workers (it reads their checkpoints), before the monitor guard (the
  // monitor's thread reads its progress): destroyed between the two.
  Backfills backfills(
      {.dsn = config.source.dsn,
       .pipeline = config.pipeline,
       .views = backfill_views,
       .chunk_rows = 16384,
       .checkpoint = [&](const std::string& store) { return WorkerOf(store).checkpoint(); },
       .durable = [&](const std::string& store) { return WorkerOf(store).Durable(); },
       .failed = [&](const std::string& store) { return WorkerOf(store).failed(); }},
      logger);
  // Declared after the workers, so destroyed first on every return: the monitor's
  // thread reads them.
  struct StopMonitor {
    RunMonitor& monitor;
    ~StopMonitor() { monitor.Stop(); }
  } stop_monitor{monitor};
  // Views to backfill while streaming (SPEC.md §1.4): new to their store, interrupted
  // by a stop, or following a table whose columns changed while pgderive was stopped.
  for (auto& sink : sinks) {
    if (!sink->backfills_rows()) continue;
    auto states =
        RetryTransient([&] { return sink->ReadViewStates(); }, stopped,
                       [&](const std::string& m) { Log("store " + sink->name() + ": " + m); });
    if (!states.ok()) {
      return Undo(Fail("store " + sink->name() + ": " + states.error().message()));
    }
    for (const BackfillView& v : backfill_views) {
      if (v.store != sink->name()) continue;
      const std::vector<std::string> columns = ColumnsOf(*shapes.at(v.table));
      const uint32_t oid = shapes.at(v.table)->id.value;
      backfills.SetColumns(v.store, v.view, columns);
      const ViewState* state = nullptr;
      if (states.value()) {
        auto it = states.value()->find(v.view);
        if (it != states.value()->end()) state = &it->second;
      }
      // A following view must not end with rows of two shapes.
      const bool reshaped =
          state != nullptr && v.follows && !state->columns.empty() && state->columns != columns;
      // A table dropped and created again under the same name while pgderive was stopped
      // (or before it noticed): the view holds rows of a table that is gone.
      const bool replaced = state != nullptr && state->table_oid != 0 && state->table_oid != oid;
      if (!states.value()) {
        // Filled by a pgderive that kept no per-view state: live, recorded as such.
        status = RetryTransient(
            [&] {
              return sink->WriteViewState(v.view, ViewState{false, std::nullopt, columns, oid},
                                          false);
            },
            stopped, [&](const std::string& m) { Log("store " + sink->name() + ": " + m); });
      } else if (state == nullptr || replaced) {
        if (replaced) {
          logger.Warn("table " + v.table + " was replaced by another of the same name (OID " +
                          std::to_string(state->table_oid) + ", now " + std::to_string(oid) +
                          "): view " + v.view + " is emptied and filled from the new table",
                      {{"store", v.store}, {"view", v.view}, {"table", v.table}});
        } else {
          Log("view " + v.view + " is new to store " + v.store +
              ": backfilling it while streaming");
        }
        status = RetryTransient(
            [&] {
              return sink->WriteViewState(v.view, ViewState{true, std::nullopt, columns, oid},
                                          true);
            },
            stopped, [&](const std::string& m) { Log("store " + sink->name() + ": " + m); });
        backfills.Add(v.store, v.table, {v.view}, std::nullopt);
      } else if (state->backfilling) {
        Log("view " + v.view + " was being backfilled: resuming after " +
            (reshaped ? std::string("the start (its table's columns changed)")
                      : state->after.value_or("the start")));
        backfills.Add(v.store, v.table, {v.view}, reshaped ? std::nullopt : state->after);
      } else if (reshaped) {
        Log("the columns of " + v.table + " changed while stopped: backfilling view " + v.view);
        status = RetryTransient(
            [&] {
              return sink->WriteViewState(v.view, ViewState{true, std::nullopt, columns, oid},
                                          false);
            },
            stopped, [&](const std::string& m) { Log("store " + sink->name() + ": " + m); });
        backfills.Add(v.store, v.table, {v.view}, std::nullopt);
      }
      if (!status.ok()) {
        return Undo(Fail("store " + sink->name() + ": " + status.error().message()));
      }
    }
  }
  // Postgres stores on the source's own server: when it shuts down they cannot write
  // until it is back, so the slot does not wait for them (below).
  std::set<std::string> on_source;
  {
    const auto source = ServerIdentity(config.source.dsn);
    for (const auto& [name, store] : config.stores) {
      if (store.type == StoreType::kPostgres && source && ServerIdentity(store.dsn) == source) {
        on_source.insert(name);
      }
    }
  }
  for (auto& sink : sinks) {
    const std::string store = sink->name();
    workers.push_back(std::make_unique<PipelineWorker>(
        *sink,
        [&](Sink& s) -> Result<Lsn> {
          // The source tables as they are now (one may have been replaced).
          auto source =
              PgConnection::Connect(config.source.dsn, PgConnection::Mode::kSql, "pgderive-run");
          if (!source.ok()) return source.error();
          Status resolved = s.Resolve(source.value(), /*checked=*/true);
          if (!resolved.ok()) return resolved.error();
          return RebuildFromTemporarySlot(config, s, options.stop, logger, monitor);
        },
        [&logger, &config, store](const std::string& message) {
          logger.Warn(message, {{"store", store}, {"slot", config.source.slot}});
        },
        kQueueBytes, &metrics));
    workers.back()->SetSlotConfirmed(confirmed);
    workers.back()->Start(checkpoints[sink.get()]);
  }
  {
    std::vector<PipelineWorker*> observed;
    for (auto& worker : workers) observed.push_back(worker.get());
    monitor.SetWorkers(std::move(observed));
  }
  monitor.SetBackfills([&backfills] { return backfills.Progress(); });
  TypeLearner learner(sql.value());
  PartitionRoots roots(sql.value(), tables);
  Dispatcher dispatcher(learner, roots, workers, backfills);
  const std::string spill_dir =
      (std::filesystem::temp_directory_path() / ("pgderive-run-" + std::to_string(getpid())))
          .string();
  TransactionAssembler assembler(
      {.spill_dir = spill_dir,
       .full_identity_key = [&sql](RelationId id) { return RowKeyColumns(sql.value(), id); }},
      dispatcher);
  StreamOptions stream_options;
  stream_options.slot = config.source.slot;
  stream_options.publication = config.source.publication;
  std::optional<ReplicationStream> stream;
  {
    auto started = ReplicationStream::Start(std::move(*replication), stream_options);
    replication.reset();
    if (!started.ok()) return Undo(Fail(started.error().message()));
    stream.emplace(std::move(started).value());
    // Streaming: from here on what exists is a working pipeline, kept on any failure.
    made_publication = false;
    made_slot = false;
    filling.clear();
    Log("streaming from slot " + config.source.slot);
  }
  backfills.Start();  // the jobs queued above
  Backoff backoff;
  auto restart = [&](const std::string& why) {
    Log(why);
    monitor.SetStream(false, Lsn{});
    stream.reset();
    assembler.ResetPartial();
    assembler.SetLastCommitted(Lsn{});  // every store skips by its own checkpoint
    dispatcher.Drop();
    backfills.OnStreamRestart();
  };
  auto last_confirm = std::chrono::steady_clock::now();
  auto last_idle_mark = last_confirm;
  Lsn last_sent_flush;
  int exit_code = 0;
  while (!stopped()) {
    if (auto lost = monitor.slot_lost()) {
      exit_code = Fail(*lost);
      break;
    }
    if (!stream) {
      auto connection = PgConnection::Connect(config.source.dsn, PgConnection::Mode::kReplication,
                                              "pgderive-run");
      Result<ReplicationStream> started =
          connection.ok() ? ReplicationStream::Start(std::move(connection).value(), stream_options)
                          : Result<ReplicationStream>(connection.error());
      if (!started.ok()) {
        if (started.error().kind() != ErrorKind::kTransient) {
          exit_code = Fail(started.error().message());
          break;
        }
        const auto wait = backoff.Next();
        Log(started.error().message() + "; retrying in " + std::to_string(wait.count()) + " ms");
        const auto until = std::chrono::steady_clock::now() + wait;
        while (!stopped() && std::chrono::steady_clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        continue;
      }
      stream.emplace(std::move(started).value());
      backoff.Reset();
      Log("streaming from slot " + config.source.slot);
    }
    monitor.SetStream(true, stream->received());
    std::chrono::milliseconds wait(200);
    if (dispatcher.pending()) {
      const auto age = std::chrono::steady_clock::now() - dispatcher.pending_since();
      wait = age >= kLinger ? std::chrono::milliseconds(0)
                            : std::chrono::ceil<std::chrono::milliseconds>(kLinger - age);
    }
    auto next = stream->Next(wait);
    if (!next.ok()) {
      if (next.error().kind() != ErrorKind::kTransient) {
        exit_code = Fail(next.error().message());
        break;
      }
      restart(next.error().message() + "; reconnecting");
      continue;
    }
    if (next.value()) {
      status = assembler.Process(next.value()->data);
      if (!status.ok()) {
        exit_code = Fail(status.error().message());
        break;
      }
    } else {
      // Nothing more right now: send what there is, once it has lingered.
      if (std::chrono::steady_clock::now() - dispatcher.pending_since() >= kLinger) {
        dispatcher.Dispatch();
      }
      // At once when the server asks for a reply (a stopping server waits for it).
      if (assembler.idle() &&
          (std::chrono::steady_clock::now() - last_idle_mark >= kIdleMarkInterval ||
           stream->TakeReplyRequest())) {
        if (dispatcher.MarkIdle(stream->received())) {
          last_idle_mark = std::chrono::steady_clock::now();
        }
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_confirm >= std::chrono::milliseconds(100)) {
      last_confirm = now;
      // The slot moves only past what every store has made durable (when nothing is in
      // flight, the idle marks above carry every store to the stream's position). One
      // exception: a postgres store on the source's own server that cannot reach it (the
      // server is stopping, and a fast shutdown waits for the slot's consumer to confirm
      // all WAL) keeps what it has not applied in its queue and applies it once the
      // server is back; the slot does not wait for it. Should pgderive itself stop before
      // then, the store is behind the slot at the next start and is rebuilt.
      const bool idle = !dispatcher.pending() && assembler.idle();
      std::optional<Lsn> lowest;
      for (auto& worker : workers) {
        Lsn durable = worker->Durable();
        if (idle && !worker->healthy() && !worker->detached() && !worker->failed() &&
            on_source.contains(worker->sink().name())) {
          if (stream->received() > durable) worker->MarkSlotPassed();
          durable = std::max(durable, stream->received());
        }
        if (!lowest || durable < *lowest) lowest = durable;
      }
      if (lowest) stream->ConfirmFlushed(*lowest);
      // Tell the server as soon as the position moves (it waits for it at shutdown).
      if (stream->flushed() > last_sent_flush) {
        last_sent_flush = stream->flushed();
        status = stream->SendStatus();
        if (!status.ok()) {
          restart(status.error().message() + "; reconnecting");
          continue;
        }
      }
      for (auto& worker : workers) worker->SetSlotConfirmed(stream->flushed());
      bool rejoin = false;
      for (auto& worker : workers) {
        if (worker->WantsRejoin()) {
          worker->Rejoin();
          rejoin = true;
          Log("store " + worker->sink().name() +
              " caught up with its queue; it rejoins "
              "the stream from the slot at its checkpoint " +
              worker->checkpoint().ToString());
        }
      }
      if (rejoin) {
        IgnoreError(stream->SendStatus(), "the restart resends from the slot either way");
        restart("restarting the stream from the slot for the rejoining store(s)");
      }
    }
  }
  // Stop: finish what is queued (up to the grace period), then confirm what is durable.
  // The monitor stops last (it may be waiting on a store or on the source).
  backfills.Stop();
  if (exit_code == 0) dispatcher.Dispatch();
  const auto deadline = std::chrono::steady_clock::now() + kStopGrace;
  for (auto& worker : workers) worker->Stop(deadline);
  if (stream) {
    std::optional<Lsn> lowest;
    for (auto& worker : workers) {
      const Lsn durable = worker->Durable();
      if (!lowest || durable < *lowest) lowest = durable;
    }
    if (lowest) stream->ConfirmFlushed(*lowest);
    IgnoreError(stream->SendStatus(), "the slot keeps the older position; a restart replays");
  }
  for (auto& worker : workers) {
    Log("store " + worker->sink().name() +
        " commit-to-visible latency: " + worker->LatencySummary());
  }
  std::filesystem::remove_all(spill_dir);
  if (exit_code == 0) Log("stopped");
  return exit_code;
}

}  // namespace pgderive
