// The pipeline's lock across a lost lock session and a PostgreSQL restart, on a private
// stack: a `teardown` or second `run` started while the running one has lost its lock
// session is refused (the run's walsender still streams from the slot, or the run has
// re-taken the lock), and when a restart lets a `teardown` take the lock first, the run
// stops without writing anything after it.
#include <gtest/gtest.h>

#include <sstream>

#include "sinks/redis/redis_client.h"
#include "tests/support/own_stack.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"

namespace pgderive {
namespace {

using testing::OwnStack;
using testing::PgderiveBinary;

constexpr auto kDeadline = std::chrono::seconds(120);

class RunLockTest : public testing::PipelineTest {
 protected:
  static void SetUpTestSuite() { own_stack_ = new OwnStack({"--services", "pg,redis"}); }
  static void TearDownTestSuite() {
    delete own_stack_;
    own_stack_ = nullptr;
  }
  void SetUp() override {
    PgConnection sql = own_stack_->ConnectPg();  // right after a restart it may refuse
    UseEndpoints({own_stack_->Env("PGDERIVE_PG_DSN"), own_stack_->Env("PGDERIVE_REDIS_URL"), ""},
                 own_stack_->dir(), "locked");
    deadline_ = kDeadline;
    ASSERT_TRUE(sql.Execute("drop table if exists lock_items").ok());
    IgnoreError(sql.Execute("select pg_drop_replication_slot('pgderive_locked')"), "fresh start");
    ASSERT_TRUE(sql.Execute("create table lock_items (id int primary key, v text)").ok());
    ASSERT_TRUE(
        sql.Execute("insert into lock_items select g, md5(g::text) from generate_series(1, 50) g")
            .ok());
    std::ostringstream config;
    config << "pipeline: locked\nsource:\n  dsn: " << endpoints_.pg_dsn
           << "\n  heartbeat_interval: 1\nstores:\n  cache:\n    type: redis\n    url: "
           << endpoints_.redis_url
           << "\nviews:\n  - name: items\n    store: cache\n    from: lock_items\n"
              "    key: \"lock:{id}\"\nhttp:\n  listen: 127.0.0.1:"
           << port_ << "\n";
    config_ = WriteFile("locked.yml", config.str());
    ASSERT_TRUE(Redis({"FLUSHALL"}).has_value());
  }
  std::optional<RedisReply> Redis(const RedisCommand& command) {
    auto client = RedisClient::Connect(endpoints_.redis_url);
    if (!client.ok()) return std::nullopt;
    auto reply = client.value().Command(command);
    if (!reply.ok()) return std::nullopt;
    return std::move(reply).value();
  }
  bool InRedis(int id) {
    auto reply = Redis({"EXISTS", "lock:" + std::to_string(id)});
    return reply && reply->integer == 1;
  }
  bool Insert(int id) {
    PgConnection sql = own_stack_->ConnectPg();
    return sql.Execute("insert into lock_items values (" + std::to_string(id) + ", 'x')").ok();
  }
  void StartAndWaitLive() {
    StartRun(config_);
    WaitReady(kDeadline);
    ASSERT_TRUE(WaitFor([&] { return InRedis(50); })) << RunLog();
  }

  static OwnStack* own_stack_;
  std::string config_;
};
OwnStack* RunLockTest::own_stack_ = nullptr;

// The run's lock session ended alone (its walsender streams on): a teardown and a
// second run started at once are refused, and the run keeps streaming under its lock.
TEST_F(RunLockTest, LostLockSessionStillRefusesTeardownAndASecondRun) {
  StartAndWaitLive();
  if (HasFatalFailure()) return;
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    PgConnection sql = own_stack_->ConnectPg();
    ASSERT_EQ(testing::Scalar(sql,
                              "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                              "where application_name like 'pgderive run pid %'"),
              "1");
    auto [teardown, teardown_out] = Command({PgderiveBinary(), "teardown", "-c", config_});
    EXPECT_EQ(teardown, 2) << teardown_out;
    EXPECT_NE(teardown_out.find("pipeline locked is running: "), std::string::npos) << teardown_out;
    auto [second, second_out] = Command({PgderiveBinary(), "run", "-c", config_});
    EXPECT_EQ(second, 2) << second_out;
    EXPECT_NE(second_out.find("pipeline locked is already running: "), std::string::npos)
        << second_out;
    ASSERT_TRUE(Insert(100 + round));
    EXPECT_TRUE(WaitFor([&] { return InRedis(100 + round); })) << RunLog();
    // It notices within a second, and takes the lock again at once (the source is up).
    ASSERT_TRUE(WaitFor([&] {
      return Count("run.err", "re-took the pipeline's lock on the source") >= round + 1;
    })) << RunLog();
  }
  PgConnection sql = own_stack_->ConnectPg();
  EXPECT_EQ(testing::Scalar(sql,
                            "select count(*) from pg_replication_slots where slot_name = "
                            "'pgderive_locked'"),
            "1");
  StopRun(std::chrono::seconds(60));
}

// PostgreSQL restarted under the run and a teardown started as soon as it answers:
// either the run re-took its lock first (the teardown is refused, the run streams on),
// or the teardown took it (the run stops with exit 1 and writes nothing afterwards: its
// checkpoint stays removed).
TEST_F(RunLockTest, TeardownRightAfterARestartEitherRefusedOrTheRunStopsUntouched) {
  StartAndWaitLive();
  if (HasFatalFailure()) return;
  ASSERT_EQ(own_stack_->Run("stop", {"pg"}), 0);
  ASSERT_EQ(own_stack_->Run("start", {"pg"}), 0);
  auto [code, out] = Command({PgderiveBinary(), "teardown", "-c", config_});
  if (code == 2) {
    EXPECT_NE(out.find("pipeline locked is running: "), std::string::npos) << out;
    ASSERT_TRUE(Insert(200));
    EXPECT_TRUE(WaitFor([&] { return InRedis(200); })) << RunLog();
    StopRun(std::chrono::seconds(60));
    return;
  }
  ASSERT_EQ(code, 0) << out;  // the teardown went first
  EXPECT_EQ(run_->Wait(std::chrono::seconds(60)), std::optional<int>(1)) << RunLog();
  EXPECT_NE(RunLog().find("another process took pipeline locked over"), std::string::npos)
      << RunLog();
  run_.reset();
  auto checkpoints = Redis({"KEYS", "pgderive:locked*"});
  ASSERT_TRUE(checkpoints.has_value());
  EXPECT_EQ(checkpoints->elements.size(), 0u) << "the run wrote after the teardown";
  PgConnection sql = own_stack_->ConnectPg();
  EXPECT_EQ(testing::Scalar(sql,
                            "select count(*) from pg_replication_slots where slot_name = "
                            "'pgderive_locked'"),
            "0");
}

}  // namespace
}  // namespace pgderive
