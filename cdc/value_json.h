#pragma once

// PostgreSQL text output -> JSON, exactly as SPEC.md §3 "Value mapping (JSON)" says.
// Pure: the text comes from the stream or a snapshot of a session pinned to
// TimeZone=UTC, DateStyle=ISO, extra_float_digits=3, bytea_output=hex.
//
//   int2/int4/int8/oid          number
//   float4/float8               number; NaN, Infinity, -Infinity as strings
//   numeric                     string, exact ("12.50", "NaN")
//   bool                        true / false
//   json, jsonb                 the JSON value itself
//   date                        "2024-02-29"
//   timestamp                   "2024-02-29T13:45:00.123456"
//   timestamptz                 "2024-02-29T12:45:00.123456Z"
//   bytea                       base64
//   arrays                      JSON arrays, element by element, nested
//   everything else             the text output as a string
//   infinity / -infinity dates and timestamps stay the strings "infinity" / "-infinity".

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/json_text.h"
#include "base/status.h"

namespace pgderive {

enum class JsonKind : uint8_t {
  kString,  // text output as a JSON string (the default for unknown types)
  kInteger,
  kFloat,
  kNumeric,
  kBool,
  kJson,
  kDate,
  kTimestamp,
  kTimestampTz,
  kBytea,
  kArray,
};

struct TypeInfo {
  JsonKind kind = JsonKind::kString;
  uint32_t element_oid = 0;  // kArray: the element type
  char delimiter = ',';      // kArray: the element delimiter (';' for box[])
  uint32_t base_oid = 0;     // a domain: its base type, through every domain; else 0
};

// The type a decision about `oid` is made on: a domain's base type (through domains
// over domains), else `oid` itself.
inline uint32_t BaseTypeOid(uint32_t oid, const TypeInfo& info) {
  return info.base_oid != 0 ? info.base_oid : oid;
}

// Type OID -> how to map it. Knows PostgreSQL's built-in types; the caller adds what
// the catalog says about others (domains -> their base type, user arrays -> their
// element type; ResolveTypes in type_catalog.h). An unknown OID maps as a string.
class TypeRegistry {
 public:
  TypeRegistry();
  const TypeInfo& Lookup(uint32_t oid) const;
  void Add(uint32_t oid, TypeInfo info) { types_[oid] = info; }
  // Adds what `other` knows and this one does not (registries of one source agree).
  void Merge(const TypeRegistry& other) { types_.insert(other.types_.begin(), other.types_.end()); }

 private:
  std::unordered_map<uint32_t, TypeInfo> types_;
};

// Appends the JSON for one non-null value. A value whose text does not parse as its
// type says (a malformed array literal, a timestamptz not in UTC) is an Error naming
// the type and the problem; `out` is then left unchanged.
Status AppendJsonValue(std::string& out, std::string_view text, uint32_t type_oid,
                       const TypeRegistry& types);

// Appends the standard base64 encoding (with padding) of `bytes`.
void AppendBase64(std::string& out, std::string_view bytes);

}  // namespace pgderive
