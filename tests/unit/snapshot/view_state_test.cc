// The per-view state a store records (snapshot/view_state.h): what the next start reads back
// to resume a backfill, and the columns a following view was filled with.
#include "snapshot/view_state.h"

#include <gtest/gtest.h>

#include "cdc/change_batch.h"

namespace pgderive {
namespace {

TEST(ViewStateTest, RoundTripsWithAndWithoutAPosition) {
  const ViewState backfilling{true, std::string(R"(["42","2024-01-01"])"), {"id 23", "title 25"}};
  const std::string json = backfilling.ToJson();
  auto back = ViewState::FromJson(json);
  ASSERT_TRUE(back.has_value()) << json;
  EXPECT_TRUE(back->backfilling);
  EXPECT_EQ(back->after, backfilling.after);
  EXPECT_EQ(back->columns, backfilling.columns);

  auto live = ViewState::FromJson(ViewState{}.ToJson());
  ASSERT_TRUE(live.has_value());
  EXPECT_FALSE(live->backfilling);
  EXPECT_FALSE(live->after.has_value());
  EXPECT_TRUE(live->columns.empty());
}

// The table's OID travels with the state, so a table dropped and created again while
// pgderive was stopped is seen at start; a state written before it was recorded reads 0.
TEST(ViewStateTest, RecordsTheTableOid) {
  auto back = ViewState::FromJson(ViewState{false, std::nullopt, {"id 23"}, 16384}.ToJson());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->table_oid, 16384u);
  auto older = ViewState::FromJson(R"({"state":"live","columns":["id 23"]})");
  ASSERT_TRUE(older.has_value());
  EXPECT_EQ(older->table_oid, 0u);
}

// The view's definition fingerprint travels with the state; a state written before it
// was recorded reads empty (taken as unchanged at start).
TEST(ViewStateTest, RecordsTheDefinition) {
  ViewState state{false, std::nullopt, {"id 23"}, 16384};
  state.definition = "v1:0123456789abcdef";
  auto back = ViewState::FromJson(state.ToJson());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->definition, "v1:0123456789abcdef");
  auto older = ViewState::FromJson(R"({"state":"live","columns":["id 23"]})");
  ASSERT_TRUE(older.has_value());
  EXPECT_TRUE(older->definition.empty());
  EXPECT_EQ(ViewState{}.ToJson().find("definition"), std::string::npos);
}

// A rebuild's generation and its pending sweep travel with the state, so that a restart
// after a crash ends the rebuild it was in; a state written before they were recorded
// reads generation 0 and no sweep.
TEST(ViewStateTest, RecordsTheGenerationAndAPendingSweep) {
  ViewState state{true, std::string(R"(["7"])"), {"id 23"}, 16384};
  state.generation = 3;
  state.sweep = true;
  auto back = ViewState::FromJson(state.ToJson());
  ASSERT_TRUE(back.has_value()) << state.ToJson();
  EXPECT_EQ(back->generation, 3u);
  EXPECT_TRUE(back->sweep);
  state.sweep = false;
  back = ViewState::FromJson(state.ToJson());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->generation, 3u);
  EXPECT_FALSE(back->sweep);
  EXPECT_EQ(state.ToJson().find("sweep"), std::string::npos) << state.ToJson();
  auto older = ViewState::FromJson(R"({"state":"live","columns":["id 23"]})");
  ASSERT_TRUE(older.has_value());
  EXPECT_EQ(older->generation, 0u);
  EXPECT_FALSE(older->sweep);
}

// A view out of the configuration is recorded "removed": neither live nor backfilling,
// its generation kept for the rebuild should it come back.
TEST(ViewStateTest, RecordsAViewRemovedFromTheConfiguration) {
  ViewState state{false, std::nullopt, {"id 23"}, 16384};
  state.generation = 2;
  state.removed = true;
  EXPECT_NE(state.ToJson().find(R"("state":"removed")"), std::string::npos) << state.ToJson();
  auto back = ViewState::FromJson(state.ToJson());
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(back->removed);
  EXPECT_FALSE(back->backfilling);
  EXPECT_EQ(back->generation, 2u);
  auto live = ViewState::FromJson(R"({"state":"live","columns":["id 23"]})");
  ASSERT_TRUE(live.has_value());
  EXPECT_FALSE(live->removed);
}

TEST(ViewStateTest, RefusesWhatItDidNotWrite) {
  for (const char* text : {"", "not json", "[]", "{}", R"({"state": 3})", "null"}) {
    EXPECT_FALSE(ViewState::FromJson(text).has_value()) << text;
  }
}

TEST(ViewStateTest, ColumnsNameTypesInOrderAndControlNamesItsViews) {
  RelationSchema schema;
  schema.columns = {{"id", 23, -1, true, ""}, {"price", 1700, -1, false, ""}};
  EXPECT_EQ(ColumnsOf(schema), (std::vector<std::string>{"id 23", "price 1700"}));
  schema.columns[1].type_oid = 701;  // a type change is a different shape
  EXPECT_EQ(ColumnsOf(schema), (std::vector<std::string>{"id 23", "price 701"}));

  ViewControl control;
  control.store = "cache";
  control.views = {"a", "b"};
  EXPECT_TRUE(control.Names("cache", "b"));
  EXPECT_FALSE(control.Names("cache", "c"));
  EXPECT_FALSE(control.Names("search", "a"));
}

}  // namespace
}  // namespace pgderive
