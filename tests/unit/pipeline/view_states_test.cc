// Start-up view states: what a start records and backfills for each view, from the
// state its store recorded.
#include "pipeline/view_states.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "tests/support/fake_sink.h"

namespace pgderive {
namespace {

using testing::FakeSink;

const std::vector<std::string> kColumns = {"k 23", "v 25"};
const std::vector<std::string> kWider = {"k 23", "v 25", "w 25"};
constexpr uint32_t kOid = 16384;

BackfillView View(std::string name, bool follows = true) {
  return BackfillView{"cache", std::move(name), "public.t", true, follows};
}

using States = std::optional<std::map<std::string, ViewState>>;

TEST(PlanViewStartTest, AStoreWithoutRecordedStatesHasLiveViews) {
  const ViewStart start = PlanViewStart(View("v"), std::nullopt, kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kUnrecorded);
  ASSERT_TRUE(start.write);
  EXPECT_FALSE(start.write->backfilling);
  EXPECT_EQ(start.write->columns, kColumns);
  EXPECT_EQ(start.write->table_oid, kOid);
  EXPECT_FALSE(start.clear);
  EXPECT_FALSE(start.backfill);
}

TEST(PlanViewStartTest, ANewViewIsEmptiedAndBackfilledFromTheStart) {
  const ViewStart start =
      PlanViewStart(View("v"), States(std::map<std::string, ViewState>{}), kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kNew);
  ASSERT_TRUE(start.write);
  EXPECT_TRUE(start.write->backfilling);
  EXPECT_TRUE(start.clear);
  EXPECT_TRUE(start.backfill);
  EXPECT_EQ(start.after, std::nullopt);
}

TEST(PlanViewStartTest, ALiveViewIsLeftAlone) {
  const States states =
      std::map<std::string, ViewState>{{"v", ViewState{false, std::nullopt, kColumns, kOid}}};
  const ViewStart start = PlanViewStart(View("v"), states, kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kLive);
  EXPECT_FALSE(start.write);
  EXPECT_FALSE(start.backfill);
  // Columns recorded before the view followed its table (empty) are no reshape.
  const States unrecorded = std::map<std::string, ViewState>{{"v", ViewState{}}};
  EXPECT_EQ(PlanViewStart(View("v"), unrecorded, kColumns, kOid).why, ViewStart::Why::kLive);
}

TEST(PlanViewStartTest, ARedefinedViewIsRebuiltFromTheStart) {
  // Live, or half backfilled: another definition starts a rebuild (clear) from the start.
  for (const ViewState& recorded : {ViewState{false, std::nullopt, kColumns, kOid},
                                    ViewState{true, std::string("k=7"), kColumns, kOid}}) {
    const States states = std::map<std::string, ViewState>{{"v", recorded}};
    const ViewStart start = PlanViewStart(View("v"), states, kColumns, kOid, /*redefined=*/true);
    EXPECT_EQ(start.why, ViewStart::Why::kRedefined);
    ASSERT_TRUE(start.write);
    EXPECT_TRUE(start.write->backfilling);
    EXPECT_TRUE(start.clear);
    EXPECT_TRUE(start.backfill);
    EXPECT_EQ(start.after, std::nullopt);
  }
  // A view its store never had is new, whatever the reload says.
  EXPECT_EQ(PlanViewStart(View("v"), States(std::map<std::string, ViewState>{}), kColumns, kOid,
                          /*redefined=*/true)
                .why,
            ViewStart::Why::kNew);
}

TEST(PlanViewStartTest, AViewBackAfterItWasRemovedIsRebuiltFromTheStart) {
  // Live or half backfilled when it went out of the configuration: the rows changed
  // while it was out are not in it, so a rebuild (clear) from the start, never live.
  for (bool backfilling : {false, true}) {
    ViewState recorded{backfilling, std::nullopt, kColumns, kOid};
    if (backfilling) recorded.after = "[\"7\"]";
    recorded.removed = true;
    const States states = std::map<std::string, ViewState>{{"v", recorded}};
    const ViewStart start = PlanViewStart(View("v"), states, kColumns, kOid);
    EXPECT_EQ(start.why, ViewStart::Why::kReturned);
    ASSERT_TRUE(start.write);
    EXPECT_TRUE(start.write->backfilling);
    EXPECT_FALSE(start.write->removed);
    EXPECT_TRUE(start.clear);
    EXPECT_TRUE(start.backfill);
    EXPECT_EQ(start.after, std::nullopt);
  }
}

TEST(PlanViewStartTest, OnlyAFillWithNothingServedIsAFirstFill) {
  // New to its store: nothing served yet, recorded so that a resume knows it.
  const ViewStart fresh =
      PlanViewStart(View("v"), States(std::map<std::string, ViewState>{}), kColumns, kOid);
  EXPECT_TRUE(fresh.first_fill);
  ASSERT_TRUE(fresh.write);
  EXPECT_TRUE(fresh.write->first_fill);
  // Resumed: as recorded.
  for (bool first : {false, true}) {
    ViewState half{true, std::string("[\"7\"]"), kColumns, kOid};
    half.first_fill = first;
    const ViewStart resumed = PlanViewStart(
        View("v"), States(std::map<std::string, ViewState>{{"v", half}}), kColumns, kOid);
    EXPECT_EQ(resumed.why, ViewStart::Why::kResume);
    EXPECT_EQ(resumed.first_fill, first);
  }
  // Rebuilds serve what the view held meanwhile.
  const States live =
      std::map<std::string, ViewState>{{"v", ViewState{false, std::nullopt, kColumns, kOid}}};
  EXPECT_FALSE(PlanViewStart(View("v"), live, kColumns, kOid, /*redefined=*/true).first_fill);
  EXPECT_FALSE(PlanViewStart(View("v"), live, kColumns, kOid + 1).first_fill);  // replaced
  EXPECT_FALSE(PlanViewStart(View("v"), live, kWider, kOid).first_fill);        // reshaped
}

BackfillView Defined(std::string definition) {
  BackfillView view = View("v");
  view.definition = std::move(definition);
  return view;
}

ViewState Recorded(bool backfilling, std::string definition) {
  ViewState state{backfilling, backfilling ? std::optional<std::string>("[\"7\"]") : std::nullopt,
                  kColumns, kOid};
  state.definition = std::move(definition);
  return state;
}

TEST(PlanViewStartTest, AViewDefinedOtherwiseThanItsStoreRecordedIsRebuilt) {
  // Changed in the file while pgderive was stopped: live or half backfilled, a rebuild
  // (clear) from the start, recorded with the new definition.
  for (bool backfilling : {false, true}) {
    const States states = std::map<std::string, ViewState>{{"v", Recorded(backfilling, "v1:old")}};
    const ViewStart start = PlanViewStart(Defined("v1:new"), states, kColumns, kOid);
    EXPECT_EQ(start.why, ViewStart::Why::kRedefined);
    ASSERT_TRUE(start.write);
    EXPECT_TRUE(start.write->backfilling);
    EXPECT_EQ(start.write->definition, "v1:new");
    EXPECT_TRUE(start.clear);
    EXPECT_TRUE(start.backfill);
    EXPECT_EQ(start.after, std::nullopt);
  }
}

TEST(PlanViewStartTest, AViewDefinedAsRecordedIsLeftAsItIs) {
  const States live = std::map<std::string, ViewState>{{"v", Recorded(false, "v1:same")}};
  ViewStart start = PlanViewStart(Defined("v1:same"), live, kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kLive);
  EXPECT_FALSE(start.write);
  EXPECT_FALSE(start.backfill);
  const States half = std::map<std::string, ViewState>{{"v", Recorded(true, "v1:same")}};
  start = PlanViewStart(Defined("v1:same"), half, kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kResume);
  EXPECT_EQ(start.after, "[\"7\"]");
  EXPECT_FALSE(start.clear);
}

TEST(PlanViewStartTest, AStateRecordedWithoutADefinitionIsTakenAsUnchanged) {
  // Live: taken as unchanged, and its definition recorded (nothing else changes).
  const States live = std::map<std::string, ViewState>{{"v", Recorded(false, "")}};
  ViewStart start = PlanViewStart(Defined("v1:now"), live, kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kLive);
  ASSERT_TRUE(start.write);
  EXPECT_FALSE(start.write->backfilling);
  EXPECT_EQ(start.write->definition, "v1:now");
  EXPECT_EQ(start.write->columns, kColumns);
  EXPECT_EQ(start.write->table_oid, kOid);
  EXPECT_FALSE(start.clear);
  EXPECT_FALSE(start.backfill);
  // Half backfilled: resumes (the backfill records the definition as it goes).
  const States half = std::map<std::string, ViewState>{{"v", Recorded(true, "")}};
  start = PlanViewStart(Defined("v1:now"), half, kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kResume);
  EXPECT_EQ(start.after, "[\"7\"]");
  EXPECT_FALSE(start.clear);
  // A new view records its definition.
  start =
      PlanViewStart(Defined("v1:now"), States(std::map<std::string, ViewState>{}), kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kNew);
  EXPECT_EQ(start.write->definition, "v1:now");
}

TEST(PlanViewStartTest, ABackfillingViewResumesAfterItsLastKey) {
  const States states = std::map<std::string, ViewState>{
      {"v", ViewState{true, std::string("[\"41\"]"), kColumns, kOid}}};
  const ViewStart start = PlanViewStart(View("v"), states, kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kResume);
  EXPECT_FALSE(start.write) << "its state stays as recorded";
  EXPECT_TRUE(start.backfill);
  EXPECT_EQ(start.after, "[\"41\"]");
}

TEST(PlanViewStartTest, ABackfillingViewWhoseTableChangedStartsOver) {
  const States states = std::map<std::string, ViewState>{
      {"v", ViewState{true, std::string("[\"41\"]"), kColumns, kOid}}};
  const ViewStart start = PlanViewStart(View("v"), states, kWider, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kResume);
  EXPECT_TRUE(start.reshaped);
  EXPECT_EQ(start.after, std::nullopt);
  // A view with its own `columns` does not follow the table: it resumes.
  EXPECT_EQ(PlanViewStart(View("v", /*follows=*/false), states, kWider, kOid).after, "[\"41\"]");
}

TEST(PlanViewStartTest, ALiveViewWhoseTableChangedWhileStoppedIsBackfilled) {
  const States states =
      std::map<std::string, ViewState>{{"v", ViewState{false, std::nullopt, kColumns, kOid}}};
  const ViewStart start = PlanViewStart(View("v"), states, kWider, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kReshaped);
  ASSERT_TRUE(start.write);
  EXPECT_TRUE(start.write->backfilling);
  EXPECT_EQ(start.write->columns, kWider);
  EXPECT_FALSE(start.clear) << "rows are overwritten, not removed first";
  EXPECT_TRUE(start.backfill);
  EXPECT_EQ(PlanViewStart(View("v", /*follows=*/false), states, kWider, kOid).why,
            ViewStart::Why::kLive);
}

TEST(PlanViewStartTest, AViewOfAReplacedTableIsEmptiedAndRefilled) {
  const States states =
      std::map<std::string, ViewState>{{"v", ViewState{false, std::nullopt, kColumns, kOid - 1}}};
  const ViewStart start = PlanViewStart(View("v"), states, kColumns, kOid);
  EXPECT_EQ(start.why, ViewStart::Why::kReplaced);
  EXPECT_EQ(start.recorded_oid, kOid - 1);
  EXPECT_TRUE(start.clear);
  EXPECT_TRUE(start.backfill);
  EXPECT_EQ(start.after, std::nullopt);
  EXPECT_EQ(start.write->table_oid, kOid);
}

TEST(PlanViewStartTest, AFilledStoreBackfillsEveryViewFromTheStartWhateverItRecorded) {
  // A first start, a store new to the pipeline, one that lost its data: whatever it
  // records (nothing, live, halfway) is not looked at; the view is never live first.
  const States live =
      std::map<std::string, ViewState>{{"v", ViewState{false, std::nullopt, kColumns, kOid}}};
  const States half = std::map<std::string, ViewState>{
      {"v", ViewState{true, std::string("[\"41\"]"), kColumns, kOid}}};
  for (const States& states : {States(std::nullopt), live, half}) {
    const ViewStart start =
        PlanViewStart(View("v"), states, kColumns, kOid, /*redefined=*/false, /*fill=*/true);
    EXPECT_EQ(start.why, ViewStart::Why::kFill);
    ASSERT_TRUE(start.write);
    EXPECT_TRUE(start.write->backfilling);
    EXPECT_EQ(start.write->after, std::nullopt);
    EXPECT_EQ(start.write->columns, kColumns);
    EXPECT_EQ(start.write->table_oid, kOid);
    EXPECT_TRUE(start.clear) << "a rebuild of the view begins";
    EXPECT_TRUE(start.backfill);
    EXPECT_EQ(start.after, std::nullopt);
  }
}

class ReconcileViewStatesTest : public ::testing::Test {
 protected:
  ReconcileViewStatesTest() : null_(std::fopen("/dev/null", "w")), logger_(LogConfig{}, null_) {
    auto schema = std::make_shared<RelationSchema>();
    schema->id = RelationId{kOid};
    schema->nspname = "public";
    schema->relname = "t";
    schema->columns = {{"k", 23, -1, true, ""}, {"v", 25, -1, false, ""}};
    shapes_["public.t"] = schema;
  }
  ~ReconcileViewStatesTest() override { std::fclose(null_); }

  Status Reconcile(std::span<const std::unique_ptr<Sink>> sinks,
                   const std::vector<BackfillView>& views,
                   const std::map<std::string, StoreFill>& fill = {}) {
    return ReconcileViewStates(
        sinks, views, shapes_,
        {.set_columns =
             [this](const std::string& store, const std::string& view,
                    std::vector<std::string> columns) {
               columns_[{store, view}] = std::move(columns);
             },
         .add =
             [this](const std::string& store, const std::string& table,
                    std::vector<std::string> views, std::optional<std::string> after) {
               for (const std::string& v : views)
                 added_.push_back({store + "/" + table + "/" + v, after});
             },
         .first_fill =
             [this](const std::string& store, const std::string& view) {
               first_fills_.push_back(store + "/" + view);
             }},
        [] { return false; }, logger_, [this](const std::string& m) { info_.push_back(m); },
        /*redefined=*/{}, fill);
  }

  std::FILE* null_;
  Logger logger_;
  std::map<std::string, std::shared_ptr<const RelationSchema>> shapes_;
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> columns_;
  std::vector<std::pair<std::string, std::optional<std::string>>> added_;
  std::vector<std::string> info_;
  std::vector<std::string> first_fills_;
};

TEST_F(ReconcileViewStatesTest, RecordsStatesAndQueuesBackfillsPerView) {
  std::vector<std::unique_ptr<Sink>> sinks;
  auto cache = std::make_unique<FakeSink>("cache");
  cache->SetBackfillsRows(true);
  cache->SetViewStates(std::map<std::string, ViewState>{
      {"live", ViewState{false, std::nullopt, kColumns, kOid}},
      {"half", ViewState{true, std::string("[\"7\"]"), kColumns, kOid}}});
  FakeSink& store = *cache;
  sinks.push_back(std::move(cache));
  ASSERT_TRUE(Reconcile(sinks, {View("live"), View("half"), View("fresh")}).ok());

  const std::vector<std::pair<std::string, std::optional<std::string>>> added = {
      {"cache/public.t/half", "[\"7\"]"}, {"cache/public.t/fresh", std::nullopt}};
  EXPECT_EQ(added_, added);
  const auto writes = store.state_writes();
  ASSERT_EQ(writes.size(), 1u) << "only the new view's state is written";
  EXPECT_EQ(writes[0].view, "fresh");
  EXPECT_TRUE(writes[0].clear);
  EXPECT_TRUE(writes[0].state.backfilling);
  EXPECT_EQ((columns_[{"cache", "live"}]), ColumnsOf(*shapes_.at("public.t")));
  EXPECT_EQ(columns_.size(), 3u);
  EXPECT_EQ(first_fills_, std::vector<std::string>{"cache/fresh"})
      << "a view new to its store: its first fill";
}

TEST_F(ReconcileViewStatesTest, AViewRedefinedWhileStoppedIsRebuiltWithItsMessage) {
  std::vector<std::unique_ptr<Sink>> sinks;
  auto cache = std::make_unique<FakeSink>("cache");
  cache->SetBackfillsRows(true);
  cache->SetViewStates(std::map<std::string, ViewState>{{"v", Recorded(false, "v1:old")}});
  FakeSink& store = *cache;
  sinks.push_back(std::move(cache));
  ASSERT_TRUE(Reconcile(sinks, {Defined("v1:new")}).ok());
  const std::vector<std::pair<std::string, std::optional<std::string>>> added = {
      {"cache/public.t/v", std::nullopt}};
  EXPECT_EQ(added_, added);
  const auto writes = store.state_writes();
  ASSERT_EQ(writes.size(), 1u);
  EXPECT_TRUE(writes[0].clear);
  EXPECT_TRUE(writes[0].state.backfilling);
  EXPECT_EQ(writes[0].state.definition, "v1:new");
  EXPECT_NE(std::find(info_.begin(), info_.end(),
                      "the definition of view v changed: rebuilding it while streaming"),
            info_.end());
}

TEST_F(ReconcileViewStatesTest, EveryStoreMarksTheViewsTheConfigurationNoLongerHas) {
  // Before the stream: a store of queries (postgres) too, and a store filled from the
  // start (its recorded states are not read, but those it keeps for other views are).
  std::vector<std::unique_ptr<Sink>> sinks;
  auto cache = std::make_unique<FakeSink>("cache");
  cache->SetBackfillsRows(true);
  cache->SetViewStates(std::map<std::string, ViewState>{});
  cache->SetRemovedViews({"gone"});
  auto queries = std::make_unique<FakeSink>("queries");
  FakeSink& row_store = *cache;
  FakeSink& query_store = *queries;
  sinks.push_back(std::move(cache));
  sinks.push_back(std::move(queries));
  ASSERT_TRUE(Reconcile(sinks, {View("v")}, {{"cache", StoreFill{"first start"}}}).ok());
  EXPECT_EQ(row_store.mark_removed_calls(), 1);
  EXPECT_EQ(query_store.mark_removed_calls(), 1);
  EXPECT_NE(std::find_if(info_.begin(), info_.end(),
                         [](const std::string& m) {
                           return m.starts_with("view gone is no longer in the configuration");
                         }),
            info_.end());
}

TEST_F(ReconcileViewStatesTest, AStoreWithoutRecordedStatesIsRecordedLive) {
  std::vector<std::unique_ptr<Sink>> sinks;
  auto cache = std::make_unique<FakeSink>("cache");
  cache->SetBackfillsRows(true);  // ReadViewStates: nullopt
  FakeSink& store = *cache;
  sinks.push_back(std::move(cache));
  ASSERT_TRUE(Reconcile(sinks, {View("a"), View("b")}).ok());
  EXPECT_TRUE(added_.empty());
  const auto writes = store.state_writes();
  ASSERT_EQ(writes.size(), 2u);
  for (const auto& w : writes) {
    EXPECT_FALSE(w.state.backfilling);
    EXPECT_FALSE(w.clear);
    EXPECT_EQ(w.state.table_oid, kOid);
  }
}

// The start-up rule for a row store on a first start or after it lost its data: every
// view recorded backfilling from the start (cleared: a rebuild begins) and queued, its
// recorded states not even read (a Redis restarted empty records none, which would
// otherwise say live), while a store that kept its data is reconciled as before.
TEST_F(ReconcileViewStatesTest, AFilledStoreRecordsEveryViewBackfillingAndQueuesThemAll) {
  std::vector<std::unique_ptr<Sink>> sinks;
  auto cache = std::make_unique<FakeSink>("cache");
  cache->SetBackfillsRows(true);
  cache->FailNext(1, ErrorKind::kPermanent);  // a read of its states would fail the start
  FakeSink& store = *cache;
  sinks.push_back(std::move(cache));
  auto kept = std::make_unique<FakeSink>("kept");
  kept->SetBackfillsRows(true);
  kept->SetViewStates(
      std::map<std::string, ViewState>{{"k", ViewState{false, std::nullopt, kColumns, kOid}}});
  FakeSink& kept_store = *kept;
  sinks.push_back(std::move(kept));
  BackfillView k = View("k");
  k.store = "kept";
  ASSERT_TRUE(
      Reconcile(sinks, {View("a"), View("b"), k}, {{"cache", {"store cache has no checkpoint"}}})
          .ok());
  const std::vector<std::pair<std::string, std::optional<std::string>>> added = {
      {"cache/public.t/a", std::nullopt}, {"cache/public.t/b", std::nullopt}};
  EXPECT_EQ(added_, added);
  const auto writes = store.state_writes();
  ASSERT_EQ(writes.size(), 2u);
  for (const auto& w : writes) {
    EXPECT_TRUE(w.state.backfilling);
    EXPECT_EQ(w.state.after, std::nullopt);
    EXPECT_TRUE(w.clear);
    EXPECT_EQ(w.state.table_oid, kOid);
  }
  EXPECT_TRUE(kept_store.state_writes().empty()) << "a live view of a kept store is left alone";
  ASSERT_EQ(info_.size(), 2u);
  EXPECT_EQ(info_[0],
            "view a is filled from the start (store cache has no checkpoint): backfilling while "
            "streaming; not live until it is complete");
}

// A first start empties the store first (BeginRebuild): its views are not cleared again
// (an OpenSearch index recreated twice would lose a setting given between).
TEST_F(ReconcileViewStatesTest, AStoreEmptiedByAFirstStartIsNotClearedAgain) {
  std::vector<std::unique_ptr<Sink>> sinks;
  auto cache = std::make_unique<FakeSink>("cache");
  cache->SetBackfillsRows(true);
  FakeSink& store = *cache;
  sinks.push_back(std::move(cache));
  ASSERT_TRUE(Reconcile(sinks, {View("a")}, {{"cache", {"first start", false}}}).ok());
  const auto writes = store.state_writes();
  ASSERT_EQ(writes.size(), 1u);
  EXPECT_TRUE(writes[0].state.backfilling);
  EXPECT_FALSE(writes[0].clear);
  EXPECT_EQ(added_.size(), 1u);
}

TEST_F(ReconcileViewStatesTest, AStoreThatRecomputesItsViewsIsSkipped) {
  std::vector<std::unique_ptr<Sink>> sinks;
  sinks.push_back(std::make_unique<FakeSink>("cache"));  // backfills_rows() false
  ASSERT_TRUE(Reconcile(sinks, {View("a")}).ok());
  EXPECT_TRUE(added_.empty());
  EXPECT_TRUE(columns_.empty());
}

TEST_F(ReconcileViewStatesTest, AStoreThatCannotReadItsStatesFailsTheStartNamingIt) {
  std::vector<std::unique_ptr<Sink>> sinks;
  auto cache = std::make_unique<FakeSink>("cache");
  cache->SetBackfillsRows(true);
  cache->FailNext(1, ErrorKind::kPermanent);
  sinks.push_back(std::move(cache));
  Status status = Reconcile(sinks, {View("a")});
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().kind(), ErrorKind::kPermanent);
  EXPECT_EQ(status.error().message().rfind("store cache: ", 0), 0u) << status.error().message();
  EXPECT_TRUE(added_.empty());
}

TEST_F(ReconcileViewStatesTest, ATransientErrorIsRetried) {
  std::vector<std::unique_ptr<Sink>> sinks;
  auto cache = std::make_unique<FakeSink>("cache");
  cache->SetBackfillsRows(true);
  cache->SetViewStates(std::map<std::string, ViewState>{});
  cache->FailNext(1);
  sinks.push_back(std::move(cache));
  ASSERT_TRUE(Reconcile(sinks, {View("a")}).ok());
  EXPECT_EQ(added_.size(), 1u);
  ASSERT_FALSE(info_.empty());
  EXPECT_NE(info_.front().find("retrying in"), std::string::npos);
}

}  // namespace
}  // namespace pgderive
