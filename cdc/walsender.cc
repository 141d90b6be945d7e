#include "cdc/walsender.h"

#include <string>

#include "cdc/internal/wire_reader.h"

namespace pgderive {
namespace {

// 2000-01-01 00:00:00 UTC in Unix seconds (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE days).
constexpr int64_t kPostgresEpochUnixSeconds = 946684800;

void PutInt64(uint8_t* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<uint8_t>(v & 0xFF);
    v >>= 8;
  }
}

}  // namespace

Result<WalSenderMessage> DecodeWalSenderMessage(std::span<const uint8_t> bytes) {
  WireReader in(bytes);
  const uint8_t type = in.ReadUint8("message type");
  if (!in.ok()) return Error::Corrupt("walsender message: empty CopyData");
  if (type == 'w') {
    XLogData m;
    m.data_start = Lsn{in.ReadUint64("dataStart")};
    m.wal_end = Lsn{in.ReadUint64("walEnd")};
    m.send_time = in.ReadInt64("sendTime");
    if (!in.ok()) return Error::Corrupt("walsender XLogData: " + in.ErrorText());
    m.data = bytes.subspan(in.offset());
    return WalSenderMessage(m);
  }
  if (type == 'k') {
    PrimaryKeepalive m;
    m.wal_end = Lsn{in.ReadUint64("walEnd")};
    m.send_time = in.ReadInt64("sendTime");
    const uint8_t reply = in.ReadUint8("replyRequested");
    if (in.ok() && reply > 1)
      in.Fail("replyRequested", "expected 0 or 1, got " + std::to_string(reply));
    if (in.ok() && in.remaining() != 0) in.Fail("end of message", "unexpected trailing bytes");
    if (!in.ok()) return Error::Corrupt("walsender keepalive: " + in.ErrorText());
    m.reply_requested = reply == 1;
    return WalSenderMessage(m);
  }
  return Error::Corrupt("walsender message: unknown type " + std::to_string(type));
}

std::array<uint8_t, 34> EncodeStandbyStatusUpdate(Lsn write, Lsn flush, Lsn apply, PgTimestamp now,
                                                  bool reply_requested) {
  std::array<uint8_t, 34> out{};
  out[0] = 'r';
  PutInt64(&out[1], write.value);
  PutInt64(&out[9], flush.value);
  PutInt64(&out[17], apply.value);
  PutInt64(&out[25], static_cast<uint64_t>(now));
  out[33] = reply_requested ? 1 : 0;
  return out;
}

PgTimestamp ToPgTimestamp(std::chrono::system_clock::time_point time) {
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
  return micros - kPostgresEpochUnixSeconds * 1000000;
}

std::chrono::system_clock::time_point FromPgTimestamp(PgTimestamp timestamp) {
  return std::chrono::system_clock::time_point(
      std::chrono::microseconds(timestamp + kPostgresEpochUnixSeconds * 1000000));
}

}  // namespace pgderive
