#pragma once

// One store's worker: a thread applying batches from a bounded queue, in order, with
// retries. Its checkpoint is what the store has applied; its durable checkpoint (after
// the store's durability delay) is what the slot may be confirmed to.
//
// Detached: when the queue stays full (the store is slow or down), the dispatcher stops
// feeding it rather than wait, and the others keep flowing. The worker drains its
// queue, and once the store works again it asks to rejoin: the dispatcher restarts the
// stream from the slot's confirmed position (never past this store's checkpoint), and
// the stores that are ahead skip what they have (change_batch.h).

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>

#include "base/metrics.h"
#include "base/stoppable_thread.h"
#include "sinks/common/sink.h"

namespace pgderive {

// What a view's rows came from, the `source` label of pgderive_changes_applied_total:
// changes streamed from the slot, rows of a snapshot (the first start, a rebuild), rows
// of a backfill (a view added or rebuilt while the stream flows).
enum class AppliedSource { kStream, kSnapshot, kBackfill };
// The counter of one view's applied rows from one source (made on first use).
Counter& ChangesApplied(Metrics& metrics, const std::string& store, const std::string& view,
                        AppliedSource source);

// A store's queue holds at most this many bytes of batches (an empty queue takes any).
inline constexpr size_t kQueueBytes = size_t{64} << 20;
// How long the dispatcher waits for room in a store's queue before it detaches the store.
inline constexpr auto kOfferWait = std::chrono::seconds(1);
// How often the worker checks its store between batches and while idle (Sink::CheckStore):
// whether it answers, and whether a view's index or table vanished.
inline constexpr auto kStoreCheckInterval = std::chrono::seconds(2);

class PipelineWorker {
 public:
  // Rebuilds the sink's views from a fresh snapshot and returns its LSN (the new
  // checkpoint). Called on the worker's thread when the store lost data.
  using Rebuild = std::function<Result<Lsn>(Sink&)>;
  using Log = std::function<void(const std::string&)>;

  // `metrics` (may be null) receives batches, batch latency, errors by kind and changes
  // applied per view.
  PipelineWorker(Sink& sink, Rebuild rebuild, Log log, size_t max_queue_bytes,
                 Metrics* metrics = nullptr);
  ~PipelineWorker();
  // Where the store's routine notices go (Sink::TakeNotices at level info); without it,
  // to `log` like the rest.
  void SetInfoLog(Log info) { info_ = std::move(info); }

  // `caught_up_at`: the source's WAL position when the stream started. The changes
  // committed before the store has applied up to there are its catch-up (a backlog the
  // slot kept while pgderive was stopped, or that grew during a snapshot): their
  // commit-to-visible time says how long pgderive was away, not how fast it applies,
  // so they are measured apart from the steady-state latency.
  void Start(Lsn checkpoint, Lsn caught_up_at = Lsn{});
  // Queues a batch unless the worker is detached; waits up to `wait` for room, then
  // detaches. Returns whether the batch was queued.
  bool Offer(std::shared_ptr<const ChangeBatch> batch, std::chrono::milliseconds wait);
  // The slot's confirmed position (a store whose checkpoint falls behind it lost data).
  void SetSlotConfirmed(Lsn lsn) { slot_confirmed_.store(lsn.value); }
  // The slot was confirmed past what this store made durable (a postgres store on the
  // source's own server while the server stops): its queue alone holds those changes.
  // Should it lose the queue (detached while it cannot apply), it is rebuilt, never
  // rejoined at a checkpoint the slot no longer covers.
  void MarkSlotPassed() { slot_passed_.store(true); }
  // The checkpoint the slot may be confirmed to.
  Lsn Durable();
  Lsn checkpoint() const { return Lsn{checkpoint_.load()}; }
  bool detached() const { return detached_.load(); }
  bool failed() const { return failed_.load(); }
  // The last attempt to apply, reconnect or check the store worked.
  bool healthy() const { return healthy_.load(); }
  // While not healthy: since when (system clock, PostgreSQL microseconds), and the error.
  int64_t stalled_since() const { return stalled_since_.load(); }
  std::string last_error();
  // When the store last became healthy again after being unreachable (PostgreSQL
  // microseconds; 0 if never): what it was handed before is a backlog.
  int64_t recovered_at() const { return recovered_at_.load(); }
  // What the store checks found vanished or replaced in the store since the last call
  // (Sink::CheckStore, every kStoreCheckInterval between batches and while idle).
  std::vector<StoreChange> TakeStoreChanges();
  // Commit time (PostgreSQL microseconds) of the last transaction applied; 0 if none.
  int64_t last_commit_time() const { return last_commit_time_.load(); }
  // Commit time of the oldest transaction queued and not yet applied; 0 if none.
  int64_t oldest_queued_commit_time();
  // Fills the store's views again (the backfill), on the worker's thread before its
  // next batch (a source table was replaced: what the store holds of it, mirrors
  // included, is of a table that is gone). `why` is logged.
  void RequestRebuild(const std::string& why);
  // The store can no longer read the change log (the log lost or damaged what it needs,
  // or reached its bound while this store, stalled, held its oldest segment): detached,
  // its views failed with `reason` until the backfill has refilled them, which begins
  // once the store answers.
  void Evict(const std::string& reason);
  // Why the store was evicted; empty when it is not (or its views are refilled).
  std::string evicted();
  // Rebuilds done (a change tells an eviction's rebuild is done).
  uint64_t rebuilds() const { return rebuilds_.load(); }
  // Paused: applies nothing, rebuilds nothing (what is queued waits) until resumed; a
  // stop while paused drops the queue. The pipeline pauses its workers while it does
  // not hold its lock (run_lock.h).
  void Pause(bool paused);
  // Detached, drained and healthy: wants the stream from the slot again.
  bool WantsRejoin() const { return wants_rejoin_.load(); }
  void Rejoin();
  // Applies what is queued until `deadline`, then stops the thread.
  void Stop(std::chrono::steady_clock::time_point deadline);

  Sink& sink() { return sink_; }

  // Source commit to visible in the store, per streamed transaction that changed a
  // table of the store's views, applied since Start: the time Apply returned minus the
  // commit timestamp. Steady state only: "p50 ... p99 ... max ... (n transactions)",
  // then the catch-up apart ("; catch-up: n transactions committed before the store
  // caught up 2.1 s after start, the oldest visible after 21703.9 ms").
  std::string LatencySummary();
  // The store has applied the WAL that existed when the stream started.
  bool caught_up() const { return caught_up_.load(); }

 private:
  void Loop(std::stop_token stop);
  // Every kStoreCheckInterval: reconnects a store that failed (Recover), then
  // Sink::CheckStore; an error makes the store unhealthy (its views stalled).
  void CheckStore();
  void SetHealthy(bool healthy, const std::string& error = "");
  // Keeps what CheckStore found for the monitor, and requests the rebuild it needs.
  void TakeChanges(std::vector<StoreChange> changes);
  std::chrono::steady_clock::time_point last_store_check_{};
  std::vector<StoreChange> store_changes_;  // guarded by mutex_
  std::string last_error_;                  // guarded by mutex_
  std::atomic<int64_t> stalled_since_{0};
  std::atomic<int64_t> recovered_at_{0};
  Status ApplyWithRetry(const BatchGroup& group);
  // After a failure: reconnect and compare the store's checkpoint with ours.
  Status Recover();
  // Drops what is queued (the stream comes again from the slot) and rebuilds.
  Status RebuildViews();
  std::optional<std::string> rebuild_requested_;  // guarded by mutex_
  std::string evicted_;                           // guarded by mutex_
  std::atomic<uint64_t> rebuilds_{0};

  Sink& sink_;
  Rebuild rebuild_;
  Log log_;
  Log info_;  // SetInfoLog
  const size_t max_queue_bytes_;
  std::mutex mutex_;
  std::condition_variable_any changed_;
  std::deque<std::shared_ptr<const ChangeBatch>> queue_;
  size_t queued_bytes_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  // (time applied, checkpoint) not yet past the durability delay.
  std::deque<std::pair<std::chrono::steady_clock::time_point, Lsn>> pending_durable_;
  Lsn durable_;
  std::atomic<uint64_t> checkpoint_{0};
  std::atomic<uint64_t> slot_confirmed_{0};
  std::atomic<bool> slot_passed_{false};
  std::atomic<bool> detached_{false};
  std::atomic<bool> wants_rejoin_{false};
  std::atomic<bool> failed_{false};
  std::atomic<bool> paused_{false};
  std::vector<float> latencies_ms_;  // guarded by mutex_; capped; steady state only
  // Catch-up (see Start): transactions and the longest wait, guarded by mutex_.
  size_t catchup_transactions_ = 0;
  float catchup_max_ms_ = 0;
  Lsn caught_up_lsn_;                                   // worker thread
  std::chrono::system_clock::time_point started_at_;    // worker thread
  std::chrono::system_clock::time_point caught_up_at_;  // guarded by mutex_
  std::atomic<bool> caught_up_{false};
  // A transaction spread over batches: whether a piece had a change of the store's
  // tables (worker thread).
  bool transaction_changed_ = false;
  // The tables the store's views read: a transaction that changes none of them (nor
  // carries anything but backfill rows) has no commit-to-visible time here.
  std::set<std::string> tables_;
  // Records each committed transaction of the group applied at `now` (worker thread).
  void RecordLatency(const BatchGroup& group, Lsn from, std::chrono::system_clock::time_point now);
  Histogram* latency_ = nullptr;
  Counter* catchup_ = nullptr;
  Gauge* caught_up_gauge_ = nullptr;
  std::atomic<bool> healthy_{true};
  int64_t in_flight_commit_time_ = 0;      // guarded by mutex_: the group being applied
  std::set<std::string> reported_failed_;  // views whose stop was logged (worker thread)
  std::atomic<int64_t> last_commit_time_{0};
  void CountApplied(const BatchGroup& group, Lsn from);
  // Logs and counts the rows the store read again from the source (Sink::TakeSourceReads).
  void ReportSourceReads();
  void LogNotices();  // the sink's notices, each at its level
  Metrics* metrics_ = nullptr;
  std::map<std::pair<std::string, bool>, Counter*> reread_counters_;  // by (table, missing)
  Counter* batches_ = nullptr;
  Histogram* batch_seconds_ = nullptr;
  Counter* errors_transient_ = nullptr;
  Counter* errors_permanent_ = nullptr;
  // Source table -> the streamed-changes counters of the views that read it.
  std::map<std::string, std::vector<Counter*>> view_counters_;
  std::map<std::string, Counter*> backfill_counters_;  // by view
  StoppableThread thread_;
};

}  // namespace pgderive
