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
  // The view went out of the configuration (a reload or a restart without it): the
  // stream no longer keeps its data current, so it is rebuilt should it come back.
  // Recorded as the state "removed" (neither live nor backfilling).
  bool removed = false;
  // The fill under way is the view's first: readers have nothing of it yet (a new view,
  // a first start), so the pipeline is not ready until it ends. A rebuild, which keeps
  // serving what the view held, is not one.
  bool first_fill = false;

  std::string ToJson() const;
  // nullopt: not a state this version wrote.
  static std::optional<ViewState> FromJson(std::string_view json);
};

// A store whose views are queries (postgres) keeps a copy of each source table they read
// (a mirror), filled by the backfill like a view of its own that reads the table. Its
// name as the backfill and the store's recorded states know it ("mirror schema.table";
// no configured view name holds a space).
inline std::string TableFillName(const std::string& table) { return "mirror " + table; }
inline bool IsTableFill(std::string_view name) { return name.starts_with("mirror "); }

// A table's columns as "name type_oid", in order (what a following view's shape
// depends on).
std::vector<std::string> ColumnsOf(const RelationSchema& schema);

}  // namespace pgderive
