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
#include <thread>

#include "base/metrics.h"
#include "sinks/common/sink.h"

namespace pgderive {

// A store's queue holds at most this many bytes of batches (an empty queue takes any).
inline constexpr size_t kQueueBytes = size_t{64} << 20;
// How long the dispatcher waits for room in a store's queue before it detaches the store.
inline constexpr auto kOfferWait = std::chrono::seconds(1);

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

  void Start(Lsn checkpoint);
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
  // The last attempt to apply (or reconnect) worked.
  bool healthy() const { return healthy_.load(); }
  // Commit time (PostgreSQL microseconds) of the last transaction applied; 0 if none.
  int64_t last_commit_time() const { return last_commit_time_.load(); }
  // Commit time of the oldest transaction queued and not yet applied; 0 if none.
  int64_t oldest_queued_commit_time();
  // Rebuilds the store's views from a new snapshot, on the worker's thread before its
  // next batch (a source table was replaced: what the store holds of it, mirrors
  // included, is of a table that is gone). `why` is logged.
  void RequestRebuild(const std::string& why);
  // Detached, drained and healthy: wants the stream from the slot again.
  bool WantsRejoin() const { return wants_rejoin_.load(); }
  void Rejoin();
  // Applies what is queued until `deadline`, then stops the thread.
  void Stop(std::chrono::steady_clock::time_point deadline);

  Sink& sink() { return sink_; }

  // Source commit to visible in the store, per transaction applied since Start: the
  // time Apply returned minus the commit timestamp. "p50 ... p99 ... max ... (n)".
  std::string LatencySummary();

 private:
  void Loop();
  Status ApplyWithRetry(const BatchGroup& group);
  // After a failure: reconnect and compare the store's checkpoint with ours.
  Status Recover();
  // Drops what is queued (the stream comes again from the slot) and rebuilds.
  Status RebuildViews();
  std::optional<std::string> rebuild_requested_;  // guarded by mutex_

  Sink& sink_;
  Rebuild rebuild_;
  Log log_;
  const size_t max_queue_bytes_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::shared_ptr<const ChangeBatch>> queue_;
  size_t queued_bytes_ = 0;
  bool stopping_ = false;
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
  std::vector<float> latencies_ms_;  // guarded by mutex_; capped
  std::atomic<bool> healthy_{true};
  int64_t in_flight_commit_time_ = 0;      // guarded by mutex_: the group being applied
  std::set<std::string> reported_failed_;  // views whose stop was logged (worker thread)
  std::atomic<int64_t> last_commit_time_{0};
  void CountApplied(const BatchGroup& group, Lsn from);
  // Logs and counts the rows the store read again from the source (Sink::TakeSourceReads).
  void ReportSourceReads();
  Metrics* metrics_ = nullptr;
  std::map<std::pair<std::string, bool>, Counter*> reread_counters_;  // by (table, missing)
  Counter* batches_ = nullptr;
  Histogram* batch_seconds_ = nullptr;
  Counter* errors_transient_ = nullptr;
  Counter* errors_permanent_ = nullptr;
  // Source table -> the applied-changes counters of the views that read it.
  std::map<std::string, std::vector<Counter*>> view_counters_;
  std::thread thread_;
};

}  // namespace pgderive
