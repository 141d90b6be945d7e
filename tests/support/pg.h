#pragma once

// PostgreSQL helpers for tests: each throws std::runtime_error naming the statement and
// the error, so a failing setup step fails the test with its cause.

#include <string>

#include "cdc/pg_connection.h"

namespace pgderive::testing {

PgConnection MustConnect(const std::string& dsn,
                         PgConnection::Mode mode = PgConnection::Mode::kSql);
void MustExecute(PgConnection& connection, const std::string& sql);
// The first column of the first row ("<null>" for NULL).
std::string Scalar(PgConnection& connection, const std::string& sql);

}  // namespace pgderive::testing
