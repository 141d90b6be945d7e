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
// The other way, for people: 4194304 -> "4MB", 1610612736 -> "1.5GB", 900 -> "900B"
// (the largest unit the size reaches, one decimal when not whole; ParseByteSize reads
// the whole ones back).
std::string FormatByteSize(uint64_t bytes);
// "1h", "30m", "90s", "2d", "0" (seconds) -> seconds. nullopt when malformed or out of
// range (above 10 years).
std::optional<uint64_t> ParseDuration(const std::string& text);

}  // namespace pgderive
