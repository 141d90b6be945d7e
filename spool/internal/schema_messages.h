#pragma once

// What both logs need to know of the pgoutput messages they carry, decoded by the cdc
// decoder (never parsed a second time here): a transaction's position (its Commit's
// end_lsn) and the Relation/Type messages in force (the last one per relation id and
// per type oid), kept in their plain form so that a reader can be handed them outside
// any transaction.

#include <cstdint>
#include <map>
#include <span>
#include <utility>

#include "base/status.h"
#include "cdc/lsn.h"
#include "spool/change_log.h"

namespace pgderive::spool_internal {

// The transaction's position: the end_lsn of its last message, which must be a Commit
// ('C'), Stream Commit ('c') or Commit Prepared ('K'). Error (permanent) otherwise.
Result<Lsn> TransactionPosition(std::span<const LogMessage> transaction);

// True for a Relation ('R') or Type ('Y') message.
inline bool IsSchemaMessage(const std::string& bytes) {
  return !bytes.empty() && (bytes[0] == 'R' || bytes[0] == 'Y');
}

// A Relation or Type message sent inside a streamed transaction carries the xid right
// after the type byte; the plain form drops it.
std::string PlainSchemaMessage(const std::string& bytes, bool in_stream);

// The Relation/Type messages in force: the last one per (kind, id), plain form.
class SchemaState {
 public:
  using Key = std::pair<char, uint32_t>;  // ('R', relation id) or ('Y', type oid)

  // Follows one transaction's messages (tracking Stream Start/Stop to know which
  // Relation/Type messages carry an xid). Error (corrupt): a Relation/Type message the
  // decoder refuses.
  Status Observe(std::span<const LogMessage> transaction);
  // One message; `in_stream` is updated by Stream Start ('S') / Stream Stop ('E').
  Status ObserveOne(const LogMessage& message, bool& in_stream);

  const std::map<Key, LogMessage>& messages() const { return messages_; }
  bool empty() const { return messages_.empty(); }

 private:
  std::map<Key, LogMessage> messages_;
};

}  // namespace pgderive::spool_internal
