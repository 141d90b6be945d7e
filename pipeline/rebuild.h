#pragma once

// Rebuilds: filling stores from an exported snapshot - the stores whose views are
// queries (postgres). A row store (Redis, OpenSearch) is always filled by the watermark
// backfill instead (snapshot/backfill.h), resumable after a crash.
//
//   exported snapshot at LSN S --SnapshotReader--> SnapshotFanout --> each store whose
//   (the slot's at first start,                    (rows of a table    views read the
//    a temporary slot's later)                      to its stores)     table; checkpoint S
//
// Each store first drops its views' data and checkpoint (BeginRebuild), so a crash
// midway leaves no checkpoint and the next start rebuilds again; its checkpoint S is
// written last (EndRebuild). The stream then continues from S: the snapshot holds
// exactly the transactions that commit before S (change_batch.h).

#include <atomic>
#include <string>
#include <vector>

#include "base/log.h"
#include "cdc/lsn.h"
#include "config/config.h"
#include "pipeline/run_monitor.h"
#include "sinks/common/sink.h"

namespace pgderive {

// Fills `sinks` from the exported snapshot `snapshot_name` taken at `lsn`, which
// becomes their checkpoint.
Status SnapshotInto(const Config& config, const std::vector<Sink*>& sinks,
                    const std::string& snapshot_name, Lsn lsn, const std::atomic<bool>* stop,
                    Logger& log, RunMonitor& monitor);

// A rebuild while the pipeline runs: a temporary slot exports a snapshot at the
// current WAL position; the store is filled from it and resumes from that point (the
// returned LSN).
Result<Lsn> RebuildFromTemporarySlot(const Config& config, Sink& sink,
                                     const std::atomic<bool>* stop, Logger& log,
                                     RunMonitor& monitor);

}  // namespace pgderive
