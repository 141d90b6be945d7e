#pragma once

// The slot guard: the replication slot as a start finds it, and what a start creates.
//
//   start: ReadSlot -- none --> create slot + publication --> fill --> streaming
//                   \- exists -> resume from confirmed_flush              |
//   failure before streaming: SlotGuard::Undo removes exactly what   Release: kept
//   this run created (what a first fill began in the stores: a       on any later
//   postgres store's snapshot data, the row stores' emptied views    failure
//   and recorded states; the slot, the publication) - no half-made state
//
// Once streaming, what exists is a working pipeline and is kept on any failure.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/log.h"
#include "cdc/lsn.h"
#include "cdc/sql_session.h"
#include "sinks/common/sink.h"

namespace pgderive {

struct SlotState {
  bool exists = false;
  Lsn confirmed_flush;
};

// The slot `slot` on the source; a permanent error when it is not a pgoutput slot of
// this database, or when it was invalidated (lost).
Result<SlotState> ReadSlot(SqlRunner& sql, const std::string& slot);

// Which PostgreSQL server a connection reaches: its postmaster's start time and port
// (the same server under any address or DSN spelling; readable without privileges).
std::optional<std::string> ServerIdentity(const std::string& dsn);

class SlotGuard {
 public:
  // `sql`: a session on the source; `info`: logs what was removed.
  SlotGuard(SqlRunner& sql, std::string slot, std::string publication, std::string pipeline,
            Logger& logger, std::function<void(const std::string&)> info);

  void MadePublication() { made_publication_ = true; }
  void MadeSlot() { made_slot_ = true; }
  // The stores a first start began to fill (BeginRebuild: Undo calls UndoRebuild).
  void Filling(std::vector<Sink*> sinks) { filling_ = std::move(sinks); }
  // Streaming: nothing is removed any more.
  void Release();

  // Removes what this run created; `close_replication` first closes the connection
  // that created the slot. Returns `code`.
  int Undo(int code, const std::function<void()>& close_replication);

 private:
  SqlRunner& sql_;
  const std::string slot_;
  const std::string publication_;
  const std::string pipeline_;
  Logger& logger_;
  std::function<void(const std::string&)> info_;
  bool made_publication_ = false;
  bool made_slot_ = false;
  std::vector<Sink*> filling_;
};

}  // namespace pgderive
