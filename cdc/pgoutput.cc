#include "cdc/pgoutput.h"

#include <string>

#include "cdc/internal/wire_reader.h"

namespace pgderive {
namespace {

// The largest number of columns a table can have (MaxTupleAttributeNumber).
constexpr int kMaxColumns = 1664;

Lsn ReadLsn(WireReader& in, const char* field) { return Lsn{in.ReadUint64(field)}; }

// Like PostgreSQL's decoders, an invalid (0/0) LSN where one must be set is an error.
Lsn ReadValidLsn(WireReader& in, const char* field) {
  Lsn lsn = ReadLsn(in, field);
  if (in.ok() && !lsn.IsValid()) in.Fail(field, "LSN not set (0/0)");
  return lsn;
}

void ReadZeroFlags(WireReader& in) {
  const uint8_t flags = in.ReadUint8("flags");
  if (in.ok() && flags != 0) in.Fail("flags", "unrecognized flags " + std::to_string(flags));
}

std::optional<Xid> ReadStreamXid(WireReader& in, const DecodeContext& context) {
  if (!context.in_stream) return std::nullopt;
  return Xid{in.ReadUint32("xid")};
}

// logicalrep_read_tuple
void ReadTuple(WireReader& in, TupleData& tuple) {
  const int16_t ncols = in.ReadInt16("tuple column count");
  if (!in.ok()) return;
  if (ncols < 0 || ncols > kMaxColumns) {
    in.Fail("tuple column count", "invalid column count " + std::to_string(ncols));
    return;
  }
  // Each column takes at least its kind byte: a count beyond what is left is corrupt,
  // and checking first keeps a hostile count from sizing the vector.
  if (static_cast<size_t>(ncols) > in.remaining()) {
    in.Fail("tuple column count", std::to_string(ncols) + " columns cannot fit in " +
                                      std::to_string(in.remaining()) + " bytes");
    return;
  }
  tuple.columns.resize(static_cast<size_t>(ncols));
  for (TupleValue& value : tuple.columns) {
    const uint8_t kind = in.ReadUint8("tuple column kind");
    if (!in.ok()) return;
    switch (kind) {
      case 'n':
        value.kind = TupleValueKind::kNull;
        break;
      case 'u':
        value.kind = TupleValueKind::kUnchanged;
        break;
      case 't':
      case 'b': {
        value.kind = kind == 't' ? TupleValueKind::kText : TupleValueKind::kBinary;
        const int32_t length = in.ReadInt32("tuple column length");
        if (!in.ok()) return;
        if (length < 0) {
          in.Fail("tuple column length", "negative length " + std::to_string(length));
          return;
        }
        value.data = in.ReadBytes(static_cast<size_t>(length), "tuple column data");
        break;
      }
      default:
        in.Fail("tuple column kind", "unrecognized tuple data kind " + std::to_string(kind));
        return;
    }
  }
}

BeginMessage ReadBegin(WireReader& in) {
  BeginMessage m;
  m.final_lsn = ReadValidLsn(in, "final_lsn");
  m.commit_time = in.ReadInt64("commit_time");
  m.xid = Xid{in.ReadUint32("xid")};
  return m;
}

CommitMessage ReadCommit(WireReader& in) {
  CommitMessage m;
  ReadZeroFlags(in);
  m.commit_lsn = ReadLsn(in, "commit_lsn");
  m.end_lsn = ReadLsn(in, "end_lsn");
  m.commit_time = in.ReadInt64("commit_time");
  return m;
}

OriginMessage ReadOrigin(WireReader& in) {
  OriginMessage m;
  m.origin_lsn = ReadLsn(in, "origin_lsn");
  m.name = in.ReadString("origin name");
  return m;
}

RelationMessage ReadRelation(WireReader& in, const DecodeContext& context) {
  RelationMessage m;
  m.xid = ReadStreamXid(in, context);
  m.relation_id = RelationId{in.ReadUint32("relid")};
  m.nspname = in.ReadString("nspname");
  if (in.ok() && m.nspname.empty()) m.nspname = "pg_catalog";  // logicalrep_read_namespace
  m.relname = in.ReadString("relname");
  m.replica_identity = static_cast<char>(in.ReadUint8("replica identity"));
  if (in.ok() && m.replica_identity != 'd' && m.replica_identity != 'n' &&
      m.replica_identity != 'f' && m.replica_identity != 'i') {
    in.Fail("replica identity",
            "unrecognized replica identity " + std::to_string(m.replica_identity));
  }
  const int16_t natts = in.ReadInt16("natts");
  if (!in.ok()) return m;
  // Each attribute takes at least 10 bytes (flags, empty name's NUL, oid, typmod).
  if (natts < 0 || natts > kMaxColumns || static_cast<size_t>(natts) * 10 > in.remaining()) {
    in.Fail("natts", "invalid attribute count " + std::to_string(natts));
    return m;
  }
  m.attributes.resize(static_cast<size_t>(natts));
  for (RelationAttribute& attribute : m.attributes) {
    attribute.flags = in.ReadUint8("attribute flags");
    attribute.name = in.ReadString("attribute name");
    attribute.type_oid = in.ReadUint32("atttypid");
    attribute.atttypmod = in.ReadInt32("atttypmod");
  }
  return m;
}

TypeMessage ReadType(WireReader& in, const DecodeContext& context) {
  TypeMessage m;
  m.xid = ReadStreamXid(in, context);
  m.type_oid = in.ReadUint32("type oid");
  m.nspname = in.ReadString("nspname");
  if (in.ok() && m.nspname.empty()) m.nspname = "pg_catalog";
  m.typname = in.ReadString("typname");
  return m;
}

void ExpectAction(WireReader& in, uint8_t action, std::string_view allowed) {
  if (in.ok() && allowed.find(static_cast<char>(action)) == std::string_view::npos) {
    in.Fail("tuple action",
            "expected one of '" + std::string(allowed) + "', got " + std::to_string(action));
  }
}

InsertMessage ReadInsert(WireReader& in, const DecodeContext& context) {
  InsertMessage m;
  m.xid = ReadStreamXid(in, context);
  m.relation_id = RelationId{in.ReadUint32("relid")};
  ExpectAction(in, in.ReadUint8("tuple action"), "N");
  ReadTuple(in, m.new_tuple);
  return m;
}

UpdateMessage ReadUpdate(WireReader& in, const DecodeContext& context) {
  UpdateMessage m;
  m.xid = ReadStreamXid(in, context);
  m.relation_id = RelationId{in.ReadUint32("relid")};
  uint8_t action = in.ReadUint8("tuple action");
  ExpectAction(in, action, "KON");
  if (in.ok() && (action == 'K' || action == 'O')) {
    m.old_kind = static_cast<char>(action);
    ReadTuple(in, m.old_tuple);
    action = in.ReadUint8("tuple action");
    ExpectAction(in, action, "N");
  }
  ReadTuple(in, m.new_tuple);
  return m;
}

DeleteMessage ReadDelete(WireReader& in, const DecodeContext& context) {
  DeleteMessage m;
  m.xid = ReadStreamXid(in, context);
  m.relation_id = RelationId{in.ReadUint32("relid")};
  const uint8_t action = in.ReadUint8("tuple action");
  ExpectAction(in, action, "KO");
  m.old_kind = static_cast<char>(action);
  ReadTuple(in, m.old_tuple);
  return m;
}

TruncateMessage ReadTruncate(WireReader& in, const DecodeContext& context) {
  TruncateMessage m;
  m.xid = ReadStreamXid(in, context);
  const int32_t nrelids = in.ReadInt32("nrelids");
  m.flags = in.ReadUint8("truncate flags");
  if (!in.ok()) return m;
  if (nrelids < 0 || static_cast<size_t>(nrelids) * 4 > in.remaining()) {
    in.Fail("nrelids", "invalid relation count " + std::to_string(nrelids));
    return m;
  }
  if ((m.flags & ~3u) != 0) {
    in.Fail("truncate flags", "unrecognized flags " + std::to_string(m.flags));
    return m;
  }
  m.relation_ids.resize(static_cast<size_t>(nrelids));
  for (RelationId& relid : m.relation_ids) relid = RelationId{in.ReadUint32("relid")};
  return m;
}

LogicalMessage ReadMessage(WireReader& in, const DecodeContext& context) {
  LogicalMessage m;
  m.xid = ReadStreamXid(in, context);
  m.flags = in.ReadUint8("message flags");
  m.lsn = ReadLsn(in, "message lsn");
  m.prefix = in.ReadString("message prefix");
  const int32_t length = in.ReadInt32("message length");
  if (!in.ok()) return m;
  if (length < 0) {
    in.Fail("message length", "negative length " + std::to_string(length));
    return m;
  }
  m.content = in.ReadBytes(static_cast<size_t>(length), "message content");
  return m;
}

StreamStartMessage ReadStreamStart(WireReader& in) {
  StreamStartMessage m;
  m.xid = Xid{in.ReadUint32("xid")};
  const uint8_t first = in.ReadUint8("first_segment");
  if (in.ok() && first > 1)
    in.Fail("first_segment", "expected 0 or 1, got " + std::to_string(first));
  m.first_segment = first == 1;
  return m;
}

StreamCommitMessage ReadStreamCommit(WireReader& in) {
  StreamCommitMessage m;
  m.xid = Xid{in.ReadUint32("xid")};
  ReadZeroFlags(in);
  m.commit_lsn = ReadLsn(in, "commit_lsn");
  m.end_lsn = ReadLsn(in, "end_lsn");
  m.commit_time = in.ReadInt64("commit_time");
  return m;
}

StreamAbortMessage ReadStreamAbort(WireReader& in) {
  StreamAbortMessage m;
  m.xid = Xid{in.ReadUint32("xid")};
  m.subxid = Xid{in.ReadUint32("subxid")};
  return m;
}

BeginPrepareMessage ReadBeginPrepare(WireReader& in) {
  BeginPrepareMessage m;
  m.prepare_lsn = ReadValidLsn(in, "prepare_lsn");
  m.end_lsn = ReadValidLsn(in, "end_lsn");
  m.prepare_time = in.ReadInt64("prepare_time");
  m.xid = Xid{in.ReadUint32("xid")};
  m.gid = in.ReadString("gid");
  return m;
}

// logicalrep_read_prepare_common: Prepare and Stream Prepare share the layout.
PrepareMessage ReadPrepare(WireReader& in) {
  PrepareMessage m;
  ReadZeroFlags(in);
  m.prepare_lsn = ReadValidLsn(in, "prepare_lsn");
  m.end_lsn = ReadValidLsn(in, "end_lsn");
  m.prepare_time = in.ReadInt64("prepare_time");
  m.xid = Xid{in.ReadUint32("xid")};
  m.gid = in.ReadString("gid");
  return m;
}

CommitPreparedMessage ReadCommitPrepared(WireReader& in) {
  CommitPreparedMessage m;
  ReadZeroFlags(in);
  m.commit_lsn = ReadValidLsn(in, "commit_lsn");
  m.end_lsn = ReadValidLsn(in, "end_lsn");
  m.commit_time = in.ReadInt64("commit_time");
  m.xid = Xid{in.ReadUint32("xid")};
  m.gid = in.ReadString("gid");
  return m;
}

RollbackPreparedMessage ReadRollbackPrepared(WireReader& in) {
  RollbackPreparedMessage m;
  ReadZeroFlags(in);
  m.prepare_end_lsn = ReadValidLsn(in, "prepare_end_lsn");
  m.rollback_end_lsn = ReadValidLsn(in, "rollback_end_lsn");
  m.prepare_time = in.ReadInt64("prepare_time");
  m.rollback_time = in.ReadInt64("rollback_time");
  m.xid = Xid{in.ReadUint32("xid")};
  m.gid = in.ReadString("gid");
  return m;
}

// Decodes with `read` and turns a reader failure or trailing bytes into an Error.
template <typename Read>
Result<PgOutputMessage> Finish(WireReader& in, uint8_t type, Read read) {
  PgOutputMessage message = read();
  if (in.ok() && in.remaining() != 0) {
    in.Fail("end of message", std::to_string(in.remaining()) + " unexpected trailing bytes");
  }
  if (!in.ok()) {
    return Error::Corrupt("pgoutput " + std::string(PgOutputMessageName(type)) +
                          " message: " + in.ErrorText());
  }
  return message;
}

}  // namespace

std::string_view PgOutputMessageName(uint8_t type) {
  switch (type) {
    case 'B':
      return "Begin";
    case 'C':
      return "Commit";
    case 'O':
      return "Origin";
    case 'R':
      return "Relation";
    case 'Y':
      return "Type";
    case 'I':
      return "Insert";
    case 'U':
      return "Update";
    case 'D':
      return "Delete";
    case 'T':
      return "Truncate";
    case 'M':
      return "Message";
    case 'S':
      return "Stream Start";
    case 'E':
      return "Stream Stop";
    case 'c':
      return "Stream Commit";
    case 'A':
      return "Stream Abort";
    case 'b':
      return "Begin Prepare";
    case 'P':
      return "Prepare";
    case 'K':
      return "Commit Prepared";
    case 'r':
      return "Rollback Prepared";
    case 'p':
      return "Stream Prepare";
    default:
      return "unknown";
  }
}

Result<PgOutputMessage> DecodePgOutput(std::span<const uint8_t> bytes, DecodeContext context) {
  WireReader in(bytes);
  const uint8_t type = in.ReadUint8("message type");
  if (!in.ok()) return Error::Corrupt("pgoutput message: empty message");
  switch (type) {
    case 'B':
      return Finish(in, type, [&] { return ReadBegin(in); });
    case 'C':
      return Finish(in, type, [&] { return ReadCommit(in); });
    case 'O':
      return Finish(in, type, [&] { return ReadOrigin(in); });
    case 'R':
      return Finish(in, type, [&] { return ReadRelation(in, context); });
    case 'Y':
      return Finish(in, type, [&] { return ReadType(in, context); });
    case 'I':
      return Finish(in, type, [&] { return ReadInsert(in, context); });
    case 'U':
      return Finish(in, type, [&] { return ReadUpdate(in, context); });
    case 'D':
      return Finish(in, type, [&] { return ReadDelete(in, context); });
    case 'T':
      return Finish(in, type, [&] { return ReadTruncate(in, context); });
    case 'M':
      return Finish(in, type, [&] { return ReadMessage(in, context); });
    case 'S':
      return Finish(in, type, [&] { return ReadStreamStart(in); });
    case 'E':
      return Finish(in, type, [&] { return StreamStopMessage{}; });
    case 'c':
      return Finish(in, type, [&] { return ReadStreamCommit(in); });
    case 'A':
      return Finish(in, type, [&] { return ReadStreamAbort(in); });
    case 'b':
      return Finish(in, type, [&] { return ReadBeginPrepare(in); });
    case 'P':
      return Finish(in, type, [&] { return ReadPrepare(in); });
    case 'p':
      return Finish(in, type, [&] { return StreamPrepareMessage{ReadPrepare(in)}; });
    case 'K':
      return Finish(in, type, [&] { return ReadCommitPrepared(in); });
    case 'r':
      return Finish(in, type, [&] { return ReadRollbackPrepared(in); });
    default:
      return Error::Corrupt("pgoutput message: unknown message type " + std::to_string(type) +
                            " at offset 0 of " + std::to_string(bytes.size()) + " bytes");
  }
}

}  // namespace pgderive
