#pragma once

// One pipeline, one process. `pgderive run` holds a session advisory lock on the source
// database for its whole life, on a SQL session of its own, before it does anything
// else; a second `run` of the same pipeline finds it taken and is refused with the name
// of the process that holds it. `teardown` takes the same lock while it removes the
// pipeline, so it never removes what a running pipeline uses. `backfill`, `verify`,
// `status` and `tail` never take it: they run beside `run`.
//
//   key: (kRunLockClass, hashtext(slot))  the slot is what two processes of one pipeline
//                                         would fight over (slot names are unique in a
//                                         PostgreSQL cluster)
//   holder: pg_locks joined to pg_stat_activity - the session's application_name
//           ("pgderive run pid 4242 on web1, http 127.0.0.1:9187"), server pid, client
//           address and start
//
// The lock lives as long as its session. When the source restarts the session is gone
// and so is the lock: Keep() connects again and re-takes it; when another process took
// it meanwhile, Keep() says so and the caller stops. Only a broken connection counts as
// a lost session (a probe that fails on an open connection does not).
//
// Closing the gap between a lost session and its re-take:
//   - `run` streams, writes to its stores and confirms the slot only while it holds the
//     lock: when Keep() finds the session lost it stops the stream and pauses its
//     store workers, and it starts the stream again only once the lock is re-taken
//     (pipeline.cc KeepLock). So a walsender on the pipeline's slot means a run that
//     held the lock a moment ago.
//   - Take() (`run`, `teardown`) counts such a walsender as a holder too: with the lock
//     free but the slot active (pg_replication_slots.active_pid), it gives the lock up
//     again and names the walsender's session. `run` waits for such a walsender (up to
//     30 s, TakeAfterWalsender), watching without taking the lock: a process killed a
//     moment ago leaves one until the server notices, and a live run re-takes the lock
//     meanwhile, which then refuses the new run.
//   - A source restart ends both sessions at once (and a walsender may end alone), so
//     `teardown` also waits out the time a running `run` takes to re-take its lock
//     (TakeQuiet, kRunRetakeWindow): it lets the lock go again at once and watches the
//     lock and the slot for that long; a run that re-takes the lock or streams meanwhile
//     is its holder and the teardown is refused. A run re-takes it within its lock check
//     (1 s) and one retry (250 ms) of the source answering again (pipeline.cc).
//   Left: a second `run` started in that moment takes the lock first; the first run,
//   once it finds the lock taken, stops without having written anything meanwhile.

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "base/status.h"
#include "cdc/sql_session.h"

namespace pgderive {

// The first key of pgderive's pipeline locks ("pgdr").
inline constexpr int kRunLockClass = 0x70676472;

// How long after the source answers again a running `run` that lost its lock session has
// re-taken the lock (its lock check every second, a retry every 250 ms, a connection),
// with room to spare: what a `teardown` waits out before it believes no run is alive.
inline constexpr std::chrono::milliseconds kRunRetakeWindow{3000};

// The session that holds a pipeline's lock, as the source reports it (the fields the
// server hides from a role without the right to see them are empty).
struct LockHolder {
  std::string application_name;
  std::string server_pid;
  std::string client;  // its address; "a local socket"
  std::string since;   // when the session started
  // The session streams from the slot but does not hold the lock: a run that lost its
  // lock session a moment ago, or the walsender of a process that is gone (killed) which
  // the server has not ended yet.
  bool walsender_only = false;
  // "pgderive run pid 4242 on web1, http 127.0.0.1:9187 (source session: server pid
  // 5151, from 127.0.0.1, since 2026-11-29 17:20:01+00)"
  std::string Describe() const;
};

class PipelineLock {
 public:
  // Connects a session of its own to the source as `application_name` and tries to take
  // the lock of the pipeline whose slot is `slot`. An error: the source cannot be
  // reached (or refused the statement). Otherwise the lock is taken, or holder() names
  // who has it (a session holding the lock, or one streaming from the slot).
  static Result<PipelineLock> Take(const std::string& dsn, const std::string& slot,
                                   const std::string& application_name);
  // As Take, but the lock is taken only once no process has held it or streamed from the
  // slot for `window` (kRunRetakeWindow): a run that lost its lock session a moment ago
  // (the source restarted) and takes it again in that time is the holder. Meanwhile the
  // lock is let go (a run that re-takes it must not find it taken and stop).
  static Result<PipelineLock> TakeQuiet(const std::string& dsn, const std::string& slot,
                                        const std::string& application_name,
                                        std::chrono::milliseconds window);

  // As Take, for `run` after a crash: a walsender on the slot without the lock
  // (LockHolder::walsender_only) is waited for, up to `patience`, since a killed process's
  // walsender lingers until the server notices (seconds, while it decodes a large
  // transaction). The lock is taken once the slot is free; a process that holds the lock
  // meanwhile (a live run re-takes it within kRunRetakeWindow) is the holder at once.
  // A lock session of a `run` of this host that is gone (HolderIsGoneHere) is waited for
  // the same way. `waiting` is told, naming the session, when it waits.
  static Result<PipelineLock> TakeAfterWalsender(
      const std::string& dsn, const std::string& slot, const std::string& application_name,
      std::chrono::milliseconds patience, const std::function<void(const LockHolder&)>& waiting);

  PipelineLock(PipelineLock&&) noexcept = default;
  PipelineLock& operator=(PipelineLock&&) noexcept = default;

  bool taken() const { return session_.has_value(); }
  // Who holds it when it is not taken.
  const std::optional<LockHolder>& holder() const { return holder_; }

  // Renames the session (what a refused process reads): once the HTTP port is known.
  // On an error the session keeps its old name, and so does this object.
  Status Rename(const std::string& application_name);

  enum class Kept {
    kHeld,        // the session holds it still
    kRetaken,     // the session was lost (the source restarted); a new one took it again
    kLost,        // the session was lost and another process took the lock: holder()
    kUnreachable  // the session was lost and the source cannot be reached yet (error)
  };
  struct KeepResult {
    Kept kept = Kept::kHeld;
    std::string error;  // kUnreachable: why
  };
  // Checks that the lock is still held, re-taking it after a lost session.
  KeepResult Keep();
  // Whether Keep found the lock taken by another process: this one must stop writing,
  // for good (a configuration generation does not fall back to the previous one).
  bool lost() const { return lost_; }

 private:
  PipelineLock(std::string dsn, std::string slot, std::string application_name)
      : dsn_(std::move(dsn)),
        slot_(std::move(slot)),
        application_name_(std::move(application_name)) {}
  // Connects and tries to take the lock: sets session_ and holder_. `check_slot`: a
  // walsender on the slot holds the pipeline as well (the lock is given up again).
  Status Attempt(bool check_slot);

  std::string dsn_;
  std::string slot_;
  std::string application_name_;
  std::optional<SqlSession> session_;
  std::optional<LockHolder> holder_;
  bool lost_ = false;
};

// Whether the session holding the lock is that of a `run` of this host whose process no
// longer exists (its application_name, "pgderive run pid N on HOST..."): killed a moment
// ago, its backend not ended yet. TakeAfterWalsender waits for it as for a walsender.
bool HolderIsGoneHere(const LockHolder& holder);

// What `pgderive run` and `teardown` call the process: "pgderive <command> pid N on HOST".
std::string ProcessName(const std::string& command);

}  // namespace pgderive
