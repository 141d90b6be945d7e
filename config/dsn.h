#pragma once

// Checks a PostgreSQL connection string (a libpq URI or key=value string) before
// anything connects with it, so that a typo is reported with the configuration's line
// instead of as a connection failure later.

#include <optional>
#include <string>
#include <string_view>

namespace pgderive {

// Why `dsn` cannot be used, or nullopt when it parses and names a host (pgderive never
// falls back to libpq's defaults: a DSN without a host is a mistake). The reason never
// repeats a value of the string: a password may be anywhere in it.
std::optional<std::string> DsnProblem(std::string_view dsn);

}  // namespace pgderive
