#include "cdc/walsender.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

std::vector<uint8_t> Int64(uint64_t v) {
  std::vector<uint8_t> out(8);
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<uint8_t>(v & 0xFF);
  return out;
}

std::vector<uint8_t> Concat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(WalSenderTest, StandbyStatusUpdateLayout) {
  const auto bytes = EncodeStandbyStatusUpdate(*Lsn::Parse("16/B374D848"), *Lsn::Parse("1/2"),
                                               *Lsn::Parse("0/3"), 0x0102030405060708, true);
  const std::vector<uint8_t> expected = Concat(
      {{'r'}, Int64(0x16B374D848), Int64(0x100000002), Int64(3), Int64(0x0102030405060708), {1}});
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.end()), expected);
}

TEST(WalSenderTest, DecodesXLogDataAndKeepalive) {
  const std::vector<uint8_t> xlog =
      Concat({{'w'}, Int64(0x10), Int64(0x20), Int64(0x30), {'B', 'x', 'y'}});
  auto decoded = DecodeWalSenderMessage(xlog);
  ASSERT_TRUE(decoded.ok()) << decoded.error().ToString();
  const auto& data = std::get<XLogData>(decoded.value());
  EXPECT_EQ(data.data_start.value, 0x10u);
  EXPECT_EQ(data.wal_end.value, 0x20u);
  EXPECT_EQ(data.send_time, 0x30);
  ASSERT_EQ(data.data.size(), 3u);
  EXPECT_EQ(data.data[0], 'B');

  const std::vector<uint8_t> keepalive = Concat({{'k'}, Int64(0x99), Int64(7), {1}});
  auto k = DecodeWalSenderMessage(keepalive);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(std::get<PrimaryKeepalive>(k.value()).wal_end.value, 0x99u);
  EXPECT_TRUE(std::get<PrimaryKeepalive>(k.value()).reply_requested);
}

TEST(WalSenderTest, RefusesMalformedFrames) {
  EXPECT_FALSE(DecodeWalSenderMessage({}).ok());
  EXPECT_FALSE(DecodeWalSenderMessage(Concat({{'w'}, Int64(1), Int64(2)})).ok());
  EXPECT_FALSE(DecodeWalSenderMessage(Concat({{'k'}, Int64(1), Int64(2)})).ok());
  EXPECT_FALSE(DecodeWalSenderMessage(Concat({{'k'}, Int64(1), Int64(2), {2}})).ok());
  EXPECT_FALSE(DecodeWalSenderMessage(Concat({{'k'}, Int64(1), Int64(2), {0, 0}})).ok());
  auto unknown = DecodeWalSenderMessage(std::vector<uint8_t>{'x'});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().kind(), ErrorKind::kCorrupt);
  EXPECT_NE(unknown.error().message().find("unknown type 120"), std::string::npos);
}

TEST(WalSenderTest, PostgresEpoch) {
  using namespace std::chrono;
  const auto y2k = system_clock::time_point(seconds(946684800));
  EXPECT_EQ(ToPgTimestamp(y2k), 0);
  EXPECT_EQ(ToPgTimestamp(y2k + microseconds(1500)), 1500);
  EXPECT_EQ(FromPgTimestamp(1500), y2k + microseconds(1500));
}

}  // namespace
}  // namespace pgderive
