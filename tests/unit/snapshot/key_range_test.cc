// The pure parts of reading a table by its key (snapshot/key_range.h): a row's position,
// and a store key's readings put in the key's order.
#include "snapshot/key_range.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

// (tenant, id) the row key, declared id first; the chunks follow (tenant, id).
RelationSchema Orders() {
  RelationSchema schema;
  schema.id = RelationId{16500};
  schema.nspname = "public";
  schema.relname = "orders";
  schema.columns = {
      {"id", 23, -1, true, ""}, {"note", 25, -1, false, ""}, {"tenant", 25, -1, true, ""}};
  return schema;
}
const KeyColumnList kKey = {{"tenant", "text"}, {"id", "integer"}};

TEST(KeyRangeTest, RowPositionIsTheKeyColumnsValuesInTheKeysOrder) {
  EXPECT_EQ(RowPosition(Orders(), kKey, {"7", "a note", "acme"}), R"(["acme","7"])");
  EXPECT_EQ(RowPosition(Orders(), {{"id", "integer"}}, {"7", std::nullopt, "acme"}), R"(["7"])");
}

TEST(KeyRangeTest, OneReadingIsPutInTheKeysOrder) {
  // Readings are in column order: id, then tenant.
  EXPECT_EQ(OrderedRowKey(Orders(), kKey, {{"7", "acme"}}),
            (std::vector<std::string>{"acme", "7"}));
}

TEST(KeyRangeTest, SeveralReadingsNoneOrAnotherKeyGiveNoRowKey) {
  EXPECT_FALSE(OrderedRowKey(Orders(), kKey, {}));
  EXPECT_FALSE(OrderedRowKey(Orders(), kKey, {{"7", "acme"}, {"7:acme", ""}}));
  EXPECT_FALSE(OrderedRowKey(Orders(), kKey, {{"7"}}));  // not every row key column
  // The table's key is another now (the chunks follow a column no reading holds).
  EXPECT_FALSE(OrderedRowKey(Orders(), {{"note", "text"}}, {{"7", "acme"}}));
}

}  // namespace
}  // namespace pgderive
