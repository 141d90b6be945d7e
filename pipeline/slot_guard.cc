#include "pipeline/slot_guard.h"

#include <chrono>
#include <thread>

#include "pipeline/run_monitor.h"

namespace pgderive {

Result<SlotState> ReadSlot(SqlRunner& sql, const std::string& slot) {
  auto rows = sql.Query(
      "select confirmed_flush_lsn, plugin, database = current_database(), wal_status from "
      "pg_replication_slots where slot_name = " +
      sql.QuoteLiteral(slot));
  if (!rows.ok()) return rows.error();
  if (rows.value().rows.empty()) return SlotState{};
  const auto& row = rows.value().rows[0];
  if (row[1].value_or("") != "pgoutput" || row[2].value_or("") != "t") {
    return Error::Permanent("slot " + slot +
                            " exists but is not a pgoutput slot of this database; choose "
                            "another source.slot or drop it");
  }
  if (row[3].value_or("") == "lost") return Error::Permanent(RunMonitor::SlotLostMessage(slot));
  auto lsn = Lsn::Parse(row[0].value_or(""));
  return SlotState{true, lsn.value_or(Lsn{})};
}

std::optional<std::string> ServerIdentity(const std::string& dsn) {
  auto c = SqlSession::Connect(dsn, "pgderive-run");
  if (!c.ok()) return std::nullopt;
  auto rows =
      c.value().Query("select pg_postmaster_start_time()::text || ' ' || current_setting('port')");
  if (!rows.ok() || rows.value().rows.empty()) return std::nullopt;
  return rows.value().rows[0][0];
}

SlotGuard::SlotGuard(SqlRunner& sql, std::string slot, std::string publication,
                     std::string pipeline, Logger& logger,
                     std::function<void(const std::string&)> info)
    : sql_(sql),
      slot_(std::move(slot)),
      publication_(std::move(publication)),
      pipeline_(std::move(pipeline)),
      logger_(logger),
      info_(std::move(info)) {}

void SlotGuard::Release() {
  made_publication_ = false;
  made_slot_ = false;
  filling_.clear();
}

int SlotGuard::Undo(int code, const std::function<void()>& close_replication) {
  std::vector<std::string> removed;
  for (Sink* sink : filling_) {
    Status undone = sink->UndoRebuild();
    if (undone.ok()) {
      removed.push_back("what the snapshot wrote to store " + sink->name());
    } else {
      logger_.Warn("could not remove what the snapshot wrote to store " + sink->name() + ": " +
                       undone.error().message(),
                   {{"pipeline", pipeline_}});
    }
  }
  close_replication();
  if (made_slot_) {
    // The walsender that created the slot may still be ending: retry while active.
    Status dropped = Status::Ok();
    for (int attempt = 0; attempt < 100; ++attempt) {
      dropped = sql_.Execute("select pg_drop_replication_slot(" + sql_.QuoteLiteral(slot_) + ")");
      if (dropped.ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // retry interval
    }
    if (dropped.ok()) {
      removed.push_back("slot " + slot_);
    } else {
      logger_.Warn("could not drop slot " + slot_ + ": " + dropped.error().message(),
                   {{"pipeline", pipeline_}});
    }
  }
  if (made_publication_) {
    Status dropped =
        sql_.Execute("drop publication if exists " + sql_.QuoteIdentifier(publication_));
    if (dropped.ok()) {
      removed.push_back("publication " + publication_);
    } else {
      logger_.Warn("could not drop publication " + publication_ + ": " + dropped.error().message(),
                   {{"pipeline", pipeline_}});
    }
  }
  if (!removed.empty()) {
    std::string list;
    for (const std::string& r : removed) list += (list.empty() ? "" : ", ") + r;
    info_("removed what this run created: " + list);
  }
  return code;
}

}  // namespace pgderive
