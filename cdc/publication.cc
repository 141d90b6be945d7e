#include "cdc/publication.h"

#include <cstdlib>
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

Result<std::shared_ptr<RelationSchema>> DescribeTable(PgConnection& c, const std::string& table) {
  auto [schema_name, name] = SplitTableName(table);
  auto info = c.Query(
      "select c.oid, c.relreplident, n.nspname, c.relname from pg_class c join pg_namespace n "
      "on n.oid = c.relnamespace where n.nspname = " +
      c.QuoteLiteral(schema_name) + " and c.relname = " + c.QuoteLiteral(name));
  if (!info.ok()) return info.error();
  if (info.value().rows.size() != 1) {
    return Error::Permanent("table " + table + " does not exist");
  }
  const auto& row = info.value().rows[0];
  const std::string oid = row[0].value_or("0");
  auto columns = c.Query(
      "select a.attname, a.atttypid, a.atttypmod, case c.relreplident "
      "when 'f' then true when 'n' then false "
      "else exists (select from pg_index i where i.indrelid = c.oid and a.attnum = any(i.indkey) "
      "and (case c.relreplident when 'i' then i.indisreplident else i.indisprimary end)) end "
      "from pg_attribute a join pg_class c on c.oid = a.attrelid where a.attrelid = " +
      oid + " and a.attnum > 0 and not a.attisdropped and a.attgenerated = '' order by a.attnum");
  if (!columns.ok()) return columns.error();
  auto schema = std::make_shared<RelationSchema>();
  schema->id = RelationId{static_cast<uint32_t>(std::strtoul(oid.c_str(), nullptr, 10))};
  schema->replica_identity = row[1] ? (*row[1])[0] : 'd';
  schema->nspname = row[2].value_or("");
  schema->relname = row[3].value_or("");
  for (const auto& column : columns.value().rows) {
    ColumnSchema col;
    col.name = column[0].value_or("");
    col.type_oid =
        static_cast<uint32_t>(std::strtoul(column[1].value_or("0").c_str(), nullptr, 10));
    col.typmod = column[2] ? std::atoi(column[2]->c_str()) : -1;
    col.key = column[3].value_or("f") == "t";
    schema->columns.push_back(std::move(col));
  }
  RenderSchemaJson(*schema);
  return schema;
}

}  // namespace pgderive
