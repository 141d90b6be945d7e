#include "tests/support/stack_env.h"

#include <gtest/gtest.h>

namespace pgderive::testing {
namespace {

TEST(StackEnvTest, ParsesKeyValueLines) {
  std::string why;
  auto env = StackEnv::Parse(
      "# written by compose/local/stack\nPGDERIVE_PG_PORT=5433\n\n"
      "PGDERIVE_PG_DSN=postgresql://postgres:x@127.0.0.1:5433/postgres\n",
      &why);
  ASSERT_TRUE(env.has_value()) << why;
  EXPECT_EQ(env->Value("PGDERIVE_PG_PORT"), "5433");
  EXPECT_EQ(env->pg_dsn(), "postgresql://postgres:x@127.0.0.1:5433/postgres");
  EXPECT_EQ(env->Value("MISSING"), "");
}

TEST(StackEnvTest, RejectsLineWithoutEquals) {
  std::string why;
  EXPECT_FALSE(StackEnv::Parse("A=1\nnot a pair\n", &why).has_value());
  EXPECT_EQ(why, "line 2: expected KEY=VALUE");
}

TEST(StackEnvTest, UniqueNamesDiffer) {
  EXPECT_NE(UniqueName("slot"), UniqueName("slot"));
  EXPECT_EQ(UniqueName("idx").rfind("idx_", 0), 0u);
}

}  // namespace
}  // namespace pgderive::testing
