// Keeping unchanged TOAST columns from the store's previous JSON, text for text.
#include "sinks/common/json_merge.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

TEST(JsonMergeTest, TakesUnchangedMembersVerbatim) {
  auto merged = MergeUnchanged(
      R"({"id":1,"title":"new"})",
      R"({"id":1,"title":"old","big":"x\"y","n":12.50,"deep":{"a":[1,2.0,null]},"i":9223372036854775807})",
      {"big", "n", "deep", "i"});
  ASSERT_TRUE(merged.ok()) << merged.error().message();
  EXPECT_EQ(
      merged.value(),
      R"({"id":1,"title":"new","big":"x\"y","n":12.50,"deep":{"a":[1,2.0,null]},"i":9223372036854775807})");
}

TEST(JsonMergeTest, NothingUnchangedIsTheValueItself) {
  auto merged = MergeUnchanged(R"({"id":1})", "", {});
  ASSERT_TRUE(merged.ok());
  EXPECT_EQ(merged.value(), R"({"id":1})");
}

TEST(JsonMergeTest, AMissingPreviousValueIsAnErrorNeverANull) {
  EXPECT_FALSE(MergeUnchanged(R"({"id":1})", "", {"big"}).ok());
  auto lacks = MergeUnchanged(R"({"id":1})", R"({"id":1})", {"big"});
  ASSERT_FALSE(lacks.ok());
  EXPECT_NE(lacks.error().message().find("big"), std::string::npos);
  EXPECT_EQ(MergeUnchanged(R"({"id":1})", "[1]", {"big"}).error().kind(), ErrorKind::kCorrupt);
  EXPECT_EQ(MergeUnchanged(R"({"id":1})", "{\"big\": tru", {"big"}).error().kind(),
            ErrorKind::kCorrupt);
}

TEST(JsonMergeTest, AnEmptyPartialObject) {
  auto merged = MergeUnchanged("{}", R"({"big": "v"})", {"big"});
  ASSERT_TRUE(merged.ok()) << merged.error().message();
  EXPECT_EQ(merged.value(), R"({"big":"v"})");
}

}  // namespace
}  // namespace pgderive
