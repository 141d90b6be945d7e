#pragma once

// What an operator sees of a running pipeline (issue 5): a thread that, once a second,
// turns the pipeline's state into Prometheus gauges, the JSON `pgderive status` reads
// from /status, and the reasons /readyz gives; logs snapshot progress (rows, rate,
// time left); and, on its own connection to the source, keeps the slot safe:
//   - a heartbeat (a transactional pg_logical_emit_message with the "pgderive" prefix,
//     which the pipeline ignores) every source.heartbeat_interval seconds, so that the
//     slot advances when our tables are idle but the server writes WAL elsewhere;
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
#include <string>
#include <thread>
#include <vector>

#include "cdc/log.h"
#include "cdc/lsn.h"
#include "cdc/metrics.h"
#include "cdc/pg_connection.h"
#include "cdc/pipeline_worker.h"
#include "config/config.h"
#include "snapshot/backfill.h"
#include "snapshot/snapshot_reader.h"

namespace pgderive {

class RunMonitor {
 public:
  RunMonitor(const Config& config, Logger& log, Metrics& metrics);
  ~RunMonitor();

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

  // The slot was invalidated: the message to exit with.
  std::optional<std::string> slot_lost();

  // For the HTTP endpoint.
  std::vector<std::string> NotReady();
  std::string StatusJson();

  // The message for an invalidated slot, with the recovery command.
  static std::string SlotLostMessage(const std::string& slot);

 private:
  void Loop();
  void Publish();
  void CheckSlot();
  void Heartbeat();
  // The monitor's own connection to the source (made on first use, again after an error).
  Result<PgConnection*> Source();

  const Config& config_;
  Logger& log_;
  Metrics& metrics_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;

  // Guarded by mutex_.
  const SnapshotProgress* snapshot_ = nullptr;
  std::map<std::string, bool> snapshotting_;  // store -> a snapshot is filling it
  bool initial_snapshot_done_ = false;
  std::chrono::steady_clock::time_point snapshot_started_;
  std::vector<PipelineWorker*> workers_;
  BackfillsProgress backfills_;
  std::string status_json_ = "{}";
  std::vector<std::string> not_ready_{"starting"};
  std::optional<std::string> slot_lost_;
  Lsn current_wal_;  // from the last slot check
  std::optional<std::string> slot_json_;

  std::atomic<bool> stream_connected_{false};
  std::atomic<uint64_t> received_{0};
  bool retained_warned_ = false;
  std::optional<PgConnection> source_;  // the monitor thread's only
};

}  // namespace pgderive
