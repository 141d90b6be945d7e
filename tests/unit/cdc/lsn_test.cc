#include "cdc/lsn.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

TEST(LsnTest, ParsesPostgresTextForm) {
  auto lsn = Lsn::Parse("16/B374D848");
  ASSERT_TRUE(lsn.has_value());
  EXPECT_EQ(lsn->value, 0x16B374D848ull);
  EXPECT_EQ(lsn->ToString(), "16/B374D848");
}

TEST(LsnTest, AcceptsLowerCaseAndShortHalves) {
  EXPECT_EQ(Lsn::Parse("0/0")->value, 0u);
  EXPECT_EQ(Lsn::Parse("a/b")->value, 0xA0000000Bull);
  EXPECT_EQ(Lsn::Parse("FFFFFFFF/FFFFFFFF")->value, ~0ull);
}

TEST(LsnTest, ToStringDropsLeadingZerosLikePgLsnOut) {
  EXPECT_EQ(Lsn{0}.ToString(), "0/0");
  EXPECT_EQ(Lsn{0x100000000ull}.ToString(), "1/0");
  EXPECT_EQ(Lsn{0x0000000100ABCDEFull}.ToString(), "1/ABCDEF");
}

TEST(LsnTest, RejectsMalformedText) {
  for (const char* bad : {"", "/", "1/", "/1", "1", "123456789/0", "0/123456789", "g/0", "0/-1",
                          " 0/1", "0/1 ", "0//1", "0x1/2"}) {
    EXPECT_FALSE(Lsn::Parse(bad).has_value()) << "'" << bad << "'";
  }
}

TEST(LsnTest, RoundTripsAndOrders) {
  for (uint64_t v : {1ull, 0xFFull, 0x1FFFFFFFFull, 0x16B374D848ull, ~0ull}) {
    EXPECT_EQ(Lsn::Parse(Lsn{v}.ToString())->value, v);
  }
  EXPECT_LT(*Lsn::Parse("0/FFFFFFFF"), *Lsn::Parse("1/0"));
  EXPECT_FALSE(Lsn{}.IsValid());
  EXPECT_TRUE(Lsn{1}.IsValid());
}

}  // namespace
}  // namespace pgderive
