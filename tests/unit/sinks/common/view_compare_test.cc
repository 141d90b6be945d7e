// The comparison of a view's entries with its source's: which keys are missing, extra or
// different, which columns differ, the lines verify prints, the digest.
#include "sinks/common/view_compare.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace pgderive {
namespace {

using Kind = EntryDifference::Kind;

std::vector<std::string> Lines(const std::string& view,
                               const std::vector<EntryDifference>& differences) {
  std::vector<std::string> lines;
  for (const EntryDifference& d : differences) {
    for (std::string& line : DescribeDifference(view, d)) lines.push_back(std::move(line));
  }
  return lines;
}

TEST(ViewCompare, TheSameEntriesInAnotherMemberOrderDoNotDiffer) {
  const ViewEntries source{{"u:1", R"({"id":1,"name":"a"})"}, {"u:2", R"({"id":2,"name":null})"}};
  const ViewEntries store{{"u:1", R"({"name":"a","id":1})"}, {"u:2", R"({"id":2,"name":null})"}};
  EXPECT_TRUE(CompareEntries(source, store).empty());
}

TEST(ViewCompare, MissingExtraAndDifferentKeysInKeyOrder) {
  const ViewEntries source{{"u:1", R"({"id":1,"name":"a","n":5})"},
                           {"u:2", R"({"id":2,"name":"b"})"},
                           {"u:4", R"({"id":4,"name":"d"})"}};
  const ViewEntries store{{"u:1", R"({"id":1,"name":"x","extra":true})"},
                          {"u:3", R"({"id":3,"name":"c"})"},
                          {"u:4", "oops"}};
  const auto differences = CompareEntries(source, store);
  ASSERT_EQ(differences.size(), 4u);
  EXPECT_EQ(differences[0].kind, Kind::kDifferent);
  EXPECT_EQ(differences[0].key, "u:1");
  ASSERT_EQ(differences[0].columns.size(), 3u);
  EXPECT_EQ(differences[0].columns[0].name, "extra");
  EXPECT_EQ(differences[0].columns[0].store, "true");
  EXPECT_EQ(differences[0].columns[0].source, std::nullopt);
  EXPECT_EQ(differences[0].columns[1].name, "n");
  EXPECT_EQ(differences[0].columns[1].store, std::nullopt);
  EXPECT_EQ(differences[0].columns[2].name, "name");
  EXPECT_EQ(differences[0].columns[2].store, "\"x\"");
  EXPECT_EQ(differences[0].columns[2].source, "\"a\"");
  EXPECT_EQ(differences[1].kind, Kind::kMissing);
  EXPECT_EQ(differences[1].key, "u:2");
  EXPECT_EQ(differences[2].kind, Kind::kExtra);
  EXPECT_EQ(differences[2].key, "u:3");
  EXPECT_EQ(differences[3].kind, Kind::kDifferent);
  EXPECT_EQ(differences[3].held, "oops");

  EXPECT_EQ(SummarizeDifference(differences[0]), "different (extra, n, name)");
  EXPECT_EQ(SummarizeDifference(differences[1]), "missing");
  EXPECT_EQ(SummarizeDifference(differences[2]), "extra");
  EXPECT_EQ(SummarizeDifference(differences[3]), "different (not a JSON object)");
  EXPECT_EQ(Lines("users", differences),
            (std::vector<std::string>{
                "view users: different u:1 column extra: in the store (true) but not in the view",
                "view users: different u:1 column n: missing in the store, source has 5",
                "view users: different u:1 column name: store has \"x\", source has \"a\"",
                "view users: missing u:2",
                "view users: extra u:3 (no such row in the source)",
                "view users: different u:4: the store holds oops, not a JSON object",
            }));
}

TEST(ViewCompare, FloatsAreTheSameWithinTheirRoundingExactValuesExactly) {
  // A float sum added in another order (0.1 + 0.2 against 0.3): not a difference.
  EXPECT_TRUE(CompareEntries({{"g:1", R"({"s":0.30000000000000004,"n":"3"})"}},
                             {{"g:1", R"({"s":0.3,"n":"3"})"}})
                  .empty());
  EXPECT_TRUE(CompareEntries({{"g:1", R"({"s":1.2345678901234567e21})"}},
                             {{"g:1", R"({"s":1.2345678901234568e21})"}})
                  .empty());
  // A float that differs beyond its rounding is.
  auto floats = CompareEntries({{"g:1", R"({"s":0.3})"}}, {{"g:1", R"({"s":0.31})"}});
  ASSERT_EQ(floats.size(), 1u);
  EXPECT_EQ(SummarizeDifference(floats[0]), "different (s)");
  // Exact values - numerics given as their digits, integers - differ in any digit.
  EXPECT_EQ(CompareEntries({{"g:1", R"({"t":"0.30000000000000004"})"}}, {{"g:1", R"({"t":"0.3"})"}})
                .size(),
            1u);
  EXPECT_EQ(CompareEntries({{"g:1", R"({"n":3})"}}, {{"g:1", R"({"n":4})"}}).size(), 1u);
  // Not a number against a float, an infinity against a large one.
  EXPECT_EQ(CompareEntries({{"g:1", R"({"s":0.3})"}}, {{"g:1", R"({"s":"0.3"})"}}).size(), 1u);
}

TEST(ViewCompare, EmptySidesAreAllMissingOrAllExtra) {
  const ViewEntries some{{"a", "{}"}, {"b", "{}"}};
  const auto missing = CompareEntries(some, {});
  ASSERT_EQ(missing.size(), 2u);
  EXPECT_EQ(missing[1].kind, Kind::kMissing);
  const auto extra = CompareEntries({}, some);
  ASSERT_EQ(extra.size(), 2u);
  EXPECT_EQ(extra[0].kind, Kind::kExtra);
}

// A view "items" of public.items (k, v): key "item:<k>", value {"v": v}; a row with a
// null v is not in the view.
class FakeInspector : public ViewInspector {
 public:
  std::vector<std::string> views() const override { return {"items"}; }
  Result<std::vector<Entry>> ReadView(const std::string&) override {
    return std::vector<Entry>(held.begin(), held.end());
  }
  Result<std::optional<Entry>> Expected(const std::string&,
                                        const std::shared_ptr<const RelationSchema>&,
                                        const TupleData& row, const TypeRegistry&) override {
    if (row.columns[1].kind != TupleValueKind::kText) return std::optional<Entry>();
    return std::optional<Entry>(Entry{"item:" + std::string(row.columns[0].data),
                                      nlohmann::json{{"v", row.columns[1].data}}.dump()});
  }
  ViewEntries held;
};

std::shared_ptr<const RelationSchema> Items() {
  auto schema = std::make_shared<RelationSchema>();
  schema->nspname = "public";
  schema->relname = "items";
  schema->columns = {{"k", 23, -1, true, ""}, {"v", 25, -1, false, ""}};
  return schema;
}

TEST(ViewCompare, AChunkIsCheckedOnTheKeysItsComparableRowsMake) {
  FakeInspector inspector;
  const TypeRegistry types;
  const ChunkRows read{{"1", "a"}, {"2", "b"}, {"3", "c"}, {"4", std::nullopt}, {"5", "e"}};
  auto all = EntriesOfRows(inspector, "items", Items(), read, types);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all.value().size(), 4u);  // 4 is not in the view
  EXPECT_EQ(all.value().at("item:1"), R"({"v":"a"})");

  // The store, read under those keys: 1 right, 2 changed behind pgderive's back, 3
  // gone, 5 changed by the stream in the window (not comparable).
  const ViewEntries held{
      {"item:1", R"({"v":"a"})"}, {"item:2", R"({"v":"x"})"}, {"item:5", R"({"v":"e2"})"}};
  const ChunkRows comparable{{"1", "a"}, {"2", "b"}, {"3", "c"}, {"4", std::nullopt}};
  auto differences = CheckChunk(inspector, "items", Items(), comparable, held, types);
  ASSERT_TRUE(differences.ok());
  ASSERT_EQ(differences.value().size(), 2u);
  EXPECT_EQ(differences.value()[0].key, "item:2");
  EXPECT_EQ(SummarizeDifference(differences.value()[0]), "different (v)");
  EXPECT_EQ(differences.value()[1].key, "item:3");
  EXPECT_EQ(SummarizeDifference(differences.value()[1]), "missing");

  // The default ReadEntries filters ReadView by the keys asked.
  inspector.held = held;
  auto entries = inspector.ReadEntries("items", {"item:2", "item:9"});
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries.value().size(), 1u);
  EXPECT_EQ(entries.value()[0].first, "item:2");
}

TEST(ViewCompare, TwoRowsThatMakeOneKeyAreAnError) {
  FakeInspector inspector;
  const TypeRegistry types;
  auto all = EntriesOfRows(inspector, "items", Items(), {{"1", "a"}, {"1", "b"}}, types);
  ASSERT_FALSE(all.ok());
  EXPECT_NE(all.error().message().find("item:1"), std::string::npos);
}

}  // namespace
}  // namespace pgderive
