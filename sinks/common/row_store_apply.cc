#include "sinks/common/row_store_apply.h"

#include "config/config_change.h"
#include "sinks/common/json_merge.h"
#include "sinks/common/view_list.h"

namespace pgderive {

ViewState WithDefinition(const RowView& view, ViewState state) {
  state.definition = ViewDefinitionFingerprint(view.config);
  state.first_fill = state.backfilling && (state.first_fill || view.first_fill);
  return state;
}
namespace {

// One insert, update or delete into one view.
Status ApplyRow(const OwnedChange& change, const TypeRegistry& types, RowView& view, EntryKey key,
                SourceRows& source, RowStore& store) {
  auto shape = view.shapes.For(change.relations.front());
  if (!shape.ok()) {
    if (FailView(view, shape.error())) return Status::Ok();  // this view stops, not the store
    return shape.error();
  }
  auto write = shape.value()->WriteFor(change, types, key);
  if (!write.ok()) {
    // A row this view cannot take (a key it cannot read): this view stops, with the
    // reason, not the store.
    if (FailView(view, write.error())) return Status::Ok();
    return write.error();
  }
  RowWrite& w = write.value();
  if (!w.unchanged.empty()) {
    // The previous entry supplies the unchanged columns (the old key's, when the key
    // changed). Before the horizon, the source does (source_rows.h).
    const bool trusted = change.commit_lsn >= source.horizon();
    Result<std::string> merged = Error::Permanent("not taken from the store");
    if (trusted) {
      auto previous = store.Read(view, w.previous());
      if (!previous.ok()) return previous.error();
      // Not filled yet: the row's backfill chunk, read after this change, brings it
      // whole (a chunk whose window holds such an update is read again).
      if (!previous.value() && view.backfilling) return Status::Ok();
      if (previous.value()) merged = MergeUnchanged(w.value, *previous.value(), w.unchanged);
    }
    if (merged.ok()) {
      w.value = std::move(merged).value();
    } else {
      // The store holds no entry to take them from (a replay after a crash meets an
      // entry a later change, already applied, removed; an entry removed behind
      // pgderive's back): read the row again, written as any replayed write.
      auto value =
          ValueFromSource(source, *shape.value(), change, types, view.config.name, w, trusted);
      if (!value.ok()) {
        if (FailView(view, value.error())) return Status::Ok();  // e.g. a key it cannot read
        return value.error();
      }
      if (source.TakeRaised()) {
        Status status = store.RaiseHorizon(source.horizon());
        if (!status.ok()) return status;
      }
      if (value.value()) {
        w.value = std::move(*value.value());
      } else {
        w.put.reset();  // gone from the source: its delete is ahead in the stream
      }
    }
  }
  if (w.remove) {
    Status status = store.Delete(view, std::move(*w.remove), change.commit_lsn);
    if (!status.ok()) return status;
  }
  if (w.put) return store.Put(view, std::move(*w.put), std::move(w.value), change.commit_lsn);
  return Status::Ok();
}

}  // namespace

Status ApplyRows(const BatchGroup& group, Lsn checkpoint, const std::string& store_name,
                 std::span<RowView* const> views, EntryKey key, SourceRows& source,
                 RowStore& store) {
  const TypeRegistry& types = TypesOf(group);
  // The table of the last change's relation: its name is made once per run of changes
  // to one table, not per change (every batch of the group, and so every relation its
  // changes name, lives through the call).
  const RelationSchema* named = nullptr;
  std::string table;
  for (const auto& batch : group) {
    for (const OwnedChange& change : batch->changes) {
      // Already applied: the checkpoint covers every transaction that committed before
      // it (change_batch.h), and replaying in order from there is what makes a retry or
      // a restart exact (OpenSearch's versions would refuse it anyway).
      if (change.commit_lsn < checkpoint) continue;
      Status status = Status::Ok();
      switch (change.op) {
        case ChangeOp::kTruncate:
          for (RowView* view : views) {
            for (const auto& relation : change.relations) {
              if (relation->QualifiedName() == view->table && status.ok()) {
                status = store.Truncate(*view);
              }
            }
          }
          break;
        case ChangeOp::kViewState:
          for (RowView* view : views) {
            if (!change.control->Names(store_name, view->config.name)) continue;
            if (change.control->clear) view->first_fill = false;  // a rebuild begins
            status = store.RecordState(*view, *change.control);
            if (!status.ok()) break;
            view->backfilling = change.control->backfilling;
          }
          break;
        case ChangeOp::kBackfillRow:
          // The row as its chunk read it, for each view the backfill is for; a view whose
          // shape cannot be made stops alone.
          for (RowView* view : views) {
            if (!change.control->Names(store_name, view->config.name) || !view->failed.empty()) {
              continue;
            }
            auto shape = view->shapes.For(change.relations.front());
            if (!shape.ok()) {
              if (FailView(*view, shape.error())) continue;
              return shape.error();
            }
            auto entry = shape.value()->EntryFor(change.new_tuple, types, key);
            if (!entry.ok()) {
              // A row this view cannot take (a key over the store's limit): this view
              // stops, with the reason, as for a streamed row - not the store.
              if (FailView(*view, entry.error())) continue;
              return entry.error();
            }
            status = change.control->remove
                         ? store.Delete(*view, std::move(entry.value().first), change.commit_lsn)
                         : store.PutBackfill(*view, std::move(entry.value().first),
                                             std::move(entry.value().second), change.commit_lsn);
            if (!status.ok()) break;
          }
          break;
        default: {
          if (&change.relation() != named) {
            named = &change.relation();
            table = named->QualifiedName();
          }
          for (RowView* view : views) {
            if (view->table != table || !view->failed.empty()) continue;
            status = ApplyRow(change, types, *view, key, source, store);
            if (!status.ok()) break;
          }
        }
      }
      if (!status.ok()) return status;
    }
  }
  return store.Finish(CheckpointOf(group));
}

}  // namespace pgderive
