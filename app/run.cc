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
#include "base/retry.h"
#include "cdc/publication.h"
#include "cdc/replication_stream.h"
#include "cdc/transaction_assembler.h"
#include "cdc/type_catalog.h"
#include "config/config.h"
#include "pipeline/dispatcher.h"
#include "pipeline/pipeline_worker.h"
#include "pipeline/rebuild.h"
#include "pipeline/run_monitor.h"
#include "pipeline/slot_confirmation.h"
#include "pipeline/slot_guard.h"
#include "pipeline/view_states.h"
#include "snapshot/backfill.h"
#include "snapshot/snapshot_reader.h"

namespace pgderive {
namespace {

constexpr size_t kQueueBytes = size_t{64} << 20;  // per store
constexpr auto kOfferWait = std::chrono::seconds(1);
constexpr auto kStopGrace = std::chrono::seconds(8);
constexpr auto kIdleMarkInterval = std::chrono::seconds(1);

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
  SlotGuard guard(sql.value(), config.source.slot, config.source.publication, config.pipeline,
                  logger, Log);
  {
    auto present = sql.value().Query("select from pg_publication where pubname = " +
                                     sql.value().QuoteLiteral(config.source.publication));
    if (!present.ok()) return Fail(present.error().message());
    if (present.value().rows.empty()) guard.MadePublication();
  }
  std::optional<PgConnection> replication;  // closed before the slot is dropped
  auto Undo = [&](int code) { return guard.Undo(code, [&] { replication.reset(); }); };
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
    guard.MadeSlot();
    Log("created slot " + config.source.slot + " at " +
        created.value().consistent_point.ToString());
    std::vector<Sink*> all;
    for (auto& sink : sinks) all.push_back(sink.get());
    guard.Filling(all);
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

  const std::vector<BackfillView> backfill_views = BackfillViewsOf(config, sinks);
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
  status = ReconcileViewStates(
      sinks, backfill_views, shapes,
      {.set_columns =
           [&](const std::string& store, const std::string& view,
               std::vector<std::string> columns) {
             backfills.SetColumns(store, view, std::move(columns));
           },
       .add =
           [&](const std::string& store, const std::string& table, std::vector<std::string> views,
               std::optional<std::string> after) {
             backfills.Add(store, table, std::move(views), std::move(after));
           }},
      stopped, logger, Log);
  if (!status.ok()) return Undo(Fail(status.error().message()));
  // Postgres stores on the source's own server: when it shuts down they cannot write
  // until it is back, so the slot does not wait for them (below).
  SourceServerStores on_source;
  {
    const auto source = ServerIdentity(config.source.dsn);
    for (const auto& [name, store] : config.stores) {
      if (store.type == StoreType::kPostgres && source && ServerIdentity(store.dsn) == source) {
        on_source.stores.insert(name);
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
  Dispatcher dispatcher(
      {.map_partitions = [&roots](const Change& change) { return MapPartitions(roots, change); },
       .learn =
           [&learner](const RelationSchema& relation) { return learner.Learn(relation.columns); },
       .types = [&learner] { return learner.types(); },
       .place = [&backfills](const Change& change,
                             std::vector<OwnedChange>& out) { backfills.OnChange(change, out); },
       .deliver =
           [&workers](std::shared_ptr<const ChangeBatch> batch) {
             for (auto& worker : workers) worker->Offer(batch, kOfferWait);
           }});
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
    guard.Release();
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
      on_source.idle = !dispatcher.pending() && assembler.idle();
      on_source.received = stream->received();
      const std::optional<Lsn> lowest = SlowestDurable(workers, &on_source);
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
    const std::optional<Lsn> lowest = SlowestDurable(workers);
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
