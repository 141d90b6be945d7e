// A 1,000,000-row transaction through `pgderive tail`: PostgreSQL streams it in chunks
// (protocol v2+), the assembler spills past its 64 MB budget and replays it at Stream
// Commit; every row arrives, in order. Label `slow`. Its memory bound is proven by
// bench/capture.sh (peak RSS on the same workload), not here: a test's RSS says little,
// and under AddressSanitizer its quarantine alone holds 256 MB of freed memory.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cdc/pg_connection.h"
#include "tests/support/pg.h"
#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"

namespace pgderive {
namespace {

using testing::MustConnect;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Scalar;
using testing::Subprocess;
using testing::UniqueName;

TEST(LargeTransactionTest, MillionRowTransactionArrivesWholeAndInOrder) {
  PGDERIVE_REQUIRE_STACK();
  auto connected = PgConnection::Connect(stack.pg_dsn(), PgConnection::Mode::kSql, "pgderive-test");
  ASSERT_TRUE(connected.ok()) << connected.error().ToString();
  PgConnection& sql = connected.value();
  const std::string table = UniqueName("large_txn");
  const std::string slot = UniqueName("large_slot");
  const std::string pipeline = UniqueName("large");
  ASSERT_TRUE(sql.Execute("create table " + table + " (id int primary key, v text)").ok());
  ASSERT_TRUE(sql.Execute("create publication pgderive_" + pipeline + " for table " + table).ok());
  ASSERT_TRUE(
      sql.Execute("select pg_create_logical_replication_slot('" + slot + "', 'pgoutput')").ok());
  constexpr int kRows = 1000000;
  ASSERT_TRUE(sql.Execute("insert into " + table +
                          " select g, 'row ' || g || ' ' || repeat('x', 60) from "
                          "generate_series(1, " +
                          std::to_string(kRows) + ") g")
                  .ok());
  auto end = sql.Query("select pg_logical_emit_message(true, 'pgderive-test', 'end')::text");
  ASSERT_TRUE(end.ok());

  const auto dir = std::filesystem::temp_directory_path() / UniqueName("pgderive_large");
  std::filesystem::create_directories(dir);
  const std::string config = (dir / "large.yml").string();
  std::ofstream(config) << "pipeline: " << pipeline << "\nsource:\n  dsn: " << stack.pg_dsn()
                        << "\nstores:\n  c: {type: redis, url: \"redis://127.0.0.1:1/0\"}\n"
                           "views:\n  - {name: v, store: c, from: "
                        << table << ", key: \"l:{id}\"}\n";
  Subprocess tail({PgderiveBinary(), "tail", "-c", config, "--slot", slot, "--until-lsn",
                   *end.value().rows[0][0]},
                  (dir / "stderr").string());
  long long rows = 0, last_id = 0;
  bool ordered = true;
  while (auto line = tail.ReadLine(std::chrono::seconds(120))) {
    if (line->find("\"op\":\"message\"") != std::string::npos) continue;  // the end marker
    const size_t at = line->find("\"new\":{\"id\":");
    ASSERT_NE(at, std::string::npos) << *line;
    const long long id = std::stoll(line->substr(at + 12));
    ordered = ordered && id == last_id + 1;
    last_id = id;
    ++rows;
  }
  EXPECT_EQ(tail.Wait(std::chrono::seconds(30)), 0);
  EXPECT_EQ(rows, kRows);
  EXPECT_TRUE(ordered);

  IgnoreError(sql.Execute("select pg_drop_replication_slot('" + slot + "')"), "test cleanup");
  IgnoreError(sql.Execute("drop publication pgderive_" + pipeline), "test cleanup");
  IgnoreError(sql.Execute("drop table " + table), "test cleanup");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pgderive
