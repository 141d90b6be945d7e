#include "base/table_name.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

TEST(TableNameTest, NoDotMeansThePublicSchema) {
  EXPECT_EQ(TableName::Parse("orders"), (TableName{"public", "orders"}));
  EXPECT_EQ(TableName::Parse("orders").Qualified(), "public.orders");
  EXPECT_EQ(QualifyTableName("orders"), "public.orders");
}

TEST(TableNameTest, SplitsAtTheFirstDot) {
  EXPECT_EQ(TableName::Parse("sales.orders"), (TableName{"sales", "orders"}));
  EXPECT_EQ(QualifyTableName("sales.orders"), "sales.orders");
  // Names as the catalog returns them may hold anything; the first dot separates.
  EXPECT_EQ(TableName::Parse("s.a.b"), (TableName{"s", "a.b"}));
}

TEST(TableNameTest, QuotedDoublesEmbeddedQuotes) {
  EXPECT_EQ(TableName::Parse("sales.orders").Quoted(), "\"sales\".\"orders\"");
  EXPECT_EQ((TableName{"My Schema", "a\"b"}).Quoted(), "\"My Schema\".\"a\"\"b\"");
  EXPECT_EQ(QuoteSqlIdentifier(""), "\"\"");
  EXPECT_EQ(QuoteSqlIdentifier("Upper"), "\"Upper\"");
}

TEST(TableNameTest, ProblemAcceptsTableAndSchemaTable) {
  EXPECT_EQ(TableName::Problem("orders"), std::nullopt);
  EXPECT_EQ(TableName::Problem("sales.orders"), std::nullopt);
}

TEST(TableNameTest, ProblemRefusesWhatIsNotATableName) {
  for (const char* text : {"", ".orders", "sales.", "a.b.c", "\"sales\".orders", "sales .orders",
                           "my table", "a\tb"}) {
    EXPECT_NE(TableName::Problem(text), std::nullopt) << text;
  }
}

}  // namespace
}  // namespace pgderive
