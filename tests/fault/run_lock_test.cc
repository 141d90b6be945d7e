// The pipeline's lock across a lost lock session and a PostgreSQL restart, on a private
// stack: a `teardown` or second `run` started while the running one has lost its lock
// session is refused (the run's walsender still streams from the slot, or the run has
// re-taken the lock), also right after a PostgreSQL restart ended both of its sessions
// (a teardown waits out the time a run takes to re-take its lock).
#include <gtest/gtest.h>

#include <csignal>
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

// A walsender on the slot without the pipeline's lock (what a run killed a moment ago
// leaves until the server notices; here pg_recvlogical): a new run waits for it to end
// instead of refusing, then streams; a run holding the lock is still refused at once.
TEST_F(RunLockTest, ARunWaitsForAWalsenderLeftOnItsSlotThenStreams) {
  StartAndWaitLive();
  if (HasFatalFailure()) return;
  StopRun(std::chrono::seconds(60));
  PgConnection sql = own_stack_->ConnectPg();
  auto active = [&] {
    return testing::Scalar(sql,
                           "select count(*) from pg_replication_slots where slot_name = "
                           "'pgderive_locked' and active_pid is not null") == "1";
  };
  testing::Subprocess walsender(
      {own_stack_->Env("PGDERIVE_PG_BINDIR") + "/pg_recvlogical", "-d", endpoints_.pg_dsn, "--slot",
       "pgderive_locked", "--start", "-o", "proto_version=1", "-o",
       "publication_names=pgderive_locked", "-f", "/dev/null"},
      Path("recvlogical.err"));
  ASSERT_TRUE(WaitFor(active)) << Read("recvlogical.err");
  ASSERT_TRUE(Insert(200));
  StartRun(config_, "run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "waiting for it to end")) << Read("run2.err");
  EXPECT_FALSE(InRedis(200));  // nothing streams while the other session holds the slot
  walsender.Signal(SIGTERM);
  ASSERT_TRUE(walsender.Wait(std::chrono::seconds(20)).has_value());
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(WaitFor([&] { return InRedis(200); })) << Read("run2.err");
  // The lock is this run's: another is refused at once, naming it.
  auto [second, second_out] = Command({PgderiveBinary(), "run", "-c", config_});
  EXPECT_EQ(second, 2) << second_out;
  EXPECT_NE(second_out.find("pipeline locked is already running: "), std::string::npos)
      << second_out;
  StopRun(std::chrono::seconds(60));
}

// PostgreSQL restarted under the run and a teardown started as soon as it answers: the
// run's lock session and walsender are gone for a moment, but the teardown waits out the
// time a running run takes to re-take its lock, so it is refused, and the run streams on
// with its slot. The same when both sessions of the run are ended without a restart.
TEST_F(RunLockTest, TeardownRightAfterARestartIsRefusedAndTheRunGoesOn) {
  StartAndWaitLive();
  if (HasFatalFailure()) return;
  ASSERT_EQ(own_stack_->Run("stop", {"pg"}), 0);
  ASSERT_EQ(own_stack_->Run("start", {"pg"}), 0);
  auto [code, out] = Command({PgderiveBinary(), "teardown", "-c", config_});
  EXPECT_EQ(code, 2) << out << RunLog();
  EXPECT_NE(out.find("pipeline locked is running: "), std::string::npos) << out;
  ASSERT_TRUE(Insert(200));
  EXPECT_TRUE(WaitFor([&] { return InRedis(200); })) << RunLog();

  {
    PgConnection sql = own_stack_->ConnectPg();
    ASSERT_EQ(testing::Scalar(sql,
                              "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                              "where application_name like 'pgderive run pid %' or pid = (select "
                              "active_pid from pg_replication_slots where slot_name = "
                              "'pgderive_locked')"),
              "2");
  }
  auto [again, again_out] = Command({PgderiveBinary(), "teardown", "-c", config_});
  EXPECT_EQ(again, 2) << again_out << RunLog();
  EXPECT_NE(again_out.find("pipeline locked is running: "), std::string::npos) << again_out;
  ASSERT_TRUE(Insert(201));
  EXPECT_TRUE(WaitFor([&] { return InRedis(201); })) << RunLog();
  PgConnection sql = own_stack_->ConnectPg();
  EXPECT_EQ(testing::Scalar(sql,
                            "select count(*) from pg_replication_slots where slot_name = "
                            "'pgderive_locked'"),
            "1");
  StopRun(std::chrono::seconds(60));

  // Stopped: the teardown goes through (after its wait).
  auto [done, done_out] = Command({PgderiveBinary(), "teardown", "-c", config_});
  EXPECT_EQ(done, 0) << done_out;
}

}  // namespace
}  // namespace pgderive
