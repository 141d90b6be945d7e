#pragma once

// Completes a TypeRegistry from pg_type for OIDs it does not know: a domain maps like
// its base type, a user-defined array (e.g. of an enum) element by element; anything
// else stays a string (enums, composites, ranges: their text output).

#include <cstdint>
#include <vector>

#include "cdc/pg_connection.h"
#include "cdc/value_json.h"

namespace pgderive {

Status ResolveTypes(PgConnection& connection, const std::vector<uint32_t>& oids,
                    TypeRegistry& types);

}  // namespace pgderive
