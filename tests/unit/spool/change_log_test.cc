// The ChangeLog contract (spool/change_log.h), run against each implementation.

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "base/log.h"
#include "spool/memory_log.h"
#include "spool/segment_log.h"
#include "tests/support/wait.h"
#include "tests/unit/spool/log_messages.h"

namespace pgderive {
namespace {

using namespace std::chrono_literals;
using spool_test::Transaction;

class ChangeLogContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "segment") {
      std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
      for (char& c : name) {
        if (c == '/') c = '_';
      }
      dir_ = std::filesystem::temp_directory_path() /
             ("pgderive_spool_contract_" + std::to_string(::getpid()) + "_" + name);
      std::filesystem::remove_all(dir_);
    }
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<ChangeLog> Make(uint64_t segment_bytes = 4096) {
    if (GetParam() == "memory") return NewMemoryLog();
    SpoolOptions options;
    options.dir = dir_.string();
    options.segment_bytes = segment_bytes;
    auto log = OpenSegmentLog(options, logger_);
    EXPECT_TRUE(log.ok()) << log.error().ToString();
    return log.ok() ? std::move(log).value() : nullptr;
  }

  // Everything written after `after`, read until the reader has nothing more.
  static std::vector<LogMessage> ReadAll(ChangeLog& log, Lsn after) {
    auto reader = log.ReadAfter(after);
    EXPECT_TRUE(reader.ok()) << reader.error().ToString();
    std::vector<LogMessage> out;
    if (!reader.ok()) return out;
    for (;;) {
      auto next = reader.value()->Next(0ms);
      EXPECT_TRUE(next.ok()) << next.error().ToString();
      if (!next.ok() || !next.value().has_value()) return out;
      out.push_back(std::move(*next.value()));
    }
  }

  std::filesystem::path dir_;
  Logger logger_{LogConfig{}, stderr};
};

void ExpectSame(const std::vector<LogMessage>& got, const std::vector<LogMessage>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].lsn, want[i].lsn) << i;
    EXPECT_EQ(got[i].bytes, want[i].bytes) << i;
  }
}

TEST_P(ChangeLogContractTest, AppendedIsReadOnlyOnceWritten) {
  auto log = Make();
  ASSERT_TRUE(log);
  auto t1 = Transaction(0x10000, 1, 100, 3, true);
  auto t2 = Transaction(0x20000, 2, 100, 2);
  ASSERT_TRUE(log->Append(t1).ok());
  ASSERT_TRUE(log->Append(t2).ok());
  EXPECT_TRUE(ReadAll(*log, Lsn{}).empty());
  EXPECT_EQ(log->Durable(), Lsn{});
  auto durable = log->Sync();
  ASSERT_TRUE(durable.ok());
  EXPECT_EQ(durable.value(), Lsn{0x20000});
  EXPECT_EQ(log->Durable(), Lsn{0x20000});
  std::vector<LogMessage> want = t1;
  want.insert(want.end(), t2.begin(), t2.end());
  ExpectSame(ReadAll(*log, Lsn{}), want);
}

// Readers follow what is written; Durable() follows what is fsynced (the disk log does it
// on its own thread, without a Sync) and never passes what was written.
TEST_P(ChangeLogContractTest, AReaderSeesWrittenRecordsBeforeTheyAreDurable) {
  auto log = Make();
  ASSERT_TRUE(log);
  auto t1 = Transaction(0x10000, 1, 100, 2, true);
  auto t2 = Transaction(0x20000, 2, 100, 3);
  auto t3 = Transaction(0x30000, 3, 100, 1);
  ASSERT_TRUE(log->Append(t1).ok());
  ASSERT_TRUE(log->Sync().ok());
  auto reader = log->ReadAfter(Lsn{0x10000});
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE(log->Append(t2).ok());
  auto written = log->Write();
  ASSERT_TRUE(written.ok()) << written.error().ToString();
  EXPECT_EQ(written.value(), Lsn{0x20000});
  // The relation in force first, then t2 whole - whether or not it is durable yet.
  std::vector<LogMessage> got;
  for (;;) {
    auto next = reader.value()->Next(0ms);
    ASSERT_TRUE(next.ok()) << next.error().ToString();
    if (!next.value()) break;
    got.push_back(std::move(*next.value()));
  }
  ASSERT_EQ(got.size(), 1 + t2.size());
  for (size_t i = 0; i < t2.size(); ++i) EXPECT_EQ(got[1 + i].bytes, t2[i].bytes) << i;
  EXPECT_GE(log->Durable(), Lsn{0x10000});
  EXPECT_LE(log->Durable(), Lsn{0x20000});
  if (GetParam() == "memory") {
    EXPECT_EQ(log->Durable(), Lsn{0x10000});  // no fsync yet
  }
  // Appended but not written: never durable, however long one waits; what was written
  // becomes durable without a Sync on the disk log.
  ASSERT_TRUE(log->Append(t3).ok());
  if (GetParam() == "segment") {
    EXPECT_TRUE(testing::WaitFor(
        [&] {
          const Lsn durable = log->Durable();
          EXPECT_LE(durable, Lsn{0x20000});
          return durable == Lsn{0x20000};
        },
        10s));
  }
  EXPECT_LE(log->Durable(), Lsn{0x20000});
  EXPECT_LE(log->Stats().durable, Lsn{0x20000});
  auto none = reader.value()->Next(0ms);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none.value().has_value());  // t3 is not written yet
  auto durable = log->Sync();
  ASSERT_TRUE(durable.ok());
  EXPECT_EQ(durable.value(), Lsn{0x30000});
  EXPECT_EQ(log->Durable(), Lsn{0x30000});
  auto next = reader.value()->Next(0ms);
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next.value().has_value());
  EXPECT_EQ(next.value()->bytes, t3[0].bytes);
}

TEST_P(ChangeLogContractTest, RefusesATransactionNotAfterTheLast) {
  auto log = Make();
  ASSERT_TRUE(log);
  ASSERT_TRUE(log->Append(Transaction(0x20000, 1, 100, 1)).ok());
  Status again = log->Append(Transaction(0x20000, 2, 100, 1));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kPermanent);
  auto no_commit = Transaction(0x30000, 3, 100, 1);
  no_commit.pop_back();
  EXPECT_FALSE(log->Append(no_commit).ok());
  EXPECT_FALSE(log->Append({}).ok());
}

TEST_P(ChangeLogContractTest, AReaderMidLogGetsTheRelationFirst) {
  auto log = Make();
  ASSERT_TRUE(log);
  auto t1 = Transaction(0x10000, 1, 100, 2, true);
  auto t2 = Transaction(0x20000, 2, 200, 2, true);
  auto t3 = Transaction(0x30000, 3, 100, 2);
  for (const auto* t : {&t1, &t2, &t3}) {
    ASSERT_TRUE(log->Append(*t).ok());
  }
  ASSERT_TRUE(log->Sync().ok());
  auto got = ReadAll(*log, Lsn{0x20000});
  // Both relations in force (in either order), then t3 whole.
  ASSERT_EQ(got.size(), 2 + t3.size());
  std::set<std::string> relations{got[0].bytes, got[1].bytes};
  EXPECT_EQ(relations, (std::set<std::string>{t1[1].bytes, t2[1].bytes}));
  ExpectSame({got.begin() + 2, got.end()}, t3);
  // After the last transaction: only the relations.
  EXPECT_EQ(ReadAll(*log, Lsn{0x30000}).size(), 2u);
}

TEST_P(ChangeLogContractTest, ARelationSentInsideAStreamIsHandedOverPlain) {
  auto log = Make();
  ASSERT_TRUE(log);
  std::vector<LogMessage> streamed;
  std::string start = "S";
  spool_test::PutU32(start, 77);
  spool_test::PutU8(start, 1);
  streamed.push_back({Lsn{0x100}, start});
  streamed.push_back({Lsn{0x100}, spool_test::RelationBytes(300, "s", 3, 77)});
  streamed.push_back({Lsn{0x101}, "E"});
  std::string commit = "c";
  spool_test::PutU32(commit, 77);
  spool_test::PutU8(commit, 0);
  spool_test::PutU64(commit, 0x1F8);
  spool_test::PutU64(commit, 0x200);
  spool_test::PutU64(commit, 0);
  streamed.push_back({Lsn{0x200}, commit});
  ASSERT_TRUE(log->Append(streamed).ok());
  ASSERT_TRUE(log->Sync().ok());
  EXPECT_EQ(log->Durable(), Lsn{0x200});
  auto got = ReadAll(*log, Lsn{0x200});
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, spool_test::RelationBytes(300, "s", 3));
}

TEST_P(ChangeLogContractTest, TruncationRefusesReadsBeforeTheOldest) {
  auto log = Make(/*segment_bytes=*/512);
  ASSERT_TRUE(log);
  std::vector<std::vector<LogMessage>> txns;
  for (uint32_t i = 1; i <= 20; ++i) {
    txns.push_back(Transaction(0x10000ull * i, i, 100, 3, i == 1));
    ASSERT_TRUE(log->Append(txns.back()).ok());
  }
  ASSERT_TRUE(log->Sync().ok());
  const ChangeLogStats before = log->Stats();
  EXPECT_GT(before.segments, 1u);
  ASSERT_TRUE(log->TruncateThrough(Lsn{0x10000ull * 10}).ok());
  const ChangeLogStats after = log->Stats();
  EXPECT_LT(after.segments, before.segments);
  EXPECT_LT(after.bytes, before.bytes);
  EXPECT_GT(after.oldest, Lsn{});
  EXPECT_LE(after.oldest, Lsn{0x10000ull * 10});
  EXPECT_EQ(after.durable, Lsn{0x10000ull * 20});
  auto refused = log->ReadAfter(Lsn{after.oldest.value - 1});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind(), ErrorKind::kPermanent);
  // A read from the 10th on: the relation of the first transaction (removed) first.
  auto got = ReadAll(*log, Lsn{0x10000ull * 10});
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got[0].bytes, txns[0][1].bytes);
  std::vector<LogMessage> want;
  for (size_t i = 10; i < txns.size(); ++i) want.insert(want.end(), txns[i].begin(), txns[i].end());
  ExpectSame({got.begin() + 1, got.end()}, want);
}

TEST_P(ChangeLogContractTest, ANewLogBeginsWhereTold) {
  auto log = Make();
  ASSERT_TRUE(log);
  EXPECT_EQ(log->Stats().segments, 0u);
  EXPECT_FALSE(log->ReadAfter(Lsn{0x500}).ok());
  EXPECT_TRUE(log->ReadAfter(Lsn{}).ok());
  ASSERT_TRUE(log->TruncateThrough(Lsn{0x500}).ok());
  EXPECT_EQ(log->Stats().oldest, Lsn{0x500});
  EXPECT_EQ(log->Durable(), Lsn{0x500});
  EXPECT_FALSE(log->ReadAfter(Lsn{0x4FF}).ok());
  EXPECT_TRUE(log->ReadAfter(Lsn{0x500}).ok());
  EXPECT_FALSE(log->Append(Transaction(0x500, 1, 100, 1)).ok());
  EXPECT_TRUE(log->Append(Transaction(0x10000, 1, 100, 1)).ok());
}

TEST_P(ChangeLogContractTest, AWaitingReaderWakesOnSync) {
  auto log = Make();
  ASSERT_TRUE(log);
  auto reader = log->ReadAfter(Lsn{});
  ASSERT_TRUE(reader.ok());
  auto nothing = reader.value()->Next(0ms);
  ASSERT_TRUE(nothing.ok());
  EXPECT_FALSE(nothing.value().has_value());
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    auto next = reader.value()->Next(60s);
    got = next.ok() && next.value().has_value() && next.value()->bytes[0] == 'B';
  });
  auto t1 = Transaction(0x10000, 1, 100, 1);
  ASSERT_TRUE(log->Append(t1).ok());
  ASSERT_TRUE(log->Sync().ok());
  const auto start = std::chrono::steady_clock::now();
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST_P(ChangeLogContractTest, ConcurrentReadersSeeEveryTransactionInOrder) {
  auto log = Make(/*segment_bytes=*/2048);
  ASSERT_TRUE(log);
  constexpr uint32_t kTxns = 300;
  std::vector<std::vector<LogMessage>> txns;
  for (uint32_t i = 1; i <= kTxns; ++i)
    txns.push_back(Transaction(0x10000ull * i, i, 100, 1 + i % 4, i == 1));
  std::vector<LogMessage> want;
  for (const auto& t : txns) want.insert(want.end(), t.begin(), t.end());
  std::vector<std::vector<LogMessage>> read(3);
  std::vector<std::thread> readers;
  for (size_t r = 0; r < read.size(); ++r) {
    auto reader = log->ReadAfter(Lsn{});
    ASSERT_TRUE(reader.ok());
    readers.emplace_back([&, r, rd = std::move(reader).value()] {
      while (read[r].size() < want.size()) {
        auto next = rd->Next(30s);
        if (!next.ok() || !next.value().has_value()) return;
        read[r].push_back(std::move(*next.value()));
      }
    });
  }
  for (uint32_t i = 0; i < kTxns; ++i) {
    ASSERT_TRUE(log->Append(txns[i]).ok());
    if (i % 7 == 0) {
      ASSERT_TRUE(log->Sync().ok());
    }
  }
  ASSERT_TRUE(log->Sync().ok());
  for (auto& t : readers) t.join();
  for (const auto& r : read) ExpectSame(r, want);
}

INSTANTIATE_TEST_SUITE_P(Logs, ChangeLogContractTest, ::testing::Values("memory", "segment"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace pgderive
