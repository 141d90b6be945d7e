#include "pipeline/pipeline_worker.h"

#include <algorithm>
#include <cstdio>

#include "base/retry.h"
#include "cdc/walsender.h"

namespace pgderive {
namespace {

constexpr size_t kGroupChanges = 20000;
constexpr size_t kGroupBytes = size_t{16} << 20;
constexpr size_t kMaxLatencySamples = size_t{4} << 20;

}  // namespace

Counter& ChangesApplied(Metrics& metrics, const std::string& store, const std::string& view,
                        AppliedSource source) {
  return metrics.counter(
      "pgderive_changes_applied_total",
      "Rows applied to a view, by where they came from: source=stream, changes streamed from "
      "the slot; source=snapshot, rows of a snapshot (the first start, a rebuild); "
      "source=backfill, rows of a backfill",
      {{"store", store},
       {"view", view},
       {"source", source == AppliedSource::kStream     ? "stream"
                  : source == AppliedSource::kSnapshot ? "snapshot"
                                                       : "backfill"}});
}

PipelineWorker::PipelineWorker(Sink& sink, Rebuild rebuild, Log log, size_t max_queue_bytes,
                               Metrics* metrics)
    : sink_(sink),
      rebuild_(std::move(rebuild)),
      log_(std::move(log)),
      max_queue_bytes_(max_queue_bytes) {
  for (const auto& [view, tables] : sink_.view_sources())
    tables_.insert(tables.begin(), tables.end());
  if (metrics == nullptr) return;
  metrics_ = metrics;
  const MetricLabels store{{"store", sink_.name()}};
  batches_ = &metrics->counter("pgderive_batches_total", "Batches applied, per store", store);
  batch_seconds_ = &metrics->histogram("pgderive_batch_duration_seconds",
                                       "Time to apply one batch to the store", store);
  const std::string errors_help = "Errors applying to a store, by kind";
  errors_transient_ = &metrics->counter("pgderive_errors_total", errors_help,
                                        {{"store", sink_.name()}, {"kind", "transient"}});
  errors_permanent_ = &metrics->counter("pgderive_errors_total", errors_help,
                                        {{"store", sink_.name()}, {"kind", "permanent"}});
  for (const auto& [view, tables] : sink_.view_sources()) {
    Counter& applied = ChangesApplied(*metrics, sink_.name(), view, AppliedSource::kStream);
    for (const std::string& table : tables) view_counters_[table].push_back(&applied);
    backfill_counters_[view] =
        &ChangesApplied(*metrics, sink_.name(), view, AppliedSource::kBackfill);
    ChangesApplied(*metrics, sink_.name(), view, AppliedSource::kSnapshot);  // shown from 0
  }
  latency_ = &metrics->histogram(
      "pgderive_commit_to_visible_seconds",
      "From a transaction's commit on the source to its changes applied in the store, per "
      "streamed transaction that changes a table of the store's views, in steady state (once "
      "the store has applied the WAL that existed when the stream started)",
      store);
  catchup_ = &metrics->counter(
      "pgderive_catchup_transactions_total",
      "Streamed transactions committed before the store caught up with the WAL that existed "
      "when the stream started (not in pgderive_commit_to_visible_seconds)",
      store);
  caught_up_gauge_ = &metrics->gauge(
      "pgderive_store_caught_up",
      "1 once the store has applied the WAL that existed when the stream started", store);
}

void PipelineWorker::CountApplied(const BatchGroup& group, Lsn from) {
  // A rebuild on demand of a postgres view: the rows of the view it built.
  for (const auto& [view, rows] : sink_.TakeRebuiltRows()) {
    if (auto it = backfill_counters_.find(view); it != backfill_counters_.end()) {
      it->second->Add(static_cast<double>(rows));
    }
  }
  if (view_counters_.empty()) return;
  const RelationSchema* last = nullptr;
  const std::vector<Counter*>* counters = nullptr;
  for (const auto& batch : group) {
    for (const OwnedChange& change : batch->changes) {
      if (change.commit_lsn < from) continue;           // skipped, as the sink skipped it
      if (change.op == ChangeOp::kViewState) continue;  // not a row
      if (change.op == ChangeOp::kBackfillRow) {
        // A row for the views the backfill fills, in this store only.
        if (change.control == nullptr || change.control->store != sink_.name()) continue;
        for (const std::string& view : change.control->views) {
          if (auto it = backfill_counters_.find(view); it != backfill_counters_.end()) {
            it->second->Add();
          }
        }
        continue;
      }
      for (const auto& relation : change.relations) {
        if (relation.get() != last) {
          last = relation.get();
          auto it = view_counters_.find(relation->QualifiedName());
          counters = it == view_counters_.end() ? nullptr : &it->second;
        }
        if (counters == nullptr) continue;
        for (Counter* c : *counters) c->Add();
      }
    }
  }
}

void PipelineWorker::LogNotices() {
  for (const SinkNotice& notice : sink_.TakeNotices()) {
    const std::string line = "store " + sink_.name() + ": " + notice.text;
    if (notice.level == SinkNotice::Level::kInfo && info_) {
      info_(line);
    } else {
      log_(line);
    }
  }
}

void PipelineWorker::ReportSourceReads() {
  LogNotices();
  for (const SourceRead& read : sink_.TakeSourceReads()) {
    // A read because the change precedes the store's horizon is routine until the
    // stream passes it: counted, not logged one by one.
    if (read.missing) {
      log_("store " + sink_.name() + (read.view.empty() ? "" : ", view " + read.view) + ": table " +
           read.table + ", key " + read.key + " at " + read.lsn.ToString() +
           ": the store lacked the previous value of unchanged (TOAST) column(s) " + read.columns +
           "; " +
           (read.found ? "read the row again from the source"
                       : "the source no longer has the row (a later change removes it)"));
    }
    if (metrics_ == nullptr) continue;
    Counter*& counter = reread_counters_[{read.table, read.missing}];
    if (counter == nullptr) {
      counter = &metrics_->counter(
          "pgderive_rows_reread_total",
          "Rows read again from the source for the value of a column an update left "
          "unchanged (TOAST): reason=missing, the store lacked it; reason=horizon, the "
          "change came before a row read earlier, whose value the store may hold newer",
          {{"store", sink_.name()},
           {"table", read.table},
           {"reason", read.missing ? "missing" : "horizon"}});
    }
    counter->Add();
  }
}

PipelineWorker::~PipelineWorker() { Stop(std::chrono::steady_clock::now()); }

void PipelineWorker::Start(Lsn checkpoint, Lsn caught_up_at) {
  checkpoint_.store(checkpoint.value);
  durable_ = checkpoint;
  started_at_ = std::chrono::system_clock::now();
  caught_up_lsn_ = caught_up_at;
  if (checkpoint >= caught_up_at) {
    caught_up_at_ = started_at_;
    caught_up_.store(true);
    if (caught_up_gauge_ != nullptr) caught_up_gauge_->Set(1);
  }
  thread_.Start([this](std::stop_token stop) { Loop(stop); });
}

bool PipelineWorker::Offer(std::shared_ptr<const ChangeBatch> batch,
                           std::chrono::milliseconds wait) {
  std::unique_lock lock(mutex_);
  if (detached_.load() || failed_.load()) return false;
  // An empty queue takes any batch, however large.
  const auto room = [&] {
    return queued_bytes_ == 0 || queued_bytes_ + batch->bytes <= max_queue_bytes_ ||
           thread_.stop_requested();
  };
  if (!changed_.wait_for(lock, thread_.token(), wait, room)) {
    detached_.store(true);
    log_("store " + sink_.name() + " is falling behind (queue full); it is detached and will " +
         "catch up from the slot");
    return false;
  }
  queued_bytes_ += batch->bytes;
  queue_.push_back(std::move(batch));
  changed_.notify_all();
  return true;
}

int64_t PipelineWorker::oldest_queued_commit_time() {
  std::lock_guard lock(mutex_);
  if (in_flight_commit_time_ != 0) return in_flight_commit_time_;
  for (const auto& batch : queue_) {
    for (const CommitMark& mark : batch->commits) {
      if (mark.commit_time != 0) return mark.commit_time;
    }
  }
  return 0;
}

Lsn PipelineWorker::Durable() {
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  while (!pending_durable_.empty() &&
         now - pending_durable_.front().first >= sink_.durability_delay()) {
    durable_ = pending_durable_.front().second;
    pending_durable_.pop_front();
  }
  return durable_;
}

std::string PipelineWorker::LatencySummary() {
  std::vector<float> samples;
  {
    std::lock_guard lock(mutex_);
    samples = latencies_ms_;
  }
  size_t catchup = 0;
  float catchup_max = 0;
  double caught_up_after = -1;
  {
    std::lock_guard lock(mutex_);
    catchup = catchup_transactions_;
    catchup_max = catchup_max_ms_;
    if (caught_up_.load()) {
      caught_up_after = std::chrono::duration<double>(caught_up_at_ - started_at_).count();
    }
  }
  std::string out = "no transactions";
  if (!samples.empty()) {
    std::sort(samples.begin(), samples.end());
    auto at = [&](double q) {
      return samples[std::min(samples.size() - 1,
                              static_cast<size_t>(q * static_cast<double>(samples.size())))];
    };
    char text[160];
    std::snprintf(text, sizeof text, "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%zu transactions)",
                  at(0.50), at(0.99), samples.back(), samples.size());
    out = text;
  }
  if (catchup > 0 || caught_up_after < 0) {
    char text[200];
    if (caught_up_after < 0) {
      std::snprintf(text, sizeof text,
                    "; still catching up: %zu transactions of the backlog applied, the oldest "
                    "visible after %.1f ms",
                    catchup, catchup_max);
    } else {
      std::snprintf(text, sizeof text,
                    "; catch-up (not counted above): %zu transactions committed before the store "
                    "caught up %.1f s after start, the oldest visible after %.1f ms",
                    catchup, caught_up_after, catchup_max);
    }
    out += text;
  }
  return out;
}

void PipelineWorker::RecordLatency(const BatchGroup& group, Lsn from,
                                   std::chrono::system_clock::time_point now) {
  std::lock_guard lock(mutex_);
  for (const auto& batch : group) {
    size_t begin = 0;
    for (const CommitMark& mark : batch->commits) {
      // The transaction's changes in this batch: [begin, changes_end).
      for (size_t i = begin; i < mark.changes_end && i < batch->changes.size(); ++i) {
        const OwnedChange& change = batch->changes[i];
        if (change.op == ChangeOp::kBackfillRow || change.op == ChangeOp::kViewState) continue;
        if (change.commit_lsn < from) continue;  // skipped: applied before
        for (const auto& relation : change.relations) {
          transaction_changed_ =
              transaction_changed_ || tables_.contains(relation->QualifiedName());
        }
      }
      begin = std::max(begin, mark.changes_end);
      const bool changed = transaction_changed_;
      transaction_changed_ = false;
      if (mark.commit_time == 0) continue;  // an idle mark
      last_commit_time_.store(mark.commit_time);
      if (!changed) continue;  // nothing of this store's (or backfill rows alone)
      const auto committed = FromPgTimestamp(mark.commit_time);
      const double ms = std::chrono::duration<double, std::milli>(now - committed).count();
      if (!caught_up_.load() || committed < caught_up_at_) {
        ++catchup_transactions_;
        catchup_max_ms_ = std::max(catchup_max_ms_, static_cast<float>(ms));
        if (catchup_ != nullptr) catchup_->Add();
        continue;
      }
      if (latency_ != nullptr) latency_->Observe(ms / 1000);
      if (latencies_ms_.size() < kMaxLatencySamples)
        latencies_ms_.push_back(static_cast<float>(ms));
    }
    // The changes after the last mark belong to a transaction that ends in a later batch.
    for (size_t i = begin; i < batch->changes.size(); ++i) {
      const OwnedChange& change = batch->changes[i];
      if (change.op == ChangeOp::kBackfillRow || change.op == ChangeOp::kViewState) continue;
      for (const auto& relation : change.relations) {
        transaction_changed_ = transaction_changed_ || tables_.contains(relation->QualifiedName());
      }
    }
  }
}

void PipelineWorker::Rejoin() {
  wants_rejoin_.store(false);
  detached_.store(false);
}

void PipelineWorker::Stop(std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard lock(mutex_);
    deadline_ = deadline;
  }
  thread_.Stop();
}

void PipelineWorker::Pause(bool paused) {
  {
    std::lock_guard lock(mutex_);
    paused_.store(paused);
  }
  changed_.notify_all();
}

void PipelineWorker::Loop(std::stop_token stop) {
  std::string rebuild_error;       // the last rebuild's error, logged once
  bool failed_by_rebuild = false;  // failed_ set by a rebuild that cannot succeed yet
  while (true) {
    if (paused_.load()) {
      if (stop.stop_requested()) return;  // what is queued was never this run's to write
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, stop, std::chrono::milliseconds(200),
                        [this] { return !paused_.load(); });
      continue;
    }
    std::optional<std::string> rebuild;
    {
      std::lock_guard lock(mutex_);
      if (!stop.stop_requested()) rebuild.swap(rebuild_requested_);
    }
    if (rebuild) {
      log_("store " + sink_.name() + ": " + *rebuild + ": rebuilding its views");
      Status status = RebuildViews();
      if (!status.ok()) {
        // Tried again from the top (a stop gives up: the next start rebuilds, since the
        // source table's OID differs from the one recorded). One that cannot succeed as
        // things are (a table replaced by one without a key) fails the store, loudly,
        // until a later try works: its views must not say `backfilling` for ever.
        const bool permanent = status.error().kind() != ErrorKind::kTransient;
        if (status.error().message() != rebuild_error) {
          rebuild_error = status.error().message();
          log_("store " + sink_.name() + ": rebuild failed: " + rebuild_error +
               (permanent ? " (the store is failed until a rebuild works; tried every 10 s)" : ""));
        }
        if (permanent) {
          failed_.store(true);
          failed_by_rebuild = true;
        }
        std::unique_lock lock(mutex_);
        if (!rebuild_requested_) rebuild_requested_ = *rebuild;
        changed_.wait_for(lock, stop,
                          permanent ? std::chrono::seconds(10) : std::chrono::seconds(1),
                          [] { return false; });
        continue;
      }
      rebuild_error.clear();
      if (failed_by_rebuild) failed_.store(false);
      failed_by_rebuild = false;
    }
    if (std::chrono::steady_clock::now() - last_store_check_ >= kStoreCheckInterval) {
      CheckStore();
    }
    BatchGroup group;
    {
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, stop, std::chrono::milliseconds(200),
                        [&] { return !queue_.empty() || paused_.load(); });
      if (paused_.load()) continue;  // paused meanwhile: see the top of the loop
      if (stop.stop_requested() &&
          (queue_.empty() || std::chrono::steady_clock::now() >= deadline_)) {
        return;
      }
      if (queue_.empty()) {
        // Drained while detached, and the last apply worked: ask for the stream again.
        if (detached_.load() && !failed_.load()) wants_rejoin_.store(true);
        continue;
      }
      // Whatever is queued, up to a limit, goes in one round trip.
      size_t changes = 0, bytes = 0;
      while (!queue_.empty() &&
             (group.empty() || (changes < kGroupChanges && bytes < kGroupBytes))) {
        changes += queue_.front()->changes.size();
        bytes += queue_.front()->bytes;
        queued_bytes_ -= queue_.front()->bytes;
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      in_flight_commit_time_ = 0;
      for (const auto& batch : group) {
        for (const CommitMark& mark : batch->commits) {
          if (in_flight_commit_time_ == 0) in_flight_commit_time_ = mark.commit_time;
        }
      }
      changed_.notify_all();
    }
    Status status = ApplyWithRetry(group);
    {
      std::lock_guard lock(mutex_);
      in_flight_commit_time_ = 0;
    }
    if (!status.ok()) {
      failed_.store(true);
      detached_.store(true);
      log_("store " + sink_.name() + " stopped: " + status.error().message() +
           " (the other stores go on; the slot keeps the WAL from this store's checkpoint)");
      std::lock_guard lock(mutex_);
      queue_.clear();
      queued_bytes_ = 0;
      changed_.notify_all();
      return;
    }
  }
}

Status PipelineWorker::ApplyWithRetry(const BatchGroup& group) {
  Backoff backoff = ReconnectBackoff();
  bool recover = false;
  while (true) {
    Status status = Status::Ok();
    if (recover) {
      status = Recover();
      if (status.ok() && detached_.load()) {
        // The store was rebuilt or had lost recent writes: this batch and the queue are
        // superseded by the stream from the slot, which the worker rejoins.
        return Status::Ok();
      }
    }
    if (status.ok()) {
      recover = false;
      const Lsn from = checkpoint();
      const auto started = std::chrono::steady_clock::now();
      status = sink_.Apply(group, from);
      ReportSourceReads();
      if (status.ok()) {
        SetHealthy(true);
        if (batches_ != nullptr) {
          batches_->Add();
          batch_seconds_->Observe(
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
        }
        CountApplied(group, from);
        for (const auto& [view, reason] : sink_.failed_views()) {
          if (reported_failed_.insert(view).second) {
            log_("view " + view + " stopped: " + reason +
                 " (the store's other views go on; fix the configuration and restart)");
          }
        }
        const auto now = std::chrono::system_clock::now();
        RecordLatency(group, from, now);
        if (auto next = CheckpointOf(group); next && *next > checkpoint()) {
          checkpoint_.store(next->value);
          std::lock_guard lock(mutex_);
          pending_durable_.emplace_back(std::chrono::steady_clock::now(), *next);
        }
        // Caught up: the transactions committed from now on are steady state.
        if (!caught_up_.load() && checkpoint() >= caught_up_lsn_) {
          {
            std::lock_guard lock(mutex_);
            caught_up_at_ = now;
          }
          caught_up_.store(true);
          if (caught_up_gauge_ != nullptr) caught_up_gauge_->Set(1);
        }
        return status;
      }
    }
    SetHealthy(false, status.error().message());
    if (status.error().kind() != ErrorKind::kTransient) {
      if (errors_permanent_ != nullptr) errors_permanent_->Add();
      // A write into a table dropped behind pgderive's back fails: when the store check
      // says so, the store is rebuilt (this batch with the rest of the queue is
      // superseded by the rebuild's snapshot), not stopped.
      if (!sink_.backfills_rows()) {
        auto changes = sink_.CheckStore();
        if (changes.ok() && !changes.value().empty()) {
          log_("store " + sink_.name() + ": " + status.error().message() +
               ": its tables changed behind pgderive's back");
          TakeChanges(std::move(changes).value());
          return Status::Ok();
        }
      }
      return status;
    }
    if (errors_transient_ != nullptr) errors_transient_->Add();
    recover = true;
    const auto wait = backoff.Next();
    log_("store " + sink_.name() + ": " + status.error().message() + "; retrying in " +
         std::to_string(wait.count()) + " ms");
    std::unique_lock lock(mutex_);
    // A stop cuts the wait short once its deadline has passed.
    const auto until = std::chrono::steady_clock::now() + wait;
    changed_.wait_until(lock, thread_.token(), until, [] { return false; });
    if (thread_.stop_requested()) {
      changed_.wait_until(lock, std::min(until, deadline_), [] { return false; });
      if (std::chrono::steady_clock::now() >= deadline_) {
        return Status::Ok();  // the batch stays unapplied; the slot was not confirmed past it
      }
    }
  }
}

void PipelineWorker::SetHealthy(bool healthy, const std::string& error) {
  const int64_t now = ToPgTimestamp(std::chrono::system_clock::now());
  if (healthy) {
    if (!healthy_.exchange(true)) recovered_at_.store(now);
    stalled_since_.store(0);
    return;
  }
  if (healthy_.exchange(false)) stalled_since_.store(now);
  if (stalled_since_.load() == 0) stalled_since_.store(now);
  std::lock_guard lock(mutex_);
  last_error_ = error;
}

std::string PipelineWorker::last_error() {
  std::lock_guard lock(mutex_);
  return last_error_;
}

std::vector<StoreChange> PipelineWorker::TakeStoreChanges() {
  std::lock_guard lock(mutex_);
  return std::exchange(store_changes_, {});
}

void PipelineWorker::CheckStore() {
  last_store_check_ = std::chrono::steady_clock::now();
  if (failed_.load() || thread_.stop_requested()) return;
  Status status = Status::Ok();
  // Unreachable at the last check: reconnect and compare checkpoints first (a store
  // that came back empty is rebuilt, as after a failed apply).
  if (!healthy_.load()) status = Recover();
  auto changes =
      status.ok() ? sink_.CheckStore() : Result<std::vector<StoreChange>>(status.error());
  if (!changes.ok()) {
    const std::string message = changes.error().message();
    if (healthy_.load() || last_error() != message) {
      log_("store " + sink_.name() + " does not answer: " + message +
           " (its views are stalled until it does; checked every " +
           std::to_string(
               std::chrono::duration_cast<std::chrono::seconds>(kStoreCheckInterval).count()) +
           " s)");
    }
    SetHealthy(false, message);
    return;
  }
  if (!healthy_.load()) log_("store " + sink_.name() + " answers again");
  SetHealthy(true);
  LogNotices();
  TakeChanges(std::move(changes).value());
}

void PipelineWorker::TakeChanges(std::vector<StoreChange> changes) {
  std::lock_guard lock(mutex_);
  for (StoreChange& change : changes) {
    // The whole store lost its data, or a store without per-view backfills lost a view's
    // table: rebuilt here, before the next batch. A row view is backfilled on its own
    // (the run monitor asks for it through the stream).
    if ((change.view.empty() || !sink_.backfills_rows()) && !rebuild_requested_) {
      rebuild_requested_ = change.what;  // logged after "store NAME: "
    }
    store_changes_.push_back(std::move(change));
  }
  changed_.notify_all();
}

void PipelineWorker::RequestRebuild(const std::string& why) {
  std::lock_guard lock(mutex_);
  rebuild_requested_ = why;
  changed_.notify_all();
}

void PipelineWorker::Evict(const std::string& reason) {
  detached_.store(true);
  std::lock_guard lock(mutex_);
  evicted_ = reason;
  rebuild_requested_ = reason;
  queue_.clear();
  queued_bytes_ = 0;
  changed_.notify_all();
}

std::string PipelineWorker::evicted() {
  std::lock_guard lock(mutex_);
  return evicted_;
}

Status PipelineWorker::RebuildViews() {
  detached_.store(true);
  {
    std::lock_guard lock(mutex_);
    queue_.clear();
    queued_bytes_ = 0;
    changed_.notify_all();
  }
  auto rebuilt = rebuild_(sink_);
  if (!rebuilt.ok()) return rebuilt.error();
  slot_passed_.store(false);
  checkpoint_.store(rebuilt.value().value);
  std::lock_guard lock(mutex_);
  evicted_.clear();
  rebuilds_.fetch_add(1);
  // A store refilled by the backfill goes on from the slot's confirmed position, below
  // what it had made durable before it lost it: never durable past that again.
  std::erase_if(pending_durable_, [&](const auto& p) { return p.second > rebuilt.value(); });
  durable_ = std::min(durable_, rebuilt.value());
  pending_durable_.emplace_back(std::chrono::steady_clock::now(), rebuilt.value());
  log_("store " + sink_.name() + (sink_.backfills_rows() ? " goes on from " : " rebuilt at ") +
       rebuilt.value().ToString());
  return Status::Ok();
}

Status PipelineWorker::Recover() {
  Status status = sink_.Connect();
  if (!status.ok()) return status;
  auto stored = sink_.ReadCheckpoint();
  if (!stored.ok()) return stored.error();
  const Lsn confirmed{slot_confirmed_.load()};
  auto supersede = [&] {
    detached_.store(true);
    std::lock_guard lock(mutex_);
    queue_.clear();
    queued_bytes_ = 0;
    changed_.notify_all();
  };
  // A store that holds everything this worker applied lost nothing, even when the slot
  // moved past its checkpoint (only a postgres store on the source's own server, while
  // the server stopped).
  // Unless it lost its queue after the slot passed it (MarkSlotPassed).
  const bool lost_queue = slot_passed_.load() && detached_.load();
  if (!stored.value() ||
      (*stored.value() < confirmed && (*stored.value() < checkpoint() || lost_queue))) {
    // The store lost data the slot no longer holds (e.g. Redis restarted empty):
    // serving it stale is not an option; its views are filled again.
    const std::string reason = stored.value() ? "" : sink_.missing_checkpoint_reason();
    const std::string found =
        "store " + sink_.name() + " has " +
        (stored.value() ? "checkpoint " + stored.value()->ToString()
                        : "no checkpoint" + (reason.empty() ? "" : " (" + reason + ")")) +
        ", behind the slot's " + confirmed.ToString();
    if (thread_.stop_requested()) {
      // A stop never starts a rebuild: what is queued is dropped unapplied (the slot was
      // not confirmed past it), and the next start finds the store behind and rebuilds.
      log_(found + ": stopping, so its views are rebuilt at the next start");
      supersede();
      return Status::Ok();
    }
    log_(found + ": rebuilding its views");
    return RebuildViews();
  }
  if (!(*stored.value() < confirmed)) slot_passed_.store(false);  // it holds all the slot passed
  if (*stored.value() < checkpoint()) {
    // Recent writes were lost (still covered by the slot): replay them from the slot.
    log_("store " + sink_.name() + " is back at checkpoint " + stored.value()->ToString() +
         ", behind the " + checkpoint().ToString() + " it had applied: replaying from the slot");
    checkpoint_.store(stored.value()->value);
    supersede();
    std::lock_guard lock(mutex_);
    pending_durable_.clear();
    durable_ = *stored.value();
  }
  return Status::Ok();
}

}  // namespace pgderive
