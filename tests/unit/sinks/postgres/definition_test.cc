// A postgres view's recorded definition taken apart (PostgresSink::ParseDefinition): the
// serving or retained version of a changed view is maintained with it.
#include <gtest/gtest.h>

#include "sinks/postgres/postgres_sink.h"

namespace pgderive {
namespace {

TEST(ParseDefinitionTest, TakesApartWhatDefinitionWrites) {
  auto parts = PostgresSink::ParseDefinition(
      "table out.docs\nkey \"id\", \"re\"\"gion\"\nquery select id,\n  region as "
      "\"re\"\"gion\" from s.t\nsources s.t 16384, s.u 16390");
  ASSERT_TRUE(parts.has_value());
  EXPECT_EQ(parts->table, "out.docs");
  EXPECT_EQ(parts->key, (std::vector<std::string>{"id", "re\"gion"}));
  EXPECT_EQ(parts->query, "select id,\n  region as \"re\"\"gion\" from s.t");
  EXPECT_EQ(parts->tables, (std::vector<std::string>{"s.t", "s.u"}));
}

TEST(ParseDefinitionTest, RefusesWhatItCannotTakeApart) {
  // Recorded before the sources were: not maintainable as a version.
  EXPECT_FALSE(PostgresSink::ParseDefinition("table a.b\nkey \"id\"\nquery select 1").has_value());
  EXPECT_FALSE(PostgresSink::ParseDefinition("").has_value());
  EXPECT_FALSE(PostgresSink::ParseDefinition("table a.b\nkey id\nquery select 1\nsources s.t 1")
                   .has_value());
  EXPECT_FALSE(PostgresSink::ParseDefinition("table a.b\nkey \"id\nquery select 1\nsources s.t 1")
                   .has_value());
  EXPECT_FALSE(PostgresSink::ParseDefinition("table a.b\nkey \"id\"\nquery select 1\nsources s.t")
                   .has_value());
}

}  // namespace
}  // namespace pgderive
