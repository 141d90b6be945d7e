#pragma once

// The change log: a durable copy of the replication stream between capture and the
// stores, so that the slot can be confirmed as soon as a transaction is durable here and
// each store reads at its own pace from its own checkpoint.
//
//   replication stream --Append(txn)--> ChangeLog --Sync()--> durable position
//                                          |                   (the slot's confirm)
//                                          +--ReadAfter(store checkpoint)--> reader per store
//
// What is logged is the replication stream itself: each pgoutput message as received
// (the XLogData body), in order, so a replay is decoded by the same decoder and gives
// exactly what the live stream gave. Positions are LSNs: a transaction's position is its
// commit's end LSN (what a store records as its checkpoint). Relation and Type messages
// are logged as they arrive; a reader positioned mid-log first gets the Relation/Type
// messages in force there (each segment begins with them), so it decodes without the
// stream before it.
//
// Implementations: the in-memory log (spool/memory_log.h; tests, and the model of the
// semantics), the segment files on local disk (spool/segment_log.h, the default). A
// distributed log (Apache Kafka: one partition, the position as the record key, the
// durable position as the acknowledged offset's position) can implement the same
// interface.
//
// Threads: one writer thread calls Append / Write / Sync / TruncateThrough; any thread calls
// Durable / Stats / ReadAfter; each reader is used by one thread at a time, and readers
// run concurrently with the writer and with each other.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "base/status.h"
#include "cdc/lsn.h"

namespace pgderive {

// One pgoutput message as received: `bytes` is the XLogData body (its first byte is the
// message type, 'B', 'R', 'I', 'C'...), `lsn` is the XLogData dataStart.
struct LogMessage {
  Lsn lsn;
  std::string bytes;
};

struct ChangeLogStats {
  uint64_t bytes = 0;     // on disk (or in memory): segments with their record framing
  uint64_t segments = 0;  // segment files held (0: the log holds nothing yet)
  // The oldest position a reader can start after: ReadAfter(oldest) is the earliest read
  // that succeeds. 0/0 for a log that holds everything since its creation.
  Lsn oldest;
  Lsn durable;  // as Durable()
  // The position the oldest segment ends at (its last transaction's position; for a log
  // of one segment, the durable position): TruncateThrough(oldest_segment_end) frees the
  // oldest segment's `oldest_segment_bytes`. What a caller enforcing a size bound needs
  // to know which store holds the oldest segment.
  Lsn oldest_segment_end;
  uint64_t oldest_segment_bytes = 0;
  // Set when opening an existing log cut its tail back (a torn write, or a damaged last
  // record: either is taken for a torn write): the lowest position the cut part may have
  // held - the first cut transaction's position when its own record verified, else just
  // past `durable`. 0/0: nothing cut. A slot confirmed at or past it may have passed
  // transactions the log no longer holds: the stores that needed them are refilled.
  Lsn cut_from;
};

class ChangeLogReader {
 public:
  virtual ~ChangeLogReader() = default;
  // The next message; nullopt when none is written yet after `wait` (the wait ends as
  // soon as the writer writes more; wait 0 = do not wait). Order: first the
  // Relation/Type messages in force at the read's start, outside any transaction (in
  // their plain, non-streamed form), then every message of each transaction whose
  // position is > the read's `after`, in order. What is returned is written (Write or
  // Sync), not necessarily durable yet: after an OS crash the log may lose a tail a
  // reader returned. That is safe because the slot is confirmed only up to Durable():
  // the stream sends that tail again, and a store that applied it skips it by its
  // checkpoint (a store's checkpoint may be ahead of the log's durable position).
  // Error (kind corrupt): a damaged record (checksum, framing), naming the file and the
  // byte offset; a missing or removed segment. Never skipped: after an error the reader
  // stays failed, and the caller refills.
  virtual Result<std::optional<LogMessage>> Next(std::chrono::milliseconds wait) = 0;
};

class ChangeLog {
 public:
  virtual ~ChangeLog() = default;
  // Appends one whole committed transaction (Begin .. Commit, with any Relation and Type
  // messages the stream sent inside or just before it). Not durable yet. The last
  // message must be the Commit ('C', or 'c' Stream Commit, 'K' Commit Prepared): its
  // end_lsn is the transaction's position, which must be > every position appended
  // before (error kind permanent otherwise - the caller skips what the log holds, by
  // Durable()). A streamed transaction is appended whole, its Stream Start/Stop chunks
  // included, at its Stream Commit.
  virtual Status Append(std::span<const LogMessage> transaction) = 0;
  // Writes everything appended (call it once per batch, not per transaction): readers
  // see it at once; it becomes durable shortly after, without the caller waiting - the
  // log syncs what is written on its own (fsync grouped, on a thread of its own), and
  // Durable() moves as it does. Returns the position written (the last appended
  // transaction's). Error (transient): a write or an earlier background fsync failed;
  // what was not durable may be lost - the caller stops and restarts from Durable().
  virtual Result<Lsn> Write() = 0;
  // Write, then waits until everything appended is durable; returns the position
  // durable now (the last whole transaction's end LSN). Errors as Write's.
  virtual Result<Lsn> Sync() = 0;
  // The last durable transaction's position: never past what was fsynced (the slot's
  // confirmed position is never past it). After opening an existing log, the end of the
  // last whole transaction found (a torn tail is dropped). Callers compare it with the
  // slot's confirmed position: a log behind the slot lost transactions.
  virtual Lsn Durable() const = 0;
  // Reads the transactions whose position is > after. Error (kind permanent): `after` is
  // before the oldest position kept (truncated away or lost) - the caller refills; for a
  // log holding no segment at all, any `after` other than 0/0 (its data is lost).
  virtual Result<std::unique_ptr<ChangeLogReader>> ReadAfter(Lsn after) = 0;
  // Removes whole segments all of whose transactions are at or before `lsn`, never the
  // one being written. On a log holding nothing yet it records that the log begins after
  // `lsn` (oldest = lsn): call it with the stream's start position when a log is new, so
  // that a store behind that position is refused by ReadAfter.
  virtual Status TruncateThrough(Lsn lsn) = 0;
  virtual ChangeLogStats Stats() const = 0;
};

// Options of the disk log (config: `spool: {dir, max_bytes, segment_bytes}`).
struct SpoolOptions {
  std::string dir;                       // created if missing
  uint64_t max_bytes = 10ull << 30;      // enforced by the caller through Stats()
  uint64_t segment_bytes = 64ull << 20;  // a segment rolls over past this size
  // Whose log it is ("pipeline shop, slot pgderive_shop"): written once into the
  // directory (kLogOwnerFile); a directory another owner's log or other files are in is
  // refused (CheckLogOwner). Empty: not checked (tests of the log alone).
  std::string owner;
};

}  // namespace pgderive
