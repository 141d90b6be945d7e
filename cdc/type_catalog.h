#pragma once

// Completes a TypeRegistry from pg_type for OIDs it does not know: a domain maps like
// its base type, a user-defined array (e.g. of an enum) element by element; anything
// else stays a string (enums, composites, ranges: their text output).

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "cdc/change_stream.h"
#include "cdc/sql_session.h"
#include "cdc/value_json.h"

namespace pgderive {

Status ResolveTypes(SqlRunner& connection, const std::vector<uint32_t>& oids, TypeRegistry& types);

// What pg_type says about one type.
struct CatalogType {
  bool domain = false;
  uint32_t base = 0;  // typbasetype of a domain
  bool array = false;
  uint32_t element = 0;  // typelem of an array
  char delimiter = ',';
};

// The pure part of ResolveTypes: adds to `types` what `catalog` (pg_type rows by OID,
// every domain base and array element they name included) says about the types
// `types` does not know. A domain takes its base type's mapping and records the base
// (TypeInfo::base_oid, through domains over domains), so that every decision made from
// a column's type - JSON rendering, the OpenSearch mapping, verify - is made on the
// base type; an array maps element by element, its element resolved the same way
// (arrays of domains, domains over arrays).
void AddCatalogTypes(const std::map<uint32_t, CatalogType>& catalog, TypeRegistry& types);

// Learns the types of each schema's columns once. The registry is shared (immutable)
// with batches in flight and with worker threads, so learning a new type makes a new
// registry rather than changing the one they hold.
class TypeLearner {
 public:
  explicit TypeLearner(SqlRunner& sql) : sql_(sql), types_(std::make_shared<TypeRegistry>()) {}
  Status Learn(const std::vector<ColumnSchema>& columns);
  std::shared_ptr<const TypeRegistry> types() const { return types_; }

 private:
  SqlRunner& sql_;
  std::shared_ptr<const TypeRegistry> types_;
  std::set<uint32_t> attempted_;
};

}  // namespace pgderive
