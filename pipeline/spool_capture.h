#pragma once

// Capture into the change log (spool/change_log.h): the replication stream's pgoutput
// messages, as received, grouped into whole committed transactions and appended.
//
//   slot --ReplicationStream--> SpoolCapture::Add --Append(txn)--> ChangeLog --Write-->
//        <----------- ConfirmFlushed(durable position) ---- (fsynced by the log) -/
//
// The stream runs with streaming of in-progress transactions off (the server sends each
// transaction whole at its commit), so a transaction is Begin .. Commit, with the
// Relation/Type messages the server sends inside it. A transaction the log holds already
// (after a reconnect the server resends from the slot's confirmed position, which may be
// behind the log) is recognised by its commit LSN and not appended again.
// Non-transactional logical messages are not logged (pgderive emits only transactional
// ones).

#include <cstdint>
#include <span>
#include <vector>

#include "cdc/lsn.h"
#include "spool/change_log.h"

namespace pgderive {

class SpoolCapture {
 public:
  explicit SpoolCapture(ChangeLog& log) : log_(log), appended_(log.Durable()) {}

  // One XLogData body at `lsn` (its dataStart).
  Status Add(Lsn lsn, std::span<const uint8_t> data);
  // Inside a transaction (Begin received, Commit not yet).
  bool open() const { return in_transaction_; }
  // Something appended since the last Sync.
  bool unsynced() const { return unsynced_; }
  // ChangeLog::Write when something was appended since the last Write: readers see it,
  // the log makes it durable on its own. The log's durable position (it may be behind
  // appended()).
  Result<Lsn> Write();
  // ChangeLog::Sync when something was appended; the log's durable position.
  Result<Lsn> Sync();
  // The stream restarts from the slot: a transaction half received comes again.
  void Reset();
  // The position of the last transaction appended (durable or not).
  Lsn appended() const { return appended_; }
  uint64_t appended_bytes() const { return appended_bytes_; }

 private:
  ChangeLog& log_;
  std::vector<LogMessage> transaction_;
  bool in_transaction_ = false;
  bool skipping_ = false;
  bool unsynced_ = false;
  bool unwritten_ = false;
  Lsn appended_;
  uint64_t appended_bytes_ = 0;
};

}  // namespace pgderive
