// An update's unchanged TOASTed values taken from what its old tuple carries.
#include "cdc/change_batch.h"

#include <gtest/gtest.h>

#include "sinks/common/view_shape.h"

namespace pgderive {
namespace {

RelationSchema Notes() {
  RelationSchema schema;
  schema.nspname = "public";
  schema.relname = "notes";
  schema.columns = {{"k", 25, -1, true, ""}, {"v", 23, -1, false, ""}, {"body", 25, -1, false, ""}};
  return schema;
}

TupleValue Text(std::string_view data) { return {TupleValueKind::kText, data}; }
constexpr TupleValue kUnchanged{TupleValueKind::kUnchanged, {}};
constexpr TupleValue kNull{TupleValueKind::kNull, {}};

TEST(FillUnchangedFromOldTest, AKeyColumnComesFromTheOldKey) {
  // 'K': key columns only, the others null; the TOASTed key is unchanged in the new tuple.
  const TupleData old_key{{Text("kkk"), kNull, kNull}};
  TupleData row{{kUnchanged, Text("2"), kUnchanged}};
  EXPECT_EQ(FillUnchangedFromOld(Notes(), 'K', old_key, row), 1u) << "body is not in the old key";
  EXPECT_EQ(row.columns[0].kind, TupleValueKind::kText);
  EXPECT_EQ(row.columns[0].data, "kkk");
  EXPECT_EQ(row.columns[2].kind, TupleValueKind::kUnchanged);
  EXPECT_FALSE(KeyChanged(Notes(), old_key, row));
}

TEST(FillUnchangedFromOldTest, AWholeOldRowFillsEveryColumn) {
  const TupleData old_row{{Text("a"), Text("1"), Text("big")}};
  TupleData row{{Text("b"), Text("1"), kUnchanged}};
  EXPECT_EQ(FillUnchangedFromOld(Notes(), 'O', old_row, row), 0u);
  EXPECT_EQ(row.columns[2].data, "big");
  EXPECT_TRUE(KeyChanged(Notes(), old_row, row));
}

TEST(FillUnchangedFromOldTest, NothingToTakeLeavesItUnchanged) {
  TupleData row{{Text("a"), kUnchanged, kUnchanged}};
  EXPECT_EQ(FillUnchangedFromOld(Notes(), '\0', TupleData{}, row), 2u);
  // A non-key column of an old key ('K') is never taken, whatever it holds.
  const TupleData odd{{Text("a"), Text("9"), Text("x")}};
  EXPECT_EQ(FillUnchangedFromOld(Notes(), 'K', odd, row), 2u);
}

TEST(FillUnchangedFromOldTest, CopyChangeFillsTheKey) {
  const std::vector<std::shared_ptr<const RelationSchema>> schemas = {
      std::make_shared<RelationSchema>(Notes())};
  UpdateMessage update;
  update.old_kind = 'K';
  update.old_tuple = TupleData{{Text("kkk"), kNull, kNull}};
  update.new_tuple = TupleData{{kUnchanged, Text("2"), kUnchanged}};
  PgOutputMessage message = update;
  Change change;
  change.message = &message;
  change.relations = schemas;
  auto owned = CopyChange(change);
  ASSERT_TRUE(owned);
  EXPECT_EQ(owned->new_tuple.columns[0].kind, TupleValueKind::kText);
  EXPECT_EQ(owned->new_tuple.columns[0].data, "kkk");
  // Backed by the change's own storage, not the message's.
  EXPECT_NE(owned->new_tuple.columns[0].data.data(), update.old_tuple.columns[0].data.data());
}

// Without the old key (PostgreSQL before the versions above), a TOASTed key left
// unchanged cannot say which row changed: the view is told why, never "null".
TEST(FillUnchangedFromOldTest, AnUnchangedKeyWithoutTheOldKeyIsExplained) {
  ViewConfig view;
  view.name = "notes_cache";
  auto key = KeyTemplate::Parse("note:{k}");
  ASSERT_TRUE(key.ok());
  view.key = key.value();
  auto shape = ViewShape::Make(view, std::make_shared<RelationSchema>(Notes()));
  ASSERT_TRUE(shape.ok()) << shape.error().message();
  const TupleData row{{kUnchanged, Text("2"), kNull}};
  auto made = shape.value()->Key(row);
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.error().kind(), ErrorKind::kPermanent);
  EXPECT_NE(made.error().message().find("key column k of public.notes arrived as an unchanged "
                                        "TOASTed value without the old key"),
            std::string::npos)
      << made.error().message();
  EXPECT_FALSE(shape.value()->DocumentId(row).ok());
  const TupleData filled{{Text("kkk"), Text("2"), kNull}};
  EXPECT_EQ(shape.value()->Key(filled).value(), "note:kkk");
}

}  // namespace
}  // namespace pgderive
