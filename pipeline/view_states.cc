#include "pipeline/view_states.h"

#include "base/retry.h"
#include "config/config_change.h"

namespace pgderive {
namespace {

Error InStore(const Sink& sink, const Error& error) {
  return Error(error.kind(), "store " + sink.name() + ": " + error.message());
}

}  // namespace

std::vector<BackfillView> BackfillViewsOf(const Config& config,
                                          std::span<const std::unique_ptr<Sink>> sinks) {
  std::vector<BackfillView> out;
  for (const ViewConfig& view : config.views) {
    for (const auto& sink : sinks) {
      if (sink->name() != view.store) continue;
      BackfillView v{view.store,
                     view.name,
                     view.from,
                     sink->backfills_rows(),
                     !view.columns.has_value(),
                     ViewDefinitionFingerprint(view)};
      if (!v.rows) {
        // A postgres view: the mirrors of the tables it reads (a request refills them).
        for (const auto& [name, tables] : sink->view_sources()) {
          if (name != view.name) continue;
          for (const std::string& table : tables) v.fills.push_back(TableFillName(table));
        }
      }
      out.push_back(std::move(v));
    }
  }
  // A postgres store's mirrors: filled row by row, with the table's columns as they are.
  for (const auto& sink : sinks) {
    for (const auto& [name, table] : sink->table_fills()) {
      out.push_back(BackfillView{sink->name(), name, table, /*rows=*/true, /*follows=*/false});
    }
  }
  return out;
}

ViewStart PlanViewStart(const BackfillView& view,
                        const std::optional<std::map<std::string, ViewState>>& states,
                        const std::vector<std::string>& columns, uint32_t oid, bool redefined,
                        bool fill) {
  ViewStart start;
  if (fill) {
    // A rebuild of the view begins: backfilling from the start, never live before its
    // fill completed.
    start.why = ViewStart::Why::kFill;
    start.write = ViewState{true, std::nullopt, columns, oid, view.definition};
    start.clear = true;
    start.backfill = true;
    return start;
  }
  if (!states) {
    // Filled by a pgderive that kept no per-view state: live, recorded as such.
    start.why = ViewStart::Why::kUnrecorded;
    start.write = ViewState{false, std::nullopt, columns, oid, view.definition};
    return start;
  }
  const ViewState* state = nullptr;
  if (auto it = states->find(view.view); it != states->end()) state = &it->second;
  // A following view must not end with rows of two shapes.
  const bool reshaped =
      state != nullptr && view.follows && !state->columns.empty() && state->columns != columns;
  // A table dropped and created again under the same name while pgderive was stopped
  // (or before it noticed): the view holds rows of a table that is gone.
  const bool replaced = state != nullptr && state->table_oid != 0 && state->table_oid != oid;
  // Defined otherwise than when it was filled: a reload says so, or the definition its
  // store recorded (a change made while pgderive was stopped). A state without one (an
  // older pgderive wrote it) is taken as unchanged.
  const bool other_definition = state != nullptr && !state->definition.empty() &&
                                !view.definition.empty() && state->definition != view.definition;
  start.reshaped = reshaped;
  if (state != nullptr) start.recorded_oid = state->table_oid;
  if (state != nullptr && !replaced && (redefined || other_definition || state->removed)) {
    // Another definition: its data is of the old one. Or it was out of the configuration
    // for a while: the rows changed meanwhile are not in it. A rebuild begins (clear:
    // each store rebuilds without removing what readers see, sinks/common/sink.h).
    start.why = state->removed ? ViewStart::Why::kReturned : ViewStart::Why::kRedefined;
    start.write = ViewState{true, std::nullopt, columns, oid, view.definition};
    start.clear = true;
    start.backfill = true;
  } else if (state == nullptr || replaced) {
    start.why = replaced ? ViewStart::Why::kReplaced : ViewStart::Why::kNew;
    start.write = ViewState{true, std::nullopt, columns, oid, view.definition};
    start.clear = true;
    start.backfill = true;
    // A view new to its store has nothing served yet (a replaced table's view serves the
    // old rows until its rebuild ends).
    start.first_fill = !replaced;
    start.write->first_fill = start.first_fill;
  } else if (state->backfilling) {
    start.why = ViewStart::Why::kResume;
    start.backfill = true;
    start.first_fill = state->first_fill;
    if (!reshaped) start.after = state->after;
  } else if (reshaped) {
    start.why = ViewStart::Why::kReshaped;
    start.write = ViewState{true, std::nullopt, columns, oid, view.definition};
    start.backfill = true;
  } else if (!state->backfilling && state->definition.empty() && !view.definition.empty()) {
    // Live, recorded without its definition: taken as unchanged, recorded with it.
    start.write = *state;
    start.write->definition = view.definition;
  }
  return start;
}

Status ReconcileViewStates(
    std::span<const std::unique_ptr<Sink>> sinks, const std::vector<BackfillView>& views,
    const std::map<std::string, std::shared_ptr<const RelationSchema>>& shapes,
    const ViewBackfills& backfills, const std::function<bool()>& stopped, Logger& logger,
    const std::function<void(const std::string&)>& info, const std::set<std::string>& redefined,
    const std::map<std::string, StoreFill>& fill) {
  for (const auto& sink : sinks) {
    const auto retry_log = [&](const std::string& m) { info("store " + sink->name() + ": " + m); };
    auto marked = RetryTransient([&] { return sink->MarkRemovedViews(); }, stopped, retry_log);
    if (!marked.ok()) return InStore(*sink, marked.error());
    for (const std::string& view : marked.value()) {
      info("view " + view + " is no longer in the configuration: store " + sink->name() +
           " records it removed (no longer kept current; rebuilt should it come back)");
    }
    if (!sink->backfills_rows() && sink->table_fills().empty()) continue;
    const auto filled = fill.find(sink->name());
    Result<std::optional<std::map<std::string, ViewState>>> states =
        std::optional<std::map<std::string, ViewState>>();
    if (filled == fill.end()) {
      states = RetryTransient([&] { return sink->ReadViewStates(); }, stopped, retry_log);
    }
    if (!states.ok()) return InStore(*sink, states.error());
    for (const BackfillView& v : views) {
      // A postgres store's views are built from its mirrors, which are filled instead.
      if (v.store != sink->name() || !v.rows) continue;
      const RelationSchema& shape = *shapes.at(v.table);
      const std::vector<std::string> columns = ColumnsOf(shape);
      const uint32_t oid = shape.id.value;
      backfills.set_columns(v.store, v.view, columns);
      ViewStart start = PlanViewStart(v, states.value(), columns, oid, redefined.contains(v.view),
                                      filled != fill.end());
      if (filled != fill.end() && !filled->second.clear) start.clear = false;
      if (filled != fill.end() && filled->second.first_fill) {
        start.first_fill = true;
        start.write->first_fill = true;
      }
      // A postgres store's mirror is named after its table.
      const std::string label = IsTableFill(v.view)
                                    ? "the mirror of " + v.table + " in store " + v.store
                                    : "view " + v.view;
      switch (start.why) {
        case ViewStart::Why::kFill:
          info(label + " is filled from the start (" + filled->second.why +
               "): backfilling while streaming; not live until it is complete");
          break;
        case ViewStart::Why::kReplaced:
          logger.Warn("table " + v.table + " was replaced by another of the same name (OID " +
                          std::to_string(start.recorded_oid) + ", now " + std::to_string(oid) +
                          "): view " + v.view + " is emptied and filled from the new table",
                      {{"store", v.store}, {"view", v.view}, {"table", v.table}});
          break;
        case ViewStart::Why::kNew:
          info(label + " is new to store " + v.store + ": backfilling it while streaming");
          break;
        case ViewStart::Why::kResume:
          info(label + " was being backfilled: resuming after " +
               (start.reshaped ? std::string("the start (its table's columns changed)")
                               : start.after.value_or("the start")));
          break;
        case ViewStart::Why::kRedefined:
          info("the definition of view " + v.view + " changed: rebuilding it while streaming");
          break;
        case ViewStart::Why::kReturned:
          info("view " + v.view +
               " is back in the configuration after it was removed (its "
               "rows may have changed meanwhile): rebuilding it while streaming");
          break;
        case ViewStart::Why::kReshaped:
          info("the columns of " + v.table + " changed while stopped: backfilling view " + v.view);
          break;
        case ViewStart::Why::kLive:
        case ViewStart::Why::kUnrecorded:
          break;
      }
      if (start.write) {
        Status status =
            RetryTransient([&] { return sink->WriteViewState(v.view, *start.write, start.clear); },
                           stopped, retry_log);
        if (!status.ok()) return InStore(*sink, status.error());
      }
      if (start.backfill) backfills.add(v.store, v.table, {v.view}, start.after);
      if (start.backfill && start.first_fill && backfills.first_fill) {
        backfills.first_fill(v.store, v.view);
      }
    }
  }
  return Status::Ok();
}

}  // namespace pgderive
