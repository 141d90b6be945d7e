#include "tests/support/pg.h"

#include <stdexcept>

namespace pgderive::testing {

PgConnection MustConnect(const std::string& dsn, PgConnection::Mode mode) {
  auto connection = PgConnection::Connect(dsn, mode, "pgderive-test");
  if (!connection.ok()) throw std::runtime_error(connection.error().ToString());
  return std::move(connection).value();
}

void MustExecute(PgConnection& connection, const std::string& sql) {
  Status status = connection.Execute(sql);
  if (!status.ok()) throw std::runtime_error(sql + ": " + status.error().ToString());
}

std::string Scalar(PgConnection& connection, const std::string& sql) {
  auto rows = connection.Query(sql);
  if (!rows.ok()) throw std::runtime_error(sql + ": " + rows.error().ToString());
  if (rows.value().rows.empty() || rows.value().rows[0].empty()) {
    throw std::runtime_error(sql + ": no value");
  }
  return rows.value().rows[0][0].value_or("<null>");
}

}  // namespace pgderive::testing
