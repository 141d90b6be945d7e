#pragma once

// The pipeline `pgderive run` drives (SPEC.md §1), given its configuration and its
// stores (made by the app, the only place that names the concrete stores):
//
//   Start: Prepare      resolve, describe and check the views' tables; connect the
//                       stores; the HTTP endpoint; the monitor; migrate the stores
//          OpenSlot     publication and slot (SlotGuard); each store resumes from its
//                       checkpoint, or is filled: a row store (Redis, OpenSearch) by the
//                       backfill while streaming, from the slot's position (first start:
//                       its consistent point; no snapshot is exported for it); a postgres
//                       store from an exported snapshot (rebuild.h)
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
#include <map>
#include <memory>
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
#include "pipeline/view_states.h"
#include "sinks/common/sink.h"
#include "snapshot/backfill.h"

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

  // Everything up to streaming. nullopt: streaming; else the exit code to end with (0
  // when stopped meanwhile, 1 after a failure, with what this run created removed).
  std::optional<int> Start();
  // Streams until stopped, a reload (host.restart_requested()) or a fatal error, then
  // finishes: 0 after a clean stop or for a reload, 1 for a fatal error.
  int Run();

 private:
  std::optional<int> Prepare();
  std::optional<int> DescribeTables();
  std::optional<int> OpenSlot();
  std::optional<int> Rebuild(const std::vector<Sink*>& sinks);
  // A row store that lost its data while running: its views filled again (the worker's
  // rebuild); returns the checkpoint it goes on from.
  Result<Lsn> Refill(SqlSession& source, Sink& sink);
  // Whether `sink`'s views are filled by the backfill (else from a snapshot).
  static bool FilledByBackfill(SqlRunner& source, Sink& sink);
  std::optional<int> StartStores();
  ViewBackfills ToBackfills();
  void StartWorkers();
  // One turn of the loop; nullopt to go on, else the exit code.
  std::optional<int> Step();
  std::optional<int> Reconnect();
  void ConfirmAndRejoin();
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

  const Config& config_;
  const std::atomic<bool>* stop_;
  Logger& logger_;
  RunHost& host_;
  PipelineLock* lock_;  // the host's (null when none)
  std::set<std::string> redefined_;
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
