// SpoolCapture: the stream's messages into the change log as whole transactions, a
// transaction the log holds (resent after a reconnect) not appended twice.
#include "pipeline/spool_capture.h"

#include <gtest/gtest.h>

#include "spool/memory_log.h"

namespace pgderive {
namespace {

std::vector<uint8_t> BigEndian(char type, std::initializer_list<uint64_t> fields, size_t pad) {
  std::vector<uint8_t> out{static_cast<uint8_t>(type)};
  if (type == 'C') out.push_back(0);  // flags
  for (uint64_t field : fields) {
    for (int shift = 56; shift >= 0; shift -= 8)
      out.push_back(static_cast<uint8_t>(field >> shift));
  }
  out.resize(out.size() + pad, 0);
  return out;
}
// 'B' final_lsn, commit_time, xid.
std::vector<uint8_t> Begin(uint64_t commit) { return BigEndian('B', {commit, 0}, 4); }
// 'C' flags, commit_lsn, end_lsn, commit_time.
std::vector<uint8_t> Commit(uint64_t commit, uint64_t end) {
  return BigEndian('C', {commit, end, 0}, 0);
}
std::vector<uint8_t> Message(char type) { return {static_cast<uint8_t>(type), 1, 2, 3}; }

// The messages a reader of the log from 0/0 gets, as their first bytes.
std::string Types(ChangeLog& log) {
  auto reader = log.ReadAfter(Lsn{});
  EXPECT_TRUE(reader.ok());
  std::string types;
  while (true) {
    auto next = reader.value()->Next(std::chrono::milliseconds(0));
    EXPECT_TRUE(next.ok());
    if (!next.ok() || !next.value()) return types;
    types += next.value()->bytes[0];
  }
}

TEST(SpoolCaptureTest, AppendsWholeTransactionsAndSyncsOncePerCall) {
  auto log = NewMemoryLog();
  SpoolCapture capture(*log);
  ASSERT_TRUE(capture.Add(Lsn{10}, Begin(100)).ok());
  ASSERT_TRUE(capture.Add(Lsn{11}, Message('R')).ok());
  ASSERT_TRUE(capture.Add(Lsn{12}, Message('I')).ok());
  EXPECT_TRUE(capture.open());
  EXPECT_FALSE(capture.unsynced());
  ASSERT_TRUE(capture.Add(Lsn{100}, Commit(100, 120)).ok());
  EXPECT_FALSE(capture.open());
  EXPECT_TRUE(capture.unsynced());
  EXPECT_EQ(capture.appended(), Lsn{120});
  EXPECT_EQ(log->Durable(), Lsn{});  // not durable before the Sync
  auto durable = capture.Sync();
  ASSERT_TRUE(durable.ok());
  EXPECT_EQ(durable.value(), Lsn{120});
  EXPECT_FALSE(capture.unsynced());
  EXPECT_EQ(Types(*log), "BRIC");
}

TEST(SpoolCaptureTest, ATransactionTheLogHoldsIsNotAppendedAgain) {
  auto log = NewMemoryLog();
  SpoolCapture capture(*log);
  ASSERT_TRUE(capture.Add(Lsn{10}, Begin(100)).ok());
  ASSERT_TRUE(capture.Add(Lsn{100}, Commit(100, 120)).ok());
  ASSERT_TRUE(capture.Sync().ok());
  // The stream restarts from the slot, mid-transaction and then from before the commit.
  ASSERT_TRUE(capture.Add(Lsn{130}, Begin(200)).ok());
  capture.Reset();
  ASSERT_TRUE(capture.Add(Lsn{10}, Begin(100)).ok());
  ASSERT_TRUE(capture.Add(Lsn{11}, Message('I')).ok());
  ASSERT_TRUE(capture.Add(Lsn{100}, Commit(100, 120)).ok());
  EXPECT_FALSE(capture.unsynced());
  ASSERT_TRUE(capture.Add(Lsn{130}, Begin(200)).ok());
  ASSERT_TRUE(capture.Add(Lsn{200}, Commit(200, 220)).ok());
  ASSERT_TRUE(capture.Sync().ok());
  EXPECT_EQ(log->Durable(), Lsn{220});
  EXPECT_EQ(Types(*log), "BCBC");
  // A capture over a log that holds transactions skips by the log's durable position.
  SpoolCapture again(*log);
  ASSERT_TRUE(again.Add(Lsn{130}, Begin(200)).ok());
  ASSERT_TRUE(again.Add(Lsn{200}, Commit(200, 220)).ok());
  EXPECT_FALSE(again.unsynced());
}

TEST(SpoolCaptureTest, MessagesOutsideATransaction) {
  auto log = NewMemoryLog();
  SpoolCapture capture(*log);
  // A non-transactional logical message is not pgderive's: left out.
  EXPECT_TRUE(capture.Add(Lsn{5}, Message('M')).ok());
  EXPECT_FALSE(capture.unsynced());
  // A streamed chunk: the stream must run without streaming of in-progress transactions.
  const Status status = capture.Add(Lsn{6}, Message('S'));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("streaming of in-progress transactions must be off"),
            std::string::npos);
  EXPECT_FALSE(capture.Add(Lsn{7}, std::vector<uint8_t>{}).ok());
}

}  // namespace
}  // namespace pgderive
