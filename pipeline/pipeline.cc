#include "pipeline/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/retry.h"
#include "base/table_name.h"
#include "config/grammar.h"
#include "pipeline/verify_hooks.h"
#include "pipeline/view_states.h"
#include "spool/segment_log.h"

namespace pgderive {
namespace {

constexpr auto kStopGrace = std::chrono::seconds(8);
constexpr auto kIdleMarkInterval = std::chrono::seconds(1);
constexpr auto kConfirmInterval = std::chrono::milliseconds(100);
constexpr auto kLockCheckInterval = std::chrono::seconds(1);
// How often a run that lost its lock's session tries to re-take it.
constexpr auto kLockRetry = std::chrono::milliseconds(250);
// The change log: how long one turn captures or delivers before the other stage's turn,
// and how often it is truncated and its bound checked.
constexpr auto kSpoolTurn = std::chrono::milliseconds(20);
constexpr auto kMaintainInterval = std::chrono::seconds(1);
// spool.when_full detach: how long a store that answers may hold the oldest segment at
// spool.max_bytes (the capture paused) before it is detached. A store a moment behind
// (Redis's fsync once a second, a batch in flight) frees it within that time.
constexpr auto kSlowStoreGrace = std::chrono::seconds(10);

uint64_t CommitEnd(const std::string& bytes) {
  // 'C' Int8 flags, Int64 commit_lsn, Int64 end_lsn, ...
  uint64_t value = 0;
  for (size_t i = 10; i < 18; ++i) value = (value << 8) | static_cast<uint8_t>(bytes[i]);
  return value;
}

// A teardown waits this long for a run to re-take its lock (run_lock.h).
static_assert(kLockCheckInterval + 2 * kLockRetry < kRunRetakeWindow);

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
  // The HTTP endpoint binds before anything is created: a taken port fails the start.
  // (A reload's pipeline is handed the endpoint the process bound at start.)
  auto port = host_.Serve(
      config_.http.listen,
      {.not_ready = [this] { return monitor_.NotReady(); },
       .metrics = [this] { return metrics_.Render(); },
       .status_json = [this] { return monitor_.StatusJson(); },
       .reload = {},
       .version = [this](const std::string& action,
                         const std::string& body) { return SwitchVersion(action, body); }});
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
    if (auto code = ConnectStore(*sink)) return code;
  }
  for (auto& sink : sinks_) {
    // A store starting up (an OpenSearch shard still recovering: 503) is waited for, as
    // at every other start-up step.
    Status status =
        RetryTransient([&] { return sink->Migrate(); }, [this] { return stopped(); },
                       [&](const std::string& m) { Warn("store " + sink->name() + ": " + m); });
    if (!status.ok()) {
      if (stopped()) return 0;  // stopped while the store was down: a stop, not a failure
      return Fail("store " + sink->name() + ": " + status.error().message());
    }
    for (const SinkNotice& notice : sink->TakeNotices()) {
      const std::string line = "store " + sink->name() + ": " + notice.text;
      if (notice.level == SinkNotice::Level::kWarn) {
        logger_.Warn(line, {{"store", sink->name()}});
      } else {
        logger_.Info(line, {{"store", sink->name()}});
      }
    }
  }
  return std::nullopt;
}

// Every view takes its table's shape (checked before; a table altered since is still
// refused here, before anything is created).
std::pair<int, std::string> Pipeline::SwitchVersion(const std::string& action,
                                                    const std::string& body) {
  const auto request = nlohmann::json::parse(body, nullptr, false);
  const std::string view =
      request.is_object() && request.contains("view") && request["view"].is_string()
          ? request["view"].get<std::string>()
          : std::string();
  auto answer = [](int code, const std::string& result, const std::string& message) {
    return std::pair<int, std::string>(
        code, nlohmann::json{{"result", result}, {"message", message}}.dump());
  };
  for (const auto& sink : sinks_) {
    for (const auto& [name, tables] : sink->view_sources()) {
      if (name != view) continue;
      // How far a building version is, for the refusal (the view's backfill progress).
      double percent = -1;
      const auto status = nlohmann::json::parse(monitor_.StatusJson(), nullptr, false);
      if (status.is_object() && status.contains("views")) {
        for (const auto& v : status["views"]) {
          if (v.value("name", "") == view && v.contains("progress_percent") &&
              v["progress_percent"].is_number()) {
            percent = v["progress_percent"].get<double>();
          }
        }
      }
      const bool promote = action == "promote";
      auto done = sink->SwitchVersion(
          view, promote ? Sink::VersionSwitch::kPromote : Sink::VersionSwitch::kRollback, percent);
      if (!done.ok()) {
        logger_.Warn(action + " refused: " + done.error().message(),
                     {{"store", sink->name()}, {"view", view}});
        return answer(done.error().kind() == ErrorKind::kPermanent ? 409 : 503, "refused",
                      done.error().message());
      }
      logger_.Info(done.value(), {{"store", sink->name()}, {"view", view}, {"via", action}});
      return answer(200, promote ? "promoted" : "rolled back", done.value());
    }
  }
  return answer(404, "refused", "the running pipeline has no view named '" + view + "'");
}

std::optional<int> Pipeline::ConnectStore(Sink& sink) {
  const std::string store = sink.name();
  auto waiting = [&](const std::string& why) {
    Warn("store " + store + ": " + why);
    monitor_.SetStartWaiting("store " + store + " does not answer: every view waits for it (" +
                             why + ")");
  };
  if (waited_stores_.contains(store) && store_check_) {
    // It did not answer the start-up checks: they are made once it does.
    Backoff backoff = ReconnectBackoff();
    while (true) {
      if (stopped()) return 0;
      const StoreCheck check = store_check_(store);
      if (check.answers && !check.problems.empty()) {
        return Fail("store " + store +
                    " answers now, but does not work with this "
                    "configuration:\n" +
                    check.problems);
      }
      if (check.answers) break;
      const auto delay = backoff.Next();
      waiting("it did not answer the start-up checks" +
              (check.problems.empty() ? std::string() : ": " + check.problems) + "; retrying in " +
              std::to_string(delay.count()) + " ms");
      WaitUnlessStopped(delay, [this] { return stopped(); });
    }
    Log("store " + store + " answers: its start-up checks passed");
  }
  // A store starting up (an OpenSearch shard still recovering: 503) is waited for, as at
  // every other start-up step.
  Status status =
      RetryTransient([&] { return sink.Connect(); }, [this] { return stopped(); }, waiting);
  monitor_.SetStartWaiting("");
  if (!status.ok()) {
    if (stopped()) return 0;  // stopped while the store was down: a stop, not a failure
    return Fail("store " + store + ": " + status.error().message());
  }
  return std::nullopt;
}

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
  if (!slot.value().exists) {
    // First start. Every store is filled by the watermark backfill while the stream
    // flows (StartStores): its checkpoint is the slot's consistent point, and every view
    // (a postgres store: every mirror) is recorded backfilling from the start. No
    // snapshot is exported. Until every store has written its checkpoint a crash leaves
    // at least one without, which the next start fills again.
    std::vector<Sink*> all;
    for (auto& sink : sinks_) all.push_back(sink.get());
    auto created = replication_->CreateLogicalSlot(config_.source.slot, "pgoutput",
                                                   /*temporary=*/false, SlotSnapshot::kNoExport);
    if (!created.ok()) return Undo(Fail(created.error().message()));
    guard_->MadeSlot();
    const Lsn at = created.value().consistent_point;
    Log("created slot " + config_.source.slot + " at " + at.ToString());
    guard_->Filling(all);
    confirmed_ = at;
    if (config_.spool.enabled && !OpenChangeLog(/*first_start=*/true)) return Undo(1);
    for (Sink* sink : all) {
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
      fill_[sink->name()] = StoreFill{"first start", /*clear=*/false, /*first_fill=*/true};
    }
  } else {
    confirmed_ = slot.value().confirmed_flush;
    if (config_.spool.enabled && !OpenChangeLog(/*first_start=*/false)) return Undo(1);
    // A tail the log cut back at its opening (taken for a torn write) that the slot was
    // confirmed past: the transactions in it are neither in the log nor sent again by the
    // slot, so a store that still needed them is refilled.
    std::optional<Lsn> tail_lost;
    if (log_) {
      const ChangeLogStats stats = log_->Stats();
      if (stats.cut_from.IsValid() && confirmed_ >= stats.cut_from) {
        tail_lost = stats.cut_from;
        Warn("the change log's tail from " + stats.cut_from.ToString() + " was cut back to " +
             stats.durable.ToString() + " (damaged or torn), but the slot was confirmed to " +
             confirmed_.ToString() + ": a store behind the slot is refilled");
      }
    }
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
      // Behind the slot but in the change log: it reads the log from there.
      if (stored.value() && log_ && !tail_lost && InLog(*stored.value())) {
        checkpoints_[sink.get()] = *stored.value();
        Log("store " + sink->name() + " resumes from " + stored.value()->ToString() +
            " in the change log (the slot is at " + confirmed_.ToString() + ")");
        continue;
      }
      const std::string reason = stored.value() ? "" : sink->missing_checkpoint_reason();
      const std::string why =
          stored.value()
              ? "checkpoint " + stored.value()->ToString() + ", behind the slot's " +
                    confirmed_.ToString() +
                    (tail_lost ? " and the change log's tail cut back from " +
                                     tail_lost->ToString() + " to " + log_->Durable().ToString()
                     : log_ ? " and the change log's oldest position " +
                                  log_->Stats().oldest.ToString()
                            : "")
              : "no checkpoint" + (reason.empty() ? "" : " (" + reason + ")");
      // New to the pipeline, or it lost its data: its views (a postgres store's mirrors,
      // then its views from them) are filled again from the start by the backfill while
      // the stream flows from the slot for every store.
      Log("store " + sink->name() + " has " + why +
          ": its views are filled again while streaming, from the slot's " + confirmed_.ToString());
      checkpoints_[sink.get()] = confirmed_;
      // Without a checkpoint it holds nothing to serve (new to the pipeline, or it lost
      // its data): its views' first fill. Behind the slot, it serves what it holds.
      fill_[sink->name()] = StoreFill{"store " + sink->name() + " has " + why, /*clear=*/true,
                                      /*first_fill=*/!stored.value().has_value()};
    }
  }
  return std::nullopt;
}

// The change log in spool.dir, beginning after the slot's position when it holds
// nothing (new, or deleted while pgderive was stopped). A log that cannot be opened for
// damage is moved aside and a new one begun: the stores it leaves behind the slot are
// refilled (the start-up rule). nullopt: failed (logged). A first start (the slot was just
// made) begins a new log: one left by an earlier slot of this name is not this slot's.
std::optional<Lsn> Pipeline::OpenChangeLog(bool first_start) {
  const SpoolOptions options{.dir = config_.spool.dir,
                             .max_bytes = config_.spool.max_bytes,
                             .segment_bytes = config_.spool.segment_bytes,
                             .owner = ChangeLogOwner(config_)};
  std::error_code ec;
  // Only a directory that holds nothing but this pipeline's log is ever emptied.
  if (Status owned = CheckLogOwner(options.dir, options.owner); !owned.ok()) {
    Fail("change log: " + owned.error().message());
    return std::nullopt;
  }
  if (first_start && std::filesystem::exists(options.dir, ec)) {
    Log("change log " + options.dir + " is of an earlier slot " + config_.source.slot +
        ": begun anew");
    if (Status removed = RemoveChangeLog(options.dir); !removed.ok()) {
      Fail("cannot remove the change log " + options.dir + ": " + removed.error().message());
      return std::nullopt;
    }
  }
  auto opened = OpenSegmentLog(options, logger_);
  if (!opened.ok() && opened.error().kind() == ErrorKind::kCorrupt) {
    const std::string aside =
        options.dir + ".damaged-" +
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
    Warn("the change log is damaged: " + opened.error().message() + "; moved to " + aside +
         " and begun anew (stores behind the slot are refilled)");
    std::filesystem::rename(options.dir, aside, ec);
    if (ec) {
      Fail("cannot move the damaged change log " + options.dir + " aside: " + ec.message());
      return std::nullopt;
    }
    opened = OpenSegmentLog(options, logger_);
  }
  if (!opened.ok()) {
    Fail("change log " + options.dir + ": " + opened.error().message());
    return std::nullopt;
  }
  log_ = std::move(opened).value();
  if (log_->Stats().segments == 0) {
    Status status = log_->TruncateThrough(confirmed_);
    if (!status.ok()) {
      Fail("change log " + options.dir + ": " + status.error().message());
      return std::nullopt;
    }
  }
  const ChangeLogStats stats = log_->Stats();
  Log("change log " + options.dir + ": " + std::to_string(stats.segments) + " segment(s), " +
      std::to_string(stats.bytes) + " bytes, from " + stats.oldest.ToString() + " to " +
      stats.durable.ToString());
  log_durable_.store(log_->Durable().value);
  // Every store's count is exported from the start (0 until the bound detaches it).
  for (const auto& sink : sinks_) EvictionsCounter(sink->name());
  return log_->Durable();
}

Counter& Pipeline::EvictionsCounter(const std::string& store) {
  return metrics_.counter("pgderive_spool_evictions_total",
                          "Stores detached because the change log reached spool.max_bytes",
                          {{"store", store}});
}

bool Pipeline::InLog(Lsn checkpoint) { return log_ && log_->ReadAfter(checkpoint).ok(); }

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
              },
          .first_fill = [this](const std::string& store,
                               const std::string& view) { monitor_.FirstFill(store, view); }};
}

std::optional<int> Pipeline::StartStores() {
  const std::vector<BackfillView> backfill_views = BackfillViewsOf(config_, sinks_);
  auto worker_of = [this](const std::string& store) -> PipelineWorker& {
    for (auto& worker : workers_) {
      if (worker->sink().name() == store) return *worker;
    }
    std::abort();  // every store has a worker before the backfill starts
  };
  ContinuousVerifyOptions verify = MakeContinuousVerifyOptions(config_, workers_, logger_);
  // A table the monitor has not looked at since it changed is not compared: its views'
  // refill is on its way (RunMonitor::Settled).
  verify.hooks.settled = [this](SqlSession& sql, const std::string& store, const std::string& view,
                                const std::string& table) {
    auto identities = ReadTableIdentities(sql, config_.source.publication, {table});
    if (!identities.ok()) return false;
    auto it = identities.value().find(table);
    return it != identities.value().end() && monitor_.Settled(store, view, table, it->second);
  };
  if (verify.continuous) {
    Log("continuous verification on: " + std::to_string(verify.rows_per_second) +
        " rows a second, repair " + (verify.repair ? "auto" : "report"));
  } else {
    Log("continuous verification off (verify.continuous)");
  }
  backfills_ = std::make_unique<Backfills>(
      BackfillOptions{
          .dsn = config_.source.dsn,
          .pipeline = config_.pipeline,
          .views = backfill_views,
          .chunk_rows = 16384,
          .parallelism = config_.source.snapshot_parallelism,
          .checkpoint = [=](const std::string& store) { return worker_of(store).checkpoint(); },
          .durable = [=](const std::string& store) { return worker_of(store).Durable(); },
          .failed = [=](const std::string& store) { return worker_of(store).failed(); },
          .verify = std::move(verify)},
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
  if (log_) {
    // Whole transactions at their commit (the server spills large ones itself), so the
    // log appends one transaction at a time (spool_capture.h).
    stream_options_.streaming = false;
    capture_.emplace(*log_);
    slot_position_ = confirmed_;
    monitor_.SetSpool([this] { return log_->Stats(); }, config_.spool.max_bytes);
    for (auto& worker : workers_) worker->SetSlotConfirmed(log_->Stats().oldest);
  }
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
        *sink, [this](Sink& s) { return RebuildStore(s); },
        [this, store](const std::string& message) {
          logger_.Warn(message, {{"store", store}, {"slot", config_.source.slot}});
        },
        kQueueBytes, &metrics_));
    workers_.back()->SetInfoLog([this, store](const std::string& message) {
      logger_.Info(message, {{"store", store}, {"slot", config_.source.slot}});
    });
    workers_.back()->SetSlotConfirmed(confirmed_);
    workers_.back()->Start(checkpoints_[sink.get()], backlog_end);
  }
  std::vector<PipelineWorker*> observed;
  for (auto& worker : workers_) observed.push_back(worker.get());
  monitor_.SetWorkers(std::move(observed));
  monitor_.SetBackfills([this] { return backfills_->Progress(); });
  monitor_.SetVerified([this] { return backfills_->Verified(); });
}

// A store that lost its data while the pipeline runs (on its worker's thread): its
// views (a postgres store's mirrors) are recorded backfilling from the start (a rebuild begins) and
// queued for the backfill; the store goes on from the slot's confirmed position, which the stream
// restarts from when it rejoins. The other stores stream on meanwhile.
Result<Lsn> Pipeline::Refill(SqlSession& source, Sink& sink) {
  auto slot = ReadSlot(source, config_.source.slot);
  if (!slot.ok()) return slot.error();
  if (!slot.value().exists) return Error::Permanent("slot " + config_.source.slot + " is gone");
  // Where the store goes on from: taken before its views are cleared and their backfill
  // queued. The backfill's watermarks come after it, so the store applies every chunk
  // (a position taken later could pass the first chunks' high watermarks: the store would
  // skip their rows as applied, and the sweep at the end would delete them). With the
  // change log: its durable position, which the log keeps for the store (MaintainLog).
  // With the change log: its durable position, which the log keeps for the store from
  // before the rebuild began (the pin its worker's rebuild took, StartWorkers).
  const Lsn from = log_ ? Lsn{log_durable_.load()} : slot.value().confirmed_flush;
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
  std::string why = "store " + sink.name() + " lost its data";
  {
    std::lock_guard lock(evicted_mutex_);
    if (auto it = evicted_reason_.find(sink.name()); it != evicted_reason_.end()) {
      why = "store " + sink.name() + " " + it->second;
    }
  }
  Status status = ReconcileViewStates(
      one, views, shapes, ToBackfills(), [this] { return stopped(); }, logger_,
      [this, &sink](const std::string& m) {
        logger_.Warn(m, {{"store", sink.name()}, {"slot", config_.source.slot}});
      },
      /*redefined=*/{}, {{sink.name(), StoreFill{why}}});
  if (!status.ok()) return status.error();
  return from;
}

uint64_t Pipeline::RebuildsOf(Sink& sink) {
  for (auto& worker : workers_) {
    if (&worker->sink() == &sink) return worker->rebuilds();
  }
  return 0;
}

Result<Lsn> Pipeline::RebuildStore(Sink& s) {
  // A stop never starts a rebuild (the next start does it).
  if (stopped()) return Error::Transient("stopping: the rebuild is left to the next start");
  if (log_) {
    // The log is kept from its durable position now until the main thread sees this
    // rebuild done (MaintainLog): the position the store goes on from (the refill's,
    // taken after this) stays in the log, so the
    // store rejoins there - an evicted store is no bound of the truncation, its pin is.
    // Taken under the lock the truncation holds: it never passes a pinned position.
    std::lock_guard lock(evicted_mutex_);
    refill_pins_[s.name()] = {Lsn{log_durable_.load()}, RebuildsOf(s)};
  }
  auto rebuilt = [&]() -> Result<Lsn> {
    // The source tables as they are now (one may have been replaced).
    auto source = SqlSession::Connect(config_.source.dsn, "pgderive-run");
    if (!source.ok()) return source.error();
    Status resolved = s.Resolve(source.value(), /*checked=*/true);
    if (!resolved.ok()) return resolved.error();
    return Refill(source.value(), s);
  }();
  if (!rebuilt.ok() && log_) {
    std::lock_guard lock(evicted_mutex_);
    refill_pins_.erase(s.name());  // tried again, pinned anew
  }
  return rebuilt;
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
  if (log_) {
    // Only the capture restarts: the stores read the log on.
    capture_->Reset();
    return;
  }
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
    if (log_) {
      // The stores read the log on meanwhile: the next try is due then.
      next_reconnect_ = std::chrono::steady_clock::now() + wait;
      return std::nullopt;
    }
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
  if (log_) return SpoolStep();
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
  if (log_) {
    // The slot: the capture's position (Capture). The stores: a rejoining one restarts
    // the log's reader from its checkpoint (the others skip what they have).
    if (stream_ && stream_->flushed() > last_sent_flush_) {
      last_sent_flush_ = stream_->flushed();
      Status status = stream_->SendStatus();
      if (!status.ok()) Restart(status.error().message() + "; reconnecting");
    }
    bool rejoin = false;
    for (auto& worker : workers_) {
      if (worker->WantsRejoin() && !Evicted(*worker)) {
        worker->Rejoin();
        rejoin = true;
        Log("store " + worker->sink().name() +
            " caught up with its queue; it rejoins at its checkpoint " +
            worker->checkpoint().ToString() + ", read from the change log");
      }
    }
    if (rejoin) RestartDelivery("restarting the change log's reader for the rejoining store(s)");
    return;
  }
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
  if (stream_ && log_) {
    // What is in the log is confirmed: the stores read it at the next start.
    if (capture_->unsynced()) {
      if (auto durable = capture_->Sync(); durable.ok()) {
        slot_position_ = std::max(slot_position_, durable.value());
      }
    }
    stream_->ConfirmFlushed(slot_position_);
    IgnoreError(stream_->SendStatus(), "the slot keeps the older position; a restart replays");
  } else if (stream_) {
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

namespace pgderive {

// One turn with the change log: capture what the stream has, then deliver what the log
// holds to the stores; the slot and the log are looked after on their intervals.
std::optional<int> Pipeline::SpoolStep() {
  if (auto lost = monitor_.slot_lost()) return Fail(*lost);
  if (auto code = KeepLock(/*now=*/!stream_)) return code;
  if (!lock_held_) {
    WaitUnlessStopped(kLockRetry, [this] { return stopped(); });
    return std::nullopt;
  }
  if (!stream_ && std::chrono::steady_clock::now() >= next_reconnect_) {
    if (auto code = Reconnect()) return code;
  }
  // Wait for the stream only when the stores have nothing to read.
  std::chrono::milliseconds wait(reader_caught_up_ ? 200 : 0);
  if (dispatcher_->pending()) {
    const auto age = std::chrono::steady_clock::now() - dispatcher_->pending_since();
    wait = std::min(wait, age >= kLinger
                              ? std::chrono::milliseconds(0)
                              : std::chrono::ceil<std::chrono::milliseconds>(kLinger - age));
  }
  if (stream_ && capture_paused_) {
    // Nothing is read, so the server asks for no reply: a status now and then keeps the
    // walsender from timing the connection out (wal_sender_timeout).
    monitor_.SetStream(true, stream_->received());
    const auto now = std::chrono::steady_clock::now();
    if (now - last_paused_status_ >= std::chrono::seconds(5)) {
      last_paused_status_ = now;
      Status status = stream_->SendStatus();
      if (!status.ok()) Restart(status.error().message() + "; reconnecting");
    }
    if (wait.count() > 0 && !reader_) {
      WaitUnlessStopped(std::chrono::milliseconds(50), [this] { return stopped(); });
    }
  } else if (stream_) {
    monitor_.SetStream(true, stream_->received());
    if (auto code = Capture(wait)) return code;
  } else if (wait.count() > 0 && !reader_) {
    WaitUnlessStopped(std::chrono::milliseconds(50), [this] { return stopped(); });
  }
  if (auto code = Deliver()) return code;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_confirm_ >= kConfirmInterval) {
    last_confirm_ = now;
    ConfirmAndRejoin();
  }
  if (now - last_maintain_ >= kMaintainInterval) {
    last_maintain_ = now;
    MaintainLog();
  }
  return std::nullopt;
}

std::optional<int> Pipeline::Capture(std::chrono::milliseconds wait) {
  const auto until = std::chrono::steady_clock::now() + kSpoolTurn;
  bool drained = false;
  for (size_t n = 0;; ++n) {
    auto next = stream_->Next(n == 0 ? wait : std::chrono::milliseconds(0));
    if (!next.ok()) {
      if (next.error().kind() != ErrorKind::kTransient) return Fail(next.error().message());
      Restart(next.error().message() + "; reconnecting");
      break;
    }
    if (!next.value()) {
      drained = true;
      break;
    }
    Status status = capture_->Add(next.value()->data_start, next.value()->data);
    if (!status.ok()) return Fail("change log: " + status.error().message());
    if (n % 64 == 63) {
      if (std::chrono::steady_clock::now() >= until) break;
      // At the bound the log is looked after at once (truncated, a stalled store evicted
      // or the capture paused), not a maintenance interval later.
      if (log_->Stats().bytes >= config_.spool.max_bytes) {
        last_maintain_ = {};
        break;
      }
    }
  }
  // What this turn appended is written at once (the stores read it now); the log fsyncs
  // it on its own thread. The slot follows the log's durable position only: never past
  // what is fsynced.
  auto durable = capture_->Write();
  if (!durable.ok()) return Fail("change log: " + durable.error().message());
  log_durable_.store(durable.value().value);
  slot_position_ = std::max(slot_position_, durable.value());
  if (!stream_) return std::nullopt;
  if (drained && !capture_->open() && durable.value() >= capture_->appended()) {
    // Nothing open and everything received is durable in the log: WAL up to what was
    // received holds nothing more for it (a transaction committing later commits after
    // it).
    idle_received_ = stream_->received();
    idle_durable_ = durable.value();
    slot_position_ = std::max(slot_position_, idle_received_);
  }
  stream_->ConfirmFlushed(slot_position_);
  // At once when the server asks (a stopping server waits for the reply).
  if (stream_->TakeReplyRequest()) {
    last_sent_flush_ = stream_->flushed();
    Status status = stream_->SendStatus();
    if (!status.ok()) Restart(status.error().message() + "; reconnecting");
  }
  return std::nullopt;
}

bool Pipeline::Evicted(PipelineWorker& worker) {
  auto it = evicted_.find(&worker);
  if (it == evicted_.end()) return false;
  if (worker.rebuilds() > it->second) {
    // Refilled: back in.
    evicted_.erase(it);
    std::lock_guard lock(evicted_mutex_);
    evicted_reason_.erase(worker.sink().name());
    return false;
  }
  return true;
}

std::optional<int> Pipeline::Deliver() {
  if (!reader_) {
    // From the lowest checkpoint of the stores in the log (each skips what it has).
    std::optional<Lsn> after;
    for (auto& worker : workers_) {
      if (Evicted(*worker)) continue;
      after = after ? std::min(*after, worker->checkpoint()) : worker->checkpoint();
    }
    if (!after) {
      reader_caught_up_ = true;  // no store reads the log now
      return std::nullopt;
    }
    auto reader = log_->ReadAfter(*after);
    if (!reader.ok()) {
      reader_caught_up_ = true;  // tried again next turn, without them
      // A store needs what the log no longer holds (lost or damaged): refilled.
      for (auto& worker : workers_) {
        if (Evicted(*worker) || InLog(worker->checkpoint())) continue;
        EvictForRefill(*worker, "is behind the change log (" + reader.error().message() +
                                    "): its views are failed until they are refilled");
      }
      return std::nullopt;
    }
    reader_ = std::move(reader).value();
    delivered_end_ = *after;
    reader_caught_up_ = false;
  }
  const auto until = std::chrono::steady_clock::now() + kSpoolTurn;
  for (size_t n = 0;; ++n) {
    auto next = reader_->Next(std::chrono::milliseconds(0));
    if (!next.ok()) {
      // Damaged or missing: never skipped. Every store behind the log's end is refilled,
      // and reads on from there.
      Warn("the change log cannot be read: " + next.error().message() +
           "; the stores behind its end are refilled");
      for (auto& worker : workers_) {
        // Stores read what is written, durable or not: one that applied the log's whole
        // written end (at or past what the capture appended) needs nothing from it.
        if (Evicted(*worker) ||
            worker->checkpoint() >= std::max(Lsn{log_durable_.load()}, capture_->appended()))
          continue;
        EvictForRefill(*worker, "could not read the change log (" + next.error().message() +
                                    "): its views are failed until they are refilled");
      }
      RestartDelivery("the change log's reader starts again");
      return std::nullopt;
    }
    if (!next.value()) {
      reader_caught_up_ = true;
      break;
    }
    reader_caught_up_ = false;
    const std::string& bytes = next.value()->bytes;
    Status status = assembler_->Process(
        std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    if (!status.ok()) return Fail(status.error().message());
    if (!bytes.empty() && bytes[0] == 'C' && bytes.size() >= 18) {
      delivered_end_ = std::max(delivered_end_, Lsn{CommitEnd(bytes)});
    }
    if (n % 64 == 63 && std::chrono::steady_clock::now() >= until) break;
  }
  const auto now = std::chrono::steady_clock::now();
  if (reader_caught_up_) {
    // Nothing more right now: send what there is, once it has lingered.
    if (dispatcher_->pending() && now - dispatcher_->pending_since() >= kLinger) {
      dispatcher_->Dispatch();
    }
    // Everything the log held when the capture was last idle is delivered: the stores
    // move to what was received then.
    if (assembler_->idle() && idle_received_.IsValid() && delivered_end_ >= idle_durable_ &&
        now - last_idle_mark_ >= kIdleMarkInterval) {
      if (dispatcher_->MarkIdle(idle_received_)) last_idle_mark_ = now;
    }
  }
  return std::nullopt;
}

// One refill per eviction: a store already evicted is left to the refill under way (its
// reason and rebuild count are those of the eviction that asked for it).
void Pipeline::EvictForRefill(PipelineWorker& worker, const std::string& why) {
  if (Evicted(worker)) return;
  logger_.Warn("store " + worker.sink().name() + " " + why,
               {{"store", worker.sink().name()}, {"slot", config_.source.slot}});
  evicted_[&worker] = worker.rebuilds();
  {
    std::lock_guard lock(evicted_mutex_);
    evicted_reason_[worker.sink().name()] = why;
  }
  worker.Evict(why);
}

void Pipeline::RestartDelivery(const std::string& why) {
  Log(why);
  reader_.reset();
  reader_caught_up_ = false;
  assembler_->ResetPartial();
  assembler_->SetLastCommitted(Lsn{});  // every store skips by its own checkpoint
  dispatcher_->Drop();
  backfills_->OnStreamRestart();
}

// Truncation behind every store in the log, then the bound: while the log holds
// max_bytes or more, the store holding its oldest segment is evicted if it is stalled
// (unreachable or failing to apply); a healthy store that is only slower than the writer
// pauses the capture instead until it frees that segment (the slot then holds the WAL,
// as with the log off) - never a view failed for being busy.
void Pipeline::MaintainLog() {
  // A refill's position (Refill) is kept until its store is back among the readers.
  auto truncate = [&] {
    Lsn lowest{log_durable_.load()};
    for (auto& worker : workers_) {
      if (!Evicted(*worker)) lowest = std::min(lowest, worker->Durable());
    }
    std::lock_guard lock(evicted_mutex_);
    for (auto it = refill_pins_.begin(); it != refill_pins_.end();) {
      PipelineWorker* pinned = nullptr;
      for (auto& worker : workers_) {
        if (worker->sink().name() == it->first) pinned = worker.get();
      }
      if (pinned == nullptr ||
          (pinned->rebuilds() > it->second.second && !evicted_.contains(pinned))) {
        it = refill_pins_.erase(it);  // done: its own durable position bounds the log now
        continue;
      }
      lowest = std::min(lowest, it->second.first);
      ++it;
    }
    Status status = log_->TruncateThrough(lowest);
    if (!status.ok()) Warn("change log: truncation failed: " + status.error().message());
  };
  truncate();
  ChangeLogStats stats = log_->Stats();
  bool evicted = false;
  std::string pause;
  // Paused, the capture resumes once the log is down to three quarters of its bound.
  const uint64_t bound =
      capture_paused_ ? config_.spool.max_bytes / 4 * 3 : config_.spool.max_bytes;
  if (stats.bytes < bound) slow_since_.clear();
  while (stats.bytes >= bound) {
    // The stores holding the oldest segment. None (an open transaction fills the log):
    // nothing a store can free, the capture goes on.
    // The stalled ones go at once. A healthy one pauses the capture until it applies the
    // segment; with spool.when_full detach it is detached once it has held the segment
    // at the bound for kSlowStoreGrace (a store only a moment behind frees it before).
    const bool detach_slow = config_.spool.when_full == SpoolConfig::WhenFull::kDetach;
    const auto now = std::chrono::steady_clock::now();
    std::vector<PipelineWorker*> stalled;
    std::string catching_up;
    std::set<const PipelineWorker*> slow;
    for (auto& worker : workers_) {
      if (Evicted(*worker)) continue;
      const Lsn durable = worker->Durable();
      if (durable >= stats.oldest_segment_end) continue;
      if (!worker->healthy()) {
        stalled.push_back(worker.get());
        continue;
      }
      slow.insert(worker.get());
      const auto since = slow_since_.try_emplace(worker.get(), now).first->second;
      if (detach_slow && now - since >= kSlowStoreGrace) {
        stalled.push_back(worker.get());
      } else {
        catching_up += (catching_up.empty() ? "" : ", ") + worker->sink().name() + " (checkpoint " +
                       durable.ToString() + ")";
      }
    }
    std::erase_if(slow_since_, [&](const auto& entry) { return !slow.contains(entry.first); });
    if (stalled.empty()) {
      if (!catching_up.empty()) {
        pause = "spool.max_bytes " + FormatByteSize(config_.spool.max_bytes) +
                " reached; the oldest segment is freed once store(s) " + catching_up + " apply it";
      }
      break;
    }
    if (stats.bytes < config_.spool.max_bytes) break;  // stalled stores go at the bound
    for (PipelineWorker* holder : stalled) {
      const std::string state = holder->healthy() ? "slower than the writer for " +
                                                        std::to_string(kSlowStoreGrace.count()) +
                                                        " s (spool.when_full: detach)"
                                                  : "stalled (" + holder->last_error() + ")";
      slow_since_.erase(holder);
      const std::string why =
          "fell behind the change log: its checkpoint " + holder->Durable().ToString() +
          ", the log holds " + stats.oldest.ToString() + " to " + stats.durable.ToString() +
          " in " + FormatByteSize(stats.bytes) + ", spool.max_bytes " +
          FormatByteSize(config_.spool.max_bytes) + " reached while the store was " + state +
          "; its views are failed until they are refilled, once it answers";
      logger_.Warn("store " + holder->sink().name() + " " + why,
                   {{"store", holder->sink().name()}, {"slot", config_.source.slot}});
      EvictionsCounter(holder->sink().name()).Add();
      evicted_[holder] = holder->rebuilds();
      {
        std::lock_guard lock(evicted_mutex_);
        evicted_reason_[holder->sink().name()] = why;
      }
      holder->Evict(why);
    }
    evicted = true;
    truncate();
    stats = log_->Stats();
  }
  if (evicted) RestartDelivery("the change log's reader starts again without the evicted store");
  const bool paused = !pause.empty();
  if (paused != capture_paused_) {
    capture_paused_ = paused;
    if (paused) {
      Warn("change log: capture paused: " + pause + "; the slot holds the WAL meanwhile");
    } else {
      Log("change log: capture resumed (" + FormatByteSize(stats.bytes) + " in the log)");
    }
  }
  monitor_.SetCapturePaused(pause);
  for (auto& worker : workers_) worker->SetSlotConfirmed(stats.oldest);
}

}  // namespace pgderive
