#include "cdc/publication.h"

#include <set>

namespace pgderive {
Status CheckSourceTables(PgConnection& connection, const std::vector<std::string>& tables) {
  std::string problems;
  for (const std::string& table : tables) {
    auto [schema, name] = SplitTableName(table);
    auto rows = connection.Query(
        "select c.relreplident, exists (select 1 from pg_index i where i.indrelid = c.oid and "
        "i.indisprimary) from pg_class c join pg_namespace n on n.oid = c.relnamespace where "
        "c.relkind in ('r', 'p') and n.nspname = " +
        connection.QuoteLiteral(schema) + " and c.relname = " + connection.QuoteLiteral(name));
    if (!rows.ok()) return rows.error();
    if (rows.value().rows.empty()) {
      problems += "\n  table " + table + " does not exist in the source database";
      continue;
    }
    const std::string identity = rows.value().rows[0][0].value_or("d");
    const bool has_primary_key = rows.value().rows[0][1].value_or("f") == "t";
    if (identity == "n") {
      problems += "\n  table " + table +
                  " has REPLICA IDENTITY NOTHING, so its updates and deletes "
                  "cannot be followed; fix: ALTER TABLE " +
                  connection.QuoteTableName(table) +
                  " REPLICA IDENTITY DEFAULT (with a primary key) or REPLICA IDENTITY FULL";
    } else if (identity == "d" && !has_primary_key) {
      problems += "\n  table " + table +
                  " has no primary key, so its updates and deletes "
                  "cannot be followed; fix: add a primary key, or ALTER TABLE " +
                  connection.QuoteTableName(table) + " REPLICA IDENTITY FULL";
    }
  }
  if (problems.empty()) return Status::Ok();
  return Error::Permanent("source tables cannot be captured:" + problems);
}

Status EnsurePublication(PgConnection& connection, const std::string& publication,
                         const std::vector<std::string>& tables) {
  auto existing = connection.Query(
      "select puballtables, pubinsert and pubupdate and pubdelete and pubtruncate from "
      "pg_publication where pubname = " +
      connection.QuoteLiteral(publication));
  if (!existing.ok()) return existing.error();
  if (existing.value().rows.empty()) {
    if (tables.empty()) {
      return Error::Permanent("publication " + publication +
                              " is missing and no view names a table to put in it");
    }
    std::string sql =
        "create publication " + connection.QuoteIdentifier(publication) + " for table ";
    for (size_t i = 0; i < tables.size(); ++i)
      sql += (i ? ", " : "") + connection.QuoteTableName(tables[i]);
    return connection.Execute(sql);
  }
  if (existing.value().rows[0][1].value_or("f") != "t") {
    return Error::Permanent("publication " + publication +
                            " does not publish every operation; fix: ALTER PUBLICATION " +
                            connection.QuoteIdentifier(publication) +
                            " SET (publish = 'insert, update, delete, truncate')");
  }
  if (existing.value().rows[0][0].value_or("f") == "t") return Status::Ok();  // FOR ALL TABLES
  auto published = connection.Query(
      "select schemaname || '.' || tablename from pg_publication_tables where pubname = " +
      connection.QuoteLiteral(publication));
  if (!published.ok()) return published.error();
  std::set<std::string> have;
  for (const auto& row : published.value().rows) have.insert(row[0].value_or(""));
  std::string missing;
  for (const std::string& table : tables) {
    if (!have.contains(table))
      missing += (missing.empty() ? "" : ", ") + connection.QuoteTableName(table);
  }
  if (missing.empty()) return Status::Ok();
  return connection.Execute("alter publication " + connection.QuoteIdentifier(publication) +
                            " add table " + missing);
}

}  // namespace pgderive
