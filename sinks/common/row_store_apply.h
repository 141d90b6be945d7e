#pragma once

// The apply skeleton of the stores that keep one entry per row of a view's table (Redis:
// a key; OpenSearch: a document). ApplyRows walks one group of batches; the store says,
// through RowStore, how an entry is read, put and deleted, and how its writes are sent.
//
//   for each change of the group, in commit order:
//     commit_lsn < checkpoint   skip: already applied (the one place a store decides it)
//     truncate                  Truncate(view)             each view of a truncated table
//     view state                RecordState(view, control) each view the control names
//     backfill row              PutBackfill(view, key, value, lsn) each view named
//     insert, update, delete    per view of the table: the row's write (view_shape.h);
//                               an update that left a TOASTed value out takes it from
//                               Read(view, previous key), else from the source
//                               (source_rows.h; RaiseHorizon records the read);
//                               then Delete (a delete, the old key) and Put
//   Finish(CheckpointOf(group)) the store writes the checkpoint with, or after, the data
//
// A view that cannot take a change (a column it names was dropped, a key it cannot
// read) stops alone (FailView); the store goes on.

#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cdc/change_batch.h"
#include "config/config.h"
#include "sinks/common/source_rows.h"
#include "sinks/common/view_list.h"
#include "sinks/common/view_shape.h"
#include "snapshot/view_state.h"

namespace pgderive {

// What ApplyRows needs of a view; a store's own view type extends it.
struct RowView {
  ViewConfig config;
  std::string table;  // schema.table
  ViewShapes shapes;
  std::string failed;  // why the view stopped (a column it names was dropped)
  // Being backfilled: an entry may not be there yet (an update that leaves a TOASTed
  // value unchanged is skipped; the row's chunk, read later, carries it).
  bool backfilling = false;
  // Its fill under way is its first (ViewState::first_fill): kept in each state written
  // while it is backfilling; a rebuild (a view state that clears) ends it.
  bool first_fill = false;
};

// `state` as a store records it for `view`: with the fingerprint of the view's definition
// (config/config_change.h), which a start compares with the file's, and whether the fill
// under way is the view's first.
ViewState WithDefinition(const RowView& view, ViewState state);

// The store's side of one Apply. Writes may be queued and sent in Finish, but Read
// must see every write queued before it.
class RowStore {
 public:
  virtual ~RowStore() = default;
  // The entry `key` of `view` as it stands after the writes before it; nullopt when
  // there is none.
  virtual Result<std::optional<std::string>> Read(RowView& view, const std::string& key) = 0;
  // Writes the entry `key` with the JSON object `value`; `lsn`: the change's commit LSN.
  virtual Status Put(RowView& view, std::string key, std::string value, Lsn lsn) = 0;
  // A backfill row: a store that rebuilds a view beside the one readers see (OpenSearch)
  // writes it only into the one being built; the stream's writes go to both.
  virtual Status PutBackfill(RowView& view, std::string key, std::string value, Lsn lsn) {
    return Put(view, std::move(key), std::move(value), lsn);
  }
  virtual Status Delete(RowView& view, std::string key, Lsn lsn) = 0;
  // Removes every entry of the view.
  virtual Status Truncate(RowView& view) = 0;
  // Records the view's state `control` sets (removing its entries first when it says
  // clear), with the data it describes.
  virtual Status RecordState(RowView& view, const ViewControl& control) = 0;
  // A row was read again from the source: its horizon (source_rows.h) is recorded before
  // or with the data read.
  virtual Status RaiseHorizon(Lsn horizon) = 0;
  // Sends what is queued, with the checkpoint when the group completes a transaction.
  virtual Status Finish(std::optional<Lsn> checkpoint) = 0;
};

// Applies `group` to `views` of the store `store_name` (entries keyed as `key`), skipping
// every change with commit_lsn < `checkpoint`; rows lacking a value are read from
// `source`. Ends with store.Finish(CheckpointOf(group)).
Status ApplyRows(const BatchGroup& group, Lsn checkpoint, const std::string& store_name,
                 std::span<RowView* const> views, EntryKey key, SourceRows& source,
                 RowStore& store);

// ViewInspector::Expected of a store of this kind: the entry `row` makes in `view_name`
// (keyed as `key`), or nullopt when that view does not read `schema`'s table. `mutex`
// guards `views`; the entry is made without it.
template <typename View>
Result<std::optional<std::pair<std::string, std::string>>> ExpectedRowEntry(
    std::mutex& mutex, const std::vector<std::unique_ptr<View>>& views,
    const std::string& view_name, const std::shared_ptr<const RelationSchema>& schema,
    const TupleData& row, const TypeRegistry& types, EntryKey key) {
  std::shared_ptr<const ViewShape> shape;
  {
    std::lock_guard lock(mutex);
    View* view = FindView(views, view_name);
    if (view == nullptr || view->table != schema->QualifiedName()) {
      return std::optional<std::pair<std::string, std::string>>();
    }
    auto made = view->shapes.For(schema);
    if (!made.ok()) return made.error();
    shape = made.value();
  }
  auto entry = shape->EntryFor(row, types, key);
  if (!entry.ok()) return entry.error();
  return std::optional<std::pair<std::string, std::string>>(std::move(entry).value());
}

}  // namespace pgderive
