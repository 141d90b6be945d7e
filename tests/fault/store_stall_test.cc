// A store that stops answering while `run` streams: Redis stopped on a private stack.
// Its view must say `stalled` (since when, its lag) in /status, in `pgderive status`
// and in the metrics, /readyz must say 503, and once Redis is back and the backlog
// applied the view is `live` again with exactly the source's rows.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sinks/redis/redis_client.h"
#include "tests/support/own_stack.h"
#include "tests/support/pipeline_test.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::OwnStack;
using testing::PgderiveBinary;

constexpr auto kDeadline = std::chrono::seconds(120);

class StoreStallTest : public testing::PipelineTest {
 protected:
  static void SetUpTestSuite() {
    own_stack_ = new OwnStack({"--services", "pg,redis", "--redis-aof"});
  }
  static void TearDownTestSuite() {
    delete own_stack_;
    own_stack_ = nullptr;
  }
  void SetUp() override {
    PgConnection sql = own_stack_->ConnectPg();  // right after the start it may still refuse
    UseEndpoints({own_stack_->Env("PGDERIVE_PG_DSN"), own_stack_->Env("PGDERIVE_REDIS_URL"), ""},
                 own_stack_->dir(), "stall");
    deadline_ = kDeadline;
    ASSERT_TRUE(sql.Execute("drop table if exists stall_items").ok());
    IgnoreError(sql.Execute("select pg_drop_replication_slot('pgderive_stall')"), "fresh start");
    ASSERT_TRUE(sql.Execute("create table stall_items (id int primary key, v text)").ok());
    ASSERT_TRUE(
        sql.Execute("insert into stall_items select g, md5(g::text) from generate_series(1, 500) g")
            .ok());
    std::ostringstream config;
    config << "pipeline: stall\nsource:\n  dsn: " << own_stack_->Env("PGDERIVE_PG_DSN")
           << "\n  heartbeat_interval: 1\nstores:\n  cache:\n    type: redis\n"
           << "    url: " << own_stack_->Env("PGDERIVE_REDIS_URL")
           << "\nviews:\n  - name: items_cache\n    store: cache\n"
              "    from: stall_items\n    key: \"item:{id}\"\n"
           << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
    config_ = WriteFile("stall.yml", config.str());
    auto redis = RedisClient::Connect(own_stack_->Env("PGDERIVE_REDIS_URL"));
    ASSERT_TRUE(redis.ok());
    ASSERT_TRUE(redis.value().Command({"FLUSHALL"}).ok());
  }
  json View() {
    const json status = Status();
    if (!status.is_object() || !status.contains("views") || status["views"].empty()) {
      return nullptr;
    }
    return status["views"][0];
  }

  static OwnStack* own_stack_;
  std::string config_;
};
OwnStack* StoreStallTest::own_stack_ = nullptr;
TEST_F(StoreStallTest, RedisStoppedIsStalledEverywhereThenLiveWithExactData) {
  StartRun(config_);
  WaitReady(kDeadline);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(testing::WaitFor([&] { return View().value("state", "") == "live"; }, kDeadline));

  ASSERT_EQ(own_stack_->Run("stop", {"redis"}), 0);
  PgConnection sql = own_stack_->ConnectPg();
  ASSERT_TRUE(sql.Execute("insert into stall_items values (501, 'while down')").ok());
  ASSERT_TRUE(sql.Execute("update stall_items set v = 'changed' where id = 3").ok());
  ASSERT_TRUE(sql.Execute("delete from stall_items where id = 4").ok());

  // Stalled, with since when and its lag, even with nothing to apply (the store check
  // finds it down); the lag grows with the changes it cannot take.
  json stalled;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        stalled = View();
        return stalled.value("state", "") == "stalled" &&
               stalled.value("stalled_seconds", 0.0) >= 1.0;
      },
      kDeadline))
      << Http("/status").second << RunLog();
  EXPECT_TRUE(stalled.contains("stalled_since")) << stalled.dump();
  EXPECT_TRUE(stalled.contains("lag_seconds")) << stalled.dump();
  EXPECT_TRUE(stalled.contains("lag_bytes")) << stalled.dump();
  EXPECT_NE(stalled.value("reason", "").find("store cache is unreachable"), std::string::npos)
      << stalled.dump();
  const auto [ready, why] = Http("/readyz");
  EXPECT_EQ(ready, 503);
  EXPECT_NE(why.find("store cache is unreachable since"), std::string::npos) << why;
  const std::string metrics = Http("/metrics").second;
  EXPECT_NE(
      metrics.find("pgderive_view_state{store=\"cache\",view=\"items_cache\",state=\"stalled\"} 1"),
      std::string::npos)
      << metrics;
  EXPECT_NE(
      metrics.find("pgderive_view_state{store=\"cache\",view=\"items_cache\",state=\"live\"} 0"),
      std::string::npos);
  // `pgderive status` tells the same story: the store unreachable, its view stalled.
  auto [code, text] =
      testing::RunToEnd({PgderiveBinary(), "status", "-c", config_},
                        (own_stack_->dir() / "status.err").string(), std::chrono::seconds(60));
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("store cache: unreachable"), std::string::npos) << text;
  EXPECT_NE(text.find("view items_cache (cache): stalled since "), std::string::npos) << text;
  EXPECT_EQ(text.find("): live"), std::string::npos) << text;
  auto [json_code, json_text] =
      testing::RunToEnd({PgderiveBinary(), "status", "-c", config_, "--json"},
                        (own_stack_->dir() / "status.err").string(), std::chrono::seconds(60));
  const json report = json::parse(json_text.substr(0, json_text.rfind('}') + 1), nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << json_text;
  EXPECT_EQ(report["views"][0]["state"], "stalled") << json_text;

  // Back: live again once caught up, and exactly the table's rows.
  ASSERT_EQ(own_stack_->Run("start", {"redis"}), 0);
  ASSERT_TRUE(testing::WaitFor([&] { return View().value("state", "") == "live"; }, kDeadline))
      << Http("/status").second << RunLog();
  EXPECT_EQ(Http("/readyz").first, 200);
  auto redis = RedisClient::Connect(own_stack_->Env("PGDERIVE_REDIS_URL"));
  ASSERT_TRUE(redis.ok());
  auto rows = sql.Query("select id::text, v from stall_items");
  ASSERT_TRUE(rows.ok());
  std::map<std::string, json> expected;
  for (const auto& r : rows.value().rows) {
    expected["item:" + *r[0]] = {{"id", std::stoi(*r[0])}, {"v", *r[1]}};
  }
  auto keys = redis.value().Command({"KEYS", "item:*"});
  ASSERT_TRUE(keys.ok());
  std::map<std::string, json> actual;
  for (const RedisReply& key : keys.value().elements) {
    auto value = redis.value().Command({"GET", key.str});
    ASSERT_TRUE(value.ok());
    actual[key.str] = json::parse(value.value().str, nullptr, false);
  }
  EXPECT_EQ(actual.size(), expected.size());
  EXPECT_TRUE(actual == expected) << "Redis differs from the table";
  EXPECT_EQ(actual["item:3"]["v"], "changed");
  EXPECT_EQ(actual.count("item:4"), 0u);
  auto [verify, out] = testing::RunVerify(config_, 60);
  EXPECT_EQ(verify, 0) << out;
  StopRun(std::chrono::seconds(60));
}

}  // namespace
}  // namespace pgderive
