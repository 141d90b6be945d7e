#pragma once

// What an operator sees of a running pipeline (issue 5): a thread that, once a second,
// turns the pipeline's state into Prometheus gauges, the JSON `pgderive status` reads
// from /status, and the reasons /readyz gives; logs snapshot progress (rows, rate,
// time left); and, on its own connection to the source, keeps the slot safe:
//   - a heartbeat (a transactional pg_logical_emit_message with the "pgderive" prefix,
//     which the pipeline ignores) every source.heartbeat_interval seconds, so that the
//     slot advances when our tables are idle but the server writes WAL elsewhere;
//   - every 2 s the source tables the views read, against what they were when the
//     pipeline started (see WatchSourceTables);
//   - what the store workers' own 2 s checks found vanished in the stores (an index
//     deleted, a target table dropped, a flushed Redis): see CheckStoreChanges;
//   - every 10 s the slot's retained WAL (warned about past source.max_retained_wal)
//     and wal_status: "lost" means the slot was invalidated, which the pipeline turns
//     into a clear error and exit, never into a silent rebuild of everything.
// The pipeline's thread writes state through the setters; the monitor reads atomics.

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/metrics.h"
#include "base/stoppable_thread.h"
#include "cdc/lsn.h"
#include "cdc/publication.h"
#include "cdc/sql_session.h"
#include "config/config.h"
#include "pipeline/pipeline_worker.h"
#include "snapshot/backfill.h"
#include "snapshot/snapshot_reader.h"
#include "spool/change_log.h"

namespace pgderive {

class RunMonitor {
 public:
  RunMonitor(const Config& config, Logger& log, Metrics& metrics);
  ~RunMonitor();
  // The pipeline's registry (the snapshot counts the rows it applies there).
  Metrics& metrics() { return metrics_; }

  void Start();
  void Stop();

  // A snapshot is filling these stores (nullptr progress: it ended).
  void SnapshotStarted(const SnapshotProgress* progress, const std::vector<std::string>& stores);
  void SnapshotEnded(const std::vector<std::string>& stores);
  // The stores' workers, once streaming starts (they outlive the monitor's use).
  void SetWorkers(std::vector<PipelineWorker*> workers);
  void SetStream(bool connected, Lsn received);
  // Views being backfilled while streaming, with their progress.
  using BackfillsProgress =
      std::function<std::map<std::pair<std::string, std::string>, BackfillProgress>()>;
  void SetBackfills(BackfillsProgress progress);
  // What the background verifier found, per (store, view): /status's "verify" of a view
  // and the pgderive_verify_* metrics.
  using VerifiedProgress =
      std::function<std::map<std::pair<std::string, std::string>, VerifyProgress>()>;
  void SetVerified(VerifiedProgress verified);
  // The change log's figures (spool on): /status's "spool", the pgderive_spool_* metrics
  // and each store's position in the log.
  using SpoolStats = std::function<ChangeLogStats()>;
  void SetSpool(SpoolStats stats, uint64_t max_bytes);
  // The capture paused because the log reached spool.max_bytes while the store holding
  // its oldest segment is healthy and catching up (`why`; empty: capturing). /status's
  // spool.capture_paused and the pgderive_spool_capture_paused gauge.
  void SetCapturePaused(const std::string& why);
  // The start waits for a store that does not answer (`why`, naming it; empty: no
  // longer): /readyz gives the reason and /status says it in "starting".
  void SetStartWaiting(const std::string& why);
  // The first fill of `view` began or resumed (ViewState::first_fill): /readyz answers
  // 503, naming it with its progress, until its backfill is done. A later rebuild of the
  // view, which keeps serving what it held, leaves readiness alone.
  void FirstFill(const std::string& store, const std::string& view);

  // The source tables the views read, with their OIDs when the pipeline started. No
  // change in the stream says that a table was dropped (or renamed away) and created
  // again, removed from the publication, or that partitions holding rows were attached,
  // detached or dropped: the monitor looks. A table gone fails the views that read it
  // (state, reason, metric, /readyz, log) at once; a table there again (or changed) is put
  // back into the publication and its views refilled: a row view emptied and backfilled
  // from a request in the stream (as `pgderive backfill`), a postgres store rebuilt. Until
  // their store has passed that point, the views say `backfilling` with the reason.
  // `tables`: each table's OID and partitions when the pipeline started.
  void WatchSourceTables(const std::map<std::string, TableIdentity>& tables);
  // Whether `view` of `store`, which reads `table`, may be compared with the table now
  // (the background verifier asks, snapshot/verify.cc): `now`, the table as just read,
  // is the table as the watch last accepted it (nothing found replaced, unpublished,
  // attached, detached or rewritten that the watch has not acted on yet), and no refill
  // the watch asked for is still ahead of the store.
  bool Settled(const std::string& store, const std::string& view, const std::string& table,
               const TableIdentity& now);

  // The slot was invalidated: the message to exit with.
  std::optional<std::string> slot_lost();

  // For the HTTP endpoint.
  std::vector<std::string> NotReady();
  std::string StatusJson();

  // The message for an invalidated slot, with the recovery command.
  static std::string SlotLostMessage(const std::string& slot);

 private:
  // pgderive_source_table_changes_total{table} += 1.
  void CountTableChange(const std::string& table);
  void Loop(std::stop_token stop);
  void Publish();
  void CheckSlot();
  void Heartbeat();
  void CheckSourceTables();
  // What the store workers found vanished or replaced in their stores (an index, a
  // target table, a flushed database): the views leave `live` at once and are refilled
  // as for a replaced source table (a row view backfilled, a postgres store rebuilt).
  void CheckStoreChanges();
  // Asks the stream for a backfill of `view` (a pg_logical_emit_message the pipeline
  // reads in order, as `pgderive backfill` does).
  Status RequestBackfill(SqlSession& sql, const std::string& view);
  // The source's current WAL insert position, as text ("" if it cannot be read).
  static std::string WalPosition(SqlSession& sql);
  // The monitor's own connection to the source (made on first use, again after an error).
  Result<SqlSession*> Source();

  const Config& config_;
  Logger& log_;
  Metrics& metrics_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  StoppableThread thread_;

  // Guarded by mutex_.
  const SnapshotProgress* snapshot_ = nullptr;
  std::map<std::string, bool> snapshotting_;  // store -> a snapshot is filling it
  bool initial_snapshot_done_ = false;
  std::chrono::steady_clock::time_point snapshot_started_;
  std::vector<PipelineWorker*> workers_;
  BackfillsProgress backfills_;
  VerifiedProgress verified_;
  std::mutex verify_counters_mutex_;  // the counters follow the verifier's totals
  SpoolStats spool_;
  uint64_t spool_max_bytes_ = 0;
  std::string capture_paused_;
  std::string start_waiting_;
  std::string status_json_ = "{}";
  std::vector<std::string> not_ready_{"starting"};
  std::optional<std::string> slot_lost_;
  Lsn current_wal_;  // from the last slot check
  std::optional<std::string> slot_json_;

  // The monitor thread's: each watched table as last seen.
  struct Watched {
    uint32_t oid = 0;
    std::optional<std::string> partitions;  // unset until first read
    bool gone = false;                      // reported missing
    std::string refused;                    // the last error putting it back, logged once
    std::optional<std::string> storage;     // TableIdentity::storage, unset until first read
  };
  std::map<std::string, Watched> watched_;
  // Guarded by mutex_: views marked by the watch, (store, view) -> mark.
  struct ViewMark {
    bool failed = false;  // else backfilling until the store's checkpoint passes `until`
    std::string reason;
    Lsn until;
  };
  std::map<std::pair<std::string, std::string>, ViewMark> marks_;
  // Guarded by mutex_: each watched table as the watch last accepted it (its views
  // refilled when it had changed); a table gone or not put back is absent.
  std::map<std::string, TableIdentity> settled_;
  // Guarded by mutex_: views in their first fill, (store, view).
  std::set<std::pair<std::string, std::string>> first_fills_;
  // The monitor thread's: store changes whose refill is not asked for yet (the source
  // did not answer), by worker.
  std::vector<std::pair<PipelineWorker*, StoreChange>> store_changes_;

  std::atomic<bool> stream_connected_{false};
  std::atomic<uint64_t> received_{0};
  bool retained_warned_ = false;
  std::optional<SqlSession> source_;  // the monitor thread's only
};

}  // namespace pgderive
