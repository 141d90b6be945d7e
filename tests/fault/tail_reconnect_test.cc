// `pgderive tail --slot` through a terminated walsender and a PostgreSQL restart:
// every committed row arrives exactly once, in order. This suite runs its own
// PostgreSQL (compose/local/stack) so that restarting it touches no other test.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cdc/pg_connection.h"
#include "tests/support/own_stack.h"
#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::PgderiveBinary;
using testing::Subprocess;
using testing::UniqueName;

class TailReconnectTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { stack_ = new testing::OwnStack({"--services", "pg"}); }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  static std::string Env(const std::string& key) { return stack_->Env(key); }
  static PgConnection Connect() { return stack_->ConnectPg(); }

  static testing::OwnStack* stack_;
};
testing::OwnStack* TailReconnectTest::stack_ = nullptr;

TEST_F(TailReconnectTest, EveryRowExactlyOnceThroughWalsenderKillAndPostgresRestart) {
  PgConnection sql = Connect();
  ASSERT_TRUE(sql.Execute("create table fault_src (id int primary key)").ok());
  ASSERT_TRUE(sql.Execute("create publication pgderive_fault for table fault_src").ok());
  ASSERT_TRUE(
      sql.Execute("select pg_create_logical_replication_slot('fault_slot', 'pgoutput')").ok());
  const std::string config = (stack_->dir() / "fault.yml").string();
  std::ofstream(config) << "pipeline: fault\nsource:\n  dsn: " << Env("PGDERIVE_PG_DSN")
                        << "\nstores:\n  c: {type: redis, url: \"redis://127.0.0.1:1/0\"}\n"
                           "views:\n  - {name: v, store: c, from: fault_src, key: \"f:{id}\"}\n";
  const std::string stderr_path = (stack_->dir() / "tail.stderr").string();
  Subprocess tail({PgderiveBinary(), "tail", "-c", config, "--slot", "fault_slot"}, stderr_path);

  std::vector<int> ids;
  auto insert = [&](PgConnection& c, int from, int to) {
    for (int i = from; i <= to; ++i) {
      ASSERT_TRUE(c.Execute("insert into fault_src values (" + std::to_string(i) + ")").ok());
    }
  };
  auto read_until = [&](int last) {
    while (ids.empty() || ids.back() < last) {
      auto line = tail.ReadLine(std::chrono::seconds(60));
      ASSERT_TRUE(line.has_value()) << "tail stalled before row " << last;
      ids.push_back(json::parse(*line)["new"]["id"].get<int>());
    }
  };

  insert(sql, 1, 100);
  read_until(100);

  // Kill the walsender serving tail.
  auto killed = sql.Query(
      "select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = "
      "'fault_slot' "
      "and active_pid is not null");
  ASSERT_TRUE(killed.ok());
  ASSERT_EQ(killed.value().rows.size(), 1u);
  EXPECT_EQ(killed.value().rows[0][0], "t");
  insert(sql, 101, 200);
  read_until(200);

  // Restart PostgreSQL under it.
  ASSERT_EQ(stack_->Run("stop", {"pg"}), 0);
  ASSERT_EQ(stack_->Run("start", {"pg"}), 0);
  PgConnection after = Connect();
  insert(after, 201, 300);
  read_until(300);

  std::vector<int> expected(300);
  for (int i = 0; i < 300; ++i) expected[i] = i + 1;
  EXPECT_EQ(ids, expected);  // each row once, in commit order

  tail.Signal(SIGTERM);
  EXPECT_EQ(tail.Wait(std::chrono::seconds(10)), 0);
  std::ifstream err(stderr_path);
  const std::string text(std::istreambuf_iterator<char>(err), {});
  EXPECT_NE(text.find("reconnecting"), std::string::npos) << text;
  EXPECT_NE(text.find("reconnected to slot fault_slot"), std::string::npos) << text;
  EXPECT_EQ(text.find(Env("PGDERIVE_PG_PASSWORD")), std::string::npos);
}

}  // namespace
}  // namespace pgderive
