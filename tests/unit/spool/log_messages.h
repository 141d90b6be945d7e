#pragma once

// pgoutput messages built byte by byte (PostgreSQL 15 docs, §55.9), as the replication
// stream sends them, for the change log's tests and benchmark.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "spool/change_log.h"

namespace pgderive::spool_test {

inline void PutU8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }
inline void PutU16(std::string& out, uint16_t v) {
  PutU8(out, static_cast<uint8_t>(v >> 8));
  PutU8(out, static_cast<uint8_t>(v));
}
inline void PutU32(std::string& out, uint32_t v) {
  PutU16(out, static_cast<uint16_t>(v >> 16));
  PutU16(out, static_cast<uint16_t>(v));
}
inline void PutU64(std::string& out, uint64_t v) {
  PutU32(out, static_cast<uint32_t>(v >> 32));
  PutU32(out, static_cast<uint32_t>(v));
}
inline void PutString(std::string& out, std::string_view s) {
  out.append(s);
  out.push_back('\0');
}

inline std::string BeginBytes(uint64_t final_lsn, uint32_t xid) {
  std::string out = "B";
  PutU64(out, final_lsn);
  PutU64(out, 789000000);
  PutU32(out, xid);
  return out;
}

inline std::string CommitBytes(uint64_t commit_lsn, uint64_t end_lsn) {
  std::string out = "C";
  PutU8(out, 0);
  PutU64(out, commit_lsn);
  PutU64(out, end_lsn);
  PutU64(out, 789000000);
  return out;
}

// A Relation message of `columns` int4 columns (the first the key) named c0, c1...;
// with `stream_xid`, the form sent inside a streamed transaction.
inline std::string RelationBytes(uint32_t relid, std::string_view name, int columns,
                                 uint32_t stream_xid = 0) {
  std::string out = "R";
  if (stream_xid != 0) PutU32(out, stream_xid);
  PutU32(out, relid);
  PutString(out, "public");
  PutString(out, name);
  PutU8(out, 'd');
  PutU16(out, static_cast<uint16_t>(columns));
  for (int i = 0; i < columns; ++i) {
    PutU8(out, i == 0 ? 1 : 0);
    PutString(out, "c" + std::to_string(i));
    PutU32(out, 23);
    PutU32(out, 0xFFFFFFFFu);
  }
  return out;
}

inline std::string TypeBytes(uint32_t oid, std::string_view name) {
  std::string out = "Y";
  PutU32(out, oid);
  PutString(out, "public");
  PutString(out, name);
  return out;
}

inline std::string InsertBytes(uint32_t relid, const std::vector<std::string>& values) {
  std::string out = "I";
  PutU32(out, relid);
  PutU8(out, 'N');
  PutU16(out, static_cast<uint16_t>(values.size()));
  for (const std::string& value : values) {
    PutU8(out, 't');
    PutU32(out, static_cast<uint32_t>(value.size()));
    out.append(value);
  }
  return out;
}

// One transaction ending at `end_lsn`: Begin, [Relation], `rows` Inserts, Commit; the
// message LSNs below end_lsn, increasing.
inline std::vector<LogMessage> Transaction(uint64_t end_lsn, uint32_t xid, uint32_t relid, int rows,
                                           bool with_relation = false, int row_bytes = 8) {
  std::vector<LogMessage> txn;
  const uint64_t first = end_lsn - 1000;
  txn.push_back({Lsn{first}, BeginBytes(end_lsn - 8, xid)});
  if (with_relation)
    txn.push_back({Lsn{first}, RelationBytes(relid, "t" + std::to_string(relid), 2)});
  for (int i = 0; i < rows; ++i) {
    std::string value(static_cast<size_t>(row_bytes), static_cast<char>('a' + (i % 26)));
    txn.push_back(
        {Lsn{first + 1 + static_cast<uint64_t>(i)},
         InsertBytes(relid, {std::to_string(xid * 1000 + static_cast<uint32_t>(i)), value})});
  }
  txn.push_back({Lsn{end_lsn}, CommitBytes(end_lsn - 8, end_lsn)});
  return txn;
}

// A streamed transaction (protocol 2) as appended at its Stream Commit: Stream Start,
// [a Relation message in its streamed form, with the xid], `rows` Inserts (xid after the
// type byte), Stream Stop, Stream Commit ending at `end_lsn`.
inline std::vector<LogMessage> StreamedTransaction(uint64_t end_lsn, uint32_t xid, uint32_t relid,
                                                   int rows, bool with_relation) {
  std::vector<LogMessage> txn;
  const uint64_t first = end_lsn - 1000;
  std::string start = "S";
  PutU32(start, xid);
  PutU8(start, 1);
  txn.push_back({Lsn{first}, start});
  if (with_relation) {
    txn.push_back({Lsn{first}, RelationBytes(relid, "s" + std::to_string(relid), 3, xid)});
  }
  for (int i = 0; i < rows; ++i) {
    std::string insert = InsertBytes(relid, {std::to_string(i)});
    std::string xid_bytes;
    PutU32(xid_bytes, xid);
    insert.insert(1, xid_bytes);
    txn.push_back({Lsn{first + 1 + static_cast<uint64_t>(i)}, insert});
  }
  txn.push_back({Lsn{first + 900}, "E"});
  std::string commit = "c";
  PutU32(commit, xid);
  PutU8(commit, 0);
  PutU64(commit, end_lsn - 8);
  PutU64(commit, end_lsn);
  PutU64(commit, 789000000);
  txn.push_back({Lsn{end_lsn}, commit});
  return txn;
}

}  // namespace pgderive::spool_test
