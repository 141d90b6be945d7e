#pragma once

// The pipeline `pgderive run` drives (SPEC.md §1), given its configuration and its
// stores (made by the app, the only place that names the concrete stores):
//
//   Start: Prepare      resolve, describe and check the views' tables; connect the
//                       stores; the HTTP endpoint; the monitor; migrate the stores
//          OpenSlot     publication and slot (SlotGuard); each store resumes from its
//                       checkpoint, or is filled by the backfill while streaming, from the
//                       slot's position (first start: its consistent point; the slot
//                       exports no snapshot): a row store's (Redis, OpenSearch) views, a
//                       postgres store's mirrors (its views are built from them)
//          StartStores  start-up view states (view_states.h: a filled store's views
//                       recorded backfilling from the start), one PipelineWorker per
//                       store, the Dispatcher, the replication stream, the backfills
//   Run:   the stream loop
//            slot --ReplicationStream--> TransactionAssembler --> Dispatcher --> workers
//            every 100 ms: SlowestDurable(workers) --> the slot's confirmed position;
//            a store that caught up after a detach rejoins: restart from the slot;
//            a row store that lost its data meanwhile is filled again (Refill) while
//            the others stream
//          Finish       drain the queues (up to a grace period), confirm what is durable
//
// The stream is restarted from the slot on a transient error and for a rejoining store;
// every store skips what it has by its own checkpoint. Should the start fail before it
// streams, it removes what it created; once streaming, a failure keeps everything.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/backoff.h"
#include "base/http_server.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/retry.h"
#include "cdc/pg_connection.h"
#include "cdc/publication.h"
#include "cdc/replication_stream.h"
#include "cdc/sql_session.h"
#include "cdc/transaction_assembler.h"
#include "cdc/type_catalog.h"
#include "config/config.h"
#include "pipeline/dispatcher.h"
#include "pipeline/pipeline_worker.h"
#include "pipeline/run_host.h"
#include "pipeline/run_lock.h"
#include "pipeline/run_monitor.h"
#include "pipeline/slot_confirmation.h"
#include "pipeline/slot_guard.h"
#include "pipeline/spool_capture.h"
#include "pipeline/view_states.h"
#include "sinks/common/sink.h"
#include "snapshot/backfill.h"
#include "spool/change_log.h"

namespace pgderive {

class Pipeline {
 public:
  // `stop` (may be null) is set by SIGTERM/SIGINT; `logger` outlives the pipeline.
  // `host` (run_host.h) outlives it too: the pipeline's lock (run_lock.h), taken before
  // anything else, held by the host across reloads, re-taken should the source restart;
  // the HTTP endpoint; a reload's request to finish (Run then returns 0).
  Pipeline(const Config& config, std::vector<std::unique_ptr<Sink>> sinks,
           const std::atomic<bool>* stop, Logger& logger, RunHost& host);
  ~Pipeline();

  // Views whose definition changed since the stores were filled (a reload): rebuilt from
  // the start, as a new view is. Before Start.
  void RebuildViews(std::set<std::string> views) { redefined_ = std::move(views); }

  // What `run`'s start-up checks (validate --connect's) find in one store once it answers.
  struct StoreCheck {
    bool answers = true;   // false: it still does not answer (connection refused, 5xx)
    std::string problems;  // what is wrong with it, one "FILE:LINE:COLUMN: key: message" per line
  };
  // Stores that did not answer the start-up checks of a pipeline that already streams
  // (its slot exists). Start waits for each one (retrying as every reconnect does,
  // /readyz naming it: every view waits, the slot keeps the WAL), then runs `check` on
  // it: a problem fails the start as the checks would have. Before Start.
  void WaitForStores(std::set<std::string> stores,
                     std::function<StoreCheck(const std::string&)> check) {
    waited_stores_ = std::move(stores);
    store_check_ = std::move(check);
  }

  // Everything up to streaming. nullopt: streaming; else the exit code to end with (0
  // when stopped meanwhile, 1 after a failure, with what this run created removed).
  std::optional<int> Start();
  // Streams until stopped, a reload (host.restart_requested()) or a fatal error, then
  // finishes: 0 after a clean stop or for a reload, 1 for a fatal error.
  int Run();

 private:
  std::optional<int> Prepare();
  // Connects the store, waiting while it does not answer (WaitForStores' stores are
  // checked once they answer); nullopt: connected, else the exit code.
  std::optional<int> ConnectStore(Sink& sink);
  std::optional<int> DescribeTables();
  std::optional<int> OpenSlot();
  // A store that lost its data while running: its views (a postgres store's mirrors)
  // filled again (the worker's rebuild); returns the checkpoint it goes on from.
  Result<Lsn> Refill(SqlSession& source, Sink& sink);
  // A worker's rebuild (on its thread): the store refilled (Refill); returns the
  // checkpoint the store goes on from.
  Result<Lsn> RebuildStore(Sink& sink);
  std::optional<int> StartStores();
  ViewBackfills ToBackfills();
  void StartWorkers();
  // One turn of the loop; nullopt to go on, else the exit code.
  std::optional<int> Step();
  std::optional<int> Reconnect();
  void ConfirmAndRejoin();
  // With the change log (spool on), the loop is two stages on this thread:
  //   capture   stream --SpoolCapture--> the log, Sync per burst; the slot confirmed at
  //             the log's durable position (everything received while nothing is open)
  //   delivery  the log --reader from the lowest store checkpoint--> TransactionAssembler
  //             --> Dispatcher --> workers, as the stream fed them without the log
  // A rejoining store restarts the reader (not the stream) from its checkpoint; the log
  // is truncated behind every store's durable checkpoint and kept under max_bytes by
  // evicting the store furthest behind (its views refilled once it answers).
  std::optional<Lsn> OpenChangeLog(bool first_start);
  // pgderive_spool_evictions_total{store}: the stores the change log's bound detached.
  Counter& EvictionsCounter(const std::string& store);
  std::optional<int> SpoolStep();
  std::optional<int> Capture(std::chrono::milliseconds wait);
  std::optional<int> Deliver();
  void RestartDelivery(const std::string& why);
  // Detaches a store that needs what the log no longer holds (lost or damaged); its views
  // are failed until the refill (the worker's rebuild) is done. Once per eviction.
  void EvictForRefill(PipelineWorker& worker, const std::string& why);
  uint64_t RebuildsOf(Sink& sink);
  void MaintainLog();
  // The store's checkpoint is one the log can be read after.
  bool InLog(Lsn checkpoint);
  bool Evicted(PipelineWorker& worker);
  // Every kLockCheckInterval (`now`: at once): the lock is still held (re-taken after a
  // source restart); nullopt to go on, else the exit code (another process took the
  // pipeline over). While the lock is not held the stream is down and the workers are
  // paused: nothing is written or confirmed.
  std::optional<int> KeepLock(bool now);
  void HoldWrites(bool hold);
  void Restart(const std::string& why);
  void Finish(int exit_code);

  bool stopped() const { return stop_ != nullptr && stop_->load(); }
  bool reloading() const { return host_.restart_requested(); }
  void Log(const std::string& message);
  void Warn(const std::string& message);
  int Fail(const std::string& message);
  int Undo(int code);
  // POST /promote, /rollback (`pgderive promote`, `pgderive rollback`): the view's store
  // switches its version; the status code and JSON answer.
  std::pair<int, std::string> SwitchVersion(const std::string& action, const std::string& body);

  const Config& config_;
  const std::atomic<bool>* stop_;
  Logger& logger_;
  RunHost& host_;
  PipelineLock* lock_;  // the host's (null when none)
  std::set<std::string> redefined_;
  std::set<std::string> waited_stores_;
  std::function<StoreCheck(const std::string&)> store_check_;
  // Destroyed in the reverse order: the HTTP endpoint before what it reads, the stream
  // and the dispatcher before the workers, the backfills before the workers (it reads
  // their checkpoints); the monitor is stopped first of all (~Pipeline).
  Metrics metrics_;
  RunMonitor monitor_;
  std::vector<std::unique_ptr<Sink>> sinks_;
  std::optional<SqlSession> sql_;
  std::vector<std::string> tables_;
  std::map<std::string, std::shared_ptr<const RelationSchema>> shapes_;  // table -> shape now
  int http_port_ = 0;
  std::optional<SlotGuard> guard_;
  std::optional<PgConnection> replication_;  // closed before the slot is dropped
  std::map<Sink*, Lsn> checkpoints_;
  // The row stores whose views are filled from the start, with why (view_states.h).
  std::map<std::string, StoreFill> fill_;
  Lsn confirmed_;
  std::vector<std::unique_ptr<PipelineWorker>> workers_;
  std::unique_ptr<Backfills> backfills_;
  SourceServerStores on_source_;
  std::optional<TypeLearner> learner_;
  std::optional<PartitionRoots> roots_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::string spill_dir_;
  std::unique_ptr<TransactionAssembler> assembler_;
  StreamOptions stream_options_;
  std::optional<ReplicationStream> stream_;
  // The change log (spool on; null when off) and its two stages' state.
  std::unique_ptr<ChangeLog> log_;
  std::optional<SpoolCapture> capture_;
  std::atomic<uint64_t> log_durable_{0};  // read by the workers' refills
  Lsn slot_position_;                     // what the capture lets the slot confirm
  Lsn idle_received_, idle_durable_;      // nothing open at received_, the log at durable_
  std::unique_ptr<ChangeLogReader> reader_;
  bool reader_caught_up_ = false;
  Lsn delivered_end_;  // the end of the last transaction the reader delivered
  // Workers evicted by the log's bound, with their rebuild count then (a higher count:
  // refilled, back in).
  std::map<PipelineWorker*, uint64_t> evicted_;
  std::map<std::string, std::string> evicted_reason_;  // store -> why (the refill's reason)
  std::mutex evicted_mutex_;  // evicted_reason_, refill_pins_ (worker threads); truncation
  // store -> (the position its refill goes on from, its rebuild count before): the log is
  // not truncated past it until the rebuild is done and the store is back in.
  std::map<std::string, std::pair<Lsn, uint64_t>> refill_pins_;
  std::chrono::steady_clock::time_point last_maintain_;
  // The log reached its bound while a healthy store holds its oldest segment: the capture
  // reads nothing more (the slot holds the WAL, as with the log off) until it is freed.
  bool capture_paused_ = false;
  // spool.when_full detach: since when each healthy store has held the oldest segment at
  // the bound (it is detached after kSlowStoreGrace, the capture paused meanwhile).
  std::map<const PipelineWorker*, std::chrono::steady_clock::time_point> slow_since_;
  std::chrono::steady_clock::time_point last_paused_status_;
  std::chrono::steady_clock::time_point next_reconnect_;  // spool on: the stream's next try
  // The loop's.
  Backoff backoff_ = ReconnectBackoff();
  std::chrono::steady_clock::time_point last_confirm_;
  std::chrono::steady_clock::time_point last_idle_mark_;
  std::chrono::steady_clock::time_point last_lock_check_;
  bool lock_lost_logged_ = false;
  bool lock_held_ = true;
  Lsn last_sent_flush_;
};

}  // namespace pgderive
