#pragma once

// One tuple as the JSON object of its columns (SPEC.md §3), the shape every view
// writes. Unchanged TOASTed columns are left out of the object and named in
// `unchanged`: a consumer keeps their previous value; they are never written as null.

#include <string>
#include <vector>

#include "cdc/change_stream.h"
#include "cdc/value_json.h"

namespace pgderive {

enum class RowColumns { kAll, kKeyOnly };

// Appends {"col": value, ...} for the columns of `tuple`, which must have one value per
// column of `schema`. kKeyOnly renders only the replica-identity columns (an old key
// 'K' carries nulls for the others).
Status AppendRowJson(std::string& out, const RelationSchema& schema, const TupleData& tuple,
                     const TypeRegistry& types, std::vector<std::string>* unchanged = nullptr,
                     RowColumns which = RowColumns::kAll);

}  // namespace pgderive
