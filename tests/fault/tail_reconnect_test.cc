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
#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::PgderiveBinary;
using testing::SourceDir;
using testing::Subprocess;
using testing::UniqueName;

int RunStack(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {SourceDir() + "/compose/local/stack"};
  argv.insert(argv.end(), args.begin(), args.end());
  Subprocess stack(argv);
  while (stack.ReadLine(std::chrono::seconds(120))) {
  }
  return stack.Wait(std::chrono::seconds(120)).value_or(-1);
}

class TailReconnectTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     UniqueName("pgderive_fault"));
    ASSERT_EQ(RunStack({"up", dir_->string(), "--services", "pg"}), 0);
  }
  static void TearDownTestSuite() {
    RunStack({"down", dir_->string()});
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  static std::string Env(const std::string& key) {
    std::ifstream in(*dir_ / "stack.env");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
    }
    return "";
  }

  static PgConnection Connect() {
    // Right after a restart the server may still refuse: retry with a deadline.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (true) {
      auto conn =
          PgConnection::Connect(Env("PGDERIVE_PG_DSN"), PgConnection::Mode::kSql, "pgderive-test");
      if (conn.ok()) return std::move(conn).value();
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error(conn.error().ToString());
      // A retry interval, not synchronisation: the condition is the connect itself.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  static std::filesystem::path* dir_;
};
std::filesystem::path* TailReconnectTest::dir_ = nullptr;

TEST_F(TailReconnectTest, EveryRowExactlyOnceThroughWalsenderKillAndPostgresRestart) {
  PgConnection sql = Connect();
  ASSERT_TRUE(sql.Execute("create table fault_src (id int primary key)").ok());
  ASSERT_TRUE(sql.Execute("create publication pgderive_fault for table fault_src").ok());
  ASSERT_TRUE(
      sql.Execute("select pg_create_logical_replication_slot('fault_slot', 'pgoutput')").ok());
  const std::string config = (*dir_ / "fault.yml").string();
  std::ofstream(config) << "pipeline: fault\nsource:\n  dsn: " << Env("PGDERIVE_PG_DSN")
                        << "\nstores:\n  c: {type: redis, url: \"redis://127.0.0.1:1/0\"}\n"
                           "views:\n  - {name: v, store: c, from: fault_src, key: \"f:{id}\"}\n";
  const std::string stderr_path = (*dir_ / "tail.stderr").string();
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
  ASSERT_EQ(RunStack({"stop", dir_->string(), "pg"}), 0);
  ASSERT_EQ(RunStack({"start", dir_->string(), "pg"}), 0);
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
