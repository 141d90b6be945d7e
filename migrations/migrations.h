#pragma once

// pgderive's own metadata in PostgreSQL (migrations/): versioned SQL compiled into the
// binary, applied in order, each once, in one transaction under an advisory lock.

#include <string>
#include <vector>

#include "cdc/sql_session.h"

namespace pgderive {

struct Migration {
  int version = 0;
  std::string name;  // the file name
  std::string sql;
};

// Every migration of migrations/, in version order (generated from the files).
const std::vector<Migration>& Migrations();

// Applies what `session`'s database lacks, in one transaction of it. A database at a
// newer version than this binary knows is a permanent error and nothing changes.
Status ApplyMigrations(SqlSession& session);

}  // namespace pgderive
