#include "pipeline/run_lock.h"

#include <unistd.h>

#include <climits>

namespace pgderive {
namespace {

// The session holding the two-key advisory lock (class, hashtext(slot)) in this
// database, if any. A session's address and start are NULL for a role that may not see
// them; a local socket has no address and client_port -1.
constexpr const char* kHolderSql =
    "select coalesce(a.application_name, ''), l.pid::text, coalesce(host(a.client_addr), case "
    "when a.client_port = -1 then 'a local socket' end, ''), coalesce(date_trunc('second', "
    "a.backend_start)::text, '') from pg_locks l left join pg_stat_activity a on a.pid = l.pid "
    "where l.locktype = 'advisory' and l.granted and l.database = (select oid from pg_database "
    "where datname = current_database()) and l.classid = $1::int::oid and l.objid = "
    "hashtext($2)::oid and l.objsubid = 2";

// The session streaming from the slot (its walsender), if any.
constexpr const char* kSlotUserSql =
    "select coalesce(a.application_name, ''), s.active_pid::text, coalesce(host(a.client_addr), "
    "case when a.client_port = -1 then 'a local socket' end, ''), coalesce(date_trunc('second', "
    "a.backend_start)::text, '') from pg_replication_slots s left join pg_stat_activity a on "
    "a.pid = s.active_pid where s.slot_name = $1 and s.active_pid is not null";

}  // namespace

std::string LockHolder::Describe() const {
  std::string out = application_name.empty() ? "a session without a name" : application_name;
  std::string session;
  if (!server_pid.empty()) session += "server pid " + server_pid;
  if (!client.empty()) session += (session.empty() ? "" : ", ") + ("from " + client);
  if (!since.empty()) session += (session.empty() ? "" : ", ") + ("since " + since);
  if (!session.empty()) out += " (source session: " + session + ")";
  return out;
}

std::string ProcessName(const std::string& command) {
  char host[HOST_NAME_MAX + 1] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return "pgderive " + command + " pid " + std::to_string(getpid()) +
         (host[0] != '\0' ? std::string(" on ") + host : std::string());
}

Result<PipelineLock> PipelineLock::Take(const std::string& dsn, const std::string& slot,
                                        const std::string& application_name) {
  PipelineLock lock(dsn, slot, application_name);
  Status status = lock.Attempt(/*check_slot=*/true);
  if (!status.ok()) return status.error();
  return lock;
}

Status PipelineLock::Attempt(bool check_slot) {
  session_.reset();
  holder_.reset();
  auto connected = SqlSession::Connect(dsn_, application_name_);
  if (!connected.ok()) return connected.error();
  SqlSession session = std::move(connected).value();
  const SqlParams key{std::to_string(kRunLockClass), slot_};
  // A holder that ends between the two statements leaves no row: take it again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto took = session.Query("select pg_try_advisory_lock($1::int, hashtext($2))", key);
    if (!took.ok()) return took.error();
    if (took.value().rows.at(0).at(0).value_or("f") == "t") {
      if (check_slot) {
        // A run streams only while it holds the lock; a walsender on the slot without
        // the lock is a run that just lost its lock session (the source restarted, or
        // the session was ended) and has not noticed yet: still running.
        auto user = session.Query(kSlotUserSql, {slot_});
        if (!user.ok()) return user.error();
        if (!user.value().rows.empty()) {
          const auto& row = user.value().rows[0];
          holder_ = LockHolder{row[0].value_or(""), row[1].value_or(""), row[2].value_or(""),
                               row[3].value_or("")};
          return Status::Ok();  // the session ends here, and the lock with it
        }
      }
      session_.emplace(std::move(session));
      return Status::Ok();
    }
    auto who = session.Query(kHolderSql, key);
    if (!who.ok()) return who.error();
    if (who.value().rows.empty()) continue;
    const auto& row = who.value().rows[0];
    holder_ = LockHolder{row[0].value_or(""), row[1].value_or(""), row[2].value_or(""),
                         row[3].value_or("")};
    return Status::Ok();
  }
  holder_ = LockHolder{};  // held, by sessions that come and go
  return Status::Ok();
}

Status PipelineLock::Rename(const std::string& application_name) {
  if (session_) {
    Status status =
        session_->Execute("select set_config('application_name', $1, false)", {application_name});
    // The session keeps its old name: Keep() must know it by that one.
    if (!status.ok()) return status;
  }
  application_name_ = application_name;
  return Status::Ok();
}

PipelineLock::KeepResult PipelineLock::Keep() {
  // The lock lives as long as its session: only a broken connection loses it. A probe
  // that fails on a connection still open (a cancelled statement, a timeout) is no
  // reason to end a session that holds the lock.
  if (session_ && session_->is_open()) {
    if (session_->Query("select 1").ok() || session_->is_open()) return {};
  }
  Status status = Attempt(/*check_slot=*/false);
  if (!status.ok()) return {Kept::kUnreachable, status.error().message()};
  if (taken()) return {Kept::kRetaken, {}};
  // (NAMEDATALEN - 1: the server keeps the first 63 bytes of a name.)
  // The lost session itself may not have ended on the server yet (a broken network
  // path): this process's name on it. Not lost; try again later.
  if (holder_ && holder_->application_name == application_name_.substr(0, 63)) {
    holder_.reset();
    return {Kept::kUnreachable, "the lost session still holds the lock on the server"};
  }
  lost_ = true;
  return {Kept::kLost, {}};
}

}  // namespace pgderive
