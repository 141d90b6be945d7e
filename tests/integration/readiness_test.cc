// /readyz against the real servers: 503 while a Redis or OpenSearch view is in its first
// fill (here views added by a reload; a first start's fill is the same) (the body names each view
// with its progress), also after a crash in the middle of it; 200 once every first fill is live;
// and 200 during a later rebuild of a view, which keeps serving what the view held.
//
// A transaction that wrote the table holds a backfill at its first chunk (the chunk
// waits for every writer its low watermark saw): the fill is met in progress whatever
// the machine's speed, and ends when the transaction commits.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <string>

#include "sinks/redis/redis_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::MustConnect;
using testing::MustExecute;
using testing::UniqueName;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class ReadinessTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("ready");
    if (HasFatalFailure()) return;
    deadline_ = std::chrono::seconds(120);
    table_ = UniqueName("ready_src");
    index_ = UniqueName("ready-docs");
    CleanupSql("drop table if exists " + table_);
    CleanupIndex(index_);
    CleanupIndex(index_ + "-anchor");
    for (int n = 1; n <= 4; ++n) CleanupIndex(index_ + "-anchor-" + std::to_string(n));
    for (int n = 1; n <= 4; ++n) CleanupIndex(index_ + "-" + std::to_string(n));
    MustExecute(*sql_, "create table " + table_ + " (id int primary key, name text not null)");
    MustExecute(*sql_,
                "insert into " + table_ + " select g, 'row ' || g from generate_series(1, 3000) g");
    other_ = UniqueName("ready_other");
    CleanupSql("drop table if exists " + other_);
    MustExecute(*sql_, "create table " + other_ + " (id int primary key)");
    MustExecute(*sql_, "insert into " + other_ + " values (1)");
    config_ = Path("pgderive.yml");
    Write(/*views=*/false);
  }
  void TearDown() override {
    PipelineTest::TearDown();
    auto redis = RedisClient::Connect(endpoints_.redis_url);
    if (!redis.ok()) return;
    for (const std::string& pattern : {pipeline_ + ":*", "pgderive:" + pipeline_ + ":*"}) {
      auto keys = redis.value().Command({"KEYS", pattern});
      if (!keys.ok()) continue;
      for (const auto& key : keys.value().elements) {
        (void)redis.value().Command({"DEL", key.str});  // test cleanup
      }
    }
  }
  // The views `anchor` (Redis) and `anchor_docs` (OpenSearch) of another table; with `views`,
  // `rows` (Redis) and `docs` (OpenSearch) of the table.
  void Write(bool views) {
    std::string text = "pipeline: " + pipeline_ + "\nsource:\n  dsn: \"" + endpoints_.pg_dsn +
                       "\"\nstores:\n  cache:\n    type: redis\n    url: \"" +
                       endpoints_.redis_url + "\"\n  search:\n    type: opensearch\n" +
                       "    url: \"" + endpoints_.opensearch_url + "\"\nviews:\n" +
                       "  - name: anchor\n    store: cache\n    from: " + other_ + "\n    key: \"" +
                       pipeline_ + ":anchor:{id}\"\n  - name: anchor_docs\n    store: search\n" +
                       "    from: " + other_ + "\n    index: " + index_ + "-anchor\n";
    if (views) {
      text += "  - name: rows\n    store: cache\n    from: " + table_ + "\n    key: \"" +
              pipeline_ + ":rows:{id}\"\n  - name: docs\n    store: search\n    from: " + table_ +
              "\n    index: " + index_ + "\n";
    }
    WriteFile("pgderive.yml", text + "http:\n  listen: 127.0.0.1:" + std::to_string(port_) + "\n");
  }
  // A transaction that wrote the table, left open: holds the backfills at their first
  // chunk until Release.
  void Hold() {
    blocker_ = std::make_unique<PgConnection>(MustConnect(endpoints_.pg_dsn));
    MustExecute(*blocker_, "begin");
    MustExecute(*blocker_, "update " + table_ + " set name = name where id = 1");
  }
  void Release() {
    MustExecute(*blocker_, "commit");
    blocker_.reset();
  }
  std::string State(const std::string& view) { return ViewStatus(view).value("state", ""); }

  std::string table_, other_, index_, config_;
  std::unique_ptr<PgConnection> blocker_;
};

TEST_F(ReadinessTest, NotReadyUntilEveryFirstFillIsLiveButReadyDuringARebuild) {
  Write(/*views=*/false);
  StartRun(config_);
  WaitReady(std::chrono::seconds(120));
  if (HasFatalFailure()) return;
  // Two views added (a reload), their first fill held: not ready, each named.
  Hold();
  Write(/*views=*/true);
  auto [reloaded, reload_out] =
      Command({testing::PgderiveBinary(), "reload", "-c", config_, "--timeout", "5"});
  std::string body;
  ASSERT_TRUE(WaitFor([&] {
    auto [status, text] = Http("/readyz");
    body = text;
    return status == 503 && Contains(text, "view rows (store cache) is in its first fill") &&
           Contains(text, "view docs (store search) is in its first fill");
  })) << body
      << reload_out << RunLog();
  EXPECT_TRUE(Contains(body, " rows")) << body;
  EXPECT_EQ(State("rows"), "backfilling");

  // A crash in the middle of it: the resumed fill is still the first.
  run_->Signal(SIGKILL);
  ASSERT_TRUE(run_->Wait(std::chrono::seconds(20)).has_value());
  StartRun(config_, "run2.err");
  ASSERT_TRUE(WaitFor([&] {
    auto [status, text] = Http("/readyz");
    body = text;
    return status == 503 && Contains(text, "view rows (store cache) is in its first fill") &&
           Contains(text, "view docs (store search) is in its first fill");
  })) << body
      << RunLog();

  Release();
  WaitReady(std::chrono::seconds(120));
  if (HasFatalFailure()) return;
  EXPECT_EQ(State("rows"), "live");
  EXPECT_EQ(State("docs"), "live");
  auto [verified, report] = testing::RunVerify(config_, 60);
  EXPECT_EQ(verified, 0) << report;

  // A rebuild of each view (pgderive backfill), held: the views serve what they held,
  // so the pipeline stays ready while they say backfilling.
  Hold();
  testing::Subprocess rows({testing::PgderiveBinary(), "backfill", "-c", config_, "--view", "rows"},
                           Path("backfill_rows.err"));
  testing::Subprocess docs({testing::PgderiveBinary(), "backfill", "-c", config_, "--view", "docs"},
                           Path("backfill_docs.err"));
  ASSERT_TRUE(WaitFor([&] {
    return State("rows") == "backfilling" && State("docs") == "backfilling";
  })) << RunLog();
  for (int i = 0; i < 5; ++i) {
    auto [status, text] = Http("/readyz");
    EXPECT_EQ(status, 200) << text;
  }
  EXPECT_EQ(State("rows"), "backfilling");
  Release();
  EXPECT_EQ(rows.Wait(std::chrono::seconds(120)), std::optional<int>(0))
      << testing::ReadFile(Path("backfill_rows.err"));
  EXPECT_EQ(docs.Wait(std::chrono::seconds(120)), std::optional<int>(0))
      << testing::ReadFile(Path("backfill_docs.err"));
  EXPECT_EQ(Http("/readyz").first, 200);
  StopRun(std::chrono::seconds(30));
}

}  // namespace
}  // namespace pgderive
