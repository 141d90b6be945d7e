#include "base/number.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace pgderive {
namespace {

TEST(NumberTest, ParsesWholeNumbers) {
  EXPECT_EQ(ParseInt64("-42").value(), -42);
  EXPECT_EQ(ParseInt64("9223372036854775807").value(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(ParseUint64("18446744073709551615").value(), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(ParseUint32("4294967295").value(), 4294967295u);
  EXPECT_EQ(ParseInt32("-1").value(), -1);
  EXPECT_EQ(ParseInt32("0").value(), 0);
}

TEST(NumberTest, ParsesDoubles) {
  EXPECT_DOUBLE_EQ(ParseDouble("1.5").value(), 1.5);
  EXPECT_DOUBLE_EQ(ParseDouble("-2e3").value(), -2000.0);
}

TEST(NumberTest, RefusesWhatIsNotWhollyANumber) {
  for (const char* text : {"", " 1", "1 ", "1x", "x", "+1", "0x10", "1.0", "--1"}) {
    auto parsed = ParseInt64(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_EQ(parsed.error().kind(), ErrorKind::kPermanent);
  }
  EXPECT_FALSE(ParseUint64("-1").ok());
  EXPECT_FALSE(ParseDouble("1.5 ").ok());
  EXPECT_FALSE(ParseDouble("").ok());
}

TEST(NumberTest, RefusesOutOfRange) {
  auto parsed = ParseUint32("4294967296");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message().find("out of range"), std::string::npos);
  EXPECT_FALSE(ParseInt32("2147483648").ok());
  EXPECT_FALSE(ParseInt64("9223372036854775808").ok());
}

TEST(NumberTest, ErrorNamesTheTextAndTheKindAsked) {
  auto parsed = ParseUint32("abc", ErrorKind::kCorrupt);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().kind(), ErrorKind::kCorrupt);
  EXPECT_EQ(parsed.error().message(), "'abc' is not a whole number from 0");
  // A long text is cut in the message.
  auto long_text = ParseInt64(std::string(100, '7') + "x");
  ASSERT_FALSE(long_text.ok());
  EXPECT_EQ(long_text.error().message().find(std::string(41, '7')), std::string::npos);
}

TEST(NumberTest, ServerNumberTakesNullAsTheDefaultAndGarbageAsCorrupt) {
  EXPECT_EQ(ParseServerNumber<int64_t>(std::nullopt).value(), 0);
  EXPECT_EQ(ParseServerNumber<int32_t>(std::nullopt, -1).value(), -1);
  EXPECT_EQ(ParseServerNumber<uint32_t>(std::string("16384")).value(), 16384u);
  auto garbage = ParseServerNumber<uint32_t>(std::string("16384x"));
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().kind(), ErrorKind::kCorrupt);
}

}  // namespace
}  // namespace pgderive
