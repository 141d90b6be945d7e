#include "migrations/migrations.h"

#include "base/number.h"

namespace pgderive {

Status ApplyMigrations(SqlSession& session) {
  const std::vector<Migration>& all = Migrations();
  auto begun = session.Begin();
  if (!begun.ok()) return begun.error();
  SqlSession::Transaction& tx = begun.value();
  // Rolled back when `tx` goes away uncommitted: on every early return below.
  Status status = tx.Execute(
      "select pg_advisory_xact_lock(hashtext('pgderive.migrations')); "
      "create schema if not exists pgderive; "
      "create table if not exists pgderive.migrations (version int primary key, name text not "
      "null, applied_at timestamptz not null default now())");
  Result<PgRows> current =
      status.ok() ? tx.Query("select coalesce(max(version), 0) from pgderive.migrations")
                  : Result<PgRows>(status.error());
  if (!current.ok()) return current.error();
  auto version = ParseServerNumber<int>(current.value().rows[0][0]);
  if (!version.ok()) return Error::Corrupt("pgderive.migrations: " + version.error().message());
  const int at = version.value();
  const int known = all.empty() ? 0 : all.back().version;
  if (at > known) {
    return Error::Permanent("the pgderive metadata in this database is at migration " +
                            std::to_string(at) + ", newer than this pgderive knows (" +
                            std::to_string(known) + "): run a pgderive at least as new");
  }
  for (const Migration& m : all) {
    if (!status.ok()) break;
    if (m.version <= at) continue;
    status = tx.Execute(m.sql);
    if (status.ok()) {
      status = tx.Execute("insert into pgderive.migrations (version, name) values ($1, $2)",
                          {std::to_string(m.version), m.name});
    }
  }
  if (status.ok()) status = tx.Commit();
  if (!status.ok()) {
    return Error(status.error().kind(), "applying migrations: " + status.error().message());
  }
  return Status::Ok();
}

}  // namespace pgderive
