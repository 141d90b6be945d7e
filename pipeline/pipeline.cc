#include "pipeline/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "base/retry.h"
#include "base/table_name.h"
#include "pipeline/rebuild.h"
#include "pipeline/view_states.h"

namespace pgderive {
namespace {

constexpr auto kStopGrace = std::chrono::seconds(8);
constexpr auto kIdleMarkInterval = std::chrono::seconds(1);
constexpr auto kConfirmInterval = std::chrono::milliseconds(100);
constexpr auto kLockCheckInterval = std::chrono::seconds(1);
// How often a run that lost its lock's session tries to re-take it.
constexpr auto kLockRetry = std::chrono::milliseconds(250);

}  // namespace

Pipeline::Pipeline(const Config& config, std::vector<std::unique_ptr<Sink>> sinks,
                   const std::atomic<bool>* stop, Logger& logger, RunHost& host)
    : config_(config),
      stop_(stop),
      logger_(logger),
      host_(host),
      lock_(host.lock()),
      monitor_(config, logger, metrics_),
      sinks_(std::move(sinks)) {}

// The endpoint reads the monitor: unhooked first. The monitor's thread reads the workers
// and the backfills: stopped before them.
Pipeline::~Pipeline() {
  host_.Unserve();
  monitor_.Stop();
}

void Pipeline::Log(const std::string& message) {
  logger_.Info(message, {{"pipeline", config_.pipeline}, {"slot", config_.source.slot}});
}

void Pipeline::Warn(const std::string& message) {
  logger_.Warn(message, {{"pipeline", config_.pipeline}, {"slot", config_.source.slot}});
}

int Pipeline::Fail(const std::string& message) {
  logger_.Error(message, {{"pipeline", config_.pipeline}, {"slot", config_.source.slot}});
  return 1;
}

int Pipeline::Undo(int code) {
  return guard_->Undo(code, [&] { replication_.reset(); });
}

std::optional<int> Pipeline::Start() {
  // Nothing is written (rebuilds, clears, the slot) before the lock is known held: a
  // generation after a reload starts on the lock the previous one kept, whose session
  // may have been lost meanwhile. Lost to another process: this one stops (run_lock.h).
  if (auto code = KeepLock(/*now=*/true)) return code;
  while (!lock_held_) {
    if (stopped()) return 0;
    WaitUnlessStopped(kLockRetry, [this] { return stopped(); });
    if (auto code = KeepLock(/*now=*/true)) return code;
  }
  if (auto code = Prepare()) return code;
  if (auto code = OpenSlot()) return code;
  return StartStores();
}

std::optional<int> Pipeline::Prepare() {
  auto sql = SqlSession::Connect(config_.source.dsn, "pgderive-run");
  if (!sql.ok()) return Fail(sql.error().message());
  sql_.emplace(std::move(sql).value());
  // What each store needs from the source (a postgres view: the tables its query
  // reads); validate's checks, made before, have checked the tables and the queries.
  for (auto& sink : sinks_) {
    Status resolved = sink->Resolve(*sql_, /*checked=*/true);
    if (!resolved.ok()) return Fail("store " + sink->name() + ": " + resolved.error().message());
    for (const std::string& t : sink->tables()) {
      if (std::find(tables_.begin(), tables_.end(), t) == tables_.end()) tables_.push_back(t);
    }
  }
  if (auto code = DescribeTables()) return code;
  for (auto& sink : sinks_) {
    Status status = sink->Connect();
    if (!status.ok()) return Fail("store " + sink->name() + ": " + status.error().message());
  }
  // The HTTP endpoint binds before anything is created: a taken port fails the start.
  // (A reload's pipeline is handed the endpoint the process bound at start.)
  auto port =
      host_.Serve(config_.http.listen, {.not_ready = [this] { return monitor_.NotReady(); },
                                        .metrics = [this] { return metrics_.Render(); },
                                        .status_json = [this] { return monitor_.StatusJson(); },
                                        .reload = {}});
  if (!port.ok()) return Fail(port.error().message());
  http_port_ = port.value();
  logger_.Info("http endpoint listening",
               {{"listen", config_.http.listen}, {"port", std::to_string(http_port_)}});
  if (lock_) {
    // What a second `run` of this pipeline reads when it is refused.
    const std::string host = config_.http.listen.substr(0, config_.http.listen.rfind(':'));
    IgnoreError(
        lock_->Rename(ProcessName("run") + ", http " + host + ":" + std::to_string(http_port_)),
        "the refusal then names the process without its address");
  }
  {
    // The tables as the views were checked against (and their partitions now).
    auto identities = ReadTableIdentities(*sql_, config_.source.publication, tables_);
    if (!identities.ok()) return Fail(identities.error().message());
    for (auto& [table, identity] : identities.value()) identity.oid = shapes_.at(table)->id.value;
    monitor_.WatchSourceTables(identities.value());
  }
  monitor_.Start();
  for (auto& sink : sinks_) {
    Status status = sink->Migrate();
    if (!status.ok()) return Fail("store " + sink->name() + ": " + status.error().message());
    for (const std::string& notice : sink->TakeNotices()) {
      logger_.Info("store " + sink->name() + ": " + notice, {{"store", sink->name()}});
    }
  }
  return std::nullopt;
}

// Every view takes its table's shape (checked before; a table altered since is still
// refused here, before anything is created).
std::optional<int> Pipeline::DescribeTables() {
  std::string problems;
  for (const std::string& table : tables_) {
    auto schema = DescribeTable(*sql_, table);
    if (!schema.ok()) return Fail(schema.error().message());
    shapes_[table] = schema.value();
    // A view without `columns` takes every column PostgreSQL publishes: said at start.
    auto generated = GeneratedColumns(*sql_, table);
    if (!generated.ok()) return Fail(generated.error().message());
    for (const ViewConfig& view : config_.views) {
      if (view.from != table || view.columns || generated.value().empty()) continue;
      std::string names;
      for (const auto& [name, expression] : generated.value()) {
        names += (names.empty() ? "" : ", ") + name;
      }
      logger_.Info("view " + view.name + " leaves out the generated column(s) " + names + " of " +
                       table + ": PostgreSQL before 18 does not publish generated columns",
                   {{"view", view.name}, {"table", table}});
    }
    for (auto& sink : sinks_) {
      Status status = sink->Check(schema.value());
      if (!status.ok()) problems += "\n  " + status.error().message();
    }
  }
  if (!problems.empty()) return Fail("the views do not fit their tables:" + problems);
  return std::nullopt;
}

std::optional<int> Pipeline::OpenSlot() {
  // What this run creates on the source and in the stores: should it fail before it
  // streams, it removes exactly that again (no half-made state) - the publication and
  // the slot if it created them, and what the first start's snapshot began to fill.
  guard_.emplace(*sql_, config_.source.slot, config_.source.publication, config_.pipeline, logger_,
                 [this](const std::string& m) { Log(m); });
  {
    auto present = sql_->Query("select from pg_publication where pubname = " +
                               sql_->QuoteLiteral(config_.source.publication));
    if (!present.ok()) return Fail(present.error().message());
    if (present.value().rows.empty()) guard_->MadePublication();
  }
  Status status = EnsurePublication(*sql_, config_.source.publication, tables_);
  if (!status.ok()) return Undo(Fail(status.error().message()));
  auto slot = ReadSlot(*sql_, config_.source.slot);
  if (!slot.ok()) return Undo(Fail(slot.error().message()));
  {
    auto connected =
        PgConnection::Connect(config_.source.dsn, PgConnection::Mode::kReplication, "pgderive-run");
    if (!connected.ok()) return Undo(Fail(connected.error().message()));
    replication_.emplace(std::move(connected).value());
  }
  std::vector<Sink*> to_rebuild;
  if (!slot.value().exists) {
    // First start. The stores whose views are filled row by row (Redis, OpenSearch)
    // take the watermark backfill: their checkpoint is the slot's consistent point,
    // every view is recorded backfilling from the start, and the backfill fills them
    // while the stream flows (StartStores). Only a store whose views are queries
    // (postgres) is filled from the slot's exported snapshot, which the slot exports
    // only for it. Until every store has written its checkpoint a crash leaves at least
    // one without, which the next start fills again.
    std::vector<Sink*> all, from_snapshot;
    for (auto& sink : sinks_) {
      all.push_back(sink.get());
      if (!FilledByBackfill(*sql_, *sink)) from_snapshot.push_back(sink.get());
    }
    auto created = replication_->CreateLogicalSlot(
        config_.source.slot, "pgoutput", /*temporary=*/false,
        from_snapshot.empty() ? SlotSnapshot::kNoExport : SlotSnapshot::kExport);
    if (!created.ok()) return Undo(Fail(created.error().message()));
    guard_->MadeSlot();
    const Lsn at = created.value().consistent_point;
    Log("created slot " + config_.source.slot + " at " + at.ToString());
    guard_->Filling(all);
    confirmed_ = at;
    if (!from_snapshot.empty()) {
      status = SnapshotInto(config_, from_snapshot, *created.value().snapshot_name, at, stop_,
                            logger_, monitor_);
      if (!status.ok()) {
        if (status.error().kind() != ErrorKind::kTransient) {
          return Undo(Fail("initial snapshot failed: " + status.error().message()));
        }
        Warn("initial snapshot failed: " + status.error().message() +
             "; the stores are rebuilt from a new snapshot");
        to_rebuild = from_snapshot;
      } else {
        for (Sink* sink : from_snapshot) checkpoints_[sink] = at;
      }
    }
    for (Sink* sink : all) {
      if (std::find(from_snapshot.begin(), from_snapshot.end(), sink) != from_snapshot.end()) {
        continue;
      }
      // Removes what the store may hold of an earlier pipeline of this name (no
      // checkpoint, no views' data), and lets Undo remove what this start writes.
      status =
          RetryTransient([&] { return sink->BeginRebuild(at); }, [this] { return stopped(); },
                         [&](const std::string& m) { Log("store " + sink->name() + ": " + m); });
      if (!status.ok()) {
        if (stopped()) return Undo(0);
        return Undo(Fail("store " + sink->name() + ": " + status.error().message()));
      }
      checkpoints_[sink] = at;
      fill_[sink->name()] = StoreFill{"first start", /*clear=*/false};
    }
  } else {
    confirmed_ = slot.value().confirmed_flush;
    for (auto& sink : sinks_) {
      auto stored =
          RetryTransient([&] { return sink->ReadCheckpoint(); }, [this] { return stopped(); },
                         [&](const std::string& m) { Warn("store " + sink->name() + ": " + m); });
      if (!stored.ok()) {
        if (stopped()) return 0;  // stopped while the store was down: a stop, not a failure
        return Undo(Fail("store " + sink->name() + ": " + stored.error().message()));
      }
      if (stored.value() && *stored.value() >= confirmed_) {
        checkpoints_[sink.get()] = *stored.value();
        Log("store " + sink->name() + " resumes from " + stored.value()->ToString());
        continue;
      }
      const std::string reason = stored.value() ? "" : sink->missing_checkpoint_reason();
      const std::string why = stored.value()
                                  ? "checkpoint " + stored.value()->ToString() +
                                        ", behind the slot's " + confirmed_.ToString()
                                  : "no checkpoint" + (reason.empty() ? "" : " (" + reason + ")");
      if (FilledByBackfill(*sql_, *sink)) {
        // New to the pipeline, or it lost its data: its views are filled again from the
        // start by the backfill while the stream flows from the slot for every store.
        Log("store " + sink->name() + " has " + why +
            ": its views are filled again while streaming, from the slot's " +
            confirmed_.ToString());
        checkpoints_[sink.get()] = confirmed_;
        fill_[sink->name()] = StoreFill{"store " + sink->name() + " has " + why};
        continue;
      }
      Log("store " + sink->name() + " has " + why + ": rebuilding its views");
      to_rebuild.push_back(sink.get());
    }
  }
  return Rebuild(to_rebuild);
}

// Each store from a snapshot of its own (a temporary slot), retried while that fails
// transiently.
std::optional<int> Pipeline::Rebuild(const std::vector<Sink*>& sinks) {
  for (Sink* sink : sinks) {
    auto rebuilt = RetryTransient(
        [&] { return RebuildFromTemporarySlot(config_, *sink, stop_, logger_, monitor_); },
        [this] { return stopped(); },
        [&](const std::string& m) { Warn("rebuild of store " + sink->name() + " failed: " + m); });
    if (rebuilt.ok()) {
      checkpoints_[sink] = rebuilt.value();
      continue;
    }
    if (stopped()) return 0;  // nothing is confirmed; the next start rebuilds
    return Undo(Fail("rebuild of store " + sink->name() + " failed: " + rebuilt.error().message()));
  }
  return std::nullopt;
}

// Where the start-up reconciliation sends the views to fill: the pipeline's backfills.
ViewBackfills Pipeline::ToBackfills() {
  return {.set_columns =
              [this](const std::string& store, const std::string& view,
                     std::vector<std::string> columns) {
                backfills_->SetColumns(store, view, std::move(columns));
              },
          .add =
              [this](const std::string& store, const std::string& table,
                     std::vector<std::string> views, std::optional<std::string> after) {
                backfills_->Add(store, table, std::move(views), std::move(after));
              }};
}

std::optional<int> Pipeline::StartStores() {
  const std::vector<BackfillView> backfill_views = BackfillViewsOf(config_, sinks_);
  auto worker_of = [this](const std::string& store) -> PipelineWorker& {
    for (auto& worker : workers_) {
      if (worker->sink().name() == store) return *worker;
    }
    std::abort();  // every store has a worker before the backfill starts
  };
  backfills_ = std::make_unique<Backfills>(
      BackfillOptions{
          .dsn = config_.source.dsn,
          .pipeline = config_.pipeline,
          .views = backfill_views,
          .chunk_rows = 16384,
          .parallelism = config_.source.snapshot_parallelism,
          .checkpoint = [=](const std::string& store) { return worker_of(store).checkpoint(); },
          .durable = [=](const std::string& store) { return worker_of(store).Durable(); },
          .failed = [=](const std::string& store) { return worker_of(store).failed(); }},
      logger_);
  // Views to backfill while streaming (SPEC.md §1.4): new to their store, interrupted
  // by a stop, or following a table whose columns changed while pgderive was stopped.
  Status status = ReconcileViewStates(
      sinks_, backfill_views, shapes_, ToBackfills(), [this] { return stopped(); }, logger_,
      [this](const std::string& m) { Log(m); }, redefined_, fill_);
  if (!status.ok()) {
    if (stopped()) return 0;  // stopped while a store was down: a stop, not a failure
    return Undo(Fail(status.error().message()));
  }
  StartWorkers();
  learner_.emplace(*sql_);
  roots_.emplace(*sql_, tables_);
  dispatcher_ = std::make_unique<Dispatcher>(Dispatcher::Stages{
      .map_partitions = [this](const Change& change) { return MapPartitions(*roots_, change); },
      .learn = [this](const RelationSchema& relation) { return learner_->Learn(relation.columns); },
      .types = [this] { return learner_->types(); },
      .place = [this](const Change& change,
                      std::vector<OwnedChange>& out) { backfills_->OnChange(change, out); },
      .deliver =
          [this](std::shared_ptr<const ChangeBatch> batch) {
            for (auto& worker : workers_) worker->Offer(batch, kOfferWait);
          }});
  spill_dir_ =
      (std::filesystem::temp_directory_path() / ("pgderive-run-" + std::to_string(getpid())))
          .string();
  assembler_ = std::make_unique<TransactionAssembler>(
      AssemblerOptions{
          .spill_dir = spill_dir_,
          .full_identity_key = [this](RelationId id) { return RowKeyColumns(*sql_, id); }},
      *dispatcher_);
  stream_options_.slot = config_.source.slot;
  stream_options_.publication = config_.source.publication;
  auto started = ReplicationStream::Start(std::move(*replication_), stream_options_);
  replication_.reset();
  if (!started.ok()) return Undo(Fail(started.error().message()));
  stream_.emplace(std::move(started).value());
  // Streaming: from here on what exists is a working pipeline, kept on any failure.
  guard_->Release();
  Log("streaming from slot " + config_.source.slot);
  backfills_->Start();  // the jobs queued above
  return std::nullopt;
}

void Pipeline::StartWorkers() {
  // Postgres stores on the source's own server: when it shuts down they cannot write
  // until it is back, so the slot does not wait for them (slot_confirmation.h).
  const auto source = ServerIdentity(config_.source.dsn);
  for (const auto& [name, store] : config_.stores) {
    if (store.type == StoreType::kPostgres && source && ServerIdentity(store.dsn) == source) {
      on_source_.stores.insert(name);
    }
  }
  // The WAL each store applies before it is caught up: what the slot kept while
  // pgderive was stopped, or what was written during the snapshot. Its latency is
  // measured apart (PipelineWorker::Start).
  Lsn backlog_end;
  if (auto now = sql_->Query("select pg_current_wal_lsn()");
      now.ok() && now.value().rows.size() == 1) {
    backlog_end = Lsn::Parse(now.value().rows[0][0].value_or("")).value_or(Lsn{});
  }
  for (auto& sink : sinks_) {
    const std::string store = sink->name();
    workers_.push_back(std::make_unique<PipelineWorker>(
        *sink,
        [this](Sink& s) -> Result<Lsn> {
          // A stop never starts a rebuild (the next start does it).
          if (stopped()) return Error::Transient("stopping: the rebuild is left to the next start");
          // The source tables as they are now (one may have been replaced).
          auto source = SqlSession::Connect(config_.source.dsn, "pgderive-run");
          if (!source.ok()) return source.error();
          Status resolved = s.Resolve(source.value(), /*checked=*/true);
          if (!resolved.ok()) return resolved.error();
          if (FilledByBackfill(source.value(), s)) return Refill(source.value(), s);
          return RebuildFromTemporarySlot(config_, s, stop_, logger_, monitor_);
        },
        [this, store](const std::string& message) {
          logger_.Warn(message, {{"store", store}, {"slot", config_.source.slot}});
        },
        kQueueBytes, &metrics_));
    workers_.back()->SetSlotConfirmed(confirmed_);
    workers_.back()->Start(checkpoints_[sink.get()], backlog_end);
  }
  std::vector<PipelineWorker*> observed;
  for (auto& worker : workers_) observed.push_back(worker.get());
  monitor_.SetWorkers(std::move(observed));
  monitor_.SetBackfills([this] { return backfills_->Progress(); });
}

// A store whose views are filled row by row, and whose tables all have a key to read
// them by in chunks (a primary key or a replica identity index; a table with REPLICA
// IDENTITY FULL and neither is read from a snapshot instead). Unsure: the snapshot.
bool Pipeline::FilledByBackfill(SqlRunner& source, Sink& sink) {
  if (!sink.backfills_rows()) return false;
  for (const std::string& table : sink.tables()) {
    auto keyed = source.Query("select exists (select from pg_index where indrelid = " +
                              source.QuoteLiteral(TableName::Parse(table).Quoted()) +
                              "::regclass and (indisprimary or indisreplident))");
    if (!keyed.ok() || keyed.value().rows.empty() ||
        keyed.value().rows[0][0].value_or("f") != "t") {
      return false;
    }
  }
  return true;
}

// A row store that lost its data while the pipeline runs (on its worker's thread): its
// views are recorded backfilling from the start (a rebuild begins) and queued for the
// backfill; the store goes on from the slot's confirmed position, which the stream
// restarts from when it rejoins. The other stores stream on meanwhile.
Result<Lsn> Pipeline::Refill(SqlSession& source, Sink& sink) {
  auto slot = ReadSlot(source, config_.source.slot);
  if (!slot.ok()) return slot.error();
  if (!slot.value().exists) return Error::Permanent("slot " + config_.source.slot + " is gone");
  std::map<std::string, std::shared_ptr<const RelationSchema>> shapes;
  for (const std::string& table : sink.tables()) {
    auto schema = DescribeTable(source, table);
    if (!schema.ok()) return schema.error();
    shapes[table] = schema.value();
  }
  std::span<const std::unique_ptr<Sink>> one;
  for (const auto& s : sinks_) {
    if (s.get() == &sink) one = std::span<const std::unique_ptr<Sink>>(&s, 1);
  }
  std::vector<BackfillView> views;
  for (const BackfillView& v : BackfillViewsOf(config_, sinks_)) {
    if (v.store == sink.name()) views.push_back(v);
  }
  Status status = ReconcileViewStates(
      one, views, shapes, ToBackfills(), [this] { return stopped(); }, logger_,
      [this, &sink](const std::string& m) {
        logger_.Warn(m, {{"store", sink.name()}, {"slot", config_.source.slot}});
      },
      /*redefined=*/{}, {{sink.name(), StoreFill{"store " + sink.name() + " lost its data"}}});
  if (!status.ok()) return status.error();
  return slot.value().confirmed_flush;
}

int Pipeline::Run() {
  last_confirm_ = std::chrono::steady_clock::now();
  last_idle_mark_ = last_confirm_;
  last_lock_check_ = last_confirm_;
  int exit_code = 0;
  while (!stopped() && !reloading()) {
    if (auto code = Step()) {
      exit_code = *code;
      break;
    }
  }
  Finish(exit_code);
  return exit_code;
}

void Pipeline::Restart(const std::string& why) {
  Log(why);
  monitor_.SetStream(false, Lsn{});
  stream_.reset();
  assembler_->ResetPartial();
  assembler_->SetLastCommitted(Lsn{});  // every store skips by its own checkpoint
  dispatcher_->Drop();
  backfills_->OnStreamRestart();
}

std::optional<int> Pipeline::Reconnect() {
  // The catalog session the stream thread reads types and partitions on: after a source
  // restart it is broken, and the first change of a type not yet learned would fail the
  // run. A new session in its place (the learner and the partition map keep using it).
  Status catalog = Status::Ok();
  if (!sql_->Query("select 1").ok() && !sql_->is_open()) {
    auto sql = SqlSession::Connect(config_.source.dsn, "pgderive-run");
    if (sql.ok()) {
      sql_.emplace(std::move(sql).value());
    } else {
      catalog = sql.error();
    }
  }
  auto connection = !catalog.ok()
                        ? Result<PgConnection>(catalog.error())
                        : PgConnection::Connect(config_.source.dsn,
                                                PgConnection::Mode::kReplication, "pgderive-run");
  Result<ReplicationStream> started =
      connection.ok() ? ReplicationStream::Start(std::move(connection).value(), stream_options_)
                      : Result<ReplicationStream>(connection.error());
  if (!started.ok()) {
    if (started.error().kind() != ErrorKind::kTransient) return Fail(started.error().message());
    const auto wait = backoff_.Next();
    Warn(started.error().message() + "; retrying in " + std::to_string(wait.count()) + " ms");
    WaitUnlessStopped(wait, [this] { return stopped(); });
    return std::nullopt;
  }
  stream_.emplace(std::move(started).value());
  backoff_.Reset();
  Log("streaming from slot " + config_.source.slot);
  return std::nullopt;
}

void Pipeline::HoldWrites(bool hold) {
  if (lock_held_ == !hold) return;
  lock_held_ = !hold;
  for (auto& worker : workers_) worker->Pause(hold);
}

std::optional<int> Pipeline::KeepLock(bool now) {
  const auto at = std::chrono::steady_clock::now();
  if (!lock_ || (!now && at - last_lock_check_ < kLockCheckInterval)) return std::nullopt;
  last_lock_check_ = at;
  const PipelineLock::KeepResult kept = lock_->Keep();
  switch (kept.kept) {
    case PipelineLock::Kept::kHeld:
      HoldWrites(false);
      break;
    case PipelineLock::Kept::kRetaken:
      Log("re-took the pipeline's lock on the source (its session had been lost)");
      lock_lost_logged_ = false;
      HoldWrites(false);
      break;
    case PipelineLock::Kept::kUnreachable:
      // Nothing is streamed, written or confirmed until the lock is held again: a
      // `teardown` or second `run` meanwhile must not race this one (run_lock.h).
      HoldWrites(true);
      if (!lock_lost_logged_) {
        lock_lost_logged_ = true;
        logger_.Warn("the pipeline's lock on the source was lost with its session (" + kept.error +
                         "); streaming and writing wait until it is re-taken",
                     {{"pipeline", config_.pipeline}, {"slot", config_.source.slot}});
      }
      if (stream_) Restart("the stream waits for the pipeline's lock");
      break;
    case PipelineLock::Kept::kLost:
      HoldWrites(true);
      return Fail("another process took pipeline " + config_.pipeline +
                  " over while this one had lost its lock on the source: " +
                  lock_->holder()->Describe() + "; stopping this one");
  }
  return std::nullopt;
}

std::optional<int> Pipeline::Step() {
  if (auto lost = monitor_.slot_lost()) return Fail(*lost);
  // Without a stream (a start, a restart after an error) the lock is checked first:
  // the stream starts again only under it.
  if (auto code = KeepLock(/*now=*/!stream_)) return code;
  if (!lock_held_) {
    WaitUnlessStopped(kLockRetry, [this] { return stopped(); });
    return std::nullopt;
  }
  if (!stream_) {
    if (auto code = Reconnect()) return code;
    if (!stream_) return std::nullopt;
  }
  monitor_.SetStream(true, stream_->received());
  std::chrono::milliseconds wait(200);
  if (dispatcher_->pending()) {
    const auto age = std::chrono::steady_clock::now() - dispatcher_->pending_since();
    wait = age >= kLinger ? std::chrono::milliseconds(0)
                          : std::chrono::ceil<std::chrono::milliseconds>(kLinger - age);
  }
  auto next = stream_->Next(wait);
  if (!next.ok()) {
    if (next.error().kind() != ErrorKind::kTransient) return Fail(next.error().message());
    Restart(next.error().message() + "; reconnecting");
    return std::nullopt;
  }
  if (next.value()) {
    Status status = assembler_->Process(next.value()->data);
    if (!status.ok()) return Fail(status.error().message());
  } else {
    // Nothing more right now: send what there is, once it has lingered.
    if (std::chrono::steady_clock::now() - dispatcher_->pending_since() >= kLinger) {
      dispatcher_->Dispatch();
    }
    // At once when the server asks for a reply (a stopping server waits for it).
    if (assembler_->idle() &&
        (std::chrono::steady_clock::now() - last_idle_mark_ >= kIdleMarkInterval ||
         stream_->TakeReplyRequest())) {
      if (dispatcher_->MarkIdle(stream_->received())) {
        last_idle_mark_ = std::chrono::steady_clock::now();
      }
    }
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - last_confirm_ >= kConfirmInterval) {
    last_confirm_ = now;
    ConfirmAndRejoin();
  }
  return std::nullopt;
}

void Pipeline::ConfirmAndRejoin() {
  // The slot moves only past what every store has made durable (when nothing is in
  // flight, the idle marks carry every store to the stream's position), but for a
  // postgres store on the stopping source (slot_confirmation.h).
  on_source_.idle = !dispatcher_->pending() && assembler_->idle();
  on_source_.received = stream_->received();
  if (const std::optional<Lsn> lowest = SlowestDurable(workers_, &on_source_)) {
    stream_->ConfirmFlushed(*lowest);
  }
  // Tell the server as soon as the position moves (it waits for it at shutdown).
  if (stream_->flushed() > last_sent_flush_) {
    last_sent_flush_ = stream_->flushed();
    Status status = stream_->SendStatus();
    if (!status.ok()) {
      Restart(status.error().message() + "; reconnecting");
      return;
    }
  }
  for (auto& worker : workers_) worker->SetSlotConfirmed(stream_->flushed());
  bool rejoin = false;
  for (auto& worker : workers_) {
    if (worker->WantsRejoin()) {
      worker->Rejoin();
      rejoin = true;
      Log("store " + worker->sink().name() +
          " caught up with its queue; it rejoins the stream from the slot at its checkpoint " +
          worker->checkpoint().ToString());
    }
  }
  if (rejoin) {
    IgnoreError(stream_->SendStatus(), "the restart resends from the slot either way");
    Restart("restarting the stream from the slot for the rejoining store(s)");
  }
}

// Stop: finish what is queued (up to the grace period), then confirm what is durable.
// The monitor stops last (it may be waiting on a store or on the source).
void Pipeline::Finish(int exit_code) {
  backfills_->Stop();
  if (exit_code == 0) dispatcher_->Dispatch();
  const auto deadline = std::chrono::steady_clock::now() + kStopGrace;
  for (auto& worker : workers_) worker->Stop(deadline);
  if (stream_) {
    if (const std::optional<Lsn> lowest = SlowestDurable(workers_)) {
      stream_->ConfirmFlushed(*lowest);
    }
    IgnoreError(stream_->SendStatus(), "the slot keeps the older position; a restart replays");
  }
  for (auto& worker : workers_) {
    Log("store " + worker->sink().name() +
        " commit-to-visible latency: " + worker->LatencySummary());
  }
  std::filesystem::remove_all(spill_dir_);
  if (exit_code == 0)
    Log(reloading() && !stopped() ? "stopped for a reload of the configuration" : "stopped");
}

}  // namespace pgderive
