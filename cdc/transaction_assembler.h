#pragma once

// Decoded pgoutput messages -> committed transactions in commit order (change_stream.h).
//
// Regular transactions (Begin ... Commit) pass straight through: nothing is buffered.
// Streamed transactions (protocol v2: Stream Start/Stop chunks, then Stream Commit or
// Stream Abort) and prepared ones (v3: Begin Prepare ... Prepare, then Commit Prepared
// or Rollback Prepared) are kept as raw message bytes per xid, in memory up to
// `memory_limit` bytes in all and in a spill file per transaction beyond it, and
// replayed only when they commit - so a 1,000,000-row transaction goes through in
// bounded memory. A subtransaction abort inside a stream marks its subxid; its changes
// are skipped at replay. An abort or rollback deletes the buffer.
//
// Resume: after a reconnect the server resends every transaction that committed after
// the slot's confirmed position. Those at or below the last commit delivered are
// recognised by their commit LSN and skipped, so nothing is delivered twice.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "cdc/change_stream.h"

namespace pgderive {

struct AssemblerOptions {
  std::string spill_dir;  // where spill files go; created if missing
  size_t memory_limit = size_t{64} << 20;
  // The key columns of a REPLICA IDENTITY FULL table (RowKeyColumns: its primary key):
  // its Relation message marks every column as identity, so without this a row's key
  // would be the whole row. Unset: the message's flags stand.
  std::function<Result<std::vector<std::string>>(RelationId)> full_identity_key = nullptr;
};

struct AssemblerStats {
  size_t buffered_bytes = 0;  // in memory now, across open streamed/prepared transactions
  size_t spilled_bytes = 0;   // written to spill files so far
  size_t open_transactions = 0;
};

class TransactionAssembler {
 public:
  TransactionAssembler(AssemblerOptions options, ChangeConsumer& consumer);
  ~TransactionAssembler();
  TransactionAssembler(const TransactionAssembler&) = delete;
  TransactionAssembler& operator=(const TransactionAssembler&) = delete;

  // One pgoutput message (the payload of an XLogData).
  Status Process(std::span<const uint8_t> message);

  // Transactions that commit at or below `lsn` were delivered before: skip them.
  void SetLastCommitted(Lsn lsn) { last_committed_ = lsn; }
  Lsn last_committed() const { return last_committed_; }
  // Forget everything half-received (on reconnect, the server sends it again).
  void ResetPartial();

  AssemblerStats stats() const;
  // No transaction is open: not inside Begin..Commit or a stream chunk, and no streamed
  // or prepared transaction is buffered. Every transaction that committed before the
  // stream's received position has then been delivered.
  bool idle() const { return !in_transaction_ && !in_stream_ && buffers_.empty(); }

 private:
  struct Buffer;

  Status HandleInTransaction(const PgOutputMessage& message);
  Status ApplyRelation(const RelationMessage& relation);
  Status Append(uint32_t top_xid, uint32_t subxid, std::span<const uint8_t> bytes,
                bool records_have_xid);
  Status Replay(uint32_t xid, const TransactionInfo& info);
  Status MaybeSpill(Buffer& buffer);
  void Drop(uint32_t xid);
  Error Unexpected(std::string_view what) const;

  AssemblerOptions options_;
  ChangeConsumer& consumer_;
  std::unordered_map<uint32_t, std::shared_ptr<const RelationSchema>> relations_;
  std::map<uint32_t, std::unique_ptr<Buffer>> buffers_;           // by top-level xid
  std::vector<std::shared_ptr<const RelationSchema>> truncated_;  // backs a truncate's span
  size_t memory_ = 0;
  size_t spilled_ = 0;

  // Regular transaction in progress.
  bool in_transaction_ = false;
  bool skipping_ = false;
  TransactionInfo current_;
  uint32_t next_index_ = 0;
  // Streaming and two-phase state.
  bool in_stream_ = false;
  uint32_t stream_xid_ = 0;
  std::optional<uint32_t> preparing_xid_;
  Lsn last_committed_;
};

}  // namespace pgderive
