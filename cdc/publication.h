#pragma once

// The source side of a pipeline: the tables views read must exist and have a replica
// identity PostgreSQL can use to name a row in updates and deletes, and the publication
// must publish them with every operation.

#include <string>
#include <vector>

#include "cdc/change_stream.h"
#include "cdc/pg_connection.h"

namespace pgderive {

// Every table ("schema.table") must exist and have a primary key, a REPLICA IDENTITY
// USING INDEX, or REPLICA IDENTITY FULL. One permanent Error lists every table at fault
// with the statement that fixes it. Reads only.
Status CheckSourceTables(PgConnection& connection, const std::vector<std::string>& tables);

// Creates `publication` for `tables` when missing; adds the tables it lacks when it
// exists; refuses a publication that does not publish insert, update, delete and
// truncate.
Status EnsurePublication(PgConnection& connection, const std::string& publication,
                         const std::vector<std::string>& tables);

// The table's shape as pgoutput describes it in a Relation message: no dropped or
// generated columns, key flags from the replica identity (the primary key, the index
// of USING INDEX, every column for FULL), the table's OID as relation id. Errors name
// the table when it does not exist.
Result<std::shared_ptr<RelationSchema>> DescribeTable(PgConnection& connection,
                                                      const std::string& table);

}  // namespace pgderive
