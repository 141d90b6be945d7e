// The disk log's own guarantees: recovery of a torn tail, damage and loss detected with
// the file and offset, a writer killed at random points, and the in-memory log as the
// model of what a reader gets.

#include "spool/segment_log.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "base/log.h"
#include "spool/internal/crc32c.h"
#include "spool/memory_log.h"
#include "tests/unit/spool/log_messages.h"

namespace pgderive {
namespace {

using namespace std::chrono_literals;
using spool_test::Transaction;
namespace fs = std::filesystem;

std::vector<fs::path> Segments(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".seg") out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class SegmentLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("pgderive_spool_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result<std::unique_ptr<ChangeLog>> Open(uint64_t segment_bytes = 1024) {
    SpoolOptions options;
    options.dir = dir_.string();
    options.segment_bytes = segment_bytes;
    return OpenSegmentLog(options, logger_);
  }
  std::unique_ptr<ChangeLog> MustOpen(uint64_t segment_bytes = 1024) {
    auto log = Open(segment_bytes);
    EXPECT_TRUE(log.ok()) << log.error().ToString();
    return log.ok() ? std::move(log).value() : nullptr;
  }

  // Everything after `after`; the error of the first failing Next, if any.
  static Result<std::vector<LogMessage>> ReadAll(ChangeLog& log, Lsn after) {
    auto reader = log.ReadAfter(after);
    if (!reader.ok()) return reader.error();
    std::vector<LogMessage> out;
    for (;;) {
      auto next = reader.value()->Next(0ms);
      if (!next.ok()) return next.error();
      if (!next.value().has_value()) return out;
      out.push_back(std::move(*next.value()));
    }
  }

  // Writes `count` transactions (positions 0x10000 * i) and syncs; a relation in the
  // first only.
  std::vector<std::vector<LogMessage>> Fill(ChangeLog& log, uint32_t count, uint32_t first = 1) {
    std::vector<std::vector<LogMessage>> txns;
    for (uint32_t i = first; i < first + count; ++i) {
      txns.push_back(Transaction(0x10000ull * i, i, 100, 1 + static_cast<int>(i % 3), i == 1));
      EXPECT_TRUE(log.Append(txns.back()).ok());
    }
    EXPECT_TRUE(log.Sync().ok());
    return txns;
  }

  fs::path dir_;
  std::FILE* devnull_ = std::fopen("/dev/null", "w");
  Logger logger_{LogConfig{}, devnull_};
};

std::vector<LogMessage> Flatten(const std::vector<std::vector<LogMessage>>& txns, size_t from = 0) {
  std::vector<LogMessage> out;
  for (size_t i = from; i < txns.size(); ++i) out.insert(out.end(), txns[i].begin(), txns[i].end());
  return out;
}

void ExpectSame(const std::vector<LogMessage>& got, const std::vector<LogMessage>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].lsn, want[i].lsn) << i;
    ASSERT_EQ(got[i].bytes, want[i].bytes) << i;
  }
}

TEST(Crc32cTest, KnownValues) {
  EXPECT_EQ(spool_internal::Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(spool_internal::Crc32c("", 0), 0u);
  std::string zeros(32, '\0');
  EXPECT_EQ(spool_internal::Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
  // Extending in pieces gives the same as at once.
  EXPECT_EQ(spool_internal::Crc32cExtend(spool_internal::Crc32c("1234", 4), "56789", 5),
            0xE3069283u);
}

// Where the log can live is checked without creating anything: an existing directory,
// or one whose nearest existing ancestor may be written; not under a file, not where
// this process may not write (as root only a read-only mount stops it: not made here).
TEST_F(SegmentLogTest, CheckLogDirectoryCreatesNothing) {
  EXPECT_TRUE(CheckLogDirectory((dir_ / "a" / "b").string()).ok());
  EXPECT_FALSE(fs::exists(dir_));
  fs::create_directories(dir_);
  EXPECT_TRUE(CheckLogDirectory(dir_.string()).ok());
  std::ofstream(dir_ / "file") << "x";
  Status under_file = CheckLogDirectory((dir_ / "file" / "spool").string());
  ASSERT_FALSE(under_file.ok());
  EXPECT_EQ(under_file.error().message(),
            (dir_ / "file").string() + " exists and is not a directory");
  if (::geteuid() != 0) {
    fs::create_directories(dir_ / "ro");
    fs::permissions(dir_ / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    Status read_only = CheckLogDirectory((dir_ / "ro" / "x" / "spool").string());
    fs::permissions(dir_ / "ro", fs::perms::owner_all);
    ASSERT_FALSE(read_only.ok());
    EXPECT_EQ(read_only.error().message(),
              (dir_ / "ro").string() + " is not writable by this process: Permission denied");
    EXPECT_FALSE(fs::exists(dir_ / "ro" / "x"));
  }
}

// A log's directory is its own: another owner's log, or any file that is not the log's,
// is refused before anything is written or removed; removing the log removes only its
// segment and owner files (a directory with other files in it stays, with them).
TEST_F(SegmentLogTest, ALogsDirectoryIsItsOwnAndRemovingItRemovesOnlyTheLog) {
  const std::string owner = "pipeline a, slot pgderive_a";
  SpoolOptions options;
  options.dir = dir_.string();
  options.segment_bytes = 1024;
  options.owner = owner;
  {
    auto log = OpenSegmentLog(options, logger_);
    ASSERT_TRUE(log.ok()) << log.error().ToString();
  }
  EXPECT_TRUE(fs::exists(dir_ / kLogOwnerFile));
  EXPECT_TRUE(CheckLogOwner(dir_.string(), owner).ok());
  Status other = CheckLogOwner(dir_.string(), "pipeline b, slot pgderive_b");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().message(),
            dir_.string() +
                " is the change log of pipeline a, slot pgderive_a, not of pipeline b, slot "
                "pgderive_b: each pipeline needs a spool.dir of its own");
  options.owner = "pipeline b, slot pgderive_b";
  EXPECT_FALSE(OpenSegmentLog(options, logger_).ok());
  options.owner = owner;

  std::ofstream(dir_ / "precious.txt") << "keep me";
  Status foreign = CheckLogOwner(dir_.string(), owner);
  ASSERT_FALSE(foreign.ok());
  EXPECT_NE(foreign.error().message().find("holds files that are not pgderive's change log "
                                           "(e.g. precious.txt)"),
            std::string::npos)
      << foreign.error().message();
  EXPECT_FALSE(OpenSegmentLog(options, logger_).ok());
  Status removed = RemoveChangeLog(dir_.string());
  EXPECT_FALSE(removed.ok());
  EXPECT_TRUE(fs::exists(dir_ / "precious.txt"));
  EXPECT_FALSE(fs::exists(dir_ / kLogOwnerFile));
  for (const auto& entry : fs::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename(), "precious.txt");
  }
  fs::remove(dir_ / "precious.txt");
  // A log alone (and one of an older pgderive, with no owner file) goes whole.
  {
    auto log = OpenSegmentLog(options, logger_);
    ASSERT_TRUE(log.ok()) << log.error().ToString();
  }
  EXPECT_TRUE(RemoveChangeLog(dir_.string()).ok());
  EXPECT_FALSE(fs::exists(dir_));
}

TEST_F(SegmentLogTest, ReopenedKeepsEverythingAndGoesOn) {
  std::vector<std::vector<LogMessage>> txns;
  {
    auto log = MustOpen();
    txns = Fill(*log, 30);
    EXPECT_GT(log->Stats().segments, 3u);
  }
  auto log = MustOpen();
  ASSERT_TRUE(log);
  EXPECT_EQ(log->Durable(), Lsn{0x10000ull * 30});
  auto all = ReadAll(*log, Lsn{});
  ASSERT_TRUE(all.ok()) << all.error().ToString();
  ExpectSame(all.value(), Flatten(txns));
  auto more = Fill(*log, 5, 31);
  txns.insert(txns.end(), more.begin(), more.end());
  // A read from the last segments: the relation of the first transaction comes first.
  auto tail = ReadAll(*log, Lsn{0x10000ull * 28});
  ASSERT_TRUE(tail.ok()) << tail.error().ToString();
  ASSERT_FALSE(tail.value().empty());
  EXPECT_EQ(tail.value()[0].bytes, txns[0][1].bytes);
  ExpectSame({tail.value().begin() + 1, tail.value().end()}, Flatten(txns, 28));
}

TEST_F(SegmentLogTest, AnEmptyLogBeginsAfterTheGivenPositionAcrossReopen) {
  {
    auto log = MustOpen();
    ASSERT_TRUE(log->TruncateThrough(Lsn{0x5000}).ok());
  }
  auto log = MustOpen();
  EXPECT_EQ(log->Durable(), Lsn{0x5000});
  EXPECT_EQ(log->Stats().oldest, Lsn{0x5000});
  EXPECT_FALSE(log->ReadAfter(Lsn{0x4000}).ok());
  EXPECT_TRUE(ReadAll(*log, Lsn{0x5000}).ok());
}

TEST_F(SegmentLogTest, ADeletedDirectoryIsNotTakenForAPosition) {
  {
    auto log = MustOpen();
    Fill(*log, 5);
  }
  fs::remove_all(dir_);
  auto log = MustOpen();
  EXPECT_EQ(log->Stats().segments, 0u);
  auto read = log->ReadAfter(Lsn{0x20000});
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.error().message().find(dir_.string()), std::string::npos)
      << read.error().message();
}

// Cuts the last segment at every byte offset of its last transaction: the log opens at
// the transaction before, loses nothing durable before it, and goes on.
TEST_F(SegmentLogTest, ATornTailIsCutBackToTheLastWholeTransaction) {
  std::vector<std::vector<LogMessage>> txns;
  {
    auto log = MustOpen(1 << 20);
    txns = Fill(*log, 4);
    txns.push_back(Transaction(0x50000, 5, 100, 6));
    ASSERT_TRUE(log->Append(txns.back()).ok());
    ASSERT_TRUE(log->Sync().ok());
  }
  const fs::path last = Segments(dir_).back();
  std::string whole;
  {
    std::ifstream in(last, std::ios::binary);
    whole.assign(std::istreambuf_iterator<char>(in), {});
  }
  uint64_t txn_bytes = 17 + 4;
  for (const LogMessage& m : txns.back()) txn_bytes += 17 + m.bytes.size();
  const size_t fifth = whole.size() - txn_bytes;
  for (size_t cut = fifth; cut <= whole.size(); ++cut) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    {
      std::ofstream out(last, std::ios::binary | std::ios::trunc);
      out.write(whole.data(), static_cast<std::streamsize>(cut));
    }
    auto log = MustOpen(1 << 20);
    ASSERT_TRUE(log);
    const bool all = cut == whole.size();
    EXPECT_EQ(log->Durable(), Lsn{all ? 0x50000u : 0x40000u});
    EXPECT_EQ(fs::file_size(last), all ? whole.size() : fifth);
    // What may have been cut: the fifth once its own record is whole; before that, only
    // that something after the fourth was (0x40001); nothing when the file ends between
    // records.
    const Lsn cut_from = cut == whole.size() || cut == fifth ? Lsn{}
                         : cut < fifth + 17 + 4              ? Lsn{0x40001}
                                                             : Lsn{0x50000};
    EXPECT_EQ(log->Stats().cut_from, cut_from);
    auto read = ReadAll(*log, Lsn{});
    ASSERT_TRUE(read.ok()) << read.error().ToString();
    ExpectSame(read.value(), Flatten({txns.begin(), txns.end() - (all ? 0 : 1)}));
    if (!all) {  // it goes on: the fifth again
      ASSERT_TRUE(log->Append(txns.back()).ok());
      ASSERT_TRUE(log->Sync().ok());
      auto again = ReadAll(*log, Lsn{0x40000});
      ASSERT_TRUE(again.ok());
      EXPECT_EQ(again.value().size(), 1 + txns.back().size());  // the relation, the fifth
    }
  }
}

TEST_F(SegmentLogTest, AZeroFilledTailIsTorn) {
  {
    auto log = MustOpen(1 << 20);
    Fill(*log, 3);
  }
  {
    std::ofstream out(Segments(dir_).back(), std::ios::binary | std::ios::app);
    std::string zeros(4096, '\0');
    out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  }
  auto log = MustOpen(1 << 20);
  EXPECT_EQ(log->Durable(), Lsn{0x30000});
}

void FlipByte(const fs::path& file, uint64_t offset) {
  std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5A);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

// A damaged last record (a synced one that rotted) cannot be told from a torn write: it
// is cut like one, and the log says from which position, for the caller to compare with
// what it confirmed.
TEST_F(SegmentLogTest, ADamagedLastRecordIsCutAndSaysFromWhere) {
  {
    auto log = MustOpen(1 << 20);
    Fill(*log, 5);
    EXPECT_EQ(log->Stats().cut_from, Lsn{});
  }
  const fs::path last = Segments(dir_).back();
  FlipByte(last, fs::file_size(last) - 2);  // the fifth's Commit record
  auto log = MustOpen(1 << 20);
  ASSERT_TRUE(log);
  EXPECT_EQ(log->Durable(), Lsn{0x40000});
  EXPECT_EQ(log->Stats().cut_from, Lsn{0x50000});
  // Reopened whole: nothing cut this time.
  log.reset();
  log = MustOpen(1 << 20);
  EXPECT_EQ(log->Stats().cut_from, Lsn{});
}

TEST_F(SegmentLogTest, ADamagedRecordIsAnErrorNamingTheFileAndOffset) {
  {
    auto log = MustOpen();
    Fill(*log, 30);
  }
  const auto segments = Segments(dir_);
  ASSERT_GT(segments.size(), 3u);
  const fs::path damaged = segments[1];
  FlipByte(damaged, fs::file_size(damaged) - 3);  // inside its last record's payload
  auto log = MustOpen();                          // found by the reader that reaches it
  ASSERT_TRUE(log);
  auto read = ReadAll(*log, Lsn{});
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.error().kind(), ErrorKind::kCorrupt);
  EXPECT_NE(read.error().message().find(damaged.string()), std::string::npos)
      << read.error().message();
  EXPECT_NE(read.error().message().find("offset"), std::string::npos) << read.error().message();
  // Never skipped: the reader stays failed.
  auto reader = log->ReadAfter(Lsn{});
  ASSERT_TRUE(reader.ok());
  Status first = Status::Ok();
  for (int i = 0; i < 10000 && first.ok(); ++i) {
    auto next = reader.value()->Next(0ms);
    if (!next.ok()) first = next.status();
  }
  ASSERT_FALSE(first.ok());
  EXPECT_FALSE(reader.value()->Next(0ms).ok());
  // A read that starts past the damaged segment is not affected.
  EXPECT_TRUE(ReadAll(*log, Lsn{0x10000ull * 29}).ok());
}

TEST_F(SegmentLogTest, DamageInsideTheLastSegmentIsNotTakenForATornTail) {
  {
    auto log = MustOpen(1 << 20);
    Fill(*log, 5);
  }
  const fs::path last = Segments(dir_).back();
  // The last payload byte of the record in the middle of the file.
  std::vector<uint64_t> ends;
  {
    std::ifstream in(last, std::ios::binary);
    std::string bytes(std::istreambuf_iterator<char>(in), {});
    for (uint64_t at = 0; at + 17 <= bytes.size();) {
      uint32_t length = 0;
      for (int i = 3; i >= 0; --i)
        length = (length << 8) | static_cast<uint8_t>(bytes[at + static_cast<uint64_t>(i)]);
      at += 17 + length;
      ends.push_back(at);
    }
  }
  ASSERT_GT(ends.size(), 10u);
  FlipByte(last, ends[ends.size() / 2] - 1);
  auto log = Open(1 << 20);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.error().kind(), ErrorKind::kCorrupt);
  EXPECT_NE(log.error().message().find(last.string()), std::string::npos) << log.error().message();
}

TEST_F(SegmentLogTest, AMissingSegmentIsAnError) {
  {
    auto log = MustOpen();
    Fill(*log, 30);
  }
  const auto segments = Segments(dir_);
  ASSERT_GT(segments.size(), 3u);
  fs::remove(segments[2]);
  auto log = Open();
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.error().kind(), ErrorKind::kCorrupt);
  EXPECT_NE(log.error().message().find("missing"), std::string::npos) << log.error().message();
  EXPECT_NE(log.error().message().find(segments[1].string()), std::string::npos)
      << log.error().message();
}

TEST_F(SegmentLogTest, TruncationRemovesWholeSegmentsButNeverTheCurrent) {
  auto log = MustOpen();
  Fill(*log, 30);
  const ChangeLogStats before = log->Stats();
  ASSERT_GT(before.segments, 3u);
  ASSERT_TRUE(log->TruncateThrough(before.oldest_segment_end).ok());
  const ChangeLogStats after = log->Stats();
  EXPECT_EQ(after.segments, before.segments - 1);
  EXPECT_EQ(after.oldest, before.oldest_segment_end);
  EXPECT_EQ(after.bytes, before.bytes - before.oldest_segment_bytes);
  EXPECT_EQ(Segments(dir_).size(), after.segments);
  ASSERT_TRUE(log->TruncateThrough(Lsn{UINT64_MAX}).ok());
  EXPECT_EQ(log->Stats().segments, 1u);
  EXPECT_TRUE(ReadAll(*log, log->Durable()).ok());
}

// A writer child killed with SIGKILL at random points (rollover and truncation
// included): reopened, the log holds every transaction the child reported durable, in
// order and whole, and nothing else.
TEST_F(SegmentLogTest, AWriterKilledAtRandomPointsLosesNothingDurable) {
  std::mt19937_64 rng(12345);
  uint32_t next_txn = 1;
  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    const uint32_t start = next_txn;
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(pipe_fds[0]);
      auto log = Open(4096);
      if (!log.ok()) ::_exit(2);
      for (uint32_t i = start;; ++i) {
        if (!log.value()
                 ->Append(Transaction(0x10000ull * i, i, 100, 1 + static_cast<int>(i % 5), i == 1))
                 .ok()) {
          ::_exit(3);
        }
        if (i % 3 == 0) {
          auto durable = log.value()->Sync();
          if (!durable.ok()) ::_exit(4);
          const uint64_t v = durable.value().value;
          if (::write(pipe_fds[1], &v, sizeof v) != sizeof v) ::_exit(5);
          if (i % 30 == 0 && !log.value()->TruncateThrough(Lsn{0x10000ull * (i - 20)}).ok())
            ::_exit(6);
        }
      }
    }
    ::close(pipe_fds[1]);
    uint64_t reported = 0;
    const int wanted = 5 + static_cast<int>(rng() % 60);
    for (int n = 0; n < wanted; ++n) {
      uint64_t v;
      if (::read(pipe_fds[0], &v, sizeof v) != sizeof v) break;
      reported = v;
    }
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    for (uint64_t v; ::read(pipe_fds[0], &v, sizeof v) == sizeof v;) reported = v;
    ::close(pipe_fds[0]);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exit " << WEXITSTATUS(status);

    auto log = MustOpen(4096);
    ASSERT_TRUE(log);
    const Lsn durable = log->Durable();
    EXPECT_GE(durable.value, reported);
    ASSERT_EQ(durable.value % 0x10000, 0u);
    const uint32_t last = static_cast<uint32_t>(durable.value / 0x10000);
    // Everything from the oldest kept on, whole and in order.
    auto read = ReadAll(*log, log->Stats().oldest);
    ASSERT_TRUE(read.ok()) << read.error().ToString();
    std::vector<LogMessage> messages;
    for (const LogMessage& m : read.value()) {
      if (m.bytes[0] != 'R') messages.push_back(m);
    }
    const uint32_t first = static_cast<uint32_t>(log->Stats().oldest.value / 0x10000) + 1;
    std::vector<std::vector<LogMessage>> want;
    for (uint32_t i = first; i <= last; ++i) {
      auto t = Transaction(0x10000ull * i, i, 100, 1 + static_cast<int>(i % 5), false);
      want.push_back(t);
    }
    ExpectSame(messages, Flatten(want));
    next_txn = last + 1;
  }
}

// Random appends, syncs, truncations and reopenings; each read compared with the
// in-memory log's: the same Relation/Type messages in force, then the same messages.
TEST_F(SegmentLogTest, BehavesAsTheInMemoryModel) {
  std::mt19937_64 rng(4242);
  auto model = NewMemoryLog();
  auto log = MustOpen(2048);
  ASSERT_TRUE(log);
  uint64_t position = 0x1000;
  uint32_t xid = 1;
  std::vector<Lsn> positions;
  auto fold = [](const std::vector<LogMessage>& messages) {
    std::map<std::string, std::string> schema;
    size_t i = 0;
    for (; i < messages.size() && (messages[i].bytes[0] == 'R' || messages[i].bytes[0] == 'Y');
         ++i) {
      schema[messages[i].bytes.substr(0, 5)] = messages[i].bytes;
    }
    return std::make_pair(
        schema, std::vector<LogMessage>(messages.begin() + static_cast<long>(i), messages.end()));
  };
  for (int step = 0; step < 2000; ++step) {
    const int op = static_cast<int>(rng() % 100);
    if (op < 70) {
      position += 0x100 + rng() % 0x10000;
      const uint32_t relid = 100 + static_cast<uint32_t>(rng() % 5);
      auto txn = rng() % 8 == 0
                     ? spool_test::StreamedTransaction(position, xid++, relid,
                                                       static_cast<int>(rng() % 8), rng() % 2 == 0)
                     : Transaction(position, xid++, relid, static_cast<int>(rng() % 8),
                                   rng() % 4 == 0, static_cast<int>(rng() % 200));
      if (txn[0].bytes[0] == 'B' && rng() % 10 == 0) {
        txn.insert(txn.begin() + 1,
                   LogMessage{Lsn{position - 999},
                              spool_test::TypeBytes(16000 + static_cast<uint32_t>(rng() % 3),
                                                    "type" + std::to_string(rng() % 100))});
      }
      ASSERT_TRUE(model->Append(txn).ok());
      ASSERT_TRUE(log->Append(txn).ok());
      positions.push_back(Lsn{position});
    } else if (op < 85) {
      ASSERT_TRUE(model->Sync().ok());
      ASSERT_TRUE(log->Sync().ok());
      ASSERT_EQ(model->Durable(), log->Durable());
    } else if (op < 90 && !positions.empty()) {
      const Lsn through = positions[rng() % positions.size()];
      if (through <= log->Durable()) {
        ASSERT_TRUE(model->TruncateThrough(through).ok());
        ASSERT_TRUE(log->TruncateThrough(through).ok());
      }
    } else if (op < 93) {
      ASSERT_TRUE(model->Sync().ok());
      ASSERT_TRUE(log->Sync().ok());
      log.reset();
      log = MustOpen(2048);
      ASSERT_TRUE(log);
      ASSERT_EQ(model->Durable(), log->Durable());
    } else if (!positions.empty()) {
      const Lsn oldest = std::max(model->Stats().oldest, log->Stats().oldest);
      std::vector<Lsn> candidates;
      for (Lsn p : positions) {
        if (p >= oldest) candidates.push_back(p);
      }
      if (candidates.empty()) continue;
      const Lsn after = candidates[rng() % candidates.size()];
      auto want = ReadAll(*model, after);
      auto got = ReadAll(*log, after);
      ASSERT_TRUE(want.ok()) << want.error().ToString();
      ASSERT_TRUE(got.ok()) << got.error().ToString();
      auto [want_schema, want_rest] = fold(want.value());
      auto [got_schema, got_rest] = fold(got.value());
      ASSERT_EQ(got_schema, want_schema) << "after " << after.ToString();
      ExpectSame(got_rest, want_rest);
    }
  }
}

}  // namespace
}  // namespace pgderive
