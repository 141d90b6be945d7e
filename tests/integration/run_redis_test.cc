// `pgderive run` and `pgderive verify` with a Redis view, as a user runs them, against
// the real PostgreSQL and Redis of compose/local.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "sinks/opensearch/http_client.h"
#include "sinks/opensearch/opensearch_client.h"
#include "sinks/redis/redis_client.h"
#include "snapshot/watermark_window.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::MustConnect;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::UniqueName;

class RunRedisTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("run");
    if (HasFatalFailure()) return;
    deadline_ = std::chrono::seconds(30);
    table_ = UniqueName("run_src");
    CleanupSql("drop table if exists " + table_);
    auto redis = RedisClient::Connect(endpoints_.redis_url);
    ASSERT_TRUE(redis.ok()) << redis.error().ToString();
    redis_.emplace(std::move(redis).value());
  }

  std::string WriteConfig(const std::string& columns) {
    std::ostringstream out;
    out << "pipeline: " << pipeline_ << "\nsource:\n  dsn: " << endpoints_.pg_dsn
        << "\nstores:\n  cache:\n    type: redis\n    url: " << endpoints_.redis_url
        << "\nviews:\n  - name: cache_view\n    store: cache\n    from: " << table_
        << "\n    key: \"" << table_ << ":{id}\"\n"
        << (columns.empty() ? "" : "    columns: [" + columns + "]\n")
        // A test tampers with the store to see `verify` report it: the background
        // verifier would mend it first.
        << "verify:\n  continuous: off\n"
        << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
    return WriteFile("pgderive.yml", out.str());
  }
  std::optional<std::string> Get(const std::string& key) {
    auto reply = redis_->Command({"GET", key});
    if (!reply.ok() || reply.value().type != RedisReply::Type::kString) return std::nullopt;
    return reply.value().str;
  }
  std::string Key(int id) { return table_ + ":" + std::to_string(id); }
  std::string RunErr() { return RunLog(); }
  // `pgderive verify`: exit status and output.
  std::pair<int, std::string> Verify(const std::string& config) {
    return testing::RunVerify(config, 30);
  }

  std::string table_;
  std::optional<RedisClient> redis_;
};

TEST_F(RunRedisTest, ViewFollowsEveryKindOfChangeAndVerifies) {
  MustExecute(*sql_, "create table " + table_ +
                         " (id int primary key, sku text, price numeric, tags text[], big text, "
                         "note text, ts timestamptz)");
  MustExecute(*sql_, "insert into " + table_ +
                         " select g, 'SKU-' || g, g * 1.5, array['a', null], null, null, "
                         "'2024-02-29 12:00:00+00' from generate_series(1, 200) g");
  const std::string config = WriteConfig("id, sku, price, tags, big, note, ts");
  StartRun(config);
  // The snapshot: every row, mapped as the SPEC says.
  ASSERT_TRUE(WaitFor([&] { return Get(Key(200)).has_value(); })) << RunErr();
  EXPECT_EQ(json::parse(*Get(Key(7))),
            json::parse(R"({"id": 7, "sku": "SKU-7", "price": "10.5", "tags": ["a", null],
                            "big": null, "note": null, "ts": "2024-02-29T12:00:00Z"})"));

  MustExecute(*sql_, "insert into " + table_ + " (id, sku, note) values (1000, 'new', 'Grüße')");
  MustExecute(*sql_, "update " + table_ + " set price = 99.99, note = null where id = 1");
  MustExecute(*sql_, "delete from " + table_ + " where id = 2");
  MustExecute(*sql_, "update " + table_ + " set id = 2002 where id = 3");  // key change
  MustExecute(*sql_, "update " + table_ +
                         " set big = (select string_agg(md5(g::text), '') from "
                         "generate_series(1, 400) g) where id = 4");
  MustExecute(*sql_, "update " + table_ + " set sku = 'toast' where id = 4");  // big unchanged
  MustExecute(*sql_, "begin; delete from " + table_ + " where id = 5; insert into " + table_ +
                         " (id, sku) values (5, 'reborn'); commit");
  // The last transaction's effect: commits are applied in order, so every earlier one is
  // applied too (waiting on an earlier key alone raced the last transaction's batch).
  ASSERT_TRUE(WaitFor([&] { return Get(Key(5)).value_or("").find("reborn") != std::string::npos; }))
      << RunErr();
  EXPECT_FALSE(Get(Key(2)).has_value());
  EXPECT_FALSE(Get(Key(3)).has_value());
  EXPECT_EQ(json::parse(*Get(Key(2002)))["sku"], "SKU-3");
  const json toast = json::parse(*Get(Key(4)));
  EXPECT_EQ(toast["big"].get<std::string>().size(), 12800u) << "an unchanged TOAST value is kept";
  EXPECT_EQ(json::parse(*Get(Key(1)))["price"], "99.99");
  EXPECT_EQ(json::parse(*Get(Key(5)))["sku"], "reborn");
  auto [status, out] = Verify(config);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("view cache_view (store cache): 200 rows, consistent"), std::string::npos)
      << out;

  // Truncate removes every key of the view; rows after it come back.
  MustExecute(*sql_, "truncate " + table_);
  MustExecute(*sql_, "insert into " + table_ + " (id, sku) values (1, 'after truncate')");
  ASSERT_TRUE(WaitFor([&] {
    return !Get(Key(7)).has_value() && Get(Key(1)).value_or("").find("after") != std::string::npos;
  })) << RunErr();
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out;

  // A tampered store is reported, key and column, with exit 1.
  ASSERT_TRUE(
      redis_
          ->Command(
              {"SET", Key(1),
               R"({"id":1,"sku":"forged","price":null,"tags":null,"big":null,"note":null,"ts":null})"})
          .ok());
  ASSERT_TRUE(redis_->Command({"SET", Key(77), R"({"id":77})"}).ok());
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("different " + Key(1) +
                     " column sku: store has \"forged\", source has "
                     "\"after truncate\""),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("extra " + Key(77)), std::string::npos) << out;
  EXPECT_NE(out.find("2 differences"), std::string::npos) << out;
  ASSERT_TRUE(redis_->Command({"DEL", Key(77)}).ok());

  // SIGTERM: exit 0 promptly; a restart resumes from the store's checkpoint, no rebuild.
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0) << RunErr();
  StartRun(config);
  MustExecute(*sql_, "update " + table_ + " set sku = 'after restart' where id = 1");
  ASSERT_TRUE(WaitFor([&] {
    return Get(Key(1)).value_or("").find("after restart") != std::string::npos;
  })) << RunErr();
  EXPECT_NE(RunErr().find("store cache resumes from"), std::string::npos) << RunErr();
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out;
}

// A view's columns changed in the file while pgderive was stopped: the next start sees
// that its definition differs from the one its store recorded and rebuilds it, so every
// entry ends with exactly the new shape; a start with the same file rebuilds nothing.
TEST_F(RunRedisTest, ColumnsChangedWhileStoppedAreRebuiltAtTheNextStart) {
  MustExecute(*sql_, "create table " + table_ + " (id int primary key, sku text, price int)");
  MustExecute(*sql_, "insert into " + table_ +
                         " select g, 'SKU-' || g, g * 10 from generate_series(1, 50) g");
  std::string config = WriteConfig("id, sku");
  StartRun(config);
  WaitReady();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitFor([&] { return ViewStatus("cache_view").value("state", "") == "live"; }))
      << Http("/status").second << RunErr();
  EXPECT_EQ(json::parse(*Get(Key(7))), json::parse(R"({"id": 7, "sku": "SKU-7"})"));
  StopRun();
  if (HasFatalFailure()) return;

  // While stopped: the file gains a column, the table a row and an update.
  MustExecute(*sql_, "insert into " + table_ + " values (51, 'SKU-51', 510)");
  MustExecute(*sql_, "update " + table_ + " set sku = 'changed' where id = 1");
  config = WriteConfig("id, sku, price");
  StartRun(config, "run2.err");
  WaitReady();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitLog("run2.err",
                      "the definition of view cache_view changed: rebuilding it while streaming"))
      << RunErr();
  ASSERT_TRUE(WaitFor([&] { return ViewStatus("cache_view").value("state", "") == "live"; }))
      << Http("/status").second << RunErr();
  // Every entry has exactly the new shape.
  for (int id = 1; id <= 51; ++id) {
    const std::optional<std::string> value = Get(Key(id));
    ASSERT_TRUE(value.has_value()) << Key(id);
    const json expected = {{"id", id},
                           {"sku", id == 1 ? std::string("changed") : "SKU-" + std::to_string(id)},
                           {"price", id * 10}};
    EXPECT_EQ(json::parse(*value), expected) << Key(id);
  }
  MustExecute(*sql_, "update " + table_ + " set price = 7 where id = 2");
  ASSERT_TRUE(WaitFor([&] {
    return json::parse(Get(Key(2)).value_or("{}")).value("price", 0) == 7;
  })) << RunErr();
  auto [status, out] = Verify(config);
  EXPECT_EQ(status, 0) << out;
  StopRun();
  if (HasFatalFailure()) return;

  // The same file again: the recorded definition matches, nothing is rebuilt.
  StartRun(config, "run3.err");
  WaitReady();
  if (HasFatalFailure()) return;
  MustExecute(*sql_, "update " + table_ + " set sku = 'third' where id = 3");
  ASSERT_TRUE(WaitFor([&] { return Get(Key(3)).value_or("").find("third") != std::string::npos; }))
      << RunErr();
  EXPECT_EQ(Count("run3.err", "the definition of view cache_view changed"), 0) << RunErr();
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out;
}

// A view's state recorded first in a store transaction (a backfill request reached) and
// a truncate of another view's table in the same transaction: the state's HSET goes in
// the MULTI with the data, and the truncate's key scan reads its own reply. (The HSET was
// once sent outside the MULTI with its reply left unread, the scan read that reply
// instead, and the store retried the same failure for ever.)
TEST_F(RunRedisTest, AStateAndATruncateInOneTransactionApplyTogether) {
  const std::string other = UniqueName("run_other");
  CleanupSql("drop table if exists " + other);
  MustExecute(*sql_, "create table " + table_ + " (id int primary key, sku text)");
  MustExecute(*sql_,
              "insert into " + table_ + " select g, 'SKU-' || g from generate_series(1, 40) g");
  MustExecute(*sql_, "create table " + other + " (id int primary key, v text)");
  MustExecute(*sql_, "insert into " + other + " select g, 'v' || g from generate_series(1, 30) g");
  std::ostringstream yaml;
  yaml << "pipeline: " << pipeline_ << "\nsource:\n  dsn: " << endpoints_.pg_dsn
       << "\nstores:\n  cache:\n    type: redis\n    url: " << endpoints_.redis_url
       << "\nviews:\n  - name: cache_view\n    store: cache\n    from: " << table_
       << "\n    key: \"" << table_ << ":{id}\"\n  - name: other_view\n    store: cache\n"
       << "    from: " << other << "\n    key: \"" << other << ":{id}\"\n"
       << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
  const std::string config = WriteFile("pgderive.yml", yaml.str());
  StartRun(config);
  WaitReady();
  if (HasFatalFailure()) return;
  auto live = [&](const std::string& view) {
    return ViewStatus(view).value("state", "") == "live";
  };
  ASSERT_TRUE(WaitFor([&] { return live("cache_view") && live("other_view"); }))
      << Http("/status").second << RunErr();
  MustExecute(*sql_, "begin");
  MustExecute(*sql_, "select pg_logical_emit_message(true, " + sql_->QuoteLiteral(kBackfillPrefix) +
                         ", " +
                         sql_->QuoteLiteral(BackfillRequestMessage(pipeline_, "cache_view")) + ")");
  MustExecute(*sql_, "truncate " + other);
  MustExecute(*sql_, "insert into " + other + " values (1000, 'after')");
  MustExecute(*sql_, "commit");
  ASSERT_TRUE(WaitFor([&] {
    return Get(other + ":1000").has_value() && !Get(other + ":1").has_value() &&
           live("cache_view") && live("other_view");
  })) << Http("/status").second
      << RunErr();
  EXPECT_EQ(json::parse(*Get(other + ":1000")), json::parse(R"({"id": 1000, "v": "after"})"));
  auto keys = redis_->Command({"KEYS", other + ":*"});
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys.value().elements.size(), 1u);
  MustExecute(*sql_, "update " + table_ + " set sku = 'later' where id = 2");
  ASSERT_TRUE(WaitFor([&] { return Get(Key(2)).value_or("").find("later") != std::string::npos; }))
      << RunErr();
  EXPECT_EQ(json::parse(*Get(Key(40))), json::parse(R"({"id": 40, "sku": "SKU-40"})"));
  auto [status, out] = Verify(config);
  EXPECT_EQ(status, 0) << out;
}

// Both stores at once, every kind of value the SPEC maps (edges included), through a
// random workload: both views verify.
TEST_F(RunRedisTest, RedisAndOpenSearchThroughARandomWorkloadOfEveryType) {
  PGDERIVE_REQUIRE_STACK();
  const std::string index = UniqueName("run_index");
  MustExecute(*sql_, "create table " + table_ +
                         " (id int primary key, t text, n numeric, f float8, r real, b bool, "
                         "j jsonb, js json, a int[], ta text[], ts timestamp, tz timestamptz, "
                         "d date, by bytea, u uuid, iv interval, big text)");
  // One statement makes a row of random, often extreme values for id `$1`.
  auto row = [](const std::string& id) {
    return "select " + id +
           ", (array['plain', 'Grüße 🐘', E'tab\\t\\\\', '', null])[1 + floor(random() * 5)::int]"
           ", (array[12.50, 'NaN', -0.001, 1e30, null])[1 + floor(random() * 5)::int]"
           ", (array[0.1, 'NaN', 'Infinity', '-Infinity', null])[1 + floor(random() * 5)::int]"
           ", (array[1.5::real, 'NaN'::real, 3.4e38::real])[1 + floor(random() * 3)::int]"
           ", random() < 0.5"
           ", (array['{\"a\": 1}', '[1, \"x\", null]', '\"s\"', 'null', '{\"a\": {\"b\": "
           "[2.50]}}'])"
           "[1 + floor(random() * 5)::int]::jsonb"
           ", '{\"k\": [1, 2]}'::json"
           ", array[floor(random() * 100)::int, null]"
           ", array['x,y', 'q\"uote', null]"
           ", (array['2024-02-29 13:45:00.5', 'infinity', '-infinity'])[1 + floor(random() * "
           "3)::int]::timestamp"
           ", (array['2024-02-29 13:45:00+01', 'infinity'])[1 + floor(random() * "
           "2)::int]::timestamptz"
           ", (array['2024-02-29', '-infinity'])[1 + floor(random() * 2)::int]::date"
           ", decode(md5(random()::text), 'hex')"
           ", gen_random_uuid()"
           ", '1 day 02:00:00'::interval"
           ", null";
  };
  for (int i = 1; i <= 300; ++i) {
    MustExecute(*sql_, "insert into " + table_ + " " + row(std::to_string(i)));
  }
  const std::string config = (dir_ / "both.yml").string();
  std::ofstream(config) << "pipeline: " << pipeline_ << "\nsource:\n  dsn: " << endpoints_.pg_dsn
                        << "\nstores:\n  cache: {type: redis, url: \"" << endpoints_.redis_url
                        << "\"}\n  search: {type: opensearch, url: \"" << stack.opensearch_url()
                        << "\"}\nviews:\n  - {name: cache_view, store: cache, from: " << table_
                        << ", key: \"" << table_ << ":{id}\"}\n"
                        << "  - {name: search_view, store: search, from: " << table_
                        << ", index: " << index << "}\n"
                        << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
  StartRun(config);
  std::mt19937 rng(42);
  for (int op = 0; op < 1000; ++op) {
    const std::string id = std::to_string(1 + rng() % 400);
    switch (rng() % 5) {
      case 0:
        MustExecute(*sql_, "insert into " + table_ + " " + row(id) + " on conflict do nothing");
        break;
      case 1:
      case 2:
        MustExecute(*sql_, "update " + table_ +
                               " t set (t, n, f, j, ts) = (select s.t, s.n, s.f, "
                               "s.j, s.ts from (" +
                               row(id) +
                               ") s(id, t, n, f, r, b, j, js, a, ta, "
                               "ts, tz, d, by, u, iv, big)) where t.id = " +
                               id);
        break;
      case 3:
        MustExecute(*sql_, "delete from " + table_ + " where id = " + id);
        break;
      default:
        MustExecute(*sql_, "update " + table_ + " set id = id + 1000 where id = " + id +
                               " and not exists (select from " + table_ + " where id = " + id +
                               " + 1000)");
    }
  }
  auto [status, out] = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  EXPECT_NE(out.find("view cache_view (store cache):"), std::string::npos) << out;
  EXPECT_NE(out.find("view search_view (store search):"), std::string::npos) << out;
  EXPECT_EQ(out.find("differences"), std::string::npos) << out;
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0) << RunErr();
  auto search = OpenSearchClient::Create({.url = stack.opensearch_url(), .ca_file = ""});
  ASSERT_TRUE(search.ok());
  IgnoreError(search.value().DeleteIndex(index + "-1", true), "test cleanup");
}

// A fill (a catch-up's worth of changes in one Apply) relaxes the view index's refresh
// interval and puts the index's own setting back once the stream has caught up; a start
// after a crash mid-fill finds the recorded setting and puts it back too.
TEST_F(RunRedisTest, OpenSearchFillRelaxesRefreshAndRestoresTheIndexOwnSetting) {
  PGDERIVE_REQUIRE_STACK();
  const std::string index = UniqueName("run_fill");
  const std::string concrete = index + "-1";  // the view's first generation, behind the alias
  MustExecute(*sql_, "create table " + table_ + " (id int primary key, t text)");
  const std::string config = (dir_ / "search.yml").string();
  std::ofstream(config) << "pipeline: " << pipeline_ << "\nsource:\n  dsn: " << endpoints_.pg_dsn
                        << "\nstores:\n  search: {type: opensearch, url: \""
                        << stack.opensearch_url() << "\"}\nviews:\n"
                        << "  - {name: search_view, store: search, from: " << table_
                        << ", index: " << index << "}\n"
                        << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
  auto http = HttpClient::Create({.url = stack.opensearch_url(), .ca_file = ""});
  ASSERT_TRUE(http.ok());
  auto search = OpenSearchClient::Create({.url = stack.opensearch_url(), .ca_file = ""});
  ASSERT_TRUE(search.ok());
  auto settings_version = [&] {
    auto r = http.value().Send("GET", "/_cluster/state/metadata/" + concrete +
                                          "?filter_path=metadata.indices.*.settings_version");
    if (!r.ok()) return -1L;
    auto body = json::parse(r.value().body, nullptr, false);
    if (body.is_discarded() || !body.contains("metadata")) return -1L;
    return body["metadata"]["indices"][concrete].value("settings_version", -1L);
  };
  auto own_setting = [&] {
    auto got = search.value().RefreshInterval(index);
    return got.ok() && got.value() ? *got.value() : std::string("none");
  };
  const std::string marker_path =
      "/pgderive-checkpoints/_doc/" + pipeline_ + ".search%2Frefresh%2F" + concrete;
  auto marker = [&] {
    auto r = http.value().Send("GET", marker_path);
    return r.ok() ? r.value().status : 0L;
  };
  auto count = [&] {
    IgnoreError(search.value().Refresh(index), "counted below");
    auto n = search.value().Count(index);
    return n.ok() ? n.value() : -1;
  };
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return settings_version() > 0; })) << RunErr();
  // The index's own setting, which the fill must give back.
  auto set = search.value().SetRefreshInterval(concrete, std::string("7s"));
  ASSERT_TRUE(set.ok() && set.value());
  const long before = settings_version();

  MustExecute(*sql_, "insert into " + table_ +
                         " select g, repeat('x', 200) from generate_series(1, 30000) g");
  // Relaxed (one settings change) and restored (another), the marker gone, every row in.
  ASSERT_TRUE(WaitFor([&] { return count() == 30000; }, std::chrono::seconds(60))) << RunErr();
  MustExecute(*sql_, "insert into " + table_ + " values (30001, 'small')");
  ASSERT_TRUE(WaitFor([&] {
    return settings_version() >= before + 2 && own_setting() == "7s" && marker() == 404;
  })) << RunErr()
      << " settings_version " << settings_version() << " (before " << before
      << "), refresh_interval " << own_setting() << ", marker " << marker();

  // A crash mid-fill: the index left relaxed, the marker naming its own setting.
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  ASSERT_TRUE(search.value().SetRefreshInterval(index, std::string("30s")).ok());
  auto put = http.value().Send("PUT", marker_path + "?refresh=true",
                               R"({"index":")" + concrete + R"(","refresh_interval":"7s"})");
  ASSERT_TRUE(put.ok() && put.value().status < 300);
  StartRun(config);
  MustExecute(*sql_, "insert into " + table_ + " values (30002, 'small')");
  ASSERT_TRUE(WaitFor([&] { return own_setting() == "7s" && marker() == 404; }))
      << RunErr() << " refresh_interval " << own_setting() << ", marker " << marker();
  EXPECT_TRUE(WaitFor([&] { return count() == 30002; })) << RunErr();
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0) << RunErr();
  IgnoreError(search.value().DeleteIndex(index + "-1", true), "test cleanup");
}

// A store verify cannot reach is reported as such - its views not compared - and the
// other stores' views are still compared; the exit status is 1.
TEST_F(RunRedisTest, AStoreVerifyCannotReachDoesNotKeepTheOthersFromBeingCompared) {
  MustExecute(*sql_, "create table " + table_ + " (id int primary key, sku text)");
  MustExecute(*sql_,
              "insert into " + table_ + " select g, 'SKU-' || g from generate_series(1, 50) g");
  const std::string config = WriteConfig("");
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return Get(Key(50)).has_value(); })) << RunErr();
  // The same pipeline with an OpenSearch store nothing listens for.
  std::string text = testing::ReadFile(config);
  const std::string dead = "http://127.0.0.1:" + std::to_string(testing::FreePort());
  const size_t views = text.find("\nviews:\n");
  ASSERT_NE(views, std::string::npos) << text;
  text.replace(views, 8,
               "\n  search:\n    type: opensearch\n    url: " + dead +
                   "\nviews:\n  - name: search_view\n    store: search\n    from: " + table_ +
                   "\n    index: " + table_ + "\n");
  const std::string unreachable = WriteFile("unreachable.yml", text);
  auto [status, out] = Verify(unreachable);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("view cache_view (store cache): 50 rows, consistent"), std::string::npos)
      << out;
  EXPECT_NE(out.find("pgderive verify: store search: "), std::string::npos) << out;
  EXPECT_NE(out.find("(its views were not compared)"), std::string::npos) << out;
  EXPECT_EQ(out.find("view search_view (store search)"), std::string::npos) << out;
  StopRun();
}

// OpenSearch answers 503 while a shard recovers (a fresh or reopened index): `verify`
// connects again and asks for the checkpoint again within --wait, and compares (a CI
// run's verify once met pgderive-checkpoints still recovering and gave up). A proxy in
// front of the node refuses the first requests of verify's connect and its first reads
// of the checkpoint that way.
TEST_F(RunRedisTest, VerifyAsksAgainWhileOpenSearchAnswers503) {
  const std::string index = UniqueName("run_503");
  MustExecute(*sql_, "create table " + table_ + " (id int primary key, sku text)");
  MustExecute(*sql_,
              "insert into " + table_ + " select g, 'SKU-' || g from generate_series(1, 50) g");
  auto write = [&](const std::string& name, const std::string& url) {
    std::ofstream(dir_ / name) << "pipeline: " << pipeline_
                               << "\nsource:\n  dsn: " << endpoints_.pg_dsn
                               << "\nstores:\n  search: {type: opensearch, url: \"" << url
                               << "\"}\nviews:\n  - {name: search_view, store: search, from: "
                               << table_ << ", index: " << index << "}\n"
                               << "http:\n  listen: 127.0.0.1:" << port_ << "\n";
    return (dir_ / name).string();
  };
  const std::string config = write("direct.yml", endpoints_.opensearch_url);
  auto node = HttpClient::Create({.url = endpoints_.opensearch_url, .ca_file = ""});
  ASSERT_TRUE(node.ok());
  const std::string checkpoint = "/pgderive-checkpoints/_doc/" + pipeline_ + ".search";
  std::atomic<int> refused_connect{0}, refused_checkpoint{0};
  httplib::Server proxy;
  auto forward = [&](const httplib::Request& req, httplib::Response& res) {
    const bool is_checkpoint = req.method == "GET" && req.target == checkpoint;
    if ((!is_checkpoint && refused_connect.load() < 2 && ++refused_connect) ||
        (is_checkpoint && refused_checkpoint.load() < 3 && ++refused_checkpoint)) {
      res.status = 503;
      res.set_content(
          R"({"error":{"type":"no_shard_available_action_exception","reason":"CurrentState[RECOVERING] operations only allowed when shard state is one of [POST_RECOVERY, STARTED]"},"status":503})",
          "application/json");
      return;
    }
    auto answer =
        node.value().Send(req.method, req.target, req.body, req.get_header_value("Content-Type"));
    if (!answer.ok()) {
      res.status = 502;
      return;
    }
    res.status = static_cast<int>(answer.value().status);
    res.set_content(answer.value().body, "application/json");
  };
  proxy.Get(".*", forward);
  proxy.Post(".*", forward);
  proxy.Put(".*", forward);
  proxy.Delete(".*", forward);
  const int proxy_port = proxy.bind_to_any_port("127.0.0.1");
  ASSERT_GT(proxy_port, 0);
  std::thread serving([&] { proxy.listen_after_bind(); });
  StartRun(config);
  auto search = OpenSearchClient::Create({.url = endpoints_.opensearch_url, .ca_file = ""});
  ASSERT_TRUE(search.ok());
  ASSERT_TRUE(WaitFor([&] {
    IgnoreError(search.value().Refresh(index), "counted below");
    auto n = search.value().Count(index);
    return n.ok() && n.value() == 50;
  })) << RunErr();
  auto [status, out] =
      Verify(write("through_proxy.yml", "http://127.0.0.1:" + std::to_string(proxy_port)));
  proxy.stop();
  serving.join();
  EXPECT_EQ(status, 0) << out << RunErr();
  EXPECT_NE(out.find("view search_view (store search): 50 rows, consistent"), std::string::npos)
      << out;
  EXPECT_EQ(refused_connect.load(), 2);
  EXPECT_EQ(refused_checkpoint.load(), 3);
  StopRun();
  IgnoreError(search.value().DeleteIndex(index + "-1", true), "test cleanup");
}

TEST_F(RunRedisTest, BadViewsAreRefusedAndCreateNothing) {
  MustExecute(*sql_, "create table " + table_ + " (id int primary key, sku text)");
  // A column the table does not have.
  const std::string config = WriteConfig("id, nope");
  StartRun(config);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(20)), 2) << RunErr();
  EXPECT_NE(RunErr().find("view cache_view: column nope is not in table public." + table_),
            std::string::npos)
      << RunErr();
  EXPECT_EQ(testing::Scalar(*sql_,
                            "select count(*) from pg_replication_slots where slot_name = "
                            "'pgderive_" +
                                pipeline_ + "'"),
            "0");
}

}  // namespace
}  // namespace pgderive
