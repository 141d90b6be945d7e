#include "cdc/publication.h"

#include <optional>
#include <set>

#include "base/number.h"
#include "base/table_name.h"

namespace pgderive {
std::optional<std::string> WhyNotPublishable(char relkind, char relpersistence,
                                             const std::string& table, const std::string& quoted) {
  switch (relkind) {
    case 'v':
      return "table " + table +
             " is a view: a view has no changes of its own for PostgreSQL to publish; read "
             "the tables it reads instead (a postgres view can hold its query)";
    case 'm':
      return "table " + table +
             " is a materialized view: PostgreSQL does not publish its refreshes; read the "
             "tables it reads instead (a postgres view can hold its query and keeps it "
             "current)";
    case 'f':
      return "table " + table +
             " is a foreign table: its rows live on another server and its changes are not "
             "in this database's WAL, so PostgreSQL cannot publish them; capture them where "
             "they live";
    case 'r':
    case 'p':
      break;
    default:
      return "relation " + table + " is not a table PostgreSQL can publish (relkind '" +
             std::string(1, relkind) + "')";
  }
  if (relpersistence == 'u') {
    return "table " + table +
           " is UNLOGGED: its changes are not written to the WAL, so PostgreSQL cannot "
           "publish them; fix: ALTER TABLE " +
           quoted + " SET LOGGED";
  }
  if (relpersistence == 't') {
    return "table " + table +
           " is a temporary table: it lives in one session and PostgreSQL cannot publish "
           "it; use a regular table";
  }
  return std::nullopt;
}

Status CheckSourceTables(SqlRunner& connection, const std::vector<std::string>& tables) {
  std::string problems;
  for (const std::string& table : tables) {
    auto [schema, name] = TableName::Parse(table);
    auto rows = connection.Query(
        "select c.relreplident, exists (select 1 from pg_index i where i.indrelid = c.oid and "
        "i.indisprimary), c.relkind, c.relpersistence from pg_class c join pg_namespace n on "
        "n.oid = c.relnamespace where c.relkind in ('r', 'p', 'v', 'm', 'f') and n.nspname = $1 "
        "and c.relname = $2",
        {schema, name});
    if (!rows.ok()) return rows.error();
    if (rows.value().rows.empty()) {
      problems += "\n  table " + table + " does not exist in the source database";
      continue;
    }
    const auto& row = rows.value().rows[0];
    if (auto why = WhyNotPublishable(row[2].value_or("r")[0], row[3].value_or("p")[0], table,
                                     TableName::Parse(table).Quoted())) {
      problems += "\n  " + *why;
      continue;
    }
    const std::string identity = row[0].value_or("d");
    const bool has_primary_key = row[1].value_or("f") == "t";
    if (identity == "n") {
      problems += "\n  table " + table +
                  " has REPLICA IDENTITY NOTHING, so its updates and deletes "
                  "cannot be followed; fix: ALTER TABLE " +
                  TableName::Parse(table).Quoted() +
                  " REPLICA IDENTITY DEFAULT (with a primary key) or REPLICA IDENTITY FULL";
    } else if (identity == "d" && !has_primary_key) {
      problems += "\n  table " + table +
                  " has no primary key, so its updates and deletes "
                  "cannot be followed; fix: add a primary key, or ALTER TABLE " +
                  TableName::Parse(table).Quoted() +
                  " REPLICA IDENTITY USING INDEX <a unique index of NOT NULL columns> "
                  "(REPLICA IDENTITY FULL is enough for tail, but a view needs a key)";
    }
  }
  if (problems.empty()) return Status::Ok();
  return Error::Permanent("source tables cannot be captured:" + problems);
}

Result<std::set<std::string>> PublicationMembers(SqlRunner& connection,
                                                 const std::string& publication) {
  // What PostgreSQL publishes (with publish_via_partition_root: the roots), and what is
  // a member itself (a table listed, or a table of a schema listed): a partitioned table
  // is a member although, without via-root, only its partitions are reported.
  auto rows = connection.Query(
      "select schemaname || '.' || tablename from pg_publication_tables where pubname = $1 "
      "union select n.nspname || '.' || c.relname from pg_publication p join "
      "pg_publication_rel r on r.prpubid = p.oid join pg_class c on c.oid = r.prrelid join "
      "pg_namespace n on n.oid = c.relnamespace where p.pubname = $1 "
      "union select n.nspname || '.' || c.relname from pg_publication p join "
      "pg_publication_namespace s on s.pnpubid = p.oid join pg_class c on c.relnamespace = "
      "s.pnnspid and c.relkind in ('r', 'p') join pg_namespace n on n.oid = c.relnamespace "
      "where p.pubname = $1",
      {publication});
  if (!rows.ok()) return rows.error();
  std::set<std::string> out;
  for (const auto& row : rows.value().rows) out.insert(row[0].value_or(""));
  return out;
}

Status EnsurePublication(SqlRunner& connection, const std::string& publication,
                         const std::vector<std::string>& tables) {
  auto existing = connection.Query(
      "select puballtables, pubinsert and pubupdate and pubdelete and pubtruncate, pubviaroot "
      "from pg_publication where pubname = $1",
      {publication});
  if (!existing.ok()) return existing.error();
  const std::string quoted = connection.QuoteIdentifier(publication);
  if (existing.value().rows.empty()) {
    if (tables.empty()) {
      return Error::Permanent("publication " + publication +
                              " is missing and no view names a table to put in it");
    }
    // Through the root: a partitioned table's changes arrive as the table the views
    // read, whichever partition holds the row (also partitions created later).
    std::string sql = "create publication " + quoted + " for table ";
    for (size_t i = 0; i < tables.size(); ++i)
      sql += (i ? ", " : "") + TableName::Parse(tables[i]).Quoted();
    return connection.Execute(sql + " with (publish_via_partition_root = true)");
  }
  const auto& row = existing.value().rows[0];
  if (row[1].value_or("f") != "t") {
    return Error::Permanent("publication " + publication +
                            " does not publish every operation; fix: ALTER PUBLICATION " + quoted +
                            " SET (publish = 'insert, update, delete, truncate')");
  }
  if (row[2].value_or("f") != "t") {
    // Only a partitioned table needs its changes published through its root; a
    // publication made by someone else (the least-privilege setup) is left as it is
    // otherwise, since only its owner may alter it.
    std::vector<std::string> names;
    for (const std::string& table : tables) names.push_back(TableName::Parse(table).Quoted());
    auto partitioned = connection.Query(
        "select count(*) from pg_class where oid = any($1::regclass[]) and (relkind = 'p' or "
        "relispartition)",
        {SqlTextArray(names)});
    if (!partitioned.ok()) return partitioned.error();
    if (partitioned.value().rows[0][0].value_or("0") != "0") {
      Status status = connection.Execute("alter publication " + quoted +
                                         " set (publish_via_partition_root = true)");
      if (!status.ok()) {
        return Error::Permanent("publication " + publication +
                                " publishes partitioned tables through their partitions, and "
                                "it could not be changed (" +
                                status.error().message() +
                                "); fix, as its owner: ALTER PUBLICATION " + quoted +
                                " SET (publish_via_partition_root = true)");
      }
    }
  }
  if (row[0].value_or("f") == "t") return Status::Ok();  // FOR ALL TABLES
  auto have = PublicationMembers(connection, publication);
  if (!have.ok()) return have.error();
  std::string missing;
  for (const std::string& table : tables) {
    if (!have.value().contains(table))
      missing += (missing.empty() ? "" : ", ") + TableName::Parse(table).Quoted();
  }
  if (missing.empty()) return Status::Ok();
  return connection.Execute("alter publication " + quoted + " add table " + missing);
}

Result<std::vector<std::pair<std::string, std::string>>> GeneratedColumns(
    SqlRunner& connection, const std::string& table) {
  auto rows = connection.Query(
      "select a.attname, pg_get_expr(d.adbin, d.adrelid) from pg_attribute a left join "
      "pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum where a.attrelid = "
      "$1::regclass and a.attnum > 0 and not a.attisdropped and a.attgenerated <> '' order by "
      "a.attnum",
      {TableName::Parse(table).Quoted()});
  if (!rows.ok()) return rows.error();
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& row : rows.value().rows) {
    out.emplace_back(row[0].value_or(""), row[1].value_or(""));
  }
  return out;
}

std::string GeneratedColumnProblem(const std::string& table, const std::string& column,
                                   const std::string& expression) {
  return "column " + column + " of table " + table + " is generated (as " + expression +
         "); PostgreSQL before 18 does not publish generated columns, so pgderive cannot "
         "follow its value";
}

Result<std::shared_ptr<RelationSchema>> DescribeTable(SqlRunner& c, const std::string& table) {
  auto [schema_name, name] = TableName::Parse(table);
  auto info = c.Query(
      "select c.oid, c.relreplident, n.nspname, c.relname from pg_class c join pg_namespace n "
      "on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2",
      {schema_name, name});
  if (!info.ok()) return info.error();
  if (info.value().rows.size() != 1) {
    return Error::Permanent("table " + table + " does not exist");
  }
  const auto& row = info.value().rows[0];
  auto relid = ParseServerNumber<uint32_t>(row[0]);
  if (!relid.ok())
    return Error::Corrupt("pg_class oid of " + table + ": " + relid.error().message());
  const std::string oid = std::to_string(relid.value());
  auto columns = c.Query(
      "select a.attname, a.atttypid, a.atttypmod, case c.relreplident "
      "when 'n' then false "
      "else exists (select from pg_index i where i.indrelid = c.oid and a.attnum = any(i.indkey) "
      "and (case c.relreplident when 'i' then i.indisreplident else i.indisprimary end)) end "
      "from pg_attribute a join pg_class c on c.oid = a.attrelid where a.attrelid = $1::oid "
      "and a.attnum > 0 and not a.attisdropped and a.attgenerated = '' order by a.attnum",
      {oid});
  if (!columns.ok()) return columns.error();
  auto schema = std::make_shared<RelationSchema>();
  schema->id = RelationId{relid.value()};
  schema->replica_identity = row[1] ? (*row[1])[0] : 'd';
  schema->nspname = row[2].value_or("");
  schema->relname = row[3].value_or("");
  for (const auto& column : columns.value().rows) {
    auto type_oid = ParseServerNumber<uint32_t>(column[1]);
    auto typmod = ParseServerNumber<int32_t>(column[2], -1);
    if (!type_oid.ok() || !typmod.ok()) {
      return Error::Corrupt(
          "pg_attribute of " + table + ": " +
          (type_oid.ok() ? typmod.status() : type_oid.status()).error().message());
    }
    ColumnSchema col;
    col.name = column[0].value_or("");
    col.type_oid = type_oid.value();
    col.typmod = typmod.value();
    col.key = column[3].value_or("f") == "t";
    schema->columns.push_back(std::move(col));
  }
  RenderSchemaJson(*schema);
  return schema;
}

Result<std::map<std::string, TableIdentity>> ReadTableIdentities(
    SqlRunner& connection, const std::string& publication, const std::vector<std::string>& tables) {
  std::map<std::string, TableIdentity> out;
  if (tables.empty()) return out;
  auto members = PublicationMembers(connection, publication);
  if (!members.ok()) return members.error();
  std::vector<std::string> names;
  for (const std::string& table : tables) names.push_back(TableName::Parse(table).Quoted());
  auto rows = connection.Query(
      "select t.i, coalesce(c.oid, 0), coalesce((select string_agg(p.relid::oid::text, ',' "
      "order by p.relid::oid) from pg_partition_tree(c.oid) p where p.isleaf and p.relid <> "
      "c.oid), ''), coalesce((select string_agg(p.relid::oid::text || ':' || "
      "coalesce(pg_relation_filenode(p.relid)::text, ''), ',' order by p.relid::oid) from "
      "pg_partition_tree(c.oid) p where p.isleaf and p.relid <> c.oid), '') from "
      "unnest($1::text[]) with ordinality t(name, i) left join pg_class c on c.oid = "
      "to_regclass(t.name)",
      {SqlTextArray(names)});
  if (!rows.ok()) return rows.error();
  for (const auto& row : rows.value().rows) {
    auto ordinal = ParseServerNumber<size_t>(row[0]);
    auto oid = ParseServerNumber<uint32_t>(row[1]);
    if (!ordinal.ok() || !oid.ok()) {
      return Error::Corrupt("table identities: " +
                            (ordinal.ok() ? oid.status() : ordinal.status()).error().message());
    }
    const size_t i = ordinal.value();
    if (i == 0 || i > tables.size()) continue;
    TableIdentity identity;
    identity.oid = oid.value();
    identity.published = identity.oid != 0 && members.value().contains(tables[i - 1]);
    identity.partitions = row[2].value_or("");
    identity.storage = row[3].value_or("");
    out[tables[i - 1]] = identity;
  }
  return out;
}

Result<bool> PartitionsHoldRows(SqlRunner& connection, const std::string& partitions) {
  size_t from = 0;
  while (from < partitions.size()) {
    size_t comma = partitions.find(',', from);
    if (comma == std::string::npos) comma = partitions.size();
    const std::string oid = partitions.substr(from, comma - from);
    from = comma + 1;
    auto name = connection.Query(
        "select n.nspname || '.' || c.relname from pg_class c join "
        "pg_namespace n on n.oid = c.relnamespace where c.oid = $1::oid",
        {oid});
    if (!name.ok()) return name.error();
    if (name.value().rows.empty()) return true;  // dropped with whatever it held
    auto rows =
        connection.Query("select exists (select from only " +
                         TableName::Parse(name.value().rows[0][0].value_or("")).Quoted() + ")");
    if (!rows.ok()) return rows.error();
    if (rows.value().rows[0][0].value_or("t") == "t") return true;
  }
  return false;
}

PartitionRoots::PartitionRoots(SqlRunner& connection, std::vector<std::string> tables)
    : connection_(connection), tables_(tables.begin(), tables.end()) {}

Result<const PartitionRoots::Mapping*> PartitionRoots::Find(
    const std::shared_ptr<const RelationSchema>& schema) {
  auto it = cache_.find(schema.get());
  if (it != cache_.end()) return it->second.second ? &*it->second.second : nullptr;
  std::optional<Mapping> mapping;
  if (!tables_.contains(schema->QualifiedName())) {
    // The nearest ancestor a view reads (pg_partition_ancestors: the partition first).
    auto ancestors = connection_.Query(
        "select n.nspname || '.' || c.relname from pg_partition_ancestors($1::oid::regclass) "
        "with ordinality a(relid, level) join pg_class c on c.oid = a.relid join pg_namespace n "
        "on n.oid = c.relnamespace where a.level > 1 order by a.level",
        {std::to_string(schema->id.value)});
    if (!ancestors.ok()) return ancestors.error();
    for (const auto& row : ancestors.value().rows) {
      const std::string table = row[0].value_or("");
      if (!tables_.contains(table)) continue;
      auto root = DescribeTable(connection_, table);
      if (!root.ok()) return root.error();
      mapping.emplace();
      mapping->root = root.value();
      for (const ColumnSchema& column : root.value()->columns) {
        int from = -1;
        for (size_t i = 0; i < schema->columns.size(); ++i) {
          if (schema->columns[i].name == column.name) from = static_cast<int>(i);
        }
        mapping->from.push_back(from);
      }
      break;
    }
  }
  auto& entry = cache_[schema.get()];
  entry = {schema, std::move(mapping)};
  return entry.second ? &*entry.second : nullptr;
}

Result<std::vector<std::string>> RowKeyColumns(SqlRunner& c, RelationId relation) {
  auto rows = c.Query(
      "select a.attname from pg_class c join pg_index i on i.indrelid = c.oid join pg_attribute "
      "a on a.attrelid = c.oid and a.attnum = any(i.indkey) where c.oid = $1::oid and "
      "c.relreplident <> 'n' and (case c.relreplident when 'i' then i.indisreplident else "
      "i.indisprimary end) order by a.attnum",
      {std::to_string(relation.value)});
  if (!rows.ok()) return rows.error();
  std::vector<std::string> out;
  for (const auto& row : rows.value().rows) out.push_back(row[0].value_or(""));
  return out;
}

}  // namespace pgderive
