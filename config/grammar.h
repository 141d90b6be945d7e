#pragma once

// The user grammars of the configuration file, each parsed once, here: identifiers,
// table names, OpenSearch index names, listen addresses, integers and byte sizes (Redis
// key templates: key_template.h). Each check returns why a text is not valid (for a located
// ConfigProblem), or nullopt. Pure: no YAML, no I/O.

#include <cstdint>
#include <optional>
#include <string>

namespace pgderive {

// [a-z_][a-z0-9_]*
bool IsIdentifier(const std::string& text);
// "products" -> "public.products"; "sales.orders" stays.
std::string Qualify(const std::string& table);
// `table` or `schema.table`, unquoted names: why not, or nullopt.
std::optional<std::string> TableNameProblem(const std::string& text);
// OpenSearch's rules for index names (the REST API refuses the rest).
std::optional<std::string> IndexNameProblem(const std::string& index);
// HOST:PORT ([v6]:PORT), port 1-65535.
bool IsListenAddress(const std::string& text);
// A whole number in [min, max], nothing else in `text`.
std::optional<long long> ParseInteger(const std::string& text, long long min, long long max);

// "1GB", "512MB", "64kB", "100" (bytes) -> bytes; units are PostgreSQL's (powers of
// 1024, B kB MB GB TB, case-insensitive). nullopt when malformed or out of range.
std::optional<uint64_t> ParseByteSize(const std::string& text);

}  // namespace pgderive
