#include "pipeline/run_lock.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <csignal>
#include <thread>
#include <utility>

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

bool HolderIsGoneHere(const LockHolder& holder) {
  // "pgderive run pid 4242 on web1, http 127.0.0.1:9187" (ProcessName, then Rename).
  const std::string& name = holder.application_name;
  const std::string prefix = "pgderive run pid ";
  if (!name.starts_with(prefix)) return false;
  size_t at = prefix.size();
  long long pid = 0;
  while (at < name.size() && std::isdigit(static_cast<unsigned char>(name[at])) && pid < 1 << 30) {
    pid = pid * 10 + (name[at++] - '0');
  }
  char host[HOST_NAME_MAX + 1] = {};
  if (pid <= 0 || gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return false;
  const std::string on = std::string(" on ") + host;
  if (name.compare(at, on.size(), on) != 0) return false;
  const size_t end = at + on.size();
  if (end != name.size() && name[end] != ',') return false;  // another host's name, longer
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

Result<PipelineLock> PipelineLock::TakeAfterWalsender(
    const std::string& dsn, const std::string& slot, const std::string& application_name,
    std::chrono::milliseconds patience, const std::function<void(const LockHolder&)>& waiting) {
  auto taken = Take(dsn, slot, application_name);
  if (taken.ok() && !taken.value().taken() && taken.value().holder() &&
      HolderIsGoneHere(*taken.value().holder())) {
    // The lock session of a process of this host that is gone (killed a moment ago): its
    // backend ends once the server notices. Nothing else can hold the lock meanwhile.
    if (waiting) waiting(*taken.value().holder());
    const auto deadline = std::chrono::steady_clock::now() + patience;
    while (taken.ok() && !taken.value().taken() && taken.value().holder() &&
           HolderIsGoneHere(*taken.value().holder()) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      taken = Take(dsn, slot, application_name);
    }
  }
  if (!taken.ok() || taken.value().taken() || !taken.value().holder() ||
      !taken.value().holder()->walsender_only) {
    return taken;
  }
  if (waiting) waiting(*taken.value().holder());
  // Watched without taking the lock: a live run re-taking it must never find it taken.
  auto connected = SqlSession::Connect(dsn, application_name);
  if (!connected.ok()) return connected.error();
  SqlSession watch = std::move(connected).value();
  const SqlParams key{std::to_string(kRunLockClass), slot};
  const auto deadline = std::chrono::steady_clock::now() + patience;
  while (std::chrono::steady_clock::now() < deadline) {
    auto holder = watch.Query(kHolderSql, key);
    if (!holder.ok()) return holder.error();
    if (!holder.value().rows.empty()) break;  // a process holds the lock: Take names it
    auto user = watch.Query(kSlotUserSql, {slot});
    if (!user.ok()) return user.error();
    if (user.value().rows.empty()) break;  // the walsender ended
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Take(dsn, slot, application_name);
}

Result<PipelineLock> PipelineLock::TakeQuiet(const std::string& dsn, const std::string& slot,
                                             const std::string& application_name,
                                             std::chrono::milliseconds window) {
  auto taken = Take(dsn, slot, application_name);
  if (!taken.ok() || !taken.value().taken()) return taken;
  PipelineLock lock = std::move(taken).value();
  // Let go: a run re-taking it now must get it (it would stop if it found it taken).
  SqlSession watch = std::move(*lock.session_);
  lock.session_.reset();
  IgnoreError(watch.Execute("select pg_advisory_unlock($1::int, hashtext($2))",
                            {std::to_string(kRunLockClass), slot}),
              "the lock goes with the session otherwise; the watch below sees a holder");
  const SqlParams key{std::to_string(kRunLockClass), slot};
  const auto deadline = std::chrono::steady_clock::now() + window;
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& [sql, params] : {std::pair<const char*, SqlParams>{kHolderSql, key},
                                      std::pair<const char*, SqlParams>{kSlotUserSql, {slot}}}) {
      auto who = watch.Query(sql, params);
      if (!who.ok()) return who.error();
      if (who.value().rows.empty()) continue;
      const auto& row = who.value().rows[0];
      lock.holder_ = LockHolder{row[0].value_or(""), row[1].value_or(""), row[2].value_or(""),
                                row[3].value_or("")};
      return lock;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
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
                               row[3].value_or(""), /*walsender_only=*/true};
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
