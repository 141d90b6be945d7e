#pragma once

// Start-up view states (SPEC.md §1.4): what each view of a store that backfills rows
// (Redis, OpenSearch) - and each mirror of a postgres store (Sink::table_fills), as a
// view of its table - needs before the stream starts, from the state its store recorded.
//
//   store's recorded states --ReadViewStates--> PlanViewStart (pure, per view)
//        --> WriteViewState (live, or backfilling from the start, emptied if new)
//        --> Backfills::Add (new, replaced, interrupted, or reshaped while stopped)
//
//   recorded state              table now                    start does
//   (the store is filled)       -                            backfilling from the start,
//                                                            cleared (a rebuild begins)
//   (the store records none)    -                            record live
//   none for the view           -                            empty, backfill from start
//   any, another table OID      replaced                     empty, backfill from start
//   backfilling, after K        same columns                 resume after K
//   backfilling                 columns changed (follows)    backfill from start
//   live                        columns changed (follows)    record backfilling, backfill
//   live                        same                         nothing
//   any (view redefined: reload) -                           rebuild, backfill from start
//   removed (it was out of the   -                            rebuild, backfill from start
//     configuration meanwhile)
//
// Before that, every store marks removed the views it records that the configuration
// no longer has (Sink::MarkRemovedViews): the stream stops keeping them current.
//
// A store is filled (its recorded states are not read) on a first start, when it is new
// to the pipeline, and when it lost its data (no checkpoint, or one the slot passed: a
// Redis restarted empty) - at start or while the pipeline runs.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "base/log.h"
#include "config/config.h"
#include "sinks/common/sink.h"
#include "snapshot/backfill.h"
#include "snapshot/view_state.h"

namespace pgderive {

// The views of `config` with the store (of `sinks`) that holds them.
std::vector<BackfillView> BackfillViewsOf(const Config& config,
                                          std::span<const std::unique_ptr<Sink>> sinks);

// What a start does with one view.
struct ViewStart {
  enum class Why {
    kLive,
    kUnrecorded,
    kNew,
    kReplaced,
    kResume,
    kReshaped,
    kRedefined,
    kReturned,
    kFill
  };
  Why why = Why::kLive;
  // The state to record before streaming, and whether the view's data is removed first.
  std::optional<ViewState> write;
  bool clear = false;
  // Backfill the view, after this key (unset: from the start).
  bool backfill = false;
  std::optional<std::string> after;
  // A following view whose table's columns differ from those it was filled with.
  bool reshaped = false;
  // The table OID the store recorded (kReplaced: the table that is gone).
  uint32_t recorded_oid = 0;
  // The fill is the view's first (a new view, a first start, or one resumed): readers
  // have nothing of it yet (ViewState::first_fill).
  bool first_fill = false;
};

// `states`: what the store recorded (nullopt: it records none yet - filled by a
// pgderive without per-view state, so its views are live); `columns` and `oid`: the
// view's table now; `redefined`: the view's definition changed since its store was
// filled (a reload says so), so it is rebuilt from the start; `fill`: the whole store is
// filled (the states are not looked at).
ViewStart PlanViewStart(const BackfillView& view,
                        const std::optional<std::map<std::string, ViewState>>& states,
                        const std::vector<std::string>& columns, uint32_t oid,
                        bool redefined = false, bool fill = false);

// Where the reconciliation sends its backfills (Backfills::SetColumns, Backfills::Add).
struct ViewBackfills {
  std::function<void(const std::string& store, const std::string& view,
                     std::vector<std::string> columns)>
      set_columns;
  std::function<void(const std::string& store, const std::string& table,
                     std::vector<std::string> views, std::optional<std::string> after)>
      add;
  // A view whose first fill begins or resumes (not ready until it is live); may be unset.
  std::function<void(const std::string& store, const std::string& view)> first_fill;
};

// A store whose views are all filled from the start: why (logged with each view), and
// whether each view is cleared first (not when the store was just emptied: a first
// start's Sink::BeginRebuild).
struct StoreFill {
  std::string why;
  bool clear = true;
  // The views' first fill: the store holds nothing of them (a first start, a store with
  // no checkpoint), so the pipeline is not ready until it ends (ViewState::first_fill).
  bool first_fill = false;
};

// For every store: marks removed the views it records that `views` lacks. For every
// store that backfills rows: reads its views' states, records what the plan
// says and queues the backfills. Transient store errors are retried until `stopped`.
// `shapes`: each table's shape now; `redefined`: views whose definition changed (a
// reload); `fill`: the stores filled from the start, by name - their recorded states
// are not read. The error says which store.
Status ReconcileViewStates(
    std::span<const std::unique_ptr<Sink>> sinks, const std::vector<BackfillView>& views,
    const std::map<std::string, std::shared_ptr<const RelationSchema>>& shapes,
    const ViewBackfills& backfills, const std::function<bool()>& stopped, Logger& logger,
    const std::function<void(const std::string&)>& info,
    const std::set<std::string>& redefined = {}, const std::map<std::string, StoreFill>& fill = {});

}  // namespace pgderive
