// The pure planning of a view's versions (sinks/common/view_versions.h): what a switch,
// a rollback, a drop and a start after a crash leave; and the recorded definition
// (config/view_record.h), the duration grammar of retain_previous.
#include "sinks/common/view_versions.h"

#include <gtest/gtest.h>

#include "config/config_change.h"
#include "config/grammar.h"
#include "config/view_record.h"

namespace pgderive {
namespace {

constexpr const char* kOld = R"({"name":"docs","columns":["id","name"]})";
constexpr const char* kNew = R"({"name":"docs","columns":["id","name","n"]})";

// Version 1 serving (old definition), version 2 built from the new one.
Versions Building() {
  Versions v;
  v.serving = 1;
  v.building = 2;
  v.definitions = {{1, kOld}, {2, kNew}};
  return v;
}

TEST(ViewVersionsTest, PromoteRetainsTheVersionOfAnotherDefinition) {
  std::vector<int> retired;
  const Versions v = AfterPromote(Building(), 1000, 3600, retired);
  EXPECT_EQ(v.serving, 2);
  EXPECT_FALSE(v.building);
  EXPECT_EQ(v.previous, 1);
  EXPECT_EQ(v.drop_at, 4600);
  EXPECT_TRUE(retired.empty());
  EXPECT_EQ(v.definitions.size(), 2u);
}

TEST(ViewVersionsTest, ARebuildOfTheSameDefinitionRetiresTheOldDataAtOnce) {
  Versions rebuild = Building();
  rebuild.definitions[2] = kOld;
  std::vector<int> retired;
  const Versions v = AfterPromote(rebuild, 1000, 3600, retired);
  EXPECT_EQ(v.serving, 2);
  EXPECT_FALSE(v.previous);
  EXPECT_EQ(retired, std::vector<int>{1});
  EXPECT_FALSE(v.definitions.contains(1));
}

TEST(ViewVersionsTest, ANewPromoteReplacesTheRetainedVersion) {
  std::vector<int> retired;
  Versions v = AfterPromote(Building(), 1000, 3600, retired);
  v.building = 3;
  v.definitions[3] = R"({"name":"docs"})";
  v = AfterPromote(v, 2000, 3600, retired);
  EXPECT_EQ(v.serving, 3);
  EXPECT_EQ(v.previous, 2);
  EXPECT_EQ(retired, std::vector<int>{1});
}

TEST(ViewVersionsTest, RollbackServesTheRetainedOneAndHoldsTheOther) {
  std::vector<int> retired;
  const Versions promoted = AfterPromote(Building(), 1000, 3600, retired);
  const Versions v = AfterRollback(promoted);
  EXPECT_EQ(v.serving, 1);
  EXPECT_EQ(v.building, 2);
  EXPECT_FALSE(v.previous);
  EXPECT_TRUE(v.held);
  // Held: not switched again when ready, even under promote: auto; a promote may.
  EXPECT_FALSE(SwitchesOnReady(v, /*manual=*/false));
  EXPECT_FALSE(PromoteRefusal(v, "docs", /*backfilling=*/false, -1));
  EXPECT_TRUE(RollbackRefusal(v, "docs"));
  const Versions again = AfterPromote(v, 2000, 3600, retired);
  EXPECT_EQ(again.serving, 2);
  EXPECT_EQ(again.previous, 1);
  EXPECT_FALSE(again.held);
}

TEST(ViewVersionsTest, ManualPromoteHoldsOnlyAnotherDefinition) {
  EXPECT_TRUE(SwitchesOnReady(Building(), /*manual=*/false));
  EXPECT_FALSE(SwitchesOnReady(Building(), /*manual=*/true));
  Versions rebuild = Building();
  rebuild.definitions[2] = kOld;
  EXPECT_TRUE(SwitchesOnReady(rebuild, /*manual=*/true));
  Versions first;  // nothing served yet
  first.building = 1;
  first.definitions = {{1, kNew}};
  EXPECT_TRUE(SwitchesOnReady(first, /*manual=*/true));
}

TEST(ViewVersionsTest, APromoteOfAVersionNotReadyIsRefusedWithItsProgress) {
  auto refusal = PromoteRefusal(Building(), "docs", /*backfilling=*/true, 37.2);
  ASSERT_TRUE(refusal);
  EXPECT_NE(refusal->find("version 2 of view docs is not ready (building 37%)"), std::string::npos)
      << *refusal;
  Versions serving;
  serving.serving = 1;
  refusal = PromoteRefusal(serving, "docs", false, -1);
  ASSERT_TRUE(refusal);
  EXPECT_NE(refusal->find("no new version"), std::string::npos) << *refusal;
}

TEST(ViewVersionsTest, AStartCompletesASwitchOrRollbackItsCrashLeftUnrecorded) {
  std::vector<int> retired;
  // The alias on the building version: the switch was made, not recorded.
  Versions v = Recover(Building(), 2, 5000, 60, retired);
  EXPECT_EQ(v.serving, 2);
  EXPECT_EQ(v.previous, 1);
  EXPECT_EQ(v.drop_at, 5060);
  // The alias on the retained version: the rollback was made, not recorded.
  v = Recover(v, 1, 6000, 60, retired);
  EXPECT_EQ(v.serving, 1);
  EXPECT_EQ(v.building, 2);
  EXPECT_TRUE(v.held);
  // As recorded, or on none of the view's: unchanged (a building version resumes).
  EXPECT_EQ(Recover(Building(), 1, 7000, 60, retired), Building());
  EXPECT_EQ(Recover(Building(), std::nullopt, 7000, 60, retired), Building());
  EXPECT_TRUE(retired.empty());
}

TEST(ViewVersionsTest, KeptVersionsOfAnotherDefinitionKeepTheirOwn) {
  std::vector<int> retired;
  const Versions promoted = AfterPromote(Building(), 1000, 3600, retired);
  // The file now says kNew: version 1 (retained) is maintained with kOld.
  EXPECT_EQ(OtherDefinitions(promoted, kNew),
            (std::vector<std::pair<int, std::string>>{{1, kOld}}));
  // While building: the serving one, with its recorded definition.
  EXPECT_EQ(OtherDefinitions(Building(), kNew),
            (std::vector<std::pair<int, std::string>>{{1, kOld}}));
  // Nothing recorded: written with the file's.
  Versions legacy;
  legacy.serving = 1;
  EXPECT_TRUE(OtherDefinitions(legacy, kNew).empty());
}

TEST(ViewVersionsTest, TheRetainedVersionIsDueAtItsDropTime) {
  std::vector<int> retired;
  const Versions v = AfterPromote(Building(), 1000, 30, retired);
  EXPECT_FALSE(PreviousDue(v, 1029));
  EXPECT_TRUE(PreviousDue(v, 1030));
  EXPECT_FALSE(PreviousDue(Building(), 1 << 30));
}

TEST(ViewVersionsTest, DescribeShowsEachVersion) {
  std::vector<int> retired;
  Versions v = AfterPromote(Building(), 1000, 30, retired);
  v.building = 3;
  const auto shown =
      Describe(v, "docs", /*backfilling=*/true, [](int n) { return "docs-" + std::to_string(n); });
  ASSERT_EQ(shown.size(), 3u);
  EXPECT_EQ(shown[0].state, "serving");
  EXPECT_EQ(shown[0].where, "docs-2");
  EXPECT_EQ(shown[1].state, "building");
  EXPECT_EQ(shown[2].state, "retained");
  EXPECT_EQ(shown[2].drop_at, 1030);
  EXPECT_EQ(UnixTimeText(1030), "1970-01-01T00:17:10Z");
}

TEST(ViewRecordTest, AViewsDefinitionRoundTrips) {
  ViewConfig view;
  view.name = "products";
  view.store = "cache";
  view.from = "public.products";
  view.columns = std::vector<std::string>{"id", "name"};
  view.key = KeyTemplate::Parse("product:{id}").value();
  const std::optional<ViewConfig> back = ViewFromRecord(ViewRecord(view));
  ASSERT_TRUE(back);
  EXPECT_EQ(ViewDefinitionFingerprint(*back), ViewDefinitionFingerprint(view));
  EXPECT_EQ(back->name, "products");
  ViewConfig query;
  query.name = "totals";
  query.store = "pg";
  query.table = "public.totals";
  query.key_columns = {"day"};
  query.query = "select day, sum(x) from t group by day";
  const std::optional<ViewConfig> q = ViewFromRecord(ViewRecord(query));
  ASSERT_TRUE(q);
  EXPECT_EQ(ViewDefinitionFingerprint(*q), ViewDefinitionFingerprint(query));
  EXPECT_FALSE(q->columns);
  EXPECT_FALSE(ViewFromRecord("not json"));
  EXPECT_FALSE(ViewFromRecord(R"({"name":"x","key":"{id}{"})"));
}

TEST(DurationTest, RetainPreviousDurations) {
  EXPECT_EQ(ParseDuration("1h"), 3600u);
  EXPECT_EQ(ParseDuration("30m"), 1800u);
  EXPECT_EQ(ParseDuration("90s"), 90u);
  EXPECT_EQ(ParseDuration("2d"), 172800u);
  EXPECT_EQ(ParseDuration("0"), 0u);
  EXPECT_EQ(ParseDuration("45"), 45u);
  EXPECT_FALSE(ParseDuration("1 h"));
  EXPECT_FALSE(ParseDuration("h"));
  EXPECT_FALSE(ParseDuration("-1s"));
  EXPECT_FALSE(ParseDuration("99999d"));
}

}  // namespace
}  // namespace pgderive

namespace pgderive {
namespace {

// The record both stores write (Redis hash field, OpenSearch state document).
TEST(ViewVersionsTest, TheRecordRoundTripsAndToleratesOlderOrForeignFields) {
  Versions versions;
  versions.serving = 2;
  versions.building = 3;
  versions.previous = 1;
  versions.drop_at = 1764480000;
  versions.held = true;
  versions.definitions = {{1, "a"}, {2, "b"}, {3, "c"}};
  const nlohmann::json j = VersionsToJson(versions);
  EXPECT_EQ(j.dump(),
            R"({"building":3,"definitions":{"1":"a","2":"b","3":"c"},"drop_at":1764480000,)"
            R"("held":true,"previous":1,"serving":2})");
  EXPECT_EQ(VersionsFromJson(j), versions);
  // Nothing retained: no drop_at; a field of another type or a foreign definition key
  // is left out, never a failure.
  const Versions read = VersionsFromJson(nlohmann::json::parse(
      R"({"serving":1,"building":"x","definitions":{"1":"a","last":"z","2":7}})"));
  Versions want;
  want.serving = 1;
  want.definitions = {{1, "a"}};
  EXPECT_EQ(read, want);
  EXPECT_EQ(VersionsFromJson(nlohmann::json::array()), Versions{});
}

}  // namespace
}  // namespace pgderive
