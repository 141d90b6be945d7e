#include "pipeline/run_monitor.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "base/number.h"
#include "cdc/publication.h"
#include "cdc/sql_session.h"
#include "cdc/walsender.h"

namespace pgderive {
namespace {

constexpr auto kPublishInterval = std::chrono::seconds(1);
constexpr auto kSlotCheckInterval = std::chrono::seconds(10);
constexpr auto kTableCheckInterval = std::chrono::seconds(2);

// The entries of one comma-separated list that the other lacks, both ways.
std::string Difference(const std::string& a, const std::string& b) {
  auto split = [](const std::string& list) {
    std::set<std::string> out;
    size_t from = 0;
    while (from < list.size()) {
      size_t comma = list.find(',', from);
      if (comma == std::string::npos) comma = list.size();
      out.insert(list.substr(from, comma - from));
      from = comma + 1;
    }
    return out;
  };
  const auto x = split(a), y = split(b);
  std::string out;
  for (const auto& v : x) {
    if (!y.contains(v)) out += (out.empty() ? "" : ",") + v;
  }
  for (const auto& v : y) {
    if (!x.contains(v)) out += (out.empty() ? "" : ",") + v;
  }
  return out;
}
constexpr auto kProgressLogInterval = std::chrono::seconds(10);
constexpr const char* kViewStates[] = {"live", "backfilling", "catching up", "stalled", "failed"};

// A PostgreSQL timestamp (microseconds since 2000-01-01) as UTC ISO 8601, to the second.
std::string UtcText(int64_t pg_time) {
  const std::time_t t = std::chrono::system_clock::to_time_t(FromPgTimestamp(pg_time));
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Rows the snapshot will read: the planner's estimate (pg_class.reltuples), or, for
// tables never analyzed, the rows per chunk seen so far times the chunks.
double EstimatedRows(const SnapshotProgress& p) {
  const double estimated = static_cast<double>(p.rows_estimated.load());
  const double done = static_cast<double>(p.chunks_done.load());
  const double rows = static_cast<double>(p.rows_read.load());
  if (estimated > 0) return std::max(estimated, rows);
  if (done > 0) return std::max(rows, rows / done * static_cast<double>(p.chunks_total.load()));
  return 0;
}

// What a running snapshot has done and has left, for the log, /status and the gauges.
struct SnapshotStats {
  double rows = 0;
  double estimated = 0;
  double rate = 0;  // rows per second since it started
  double eta_seconds = 0;
  double percent = 0;
};

SnapshotStats StatsOf(const SnapshotProgress& p, std::chrono::steady_clock::time_point started) {
  SnapshotStats s;
  s.rows = static_cast<double>(p.rows_read.load());
  s.estimated = EstimatedRows(p);
  s.rate = s.rows / std::max(1e-3, Seconds(std::chrono::steady_clock::now() - started));
  s.eta_seconds = s.estimated > s.rows && s.rate > 0 ? (s.estimated - s.rows) / s.rate : 0;
  s.percent = s.estimated > 0 ? std::min(100.0, 100 * s.rows / s.estimated) : 0;
  return s;
}

}  // namespace

RunMonitor::RunMonitor(const Config& config, Logger& log, Metrics& metrics)
    : config_(config), log_(log), metrics_(metrics) {}

RunMonitor::~RunMonitor() { Stop(); }

namespace {

// Whether a partition in both TableIdentity::storage lists ("oid:filenode,...") has
// another file node in `now`.
bool FileNodeChanged(const std::string& before, const std::string& now) {
  auto parse = [](const std::string& list) {
    std::map<std::string, std::string> out;
    size_t from = 0;
    while (from < list.size()) {
      size_t comma = list.find(',', from);
      if (comma == std::string::npos) comma = list.size();
      const std::string item = list.substr(from, comma - from);
      const size_t colon = item.find(':');
      if (colon != std::string::npos) out[item.substr(0, colon)] = item.substr(colon + 1);
      from = comma + 1;
    }
    return out;
  };
  const auto a = parse(before);
  for (const auto& [oid, node] : parse(now)) {
    auto it = a.find(oid);
    if (it != a.end() && it->second != node) return true;
  }
  return false;
}

}  // namespace

void RunMonitor::CountTableChange(const std::string& table) {
  metrics_
      .counter("pgderive_source_table_changes_total",
               "Source tables found dropped, replaced, removed from the publication or "
               "repartitioned under a running pipeline",
               {{"table", table}})
      .Add(1);
}

void RunMonitor::Start() {
  thread_.Start([this](std::stop_token stop) { Loop(stop); });
}

void RunMonitor::Stop() { thread_.Stop(); }

void RunMonitor::SnapshotStarted(const SnapshotProgress* progress,
                                 const std::vector<std::string>& stores) {
  std::lock_guard lock(mutex_);
  snapshot_ = progress;
  snapshot_started_ = std::chrono::steady_clock::now();
  for (const std::string& s : stores) snapshotting_[s] = true;
}

void RunMonitor::SnapshotEnded(const std::vector<std::string>& stores) {
  std::lock_guard lock(mutex_);
  snapshot_ = nullptr;
  for (const std::string& s : stores) snapshotting_[s] = false;
}

void RunMonitor::SetWorkers(std::vector<PipelineWorker*> workers) {
  std::lock_guard lock(mutex_);
  workers_ = std::move(workers);
  initial_snapshot_done_ = true;
}

void RunMonitor::SetSpool(SpoolStats stats, uint64_t max_bytes) {
  std::lock_guard lock(mutex_);
  spool_ = std::move(stats);
  spool_max_bytes_ = max_bytes;
}

void RunMonitor::SetCapturePaused(const std::string& why) {
  std::lock_guard lock(mutex_);
  capture_paused_ = why;
}

void RunMonitor::SetStartWaiting(const std::string& why) {
  std::lock_guard lock(mutex_);
  start_waiting_ = why;
}

void RunMonitor::SetBackfills(BackfillsProgress progress) {
  std::lock_guard lock(mutex_);
  backfills_ = std::move(progress);
}

void RunMonitor::SetVerified(VerifiedProgress verified) {
  std::lock_guard lock(mutex_);
  verified_ = std::move(verified);
}

void RunMonitor::FirstFill(const std::string& store, const std::string& view) {
  std::lock_guard lock(mutex_);
  first_fills_.insert({store, view});
}

void RunMonitor::SetStream(bool connected, Lsn received) {
  stream_connected_.store(connected);
  if (received.value > received_.load()) received_.store(received.value);
}

std::optional<std::string> RunMonitor::slot_lost() {
  std::lock_guard lock(mutex_);
  return slot_lost_;
}

std::vector<std::string> RunMonitor::NotReady() {
  std::lock_guard lock(mutex_);
  return not_ready_;
}

std::string RunMonitor::StatusJson() {
  std::lock_guard lock(mutex_);
  return status_json_;
}

std::string RunMonitor::SlotLostMessage(const std::string& slot) {
  return "replication slot " + slot +
         " has been invalidated (wal_status = lost): PostgreSQL removed WAL it still needed "
         "(max_slot_wal_keep_size), so the views can no longer be kept exactly from it. To "
         "start over, drop the slot and start pgderive again, which fills every view again: "
         "psql -c \"select pg_drop_replication_slot('" +
         slot + "')\" (connected to the source database)";
}

void RunMonitor::Loop(std::stop_token stop) {
  auto last_slot_check = std::chrono::steady_clock::time_point{};
  auto last_table_check = std::chrono::steady_clock::now();
  auto last_heartbeat = std::chrono::steady_clock::now();
  auto last_progress_log = std::chrono::steady_clock::now();
  // The first status at once (the checks wait for the first interval, as before): /status
  // is never empty while the run starts.
  Publish();
  while (true) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, stop, kPublishInterval, [] { return false; });
      if (stop.stop_requested()) return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_slot_check >= kSlotCheckInterval) {
      last_slot_check = now;
      CheckSlot();
    }
    if (now - last_table_check >= kTableCheckInterval) {
      last_table_check = now;
      CheckSourceTables();
    }
    CheckStoreChanges();
    if (config_.source.heartbeat_seconds > 0 &&
        now - last_heartbeat >= std::chrono::seconds(config_.source.heartbeat_seconds)) {
      last_heartbeat = now;
      Heartbeat();
    }
    Publish();
    std::lock_guard lock(mutex_);
    if (snapshot_ != nullptr && now - last_progress_log >= kProgressLogInterval) {
      last_progress_log = now;
      const SnapshotStats s = StatsOf(*snapshot_, snapshot_started_);
      log_.Info("snapshot progress",
                {{"rows", std::to_string(static_cast<uint64_t>(s.rows))},
                 {"estimated_rows", std::to_string(static_cast<uint64_t>(s.estimated))},
                 {"rows_per_second", std::to_string(static_cast<uint64_t>(s.rate))},
                 {"eta_seconds", std::to_string(static_cast<uint64_t>(s.eta_seconds))}});
    }
  }
}

void RunMonitor::WatchSourceTables(const std::map<std::string, TableIdentity>& tables) {
  // Before Start: the monitor thread alone uses watched_ afterwards.
  for (const auto& [table, identity] : tables) {
    watched_[table] = Watched{identity.oid, identity.partitions, false, "", identity.storage};
  }
  std::lock_guard lock(mutex_);
  settled_ = tables;
}

bool RunMonitor::Settled(const std::string& store, const std::string& view,
                         const std::string& table, const TableIdentity& now) {
  std::lock_guard lock(mutex_);
  if (marks_.contains({store, view})) return false;
  auto it = settled_.find(table);
  return it != settled_.end() && it->second.oid == now.oid &&
         it->second.published == now.published && it->second.partitions == now.partitions &&
         it->second.storage == now.storage;
}

void RunMonitor::CheckSourceTables() {
  std::vector<PipelineWorker*> workers;
  {
    std::lock_guard lock(mutex_);
    workers = workers_;
  }
  if (watched_.empty() || workers.empty()) return;  // streaming has not started
  auto c = Source();
  if (!c.ok()) return;
  SqlSession& sql = *c.value();
  // A partition's rows are looked at below: a lock held on it (a DDL statement waiting)
  // must not stall the monitor, which also publishes /status; tried again in 2 s.
  if (!sql.Execute("set lock_timeout = '1s'").ok()) {
    source_.reset();
    return;
  }
  std::vector<std::string> tables;
  for (const auto& [table, w] : watched_) tables.push_back(table);
  auto now = ReadTableIdentities(sql, config_.source.publication, tables);
  if (!now.ok()) {
    source_.reset();  // reconnect next time
    return;
  }
  auto where = [&] { return WalPosition(sql); };
  for (auto& [table, watched] : watched_) {
    auto found = now.value().find(table);
    if (found == now.value().end()) continue;
    const TableIdentity& current = found->second;
    // The views that read the table, by worker.
    std::vector<std::pair<PipelineWorker*, std::string>> readers;
    for (PipelineWorker* w : workers) {
      for (const auto& [view, sources] : w->sink().view_sources()) {
        if (std::find(sources.begin(), sources.end(), table) != sources.end()) {
          readers.emplace_back(w, view);
        }
      }
    }
    std::string names;
    for (const auto& [w, view] : readers) names += (names.empty() ? "" : ",") + view;
    if (current.oid == 0) {
      if (watched.gone) continue;
      watched.gone = true;
      const std::string reason =
          "its source table " + table +
          " was dropped or renamed: the view holds rows of a table that is gone; it is "
          "refilled once a table of that name exists again";
      log_.Error("source table " + table + " is gone; views " + names +
                     " are failed until it "
                     "exists again",
                 {{"table", table}, {"views", names}, {"lsn", where()}});
      CountTableChange(table);
      std::lock_guard lock(mutex_);
      settled_.erase(table);
      for (const auto& [w, view] : readers) {
        marks_[{w->sink().name(), view}] = ViewMark{true, reason, Lsn{}};
      }
      continue;
    }
    std::string why;
    if (watched.gone || current.oid != watched.oid) {
      why = "source table " + table + " was replaced by another of the same name (OID " +
            std::to_string(watched.oid) + ", now " + std::to_string(current.oid) + ")";
      if (current.oid == watched.oid) why = "source table " + table + " is back under its name";
    } else if (!current.published) {
      why = "source table " + table + " was removed from publication " + config_.source.publication;
    } else if (watched.partitions && *watched.partitions != current.partitions) {
      auto rows = PartitionsHoldRows(sql, Difference(*watched.partitions, current.partitions));
      if (!rows.ok()) {
        source_.reset();
        return;
      }
      if (rows.value()) {
        why = "partitions holding rows were attached to, detached from or dropped from " + table;
      }
    }
    // Apart from the partitions coming and going: a partition present before and now
    // with a new file node was truncated (or rewritten), and a TRUNCATE of a single
    // partition is not published through the root.
    if (why.empty() && watched.storage && FileNodeChanged(*watched.storage, current.storage)) {
      why = "a partition of " + table +
            " was truncated or rewritten (PostgreSQL does not publish a TRUNCATE of one "
            "partition through its root)";
    }
    if (why.empty()) {
      watched.partitions = current.partitions;
      watched.storage = current.storage;
      std::lock_guard lock(mutex_);
      settled_[table] = current;
      continue;
    }
    {
      std::lock_guard lock(mutex_);
      settled_.erase(table);  // until its views' refill is asked for
    }
    // Put it back into the publication, then refill every view that reads it: what
    // changed in between is in no stream.
    if (!current.published) {
      Status added =
          sql.Execute("alter publication " + sql.QuoteIdentifier(config_.source.publication) +
                      " add table " + TableName::Parse(table).Quoted());
      if (!added.ok()) {
        if (watched.refused != added.error().message()) {
          watched.refused = added.error().message();
          log_.Error(why + "; it cannot be put back into the publication: " +
                         added.error().message() + "; trying again every 2 s",
                     {{"table", table}, {"views", names}});
        }
        std::lock_guard lock(mutex_);
        for (const auto& [w, view] : readers) {
          marks_[{w->sink().name(), view}] = ViewMark{
              true,
              why + "; it cannot be put back into the publication: " + added.error().message(),
              Lsn{}};
        }
        continue;
      }
    }
    std::set<PipelineWorker*> rebuilt;
    bool sent = true;
    for (const auto& [w, view] : readers) {
      if (!w->sink().backfills_rows()) {
        if (rebuilt.insert(w).second) w->RequestRebuild(why);
        continue;
      }
      if (!RequestBackfill(sql, view).ok()) sent = false;
    }
    if (!sent) {
      source_.reset();  // tried again next time: the table is not marked seen
      return;
    }
    const std::string at = where();
    const Lsn until = Lsn::Parse(at).value_or(Lsn{});
    log_.Warn(why + ": refilling views " + names,
              {{"table", table}, {"views", names}, {"lsn", at}});
    CountTableChange(table);
    watched = Watched{current.oid, current.partitions, false, "", current.storage};
    std::lock_guard lock(mutex_);
    for (const auto& [w, view] : readers) {
      marks_[{w->sink().name(), view}] = ViewMark{false, why + "; refilling the view", until};
    }
    TableIdentity accepted = current;
    accepted.published = true;  // put back above
    settled_[table] = accepted;
  }
}

std::string RunMonitor::WalPosition(SqlSession& sql) {
  auto lsn = sql.Query("select pg_current_wal_insert_lsn()::text");
  return lsn.ok() && !lsn.value().rows.empty() ? lsn.value().rows[0][0].value_or("") : "";
}

Status RunMonitor::RequestBackfill(SqlSession& sql, const std::string& view) {
  const std::string request = BackfillRequestMessage(config_.pipeline, view);
  return sql.Execute("select pg_logical_emit_message(true, " + sql.QuoteLiteral(kBackfillPrefix) +
                     ", " + sql.QuoteLiteral(request) + ")");
}

void RunMonitor::CheckStoreChanges() {
  std::vector<PipelineWorker*> workers;
  {
    std::lock_guard lock(mutex_);
    workers = workers_;
  }
  for (PipelineWorker* w : workers) {
    for (StoreChange& change : w->TakeStoreChanges()) {
      // The view leaves `live` now; its refill is asked for below (or on a later pass,
      // should the source not answer).
      const std::string& store = w->sink().name();
      std::vector<std::string> views;
      for (const auto& [view, tables] : w->sink().view_sources()) {
        if (change.view.empty() || change.view == view || !w->sink().backfills_rows()) {
          views.push_back(view);
        }
      }
      metrics_
          .counter("pgderive_store_container_changes_total",
                   "Indexes, target tables or recorded state found vanished or replaced in a "
                   "store while running (each refills the views concerned)",
                   {{"store", store}})
          .Add(1);
      std::lock_guard lock(mutex_);
      for (const std::string& view : views) {
        marks_[{store, view}] =
            ViewMark{false, "store " + store + ": " + change.what + "; refilling the view",
                     Lsn{~uint64_t{0}}};
      }
      store_changes_.emplace_back(w, std::move(change));
    }
  }
  if (store_changes_.empty()) return;
  auto c = Source();
  if (!c.ok()) return;  // tried again next second; the views stay marked
  SqlSession& sql = *c.value();
  while (!store_changes_.empty()) {
    auto& [w, change] = store_changes_.front();
    const std::string store = w->sink().name();
    std::vector<std::string> views;
    for (const auto& [view, tables] : w->sink().view_sources()) {
      // A store without per-view backfills is rebuilt whole: every view is refilled.
      if (change.view.empty() || change.view == view || !w->sink().backfills_rows()) {
        views.push_back(view);
      }
    }
    std::string names;
    for (const std::string& v : views) names += (names.empty() ? "" : ",") + v;
    const std::string why = "store " + store + ": " + change.what;
    // A whole store (or a postgres store) is rebuilt by its worker, which asked for it.
    if (!change.view.empty() && w->sink().backfills_rows() &&
        !RequestBackfill(sql, change.view).ok()) {
      source_.reset();  // asked again next second
      return;
    }
    const std::string at = WalPosition(sql);
    const Lsn until = Lsn::Parse(at).value_or(Lsn{});
    log_.Warn(why + (views.size() == 1 ? ": view " + names + " is" : ": views " + names + " are") +
                  " not live until refilled",
              {{"store", store}, {"views", names}, {"lsn", at}});
    {
      std::lock_guard lock(mutex_);
      for (const std::string& view : views) {
        marks_[{store, view}] = ViewMark{false, why + "; refilling the view", until};
      }
    }
    store_changes_.erase(store_changes_.begin());
  }
}

Result<SqlSession*> RunMonitor::Source() {
  if (!source_) {
    auto c = SqlSession::Connect(config_.source.dsn, "pgderive-monitor");
    if (!c.ok()) return c.error();
    source_.emplace(std::move(c).value());
  }
  return &*source_;
}

void RunMonitor::Heartbeat() {
  auto c = Source();
  Status status =
      c.ok() ? c.value()->Execute("select pg_logical_emit_message(true, 'pgderive-heartbeat', '')")
             : Status(c.error());
  if (!status.ok()) source_.reset();  // reconnect next time
  if (status.ok()) {
    metrics_.counter("pgderive_heartbeats_total", "Heartbeat messages written to the source's WAL")
        .Add();
  } else {
    log_.Warn("heartbeat failed: " + status.error().message(), {{"slot", config_.source.slot}});
  }
}

void RunMonitor::CheckSlot() {
  auto c = Source();
  if (!c.ok()) return;  // the stream reports the source being down
  auto rows = c.value()->Query(
      "select active, confirmed_flush_lsn, restart_lsn, wal_status, safe_wal_size, "
      "pg_current_wal_lsn(), pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
      "from pg_replication_slots where slot_name = " +
      c.value()->QuoteLiteral(config_.source.slot));
  if (!rows.ok()) source_.reset();  // reconnect next time
  if (!rows.ok() || rows.value().rows.empty()) return;
  const auto& row = rows.value().rows[0];
  const std::string wal_status = row[3].value_or("");
  auto retained_bytes = ParseServerNumber<uint64_t>(row[6]);
  if (!retained_bytes.ok()) return;  // not a number: the slot's figures are not updated
  const uint64_t retained = retained_bytes.value();
  metrics_.gauge("pgderive_slot_retained_wal_bytes", "WAL the slot keeps on the source")
      .Set(static_cast<double>(retained));
  const bool over = retained > config_.source.max_retained_wal_bytes;
  metrics_
      .gauge("pgderive_slot_retained_wal_over_limit",
             "1 while retained WAL is past source.max_retained_wal")
      .Set(over ? 1 : 0);
  if (over && !retained_warned_) {
    log_.Warn("the slot retains more WAL than source.max_retained_wal",
              {{"slot", config_.source.slot},
               {"retained_bytes", std::to_string(retained)},
               {"limit_bytes", std::to_string(config_.source.max_retained_wal_bytes)}});
  }
  retained_warned_ = over;
  nlohmann::json slot = {{"name", config_.source.slot},
                         {"active", row[0].value_or("") == "t"},
                         {"confirmed_flush_lsn", row[1].value_or("")},
                         {"restart_lsn", row[2].value_or("")},
                         {"wal_status", wal_status},
                         {"retained_wal_bytes", retained}};
  if (auto safe = ParseServerNumber<int64_t>(row[4]); safe.ok() && row[4]) {
    slot["safe_wal_size"] = safe.value();
  }
  std::lock_guard lock(mutex_);
  if (auto current = Lsn::Parse(row[5].value_or(""))) current_wal_ = *current;
  slot_json_ = slot.dump();
  if (wal_status == "lost" && !slot_lost_) slot_lost_ = SlotLostMessage(config_.source.slot);
}

void RunMonitor::Publish() {
  // What the pipeline's threads set, copied under the lock; the workers and sinks are
  // read without it (a sink answers only between its batches, and the pipeline's thread
  // must never wait for that in slot_lost()).
  std::vector<PipelineWorker*> workers;
  std::map<std::string, bool> snapshotting;
  bool initial_snapshot_done = false;
  Lsn current_wal;
  std::optional<std::string> slot_json, slot_lost;
  nlohmann::json snapshot;
  BackfillsProgress backfills_progress;
  VerifiedProgress verified_progress;
  SpoolStats spool;
  uint64_t spool_max_bytes = 0;
  std::string capture_paused;
  std::string start_waiting;
  std::map<std::pair<std::string, std::string>, ViewMark> marks;
  std::set<std::pair<std::string, std::string>> first_fills, first_filled;
  {
    std::lock_guard lock(mutex_);
    first_fills = first_fills_;
    // A refill is under way until the store has passed the point it was asked at (then
    // the backfill's own progress, or the rebuild, says what is left).
    for (auto it = marks_.begin(); it != marks_.end();) {
      bool passed = false;
      for (PipelineWorker* w : workers_) {
        passed = passed || (!it->second.failed && w->sink().name() == it->first.first &&
                            w->checkpoint() > it->second.until);
      }
      it = passed ? marks_.erase(it) : std::next(it);
    }
    marks = marks_;
    workers = workers_;
    backfills_progress = backfills_;
    verified_progress = verified_;
    spool = spool_;
    spool_max_bytes = spool_max_bytes_;
    capture_paused = capture_paused_;
    start_waiting = start_waiting_;
    snapshotting = snapshotting_;
    initial_snapshot_done = initial_snapshot_done_;
    current_wal = current_wal_;
    slot_json = slot_json_;
    slot_lost = slot_lost_;
    if (snapshot_ != nullptr) {
      const SnapshotStats s = StatsOf(*snapshot_, snapshot_started_);
      snapshot = {{"rows", static_cast<uint64_t>(s.rows)},
                  {"estimated_rows", static_cast<uint64_t>(s.estimated)},
                  {"rows_per_second", static_cast<uint64_t>(s.rate)},
                  {"percent", s.percent},
                  {"eta_seconds", s.eta_seconds}};
      metrics_.gauge("pgderive_snapshot_rows", "Rows read by the running snapshot").Set(s.rows);
      metrics_
          .gauge("pgderive_snapshot_estimated_rows", "Rows the running snapshot expects to read")
          .Set(s.estimated);
    }
  }
  const Lsn received{received_.load()};
  const Lsn head = std::max(received, current_wal);
  const bool connected = stream_connected_.load();
  metrics_.gauge("pgderive_stream_connected", "1 while the replication stream is connected")
      .Set(connected ? 1 : 0);
  std::vector<std::string> reasons;
  if (!start_waiting.empty()) reasons.push_back(start_waiting);
  if (!initial_snapshot_done) reasons.push_back("the initial snapshot is not done");
  if (!connected) reasons.push_back("the replication stream is not connected");
  const auto backfilling = backfills_progress
                               ? backfills_progress()
                               : std::map<std::pair<std::string, std::string>, BackfillProgress>{};
  const auto verified = verified_progress
                            ? verified_progress()
                            : std::map<std::pair<std::string, std::string>, VerifyProgress>{};
  nlohmann::json stores = nlohmann::json::array();
  nlohmann::json views = nlohmann::json::array();
  const int64_t now_pg = ToPgTimestamp(std::chrono::system_clock::now());
  nlohmann::json spool_json;
  std::optional<ChangeLogStats> log_stats;
  if (spool) {
    log_stats = spool();
    spool_json = {{"bytes", log_stats->bytes},
                  {"max_bytes", spool_max_bytes},
                  {"segments", log_stats->segments},
                  {"oldest_lsn", log_stats->oldest.ToString()},
                  {"durable_lsn", log_stats->durable.ToString()}};
    if (!capture_paused.empty()) spool_json["capture_paused"] = capture_paused;
    metrics_
        .gauge("pgderive_spool_capture_paused",
               "1 while the capture waits for a healthy store to free the change log's "
               "oldest segment (spool.max_bytes reached)")
        .Set(capture_paused.empty() ? 0 : 1);
    metrics_.gauge("pgderive_spool_bytes", "Bytes the change log holds on disk")
        .Set(static_cast<double>(log_stats->bytes));
    metrics_.gauge("pgderive_spool_max_bytes", "The change log's bound (spool.max_bytes)")
        .Set(static_cast<double>(spool_max_bytes));
    metrics_.gauge("pgderive_spool_segments", "Segment files the change log holds")
        .Set(static_cast<double>(log_stats->segments));
    metrics_
        .gauge("pgderive_spool_oldest_lsn",
               "The oldest position a store can read the change log from (LSN as a number)")
        .Set(static_cast<double>(log_stats->oldest.value));
    metrics_
        .gauge("pgderive_spool_durable_lsn",
               "The change log's durable position, what the slot is confirmed to (LSN as a "
               "number)")
        .Set(static_cast<double>(log_stats->durable.value));
  }
  for (PipelineWorker* w : workers) {
    const std::string& name = w->sink().name();
    const Lsn checkpoint = w->checkpoint();
    const uint64_t lag_bytes = head > checkpoint ? head.value - checkpoint.value : 0;
    // The age of the oldest transaction handed to the store and not applied yet (0
    // when it has applied everything it was given).
    const int64_t oldest = w->oldest_queued_commit_time();
    const double lag_seconds = oldest == 0 ? 0.0 : static_cast<double>(now_pg - oldest) / 1e6;
    const MetricLabels store{{"store", name}};
    metrics_
        .gauge("pgderive_store_lag_bytes", "WAL between the source and the store's checkpoint",
               store)
        .Set(static_cast<double>(lag_bytes));
    metrics_
        .gauge("pgderive_store_lag_seconds",
               "Age of the oldest transaction handed to the store and not yet applied", store)
        .Set(std::max(0.0, lag_seconds));
    metrics_.gauge("pgderive_store_up", "1 while the store takes writes", store)
        .Set(w->healthy() && !w->failed() ? 1 : 0);
    const bool filling = snapshotting[name];
    // Unreachable (or failing to apply, retried): its views are stalled, since then.
    const bool stalled = !w->failed() && !w->healthy();
    const int64_t since_pg = stalled ? w->stalled_since() : 0;
    const std::string since = since_pg == 0 ? "" : UtcText(since_pg);
    const double stalled_seconds =
        since_pg == 0 ? 0.0 : std::max(0.0, static_cast<double>(now_pg - since_pg) / 1e6);
    const std::string error = stalled ? w->last_error() : "";
    // Back after an outage: what it was handed before is a backlog it is still applying.
    const int64_t recovered = w->recovered_at();
    const bool backlog = oldest != 0 && recovered != 0 && oldest < recovered;
    const std::string evicted = w->evicted();
    if (!evicted.empty()) {
      reasons.push_back("store " + name + " " + evicted);
    } else if (w->failed()) {
      reasons.push_back("store " + name + " stopped on an error");
    } else if (stalled) {
      reasons.push_back("store " + name + " is unreachable since " + since +
                        (error.empty() ? "" : ": " + error) + "; its views are stalled");
    }
    nlohmann::json store_json = {{"name", name},
                                 {"checkpoint", checkpoint.ToString()},
                                 {"lag_bytes", lag_bytes},
                                 {"lag_seconds", std::max(0.0, lag_seconds)},
                                 {"reachable", w->healthy()},
                                 {"detached", w->detached()},
                                 {"failed", w->failed()}};
    if (log_stats) {
      // How far behind the log's durable position the store is (its position in the log).
      const uint64_t behind =
          log_stats->durable > checkpoint ? log_stats->durable.value - checkpoint.value : 0;
      store_json["spool_behind_bytes"] = behind;
      metrics_
          .gauge("pgderive_spool_store_behind_bytes",
                 "WAL between the change log's durable position and the store's checkpoint", store)
          .Set(static_cast<double>(behind));
      metrics_
          .gauge("pgderive_spool_store_evicted",
                 "1 while the store fell behind the change log (its views failed until refilled)",
                 store)
          .Set(evicted.empty() ? 0 : 1);
      if (!evicted.empty()) store_json["evicted"] = evicted;
    }
    if (stalled) {
      store_json["unreachable_since"] = since;
      if (!error.empty()) store_json["error"] = error;
    }
    stores.push_back(store_json);
    std::map<std::string, std::string> failed_views;
    for (auto& [view, reason] : w->sink().failed_views()) failed_views[view] = reason;
    if (!evicted.empty()) {
      for (const auto& [view, tables] : w->sink().view_sources()) failed_views[view] = evicted;
    }
    std::map<std::string, std::vector<VersionInfo>> versions;
    for (VersionInfo& info : w->sink().ViewVersions()) versions[info.view].push_back(info);
    for (const auto& [view, tables] : w->sink().view_sources()) {
      std::string state = "live";
      std::optional<BackfillProgress> filled;
      if (auto it = backfilling.find({name, view}); it != backfilling.end()) filled = it->second;
      // A postgres view is filled while a mirror it reads is.
      for (const std::string& table : tables) {
        if (filled) break;
        auto it = backfilling.find({name, TableFillName(table)});
        if (it != backfilling.end()) filled = it->second;
      }
      std::optional<std::string> refilling;  // the watch asked for a refill: why
      // The verifier could not repair it (until a fill of it is queued).
      if (auto found = verified.find({name, view});
          found != verified.end() && !found->second.failed.empty()) {
        failed_views.emplace(view, found->second.failed);
      }
      if (auto mark = marks.find({name, view}); mark != marks.end()) {
        if (mark->second.failed) {
          failed_views.emplace(view, mark->second.reason);
        } else {
          refilling = mark->second.reason;
        }
      }
      if (failed_views.contains(view)) {
        state = "failed";
      } else if (w->failed()) {
        state = "failed";
      } else if (stalled) {
        state = "stalled";
      } else if (filling || filled || refilling) {
        state = "backfilling";
      } else if (w->detached() || backlog) {
        state = "catching up";
      }
      // One series per view: 1 while it does not follow its definition (stopped on
      // input it cannot apply faithfully, or its store stopped), so an alert needs no
      // log search. The reason is in /status and the log.
      metrics_
          .gauge("pgderive_view_failed", "1 while the view is failed (see /status for the reason)",
                 {{"store", name}, {"view", view}})
          .Set(state == "failed" ? 1 : 0);
      // And its state, one series per state: 1 for the one it is in.
      for (const char* s : kViewStates) {
        metrics_
            .gauge("pgderive_view_state",
                   "1 for the state the view is in (live, backfilling, catching up, stalled, "
                   "failed), 0 for the others",
                   {{"store", name}, {"view", view}, {"state", s}})
            .Set(state == s ? 1 : 0);
      }
      metrics_
          .gauge("pgderive_view_stalled_seconds",
                 "How long the view's store has been unreachable (0 when it answers)",
                 {{"store", name}, {"view", view}})
          .Set(stalled_seconds);
      nlohmann::json v = {{"name", view}, {"store", name}, {"state", state}};
      if (state == "stalled") {
        v["stalled_since"] = since;
        v["stalled_seconds"] = stalled_seconds;
        v["lag_seconds"] = std::max(0.0, lag_seconds);
        v["lag_bytes"] = lag_bytes;
        v["reason"] = "store " + name + " is unreachable" + (error.empty() ? "" : ": " + error);
      }
      // A fill's progress for dashboards (0 when none runs).
      const bool backfill_running = filled && !filling;
      metrics_
          .gauge("pgderive_backfill_rows", "Rows the view's running backfill has read",
                 {{"store", name}, {"view", view}})
          .Set(backfill_running ? static_cast<double>(filled->rows_done) : 0.0);
      metrics_
          .gauge("pgderive_backfill_estimated_rows",
                 "Rows the view's running backfill expects to read (the table's estimate)",
                 {{"store", name}, {"view", view}})
          .Set(backfill_running ? static_cast<double>(filled->rows_estimated) : 0.0);
      if (filled && !filling) {
        v["backfill_rows"] = filled->rows_done;
        v["backfill_estimated_rows"] = filled->rows_estimated;
        v["progress_percent"] =
            filled->rows_estimated == 0
                ? 0.0
                : std::min(99.9, 100.0 * static_cast<double>(filled->rows_done) /
                                     static_cast<double>(filled->rows_estimated));
      }
      if (refilling && state == "backfilling") v["reason"] = *refilling;
      // The background verifier's findings (verify.continuous).
      if (auto it = verified.find({name, view}); it != verified.end()) {
        const VerifyProgress& found = it->second;
        {
          // Counters that follow the verifier's totals (one caller at a time adds).
          std::lock_guard lock(verify_counters_mutex_);
          auto follow = [&](const char* metric, const char* help, uint64_t total) {
            Counter& counter = metrics_.counter(metric, help, {{"store", name}, {"view", view}});
            const double behind = static_cast<double>(total) - counter.value();
            if (behind > 0) counter.Add(behind);
          };
          follow("pgderive_verify_rows_checked_total",
                 "Source rows the background verifier compared with the view", found.rows_checked);
          follow("pgderive_verify_store_keys_checked_total",
                 "Keys (documents) of the view in the store the background verifier looked up "
                 "in the source, to find entries without a row",
                 found.keys_checked);
          follow("pgderive_verify_chunks_differing_total",
                 "Chunks in which the background verifier found the view differing from its "
                 "source",
                 found.chunks_differing);
          follow("pgderive_verify_entries_differing_total",
                 "Entries the background verifier found differing from the source (missing, "
                 "different or extra)",
                 found.entries_differing);
          follow("pgderive_verify_entries_repaired_total",
                 "Differing entries the background verifier wrote again and found right after",
                 found.entries_repaired);
        }
        const double last_pass =
            found.last_pass
                ? std::chrono::duration<double>(found.last_pass->time_since_epoch()).count()
                : 0.0;
        metrics_
            .gauge("pgderive_verify_last_pass_timestamp_seconds",
                   "Unix time the background verifier last completed a pass over the view (0: "
                   "none yet)",
                   {{"store", name}, {"view", view}})
            .Set(last_pass);
        nlohmann::json verify = {{"rows_checked", found.rows_checked},
                                 {"store_keys_checked", found.keys_checked},
                                 {"passes", found.passes},
                                 {"differences", found.entries_differing},
                                 {"chunks_differing", found.chunks_differing},
                                 {"repaired", found.entries_repaired}};
        verify["last_full_pass"] = found.last_pass
                                       ? nlohmann::json(UtcText(ToPgTimestamp(*found.last_pass)))
                                       : nlohmann::json(nullptr);
        v["verify"] = verify;
      }
      // Its versions (sinks/common/view_versions.h): one series per state, how many.
      std::map<std::string, int> in_state{
          {"building", 0}, {"ready", 0}, {"serving", 0}, {"retained", 0}};
      if (auto it = versions.find(view); it != versions.end()) {
        nlohmann::json list = nlohmann::json::array();
        for (const VersionInfo& info : it->second) {
          ++in_state[info.state];
          nlohmann::json one = {
              {"generation", info.generation}, {"where", info.where}, {"state", info.state}};
          if (info.state == "building" && v.contains("progress_percent")) {
            one["progress_percent"] = v["progress_percent"];
          }
          if (info.state == "retained") one["dropped_at"] = UnixTimeText(info.drop_at);
          list.push_back(one);
        }
        v["versions"] = list;
      }
      for (const auto& [s, count] : in_state) {
        metrics_
            .gauge("pgderive_view_versions",
                   "The view's versions in each state (building, ready, serving, retained)",
                   {{"store", name}, {"view", view}, {"state", s}})
            .Set(count);
      }
      if (failed_views.contains(view)) {
        v["reason"] = failed_views[view];
        reasons.push_back("view " + view + " stopped: " + failed_views[view]);
      }
      // Its first fill: the view's own, or (a postgres view) that of a mirror it reads.
      std::vector<std::pair<std::string, std::string>> first;
      if (first_fills.contains({name, view})) first.emplace_back(name, view);
      for (const std::string& table : tables) {
        if (first_fills.contains({name, TableFillName(table)})) {
          first.emplace_back(name, TableFillName(table));
        }
      }
      if (!first.empty()) {
        if (!filling && !filled && state != "failed" && state != "stalled") {
          // done: ready as far as this view goes
          first_filled.insert(first.begin(), first.end());
        } else if (state != "failed") {
          std::string progress = "waiting to start";
          if (filled) {
            progress = std::to_string(filled->rows_done) + " of ~" +
                       std::to_string(filled->rows_estimated) + " rows";
            if (filled->rows_estimated > 0) {
              char percent[32];
              std::snprintf(percent, sizeof percent, " (%.1f%%)",
                            std::min(99.9, 100.0 * static_cast<double>(filled->rows_done) /
                                               static_cast<double>(filled->rows_estimated)));
              progress += percent;
            }
          } else if (filling) {
            progress = "filled by the snapshot";
          }
          reasons.push_back("view " + view + " (store " + name +
                            ") is in its first fill: " + progress);
        }
      }
      views.push_back(v);
    }
  }
  if (workers.empty()) {
    // Before streaming starts: the initial snapshot (or nothing yet) for every view.
    for (const ViewConfig& view : config_.views) {
      views.push_back({{"name", view.name},
                       {"store", view.store},
                       {"state", snapshotting[view.store] ? "backfilling" : "starting"}});
    }
  }
  nlohmann::json status = {{"pipeline", config_.pipeline},
                           {"stream_connected", connected},
                           {"received_lsn", received.ToString()},
                           {"stores", stores},
                           {"views", views}};
  if (slot_json) status["slot"] = nlohmann::json::parse(*slot_json);
  if (!start_waiting.empty()) status["starting"] = start_waiting;
  if (!spool_json.is_null()) status["spool"] = spool_json;
  if (snapshot.is_null()) {
    metrics_.gauge("pgderive_snapshot_rows", "Rows read by the running snapshot").Set(0);
    metrics_.gauge("pgderive_snapshot_estimated_rows", "Rows the running snapshot expects to read")
        .Set(0);
  } else {
    status["snapshot"] = snapshot;
    for (auto& v : status["views"]) {
      if (v["state"] == "backfilling" && !v.contains("backfill_rows")) {
        v["progress_percent"] = status["snapshot"]["percent"];
      }
    }
  }
  if (slot_lost) reasons.push_back(*slot_lost);
  status["ready"] = reasons.empty();
  std::string text = status.dump();
  std::lock_guard lock(mutex_);
  for (const auto& done : first_filled) first_fills_.erase(done);
  not_ready_ = std::move(reasons);
  status_json_ = std::move(text);
}

}  // namespace pgderive
