#pragma once

// What the capture core hands downstream: committed transactions, in commit order, one
// change at a time. The one public header sinks and the snapshot see (no decoder
// internals beyond the decoded message structs).
//
// Order: transactions arrive in commit-LSN order; changes inside one in the order they
// were made. (commit_lsn, index) identifies and orders every change, so a watermark
// backfill (DBLog) can place snapshot chunks between two transactions of the same
// sequence, and a consumer that replays from an older checkpoint recognises what it has.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "cdc/lsn.h"
#include "cdc/pgoutput.h"

namespace pgderive {

struct ColumnSchema {
  std::string name;
  uint32_t type_oid = 0;
  int32_t typmod = -1;
  bool key = false;  // part of the replica identity
  // `"name":` as JSON, rendered once per schema for the row-rendering hot path (empty:
  // render on the fly).
  std::string json_key;
};

// A table's shape as the last Relation message described it. Immutable: a schema change
// makes a new one, and a change keeps the schema it was made under.
struct RelationSchema {
  RelationId id;
  std::string nspname;
  std::string relname;
  char replica_identity = 'd';
  std::vector<ColumnSchema> columns;
  std::string json_name;  // the qualified name as a JSON string, rendered once
  std::string QualifiedName() const { return nspname + "." + relname; }
};

// Fills the pre-rendered json_key of every column and json_name.
void RenderSchemaJson(RelationSchema& schema);

struct TransactionInfo {
  Xid xid;
  Lsn commit_lsn;  // the commit record; orders transactions
  Lsn end_lsn;     // end of the commit record: confirm up to here once applied. Set in
                   // OnCommit always; in OnBegin only for streamed/prepared ones.
  PgTimestamp commit_time = 0;
  bool streamed = false;  // replayed from the streamed (or prepared) buffer
};

struct Change {
  Lsn commit_lsn;
  uint32_t index = 0;  // position inside the transaction, from 0
  // InsertMessage, UpdateMessage, DeleteMessage, TruncateMessage or LogicalMessage.
  // Valid only during the OnChange call (its views point into a transient buffer).
  const PgOutputMessage* message = nullptr;
  // The schema of the changed table (one for I/U/D, one per table for a truncate, none
  // for a logical message). The span is valid during the call; the schemas are shared
  // and immutable, so a consumer may keep a copy of the shared_ptr.
  std::span<const std::shared_ptr<const RelationSchema>> relations;
};

class ChangeConsumer {
 public:
  virtual ~ChangeConsumer() = default;
  virtual Status OnBegin(const TransactionInfo& transaction) = 0;
  virtual Status OnChange(const Change& change) = 0;
  virtual Status OnCommit(const TransactionInfo& transaction) = 0;
};

}  // namespace pgderive
