#pragma once

// The CopyData messages of START_REPLICATION (PostgreSQL 15 docs, §55.4 "Streaming
// Replication Protocol"). Pure: bytes in, structs out, and the one message we send.

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <variant>

#include "base/status.h"
#include "cdc/lsn.h"
#include "cdc/pgoutput.h"

namespace pgderive {

// 'w' Int64 dataStart, Int64 walEnd, Int64 sendTime, then one pgoutput message.
struct XLogData {
  Lsn data_start;
  Lsn wal_end;
  PgTimestamp send_time = 0;
  std::span<const uint8_t> data;  // points into the CopyData buffer
};

// 'k' Int64 walEnd, Int64 sendTime, Byte1 replyRequested
struct PrimaryKeepalive {
  Lsn wal_end;
  PgTimestamp send_time = 0;
  bool reply_requested = false;
};

using WalSenderMessage = std::variant<XLogData, PrimaryKeepalive>;

Result<WalSenderMessage> DecodeWalSenderMessage(std::span<const uint8_t> bytes);

// 'r' Int64 write, Int64 flush, Int64 apply, Int64 sendTime, Byte1 replyRequested: the
// standby status update. `flush` is what the server may release WAL up to and records
// as the slot's confirmed_flush_lsn.
std::array<uint8_t, 34> EncodeStandbyStatusUpdate(Lsn write, Lsn flush, Lsn apply, PgTimestamp now,
                                                  bool reply_requested);

// Microseconds since 2000-01-01 00:00:00 UTC.
PgTimestamp ToPgTimestamp(std::chrono::system_clock::time_point time);
std::chrono::system_clock::time_point FromPgTimestamp(PgTimestamp timestamp);

}  // namespace pgderive
