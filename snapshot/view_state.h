#pragma once

// A view's state as its store records it (SPEC.md §1.4): live, or being backfilled -
// then how far, so that a restart resumes rather than starts over - and the table's
// columns it was filled with, so that a view that follows its table is backfilled again
// when they change, even while pgderive was stopped.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cdc/change_stream.h"

namespace pgderive {

struct ViewState {
  bool backfilling = false;
  // The key (JSON array of the key columns' text output) of the last row filled.
  std::optional<std::string> after;
  std::vector<std::string> columns;  // ColumnsOf(the table's schema)
  // The OID of the table the view was filled from (0: not recorded): a table dropped and
  // created again under the same name, while pgderive was stopped, is another table.
  uint32_t table_oid = 0;
  // The view's definition fingerprint (ViewDefinitionFingerprint) when it was filled;
  // empty: not recorded (a state an older pgderive wrote, taken as unchanged).
  std::string definition = {};
  // The store's generation of the view's data (0: none recorded): a rebuild begins the
  // next one. A Redis view names its rebuild's mark after it (redis_sink.h).
  uint64_t generation = 0;
  // The rebuild filling the view ends by removing the entries it did not write (the
  // entries were kept for readers meanwhile, not removed first).
  bool sweep = false;

  std::string ToJson() const;
  // nullopt: not a state this version wrote.
  static std::optional<ViewState> FromJson(std::string_view json);
};

// A table's columns as "name type_oid", in order (what a following view's shape
// depends on).
std::vector<std::string> ColumnsOf(const RelationSchema& schema);

}  // namespace pgderive
