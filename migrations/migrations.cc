#include "migrations/migrations.h"

namespace pgderive {

Status ApplyMigrations(PgConnection& c) {
  const std::vector<Migration>& all = Migrations();
  Status status = c.Execute(
      "begin; select pg_advisory_xact_lock(hashtext('pgderive.migrations')); "
      "create schema if not exists pgderive; "
      "create table if not exists pgderive.migrations (version int primary key, name text not "
      "null, applied_at timestamptz not null default now())");
  Result<PgRows> current =
      status.ok() ? c.Query("select coalesce(max(version), 0) from pgderive.migrations")
                  : Result<PgRows>(status.error());
  if (!current.ok()) {
    IgnoreError(c.Execute("rollback"), "the error above is what counts");
    return current.error();
  }
  const int at = std::stoi(current.value().rows[0][0].value_or("0"));
  const int known = all.empty() ? 0 : all.back().version;
  if (at > known) {
    IgnoreError(c.Execute("rollback"), "nothing was changed");
    return Error::Permanent("the pgderive metadata in this database is at migration " +
                            std::to_string(at) + ", newer than this pgderive knows (" +
                            std::to_string(known) + "): run a pgderive at least as new");
  }
  std::string sql;
  for (const Migration& m : all) {
    if (m.version <= at) continue;
    sql += m.sql + ";\ninsert into pgderive.migrations (version, name) values (" +
           std::to_string(m.version) + ", " + c.QuoteLiteral(m.name) + ");\n";
  }
  status = sql.empty() ? Status::Ok() : c.Execute(sql);
  if (status.ok()) status = c.Execute("commit");
  if (!status.ok()) {
    IgnoreError(c.Execute("rollback"), "the error above is what counts");
    return Error(status.error().kind(), "applying migrations: " + status.error().message());
  }
  return Status::Ok();
}

}  // namespace pgderive
