#pragma once

// START_REPLICATION of a logical slot with pgoutput over a replication connection, and
// the feedback that keeps it healthy (PostgreSQL 15 docs §55.4 and §55.5 for the
// pgoutput options).
//
// Positions are kept apart as pg_recvlogical.c keeps them:
//   received - the highest WAL position the server has sent us (data or keepalive);
//   flushed  - what every consumer has acknowledged as durable (ConfirmFlushed()).
// Status updates report write = received and flush = apply = flushed. The server
// releases WAL and advances the slot's confirmed_flush_lsn only up to `flushed`, so a
// crash anywhere before a consumer's acknowledgement replays from there.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "cdc/pg_connection.h"
#include "cdc/walsender.h"

namespace pgderive {

struct StreamOptions {
  std::string slot;
  std::string publication;
  Lsn start;  // 0/0: resume from the slot's confirmed_flush_lsn
  // 0: choose from the server version - 3 on 15+, 2 on 14, 1 before. Streaming of
  // in-progress transactions is on from version 2. two_phase is not requested: a
  // prepared transaction then arrives whole at COMMIT PREPARED, and a rolled-back one
  // never arrives.
  int proto_version = 0;
  bool streaming = true;
  bool messages = true;  // logical decoding messages (pg_logical_emit_message)
  std::chrono::milliseconds status_interval = std::chrono::seconds(10);
};

class ReplicationStream {
 public:
  // Sends START_REPLICATION on `connection` (which must be Mode::kReplication).
  static Result<ReplicationStream> Start(PgConnection connection, const StreamOptions& options);

  // Waits up to `timeout` for the next XLogData, answering keepalives and sending a
  // status update whenever one is due on the way. nullopt: nothing arrived in time.
  // The returned data is valid until the next call.
  Result<std::optional<XLogData>> Next(std::chrono::milliseconds timeout);

  // Every consumer has made everything up to `lsn` durable. Never moves backwards.
  void ConfirmFlushed(Lsn lsn);
  // Sends a status update now (also done on the interval and when the server asks).
  Status SendStatus(bool reply_requested = false);

  // Whether the server asked for a reply since the last call.
  bool TakeReplyRequest() { return std::exchange(reply_requested_, false); }
  Lsn received() const { return received_; }
  Lsn flushed() const { return flushed_; }
  int proto_version() const { return proto_version_; }

  ReplicationStream(ReplicationStream&&) noexcept = default;
  ReplicationStream& operator=(ReplicationStream&&) noexcept = default;
  ~ReplicationStream() = default;

 private:
  struct CopyBufferDeleter {
    void operator()(char* buffer) const { PQfreemem(buffer); }
  };
  ReplicationStream(PgConnection connection, const StreamOptions& options, int proto_version);
  Status SendStatusIfDue();
  std::chrono::steady_clock::time_point NextStatusDue() const;
  static constexpr auto kRepeatReplyInterval = std::chrono::milliseconds(500);
  Error ConnectionError(std::string_view what) const;

  PgConnection connection_;
  StreamOptions options_;
  int proto_version_;
  std::unique_ptr<char, CopyBufferDeleter> buffer_;
  Lsn received_;
  Lsn flushed_;
  std::chrono::steady_clock::time_point last_status_;
  Lsn sent_received_;  // the positions of the last status update
  Lsn sent_flushed_;
  bool reply_owed_ = false;       // the server asked for a reply not yet sent
  bool reply_requested_ = false;  // ... since TakeReplyRequest
};

}  // namespace pgderive
