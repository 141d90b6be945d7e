#pragma once

// Keeping unchanged TOASTed columns (SPEC.md §3): an update that leaves a large value
// untouched does not carry it, so the store's previous value supplies it. The previous
// JSON object's members are taken as raw JSON text (simdjson), never re-encoded, so
// numbers and strings stay exactly as pgderive wrote them.

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pgderive {

// `partial` is a JSON object without the `unchanged` members; `previous` the object
// the store holds (empty: none). Returns `partial` with each unchanged member added
// from `previous` (at the end). A member `previous` lacks is an error: pgderive never
// writes a placeholder.
Result<std::string> MergeUnchanged(std::string_view partial, std::string_view previous,
                                   const std::vector<std::string>& unchanged);

}  // namespace pgderive
