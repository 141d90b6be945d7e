#pragma once

// The pgoutput logical replication protocol, decoded: a pure function from one
// message's bytes to one struct. No libpq, no logging, no state beyond what the caller
// passes. Mirrors PostgreSQL's src/backend/replication/logical/proto.c and the field
// names of logicalproto.h. Reference: PostgreSQL 15 docs, §55.9 "Logical Replication
// Message Formats".
//
// Views (std::string_view) in the structs point into the decoded buffer: a message
// must not outlive its bytes. Owners that keep messages keep the bytes (see the
// streamed-transaction buffer) and decode again.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "base/status.h"
#include "cdc/lsn.h"

namespace pgderive {

// Microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's TimestampTz).
using PgTimestamp = int64_t;

// TupleData column kinds (§55.9 "TupleData").
enum class TupleValueKind : char {
  kNull = 'n',
  kUnchanged = 'u',  // unchanged TOASTed value: the previous value stands
  kText = 't',
  kBinary = 'b',
};

struct TupleValue {
  TupleValueKind kind = TupleValueKind::kNull;
  std::string_view data;  // kText / kBinary only
};

// Int16 ncols; per column Byte1 kind ['n' | 'u' | 't' Int32 len, bytes | 'b' Int32 len, bytes].
struct TupleData {
  std::vector<TupleValue> columns;
};

// 'B' Int64 final_lsn, Int64 commit_time, Int32 xid
struct BeginMessage {
  Lsn final_lsn;
  PgTimestamp commit_time = 0;
  Xid xid;
};

// 'C' Int8 flags (0), Int64 commit_lsn, Int64 end_lsn, Int64 commit_time
struct CommitMessage {
  uint8_t flags = 0;
  Lsn commit_lsn;
  Lsn end_lsn;
  PgTimestamp commit_time = 0;
};

// 'O' Int64 origin_lsn, String name
struct OriginMessage {
  Lsn origin_lsn;
  std::string_view name;
};

struct RelationAttribute {
  uint8_t flags = 0;  // 1: part of the replica identity key
  std::string_view name;
  uint32_t type_oid = 0;
  int32_t atttypmod = -1;
  bool is_key() const { return (flags & 1) != 0; }
};

// 'R' [Int32 xid], Int32 relid, String nspname ("" = pg_catalog), String relname,
// Int8 replica_identity ('d' default, 'n' nothing, 'f' full, 'i' index), Int16 natts,
// natts x {Int8 flags, String name, Int32 atttypid, Int32 atttypmod}
struct RelationMessage {
  std::optional<Xid> xid;  // set inside a streamed transaction
  RelationId relation_id;
  std::string_view nspname;
  std::string_view relname;
  char replica_identity = 'd';
  std::vector<RelationAttribute> attributes;
};

// 'Y' [Int32 xid], Int32 type oid, String nspname, String typname
struct TypeMessage {
  std::optional<Xid> xid;
  uint32_t type_oid = 0;
  std::string_view nspname;
  std::string_view typname;
};

// 'I' [Int32 xid], Int32 relid, Byte1 'N', TupleData
struct InsertMessage {
  std::optional<Xid> xid;
  RelationId relation_id;
  TupleData new_tuple;
};

// 'U' [Int32 xid], Int32 relid, [Byte1 'K' | 'O', TupleData], Byte1 'N', TupleData
struct UpdateMessage {
  std::optional<Xid> xid;
  RelationId relation_id;
  char old_kind = '\0';  // '\0' no old tuple, 'K' old key, 'O' old row (REPLICA IDENTITY FULL)
  TupleData old_tuple;
  TupleData new_tuple;
};

// 'D' [Int32 xid], Int32 relid, Byte1 'K' | 'O', TupleData
struct DeleteMessage {
  std::optional<Xid> xid;
  RelationId relation_id;
  char old_kind = 'K';
  TupleData old_tuple;
};

// 'T' [Int32 xid], Int32 nrelids, Int8 flags (1 cascade, 2 restart identity), nrelids x Int32
struct TruncateMessage {
  std::optional<Xid> xid;
  uint8_t flags = 0;
  std::vector<RelationId> relation_ids;
  bool cascade() const { return (flags & 1) != 0; }
  bool restart_identity() const { return (flags & 2) != 0; }
};

// 'M' [Int32 xid], Int8 flags (1 transactional), Int64 lsn, String prefix, Int32 length, bytes
struct LogicalMessage {
  std::optional<Xid> xid;
  uint8_t flags = 0;
  Lsn lsn;
  std::string_view prefix;
  std::string_view content;
  bool transactional() const { return (flags & 1) != 0; }
};

// 'S' Int32 xid, Int8 first_segment (protocol v2)
struct StreamStartMessage {
  Xid xid;
  bool first_segment = false;
};

// 'E' (no fields)
struct StreamStopMessage {};

// 'c' Int32 xid, Int8 flags (0), Int64 commit_lsn, Int64 end_lsn, Int64 commit_time
struct StreamCommitMessage {
  Xid xid;
  uint8_t flags = 0;
  Lsn commit_lsn;
  Lsn end_lsn;
  PgTimestamp commit_time = 0;
};

// 'A' Int32 xid, Int32 subxid (subxid == xid: the whole transaction aborted)
struct StreamAbortMessage {
  Xid xid;
  Xid subxid;
};

// 'b' Int64 prepare_lsn, Int64 end_lsn, Int64 prepare_time, Int32 xid, String gid (v3)
struct BeginPrepareMessage {
  Lsn prepare_lsn;
  Lsn end_lsn;
  PgTimestamp prepare_time = 0;
  Xid xid;
  std::string_view gid;
};

// 'P' (and 'p', Stream Prepare) Int8 flags (0), Int64 prepare_lsn, Int64 end_lsn,
// Int64 prepare_time, Int32 xid, String gid (v3)
struct PrepareMessage {
  uint8_t flags = 0;
  Lsn prepare_lsn;
  Lsn end_lsn;
  PgTimestamp prepare_time = 0;
  Xid xid;
  std::string_view gid;
};
struct StreamPrepareMessage : PrepareMessage {};

// 'K' Int8 flags (0), Int64 commit_lsn, Int64 end_lsn, Int64 commit_time, Int32 xid, String gid
struct CommitPreparedMessage {
  uint8_t flags = 0;
  Lsn commit_lsn;
  Lsn end_lsn;
  PgTimestamp commit_time = 0;
  Xid xid;
  std::string_view gid;
};

// 'r' Int8 flags (0), Int64 prepare_end_lsn, Int64 rollback_end_lsn, Int64 prepare_time,
// Int64 rollback_time, Int32 xid, String gid
struct RollbackPreparedMessage {
  uint8_t flags = 0;
  Lsn prepare_end_lsn;
  Lsn rollback_end_lsn;
  PgTimestamp prepare_time = 0;
  PgTimestamp rollback_time = 0;
  Xid xid;
  std::string_view gid;
};

using PgOutputMessage =
    std::variant<BeginMessage, CommitMessage, OriginMessage, RelationMessage, TypeMessage,
                 InsertMessage, UpdateMessage, DeleteMessage, TruncateMessage, LogicalMessage,
                 StreamStartMessage, StreamStopMessage, StreamCommitMessage, StreamAbortMessage,
                 BeginPrepareMessage, PrepareMessage, StreamPrepareMessage, CommitPreparedMessage,
                 RollbackPreparedMessage>;

struct DecodeContext {
  // Between Stream Start and Stream Stop, R/Y/I/U/D/T/M carry the xid of the streamed
  // transaction right after the message type (worker.c: handle_streamed_transaction).
  bool in_stream = false;
};

// Decodes one pgoutput message. Malformed input is an Error of kind kCorrupt whose
// text names the message, the field and the byte offset.
Result<PgOutputMessage> DecodePgOutput(std::span<const uint8_t> bytes, DecodeContext context);

// The message type byte's name, e.g. 'I' -> "Insert" ("unknown" otherwise).
std::string_view PgOutputMessageName(uint8_t type);

}  // namespace pgderive
