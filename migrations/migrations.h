#pragma once

// pgderive's own metadata in PostgreSQL (migrations/): versioned SQL compiled into the
// binary, applied in order, each once, in one transaction under an advisory lock.

#include <string>
#include <vector>

#include "cdc/pg_connection.h"

namespace pgderive {

struct Migration {
  int version = 0;
  std::string name;  // the file name
  std::string sql;
};

// Every migration of migrations/, in version order (generated from the files).
const std::vector<Migration>& Migrations();

// Applies what `c`'s database lacks. A database at a newer version than this binary
// knows is a permanent error and nothing changes.
Status ApplyMigrations(PgConnection& c);

}  // namespace pgderive
