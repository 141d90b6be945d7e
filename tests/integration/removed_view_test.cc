// A view removed from the configuration and added back later, by a reload or by a
// restart, against the real servers: while it is out of the file the stream no longer
// writes it, so its rows changed meanwhile are missing from it; when it comes back it is
// rebuilt (never found `live` and served as it was). Each store - Redis, OpenSearch,
// postgres - keeps another view of the same table meanwhile, so its checkpoint passes
// the changes the removed view missed.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sinks/redis/redis_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::MustExecute;
using testing::Scalar;
using testing::UniqueName;

class RemovedViewTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("rv");
    if (HasFatalFailure()) return;
    deadline_ = std::chrono::seconds(120);
    table_ = UniqueName("rv_items");
    out_ = UniqueName("rv_out");
    index_ = UniqueName("rv-docs");
    config_ = Path("pgderive.yml");
    CleanupSql("drop table if exists " + table_);
    CleanupSql("drop schema if exists " + out_ + " cascade");
    CleanupSql("drop table if exists pgderive." + pipeline_ + "__public__" + table_);
    CleanupIndex(index_ + "-keep");
    CleanupIndex(index_ + "-back");
    for (int n = 1; n <= 4; ++n) {
      CleanupIndex(index_ + "-keep-" + std::to_string(n));
      CleanupIndex(index_ + "-back-" + std::to_string(n));
    }
    MustExecute(*sql_, "create table " + table_ + " (id int primary key, name text not null)");
    MustExecute(*sql_,
                "insert into " + table_ + " select g, 'item ' || g from generate_series(1, 200) g");
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

  // Each store holds view keep_<store>; with `back`, view back_<store> too.
  void Write(bool back) {
    std::string views;
    for (const std::string& which :
         back ? std::vector<std::string>{"keep", "back"} : std::vector<std::string>{"keep"}) {
      views += "  - name: " + which + "_redis\n    store: cache\n    from: " + table_ +
               "\n    key: \"" + pipeline_ + ":" + which + ":{id}\"\n";
      views += "  - name: " + which + "_search\n    store: search\n    from: " + table_ +
               "\n    index: " + index_ + "-" + which + "\n";
      views += "  - name: " + which + "_pg\n    store: warehouse\n    table: " + out_ + "." +
               which + "\n    key: [id]\n    query: select id, name from public." + table_ + "\n";
    }
    WriteFile("pgderive.yml",
              "pipeline: " + pipeline_ + "\nsource:\n  dsn: \"" + endpoints_.pg_dsn +
                  "\"\nstores:\n  cache:\n    type: redis\n" + "    url: \"" +
                  endpoints_.redis_url + "\"\n  search:\n    type: opensearch\n    url: \"" +
                  endpoints_.opensearch_url + "\"\n  warehouse:\n    type: postgres\n    dsn: \"" +
                  endpoints_.pg_dsn + "\"\nviews:\n" + views +
                  "http:\n  listen: 127.0.0.1:" + std::to_string(port_) + "\n");
  }
  // Generation `generation` serves, every view of it live (6 with the back views, 3
  // without).
  bool Serving(uint64_t generation, bool back) {
    const json s = Status();
    if (!s.is_object() || s.value("reloading", true) ||
        s.value("config", json::object()).value("generation", uint64_t{0}) != generation) {
      return false;
    }
    const json views = s.value("views", json::array());
    size_t live = 0;
    for (const auto& v : views) live += v.value("state", "") == "live";
    return views.size() == (back ? 6u : 3u) && live == views.size();
  }

  // The source's rows now: id -> name.
  std::map<std::string, std::string> Source() {
    std::map<std::string, std::string> out;
    auto rows = sql_->Query("select id::text, name from " + table_);
    EXPECT_TRUE(rows.ok());
    if (!rows.ok()) return out;
    for (const auto& row : rows.value().rows) out[*row[0]] = *row[1];
    return out;
  }
  // What view <which>_redis holds: id -> name.
  std::map<std::string, std::string> RedisView(const std::string& which) {
    std::map<std::string, std::string> out;
    auto client = RedisClient::Connect(endpoints_.redis_url);
    if (!client.ok()) return out;
    const std::string prefix = pipeline_ + ":" + which + ":";
    auto keys = client.value().Command({"KEYS", prefix + "*"});
    if (!keys.ok()) return out;
    for (const auto& key : keys.value().elements) {
      auto value = client.value().Command({"GET", key.str});
      if (!value.ok() || value.value().type != RedisReply::Type::kString) continue;
      const json row = json::parse(value.value().str, nullptr, false);
      out[key.str.substr(prefix.size())] = row.is_object() ? row.value("name", "?") : "?";
    }
    return out;
  }
  // What view <which>_search holds (through its alias): id -> name.
  std::map<std::string, std::string> SearchView(const std::string& which) {
    std::map<std::string, std::string> out;
    const std::string index = index_ + "-" + which;
    HttpRequest(endpoints_.opensearch_url, "POST", "/" + index + "/_refresh");
    auto [status, body] = HttpRequest(endpoints_.opensearch_url, "POST",
                                      "/" + index + "/_search?size=10000", R"({"sort":["_doc"]})");
    if (status != 200) return out;
    const json found = json::parse(body, nullptr, false);
    if (!found.is_object()) return out;
    for (const auto& hit : found["hits"]["hits"]) {
      out[hit.value("_id", "")] = hit["_source"].value("name", "?");
    }
    return out;
  }
  // What view <which>_pg holds: id -> name.
  std::map<std::string, std::string> PostgresView(const std::string& which) {
    std::map<std::string, std::string> out;
    auto rows = sql_->Query("select id::text, name from " + out_ + "." + which);
    if (!rows.ok()) return out;
    for (const auto& row : rows.value().rows) out[*row[0]] = *row[1];
    return out;
  }
  // The kept views hold the source's rows now: each store's checkpoint passed the
  // changes made.
  bool KeptCaughtUp() {
    const auto source = Source();
    return RedisView("keep") == source && SearchView("keep") == source &&
           PostgresView("keep") == source;
  }
  // Rows updated, deleted and inserted (`round` makes them differ each time).
  void Change(int round) {
    const std::string r = std::to_string(round);
    MustExecute(*sql_, "update " + table_ + " set name = 'changed " + r + "' where id % 10 = " + r);
    MustExecute(*sql_, "delete from " + table_ + " where id % 17 = " + r);
    MustExecute(*sql_, "insert into " + table_ + " select g, 'new " + r +
                           "' from generate_series(1000 * " + r + " + 1, 1000 * " + r + " + 25) g");
  }
  // The back views equal the source, exactly, and verify finds nothing.
  void ExpectBackViewsExact() {
    const auto source = Source();
    EXPECT_EQ(RedisView("back"), source);
    EXPECT_EQ(SearchView("back"), source);
    EXPECT_EQ(PostgresView("back"), source);
    auto [code, out] = testing::RunVerify(config_, 60);
    EXPECT_EQ(code, 0) << out << RunLog();
  }
  // Out of the file while the kept views took a change: the back views still hold what
  // they held (so the test can fail); they are not `live` anywhere.
  void ChangeWhileOut(int round) {
    const auto before = Source();
    Change(round);
    ASSERT_TRUE(WaitFor([&] { return KeptCaughtUp(); })) << RunLog();
    ASSERT_EQ(RedisView("back"), before);
    ASSERT_EQ(SearchView("back"), before);
    ASSERT_EQ(PostgresView("back"), before);
    ASSERT_NE(before, Source());
  }

  std::string table_, out_, index_, config_;
};

TEST_F(RemovedViewTest, AViewAddedBackByAReloadOrARestartIsRebuilt) {
  Write(/*back=*/true);
  StartRun(config_);
  WaitReady(std::chrono::seconds(120));
  ASSERT_TRUE(WaitFor([&] { return Serving(1, true); })) << RunLog();
  ExpectBackViewsExact();

  // Removed by a reload, rows changed, added back by a reload.
  Write(/*back=*/false);
  auto [removed, removed_out] = Command({testing::PgderiveBinary(), "reload", "-c", config_});
  ASSERT_EQ(removed, 0) << removed_out;
  ASSERT_TRUE(WaitFor([&] { return Serving(2, false); })) << RunLog();
  ChangeWhileOut(1);
  if (HasFatalFailure()) return;
  Write(/*back=*/true);
  auto [added, added_out] = Command({testing::PgderiveBinary(), "reload", "-c", config_});
  ASSERT_EQ(added, 0) << added_out;
  ASSERT_TRUE(WaitFor([&] { return Serving(3, true); })) << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "view back_redis is back in the configuration")) << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "view back_search is back in the configuration")) << RunLog();
  ExpectBackViewsExact();

  // Removed by a restart, rows changed, added back by a restart.
  StopRun(std::chrono::seconds(30));
  Write(/*back=*/false);
  StartRun(config_, "run2.err");
  WaitReady(std::chrono::seconds(120));
  ASSERT_TRUE(WaitFor([&] { return Serving(1, false); })) << RunLog();
  ChangeWhileOut(2);
  if (HasFatalFailure()) return;
  StopRun(std::chrono::seconds(30));
  Write(/*back=*/true);
  StartRun(config_, "run3.err");
  WaitReady(std::chrono::seconds(120));
  ASSERT_TRUE(WaitFor([&] { return Serving(1, true); })) << RunLog();
  EXPECT_GE(Count("run3.err", "is back in the configuration after it was removed"), 2) << RunLog();
  EXPECT_GE(Count("run3.err", "view back_pg is back in the configuration"), 1) << RunLog();
  ExpectBackViewsExact();
  // The stream writes them again.
  Change(3);
  EXPECT_TRUE(WaitFor([&] {
    const auto source = Source();
    return RedisView("back") == source && SearchView("back") == source &&
           PostgresView("back") == source;
  })) << RunLog();
  StopRun(std::chrono::seconds(30));
}

}  // namespace
}  // namespace pgderive
