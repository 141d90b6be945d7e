#pragma once

// Completes a TypeRegistry from pg_type for OIDs it does not know: a domain maps like
// its base type, a user-defined array (e.g. of an enum) element by element; anything
// else stays a string (enums, composites, ranges: their text output).

#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "cdc/change_stream.h"
#include "cdc/pg_connection.h"
#include "cdc/value_json.h"

namespace pgderive {

Status ResolveTypes(PgConnection& connection, const std::vector<uint32_t>& oids,
                    TypeRegistry& types);

// Learns the types of each schema's columns once. The registry is shared (immutable)
// with batches in flight and with worker threads, so learning a new type makes a new
// registry rather than changing the one they hold.
class TypeLearner {
 public:
  explicit TypeLearner(PgConnection& sql) : sql_(sql), types_(std::make_shared<TypeRegistry>()) {}
  Status Learn(const std::vector<ColumnSchema>& columns);
  std::shared_ptr<const TypeRegistry> types() const { return types_; }

 private:
  PgConnection& sql_;
  std::shared_ptr<const TypeRegistry> types_;
  std::set<uint32_t> attempted_;
};

}  // namespace pgderive
