#pragma once

// The source side of a pipeline: the tables views read must exist and have a replica
// identity PostgreSQL can use to name a row in updates and deletes, and the publication
// must publish them with every operation.

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cdc/change_stream.h"
#include "cdc/sql_session.h"

namespace pgderive {

// Why a relation cannot be published (a view, a materialized view, a foreign, unlogged
// or temporary table), with the way out; nullopt for a table PostgreSQL publishes.
// `relkind` and `relpersistence` as in pg_class.
std::optional<std::string> WhyNotPublishable(char relkind, char relpersistence,
                                             const std::string& table, const std::string& quoted);

// Every table ("schema.table") must exist, be publishable (WhyNotPublishable) and have a
// primary key, a REPLICA IDENTITY
// USING INDEX, or REPLICA IDENTITY FULL. One permanent Error lists every table at fault
// with the statement that fixes it. Reads only.
Status CheckSourceTables(SqlRunner& connection, const std::vector<std::string>& tables);

// The tables `publication` publishes, as PostgreSQL reports them (pg_publication_tables)
// and as its members (listed, or in a schema listed).
Result<std::set<std::string>> PublicationMembers(SqlRunner& connection,
                                                 const std::string& publication);

// Creates `publication` for `tables` when missing, publishing through partition roots
// (publish_via_partition_root: a partitioned table's changes arrive under its own name,
// whichever partition holds the row); sets that on an existing one; adds the tables it
// lacks; refuses a publication that does not publish insert, update, delete and
// truncate.
Status EnsurePublication(SqlRunner& connection, const std::string& publication,
                         const std::vector<std::string>& tables);

// The stored generated columns of `table`: (name, generation expression), in order.
// PostgreSQL (before 18) does not publish them: pgderive cannot follow their values.
Result<std::vector<std::pair<std::string, std::string>>> GeneratedColumns(SqlRunner& connection,
                                                                          const std::string& table);
// The reason a view cannot read a generated column (the way out is the caller's).
std::string GeneratedColumnProblem(const std::string& table, const std::string& column,
                                   const std::string& expression);

// The table's shape as pgoutput describes it in a Relation message: no dropped or
// generated columns, the table's OID as relation id. Key flags name the row's key (see
// RowKeyColumns), not pgoutput's identity flags, which mark every column under FULL.
// Errors name the table when it does not exist.
Result<std::shared_ptr<RelationSchema>> DescribeTable(SqlRunner& connection,
                                                      const std::string& table);

// What identifies a source table now: its OID (0: no table of that name), whether the
// publication publishes it, and its leaf partitions' OIDs ("" for a table that has none).
// A table dropped and created again, renamed away, removed from the publication, or a
// partitioned table whose partitions were attached, detached or dropped changed rows
// without a change in the stream.
struct TableIdentity {
  uint32_t oid = 0;
  bool published = false;
  std::string partitions;  // comma-separated, ascending
  // Each leaf partition's OID and file node ("oid:filenode", comma-separated): TRUNCATE
  // of one partition gives it a new file node and, published through the root, no
  // change in the stream (PostgreSQL's pgoutput skips it).
  std::string storage;
};
Result<std::map<std::string, TableIdentity>> ReadTableIdentities(
    SqlRunner& connection, const std::string& publication, const std::vector<std::string>& tables);
// Whether one of `partitions` (comma-separated OIDs) holds rows, or no longer exists.
Result<bool> PartitionsHoldRows(SqlRunner& connection, const std::string& partitions);

// Changes of a partition that arrive under the partition's own name - WAL decoded
// before the publication published through its root (a publication made by an older
// pgderive, or by hand) - belong to the partitioned table a view reads: this finds that
// table's shape and how the partition's columns map onto it (by name: a partition
// attached with another column order or dropped columns still maps). Runs on the
// stream thread, with its catalog connection.
class PartitionRoots {
 public:
  struct Mapping {
    std::shared_ptr<const RelationSchema> root;
    std::vector<int> from;  // for each root column, the partition's column (-1: none)
  };
  PartitionRoots(SqlRunner& connection, std::vector<std::string> tables);
  // nullptr when `schema` is a table the views read, or no partition of one.
  Result<const Mapping*> Find(const std::shared_ptr<const RelationSchema>& schema);

 private:
  SqlRunner& connection_;
  std::set<std::string> tables_;
  // Each schema looked at once (kept, so that its address is never another's).
  std::map<const RelationSchema*,
           std::pair<std::shared_ptr<const RelationSchema>, std::optional<Mapping>>>
      cache_;
};

// The columns that key a row of `relation` everywhere pgderive names one (a Redis key
// template's columns, an OpenSearch _id, a postgres mirror's primary key, backfill
// chunks, verify): the index of REPLICA IDENTITY USING INDEX, else the primary key -
// also under REPLICA IDENTITY FULL, which only adds the whole old row to updates and
// deletes. Empty for a table with neither (FULL without a primary key: views refuse
// it) or with REPLICA IDENTITY NOTHING.
Result<std::vector<std::string>> RowKeyColumns(SqlRunner& connection, RelationId relation);

}  // namespace pgderive
