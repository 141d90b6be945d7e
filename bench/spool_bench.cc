// The change log's micro benchmark: appends of realistic pgoutput messages to the disk
// log (spool/segment_log.h), fsync once per batch of N transactions, then one reader
// reading everything back.
//
//   build/release/bench/spool_bench [--dir DIR] [--changes N] [--seconds S]
//
// Workloads: single-change transactions (Begin, Insert, Commit) and 100-change
// transactions, rows of ~300 bytes as bench/capture.sh's (text, numeric, jsonb, an int
// array, timestamptz). For each batch size: changes/s, the log's write rate (MB/s of
// segment bytes), and the log's size per million changes; then a reader's rate.
// Prints a Markdown table. DIR (default: a fresh directory under the current one) must
// be on the disk the log would use: fsync on tmpfs costs nothing.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "base/log.h"
#include "spool/segment_log.h"
#include "tests/unit/spool/log_messages.h"

namespace pgderive {
namespace {

using Clock = std::chrono::steady_clock;
using spool_test::BeginBytes;
using spool_test::CommitBytes;
using spool_test::InsertBytes;

// A row as bench/capture.sh inserts it: ~300 bytes of column text.
std::string RowInsert(uint32_t relid, uint64_t id) {
  return InsertBytes(
      relid,
      {std::to_string(id),
       "customer " + std::to_string(id) + " - a text column of moderate length, as names go " +
           std::string(40, 'x'),
       std::to_string(id % 100000) + ".25",
       R"({"sku": "A-)" + std::to_string(id % 977) +
           R"(", "tags": ["new", "sale"], "qty": 3, "note": "jsonb payload of a realistic size"})",
       "{1,2,3,5,8,13,21,34}", "2026-11-30 00:42:00.123456+00"});
}

struct Workload {
  const char* name;
  int changes_per_txn;
};

struct Figures {
  double changes_per_s = 0;
  double mb_per_s = 0;
  double bytes_per_million = 0;
  double payload_per_million = 0;
  double read_mb_per_s = 0;
};

Figures Run(const std::string& dir, const Workload& workload, int txns_per_sync, uint64_t changes,
            double max_seconds, Logger& logger) {
  std::filesystem::remove_all(dir);
  SpoolOptions options;
  options.dir = dir;
  auto opened = OpenSegmentLog(options, logger);
  if (!opened.ok()) {
    std::fprintf(stderr, "%s\n", opened.error().ToString().c_str());
    std::exit(1);
  }
  ChangeLog& log = *opened.value();
  const uint32_t relid = 16384;
  // The first transaction carries the Relation message, as the stream sends it.
  std::vector<LogMessage> txn;
  uint64_t lsn = 0x1000000, id = 0, done = 0, payload = 0, txns = 0;
  const auto start = Clock::now();
  double seconds = 0;
  while (done < changes) {
    txn.clear();
    const uint64_t first = lsn;
    txn.push_back(
        {Lsn{first}, BeginBytes(first + 400ull * static_cast<uint64_t>(workload.changes_per_txn),
                                static_cast<uint32_t>(txns + 1))});
    if (txns == 0) txn.push_back({Lsn{first}, spool_test::RelationBytes(relid, "orders", 6)});
    for (int i = 0; i < workload.changes_per_txn; ++i) {
      lsn += 400;
      txn.push_back({Lsn{lsn}, RowInsert(relid, ++id)});
    }
    lsn += 400;
    txn.push_back({Lsn{lsn}, CommitBytes(lsn - 8, lsn)});
    for (const LogMessage& m : txn) payload += m.bytes.size();
    if (Status status = log.Append(txn); !status.ok()) {
      std::fprintf(stderr, "%s\n", status.error().ToString().c_str());
      std::exit(1);
    }
    done += static_cast<uint64_t>(workload.changes_per_txn);
    if (++txns % static_cast<uint64_t>(txns_per_sync) == 0) {
      if (!log.Sync().ok()) std::exit(1);
      seconds = std::chrono::duration<double>(Clock::now() - start).count();
      if (seconds > max_seconds) break;
    }
  }
  if (!log.Sync().ok()) std::exit(1);
  seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const ChangeLogStats stats = log.Stats();
  Figures f;
  f.changes_per_s = static_cast<double>(done) / seconds;
  f.mb_per_s = static_cast<double>(stats.bytes) / seconds / 1e6;
  f.bytes_per_million = static_cast<double>(stats.bytes) / static_cast<double>(done) * 1e6;
  f.payload_per_million = static_cast<double>(payload) / static_cast<double>(done) * 1e6;

  auto reader = log.ReadAfter(Lsn{});
  if (!reader.ok()) std::exit(1);
  const auto read_start = Clock::now();
  uint64_t read_bytes = 0;
  for (;;) {
    auto next = reader.value()->Next(std::chrono::milliseconds(0));
    if (!next.ok()) {
      std::fprintf(stderr, "%s\n", next.error().ToString().c_str());
      std::exit(1);
    }
    if (!next.value()) break;
    read_bytes += next.value()->bytes.size() + 17;
  }
  f.read_mb_per_s = static_cast<double>(read_bytes) /
                    std::chrono::duration<double>(Clock::now() - read_start).count() / 1e6;
  std::filesystem::remove_all(dir);
  return f;
}

}  // namespace
}  // namespace pgderive

int main(int argc, char** argv) {
  std::string dir =
      (std::filesystem::current_path() / ("spool-bench." + std::to_string(::getpid()))).string();
  uint64_t changes = 1000000;
  double seconds = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--dir") == 0)
      dir = argv[i + 1];
    else if (std::strcmp(argv[i], "--changes") == 0)
      changes = std::stoull(argv[i + 1]);
    else if (std::strcmp(argv[i], "--seconds") == 0)
      seconds = std::stod(argv[i + 1]);
  }
  std::FILE* devnull = std::fopen("/dev/null", "w");
  pgderive::Logger logger(pgderive::LogConfig{}, devnull);
  std::printf(
      "| transactions | fsync every | changes/s | log MB/s | log bytes per 1M changes | pgoutput "
      "bytes per 1M changes | read MB/s |\n");
  std::printf("| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
  const pgderive::Workload workloads[] = {{"1 change", 1}, {"100 changes", 100}};
  for (const auto& workload : workloads) {
    for (int per_sync : {1, 10, 100, 1000}) {
      if (workload.changes_per_txn == 100 && per_sync > 100) continue;
      const auto f = pgderive::Run(dir, workload, per_sync, changes, seconds, logger);
      std::printf("| %s | %d txn | %.0f | %.1f | %.0f MB | %.0f MB | %.0f |\n", workload.name,
                  per_sync, f.changes_per_s, f.mb_per_s, f.bytes_per_million / 1e6,
                  f.payload_per_million / 1e6, f.read_mb_per_s);
      std::fflush(stdout);
    }
  }
  return 0;
}
