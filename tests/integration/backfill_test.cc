// Backfill while streaming (SPEC.md §1.4), against the real servers of compose/local:
// views added to a deployment's configuration are filled chunk by chunk while a writer
// keeps changing their table and the other views keep streaming (no store rebuilt);
// `pgderive backfill --view` rebuilds one view (Redis, OpenSearch, postgres) under
// writes; ADD COLUMN, DROP COLUMN and a type change reach every row of a view that
// follows its table; kill -9 in the middle of a backfill resumes after the last chunk
// applied. Each ends with `pgderive verify` passing.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "sinks/opensearch/http_client.h"
#include "sinks/redis/redis_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::MustConnect;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Scalar;
using testing::UniqueName;

// Keeps changing random rows of `table` (updates, deletes, inserts of new ids) until
// stopped; counts what it committed.
class Writer {
 public:
  Writer(const std::string& dsn, const std::string& table, int rows)
      : thread_([this, dsn, table, rows] {
          PgConnection c = MustConnect(dsn);
          std::mt19937 random(7);
          int next_id = rows + 1;
          while (running_.load()) {
            const int id = 1 + static_cast<int>(random() % static_cast<unsigned>(next_id));
            switch (random() % 4) {
              case 0:
                MustExecute(c, "delete from " + table + " where id = " + std::to_string(id));
                break;
              case 1:
                MustExecute(c, "insert into " + table + " (id, name, n) values (" +
                                   std::to_string(next_id++) + ", 'new', 1)");
                break;
              default:
                MustExecute(
                    c, "update " + table +
                           " set n = n + 1, name = name || 'x' where id = " + std::to_string(id));
            }
            ++committed_;
          }
        }) {}
  ~Writer() { Stop(); }
  void Stop() {
    running_.store(false);
    if (thread_.joinable()) thread_.join();
  }
  int committed() const { return committed_.load(); }

 private:
  std::atomic<bool> running_{true};
  std::atomic<int> committed_{0};
  std::thread thread_;
};

class BackfillTest : public testing::PipelineTest {
 protected:
  static constexpr int kRows = 20000;  // two chunks of at most 16,384

  void SetUp() override {
    UseSharedStack("bf");
    if (HasFatalFailure()) return;
    deadline_ = std::chrono::seconds(120);
    table_ = UniqueName("bf_src");
    target_ = "bf_out." + UniqueName("totals");
    index_ = UniqueName("bf-docs");
    CleanupSql("drop table if exists " + table_ + ", " + target_);
    MustExecute(*sql_, "create schema if not exists bf_out");
    // `big` is TOASTed (out of line, uncompressible): updates that leave it alone send
    // it as unchanged.
    MustExecute(*sql_, "create table " + table_ +
                           " (id int primary key, name text not null, n int not null, big text)");
    MustExecute(*sql_, "alter table " + table_ + " alter column big set storage external");
    MustExecute(*sql_, "insert into " + table_ +
                           " select g, 'row ' || g, g % 10, case when g % 500 = 0 "
                           "then repeat(md5(g::text), 200) end from generate_series(1, " +
                           std::to_string(kRows) + ") g");
  }

  // A second table like the first, `rows` rows (views "c" and "docs3" read it).
  void CreateSecondTable(int rows) {
    table2_ = UniqueName("bf_src2");
    CleanupSql("drop table if exists " + table2_);
    MustExecute(*sql_, "create table " + table2_ +
                           " (id int primary key, name text not null, n int not null, big text)");
    MustExecute(*sql_, "insert into " + table2_ +
                           " select g, 'second ' || g, g % 7, null from generate_series(1, " +
                           std::to_string(rows) + ") g");
  }

  // Views by name: "a" (Redis, follows the table), "b" (Redis, listed columns), "docs"
  // (OpenSearch, follows), "totals" (postgres group-by); of the second table, "c"
  // (Redis) and "docs3" (OpenSearch).
  std::string WriteConfig(const std::vector<std::string>& views, int parallelism = 0) {
    std::ostringstream out;
    out << "pipeline: " << pipeline_ << "\nsource:\n  dsn: \"" << endpoints_.pg_dsn << "\"\n";
    if (parallelism > 0) out << "  snapshot_parallelism: " << parallelism << "\n";
    out << "stores:\n  cache:\n    type: redis\n    url: \"" << endpoints_.redis_url
        << "\"\n  search:\n    type: opensearch\n    url: \"" << endpoints_.opensearch_url
        << "\"\n  warehouse:\n    type: postgres\n    dsn: \"" << endpoints_.pg_dsn
        << "\"\nviews:\n";
    for (const std::string& v : views) {
      if (v == "a") {
        out << "  - name: a\n    store: cache\n    from: " << table_ << "\n    key: \"" << pipeline_
            << ":a:{id}\"\n";
      } else if (v == "b") {
        out << "  - name: b\n    store: cache\n    from: " << table_ << "\n    key: \"" << pipeline_
            << ":b:{id}\"\n    columns: [id, name, big]\n";
      } else if (v == "docs") {
        out << "  - name: docs\n    store: search\n    from: " << table_
            << "\n    index: " << index_ << "\n";
      } else if (v == "docs2") {
        out << "  - name: docs2\n    store: search\n    from: " << table_
            << "\n    index: " << index_ << "-2\n    columns: [id, n, big]\n";
      } else if (v == "c") {
        out << "  - name: c\n    store: cache\n    from: " << table2_ << "\n    key: \""
            << pipeline_ << ":c:{id}\"\n";
      } else if (v == "docs3") {
        out << "  - name: docs3\n    store: search\n    from: " << table2_
            << "\n    index: " << index_ << "-3\n";
      } else if (v == "totals") {
        out << "  - name: totals\n    store: warehouse\n    table: " << target_
            << "\n    key: [n]\n    query: select n, count(*) as rows, max(name) as last from "
               "public."
            << table_ << " group by n\n";
      }
    }
    // Tests damage views behind pgderive's back to see `verify` and `backfill` deal with
    // it: the background verifier would mend them first.
    out << "verify:\n  continuous: off\n";
    out << "http:\n  listen: 127.0.0.1:" << testing::FreePort() << "\nlog:\n  format: json\n";
    return WriteFile("pgderive.yml", out.str());
  }
  void StopRun() { PipelineTest::StopRun(std::chrono::seconds(15)); }
  std::pair<int, std::string> Command(const std::vector<std::string>& args) {
    return PipelineTest::Command(args, std::chrono::seconds(180));
  }
  // The state the store records for a Redis view.
  json RedisState(const std::string& view) {
    auto client = RedisClient::Connect(endpoints_.redis_url);
    if (!client.ok()) return nullptr;
    auto reply = client.value().Command({"HGET", "pgderive:" + pipeline_ + ":views", view});
    if (!reply.ok() || reply.value().type != RedisReply::Type::kString) return nullptr;
    return json::parse(reply.value().str, nullptr, false);
  }
  // The state the store records for an OpenSearch view.
  json OpenSearchState(const std::string& view) {
    auto client = HttpClient::Create(
        {.url = endpoints_.opensearch_url, .ca_file = "", .timeout = std::chrono::seconds(5)});
    if (!client.ok()) return nullptr;
    auto response = client.value().Send(
        "GET", "/pgderive-checkpoints/_doc/" + pipeline_ + ".search%2Fview%2F" + view);
    if (!response.ok() || response.value().status != 200) return nullptr;
    const json doc = json::parse(response.value().body, nullptr, false);
    if (!doc.is_object() || !doc.contains("_source")) return nullptr;
    return json::parse(doc["_source"].value("view_state", ""), nullptr, false);
  }
  void RedisCommand(const std::vector<std::string>& command) {
    auto client = RedisClient::Connect(endpoints_.redis_url);
    ASSERT_TRUE(client.ok()) << client.error().message();
    auto reply = client.value().Command(command);
    ASSERT_TRUE(reply.ok()) << reply.error().message();
  }
  // A Redis reply (nil when Redis cannot be reached).
  RedisReply RedisAsk(const std::vector<std::string>& command) {
    auto client = RedisClient::Connect(endpoints_.redis_url);
    if (!client.ok()) return {};
    auto reply = client.value().Command(command);
    return reply.ok() ? reply.value() : RedisReply{};
  }
  // Every key matching `pattern`, sorted.
  std::vector<std::string> RedisKeys(const std::string& pattern) {
    std::vector<std::string> keys;
    auto client = RedisClient::Connect(endpoints_.redis_url);
    if (!client.ok()) return keys;
    std::string cursor = "0";
    do {
      auto reply = client.value().Command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
      if (!reply.ok() || reply.value().elements.size() != 2) return {};
      cursor = reply.value().elements[0].str;
      for (const RedisReply& key : reply.value().elements[1].elements) keys.push_back(key.str);
    } while (cursor != "0");
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    return keys;
  }
  // The keys view a holds for the source's rows now, sorted.
  std::vector<std::string> SourceKeysOfA() {
    std::vector<std::string> keys;
    auto rows = sql_->Query("select id from " + table_);
    if (!rows.ok()) return keys;
    for (const auto& row : rows.value().rows) keys.push_back(pipeline_ + ":a:" + *row[0]);
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  std::string table_, table2_, target_, index_;
};

TEST_F(BackfillTest, ViewsAddedToADeploymentAreFilledWhileEverythingStreams) {
  const std::string first = WriteConfig({"a", "docs", "totals"});
  StartRun(first, "run1.err");
  // The first start fills a, docs and the postgres store's mirror by backfill; the
  // stores hold their checkpoints once the fills are done.
  ASSERT_TRUE(WaitLog("run1.err", "\"msg\":\"backfill done\"", 3)) << Read("run1.err");
  StopRun();

  // A view more in the Redis store, and one in the OpenSearch store in place of the one
  // it had, while a writer runs.
  Writer writer(endpoints_.pg_dsn, table_, kRows);
  const std::string second = WriteConfig({"a", "b", "docs2", "totals"});
  StartRun(second, "run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "\"msg\":\"backfill done\"", 2)) << Read("run2.err");
  const int during = writer.committed();
  ASSERT_TRUE(WaitFor([&] { return writer.committed() >= during + 200; }));
  writer.Stop();
  const std::string log = Read("run2.err");
  // The views the stores held kept streaming: nothing was rebuilt; only the new views
  // were filled, chunk by chunk.
  EXPECT_EQ(log.find("rebuilding"), std::string::npos) << log;
  EXPECT_EQ(log.find("snapshot started"), std::string::npos) << log;
  EXPECT_NE(log.find("store cache resumes from"), std::string::npos) << log;
  EXPECT_NE(log.find("view b is new to store cache"), std::string::npos) << log;
  EXPECT_NE(log.find("store search resumes from"), std::string::npos) << log;
  EXPECT_NE(log.find("view docs2 is new to store search"), std::string::npos) << log;
  EXPECT_EQ(OpenSearchState("docs2")["state"], "live") << OpenSearchState("docs2");
  EXPECT_EQ(RedisState("b")["state"], "live") << RedisState("b");
  EXPECT_EQ(RedisState("a")["state"], "live") << RedisState("a");
  auto [code, out] = testing::RunVerify(second, 120);
  EXPECT_EQ(code, 0) << out << log;
}

// Two views of two tables in two stores are filled at once, each job on a connection of
// its own, while writers change both tables: both end exactly equal to their tables.
TEST_F(BackfillTest, TwoViewsOfTwoTablesInTwoStoresFillAtOnceUnderWrites) {
  CreateSecondTable(kRows);
  const std::string first = WriteConfig({"a", "docs"}, 2);
  StartRun(first, "run1.err");
  // The first start fills a and docs by backfill (the postgres store has no view, so no
  // mirror); the stores hold their checkpoints once both fills are done.
  ASSERT_TRUE(WaitLog("run1.err", "\"msg\":\"backfill done\"", 2)) << Read("run1.err");
  StopRun();

  Writer writer(endpoints_.pg_dsn, table_, kRows);
  Writer writer2(endpoints_.pg_dsn, table2_, kRows);
  const std::string second = WriteConfig({"a", "docs", "b", "docs3"}, 2);
  StartRun(second, "run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "\"msg\":\"backfill done\"", 2)) << Read("run2.err");
  const int during = writer.committed() + writer2.committed();
  ASSERT_TRUE(WaitFor([&] { return writer.committed() + writer2.committed() >= during + 200; }));
  writer.Stop();
  writer2.Stop();
  const std::string log = Read("run2.err");
  // Both jobs ran at once: each started before either ended.
  const size_t b_started =
      log.find("\"msg\":\"backfill started\",\"store\":\"cache\",\"views\":\"b\"");
  const size_t docs3_started =
      log.find("\"msg\":\"backfill started\",\"store\":\"search\",\"views\":\"docs3\"");
  const size_t first_done = log.find("\"msg\":\"backfill done\"");
  ASSERT_NE(b_started, std::string::npos) << log;
  ASSERT_NE(docs3_started, std::string::npos) << log;
  EXPECT_LT(b_started, first_done) << log;
  EXPECT_LT(docs3_started, first_done) << log;
  EXPECT_EQ(log.find("snapshot started"), std::string::npos) << log;
  EXPECT_EQ(RedisState("b")["state"], "live") << RedisState("b");
  EXPECT_EQ(OpenSearchState("docs3")["state"], "live") << OpenSearchState("docs3");
  // Every view equals its table, value for value, once caught up.
  auto [code, out] = testing::RunVerify(second, 120);
  EXPECT_EQ(code, 0) << out << log;
  EXPECT_NE(out.find("view b (store cache): "), std::string::npos) << out;
  EXPECT_NE(out.find("view docs3 (store search): "), std::string::npos) << out;
}

TEST_F(BackfillTest, BackfillCommandRebuildsOneViewUnderWrites) {
  const std::string config = WriteConfig({"a", "docs", "totals"});
  StartRun(config, "run.err");
  // The first fills (a, docs, the postgres store's mirror) done.
  ASSERT_TRUE(WaitLog("run.err", "\"msg\":\"backfill done\"", 3)) << Read("run.err");
  // Damage two views behind pgderive's back: verify sees it.
  RedisCommand({"SET", pipeline_ + ":a:5", "{\"id\":5,\"name\":\"forged\"}"});
  RedisCommand({"SET", pipeline_ + ":a:999999", "{\"id\":999999}"});
  MustExecute(*sql_, "update " + target_ + " set rows = -1 where n = 3");
  {
    auto [code, out] = testing::RunVerify(config, 60);
    ASSERT_EQ(code, 1) << out;
  }
  Writer writer(endpoints_.pg_dsn, table_, kRows);
  for (const std::string view : {"a", "docs", "totals"}) {
    auto [code, out] =
        Command({PgderiveBinary(), "backfill", "-c", config, "--view", view, "--timeout", "150"});
    ASSERT_EQ(code, 0) << out << Read("run.err");
    EXPECT_NE(out.find("view " + view + ": done, live again"), std::string::npos) << out;
  }
  writer.Stop();
  EXPECT_GE(Count("run.err", "backfill of view a requested"), 1);
  auto [code, out] = testing::RunVerify(config, 120);
  EXPECT_EQ(code, 0) << out << Read("run.err");
  // A view the configuration lacks, and a pipeline with no slot, are refused.
  auto [unknown, unknown_out] =
      Command({PgderiveBinary(), "backfill", "-c", config, "--view", "nope"});
  EXPECT_EQ(unknown, 2) << unknown_out;
  EXPECT_NE(unknown_out.find("no view named 'nope' (views: a, docs, totals)"), std::string::npos)
      << unknown_out;
  auto [typo, typo_out] = Command({PgderiveBinary(), "backfill", "-c", config, "--view", "dosc"});
  EXPECT_EQ(typo, 2) << typo_out;
  EXPECT_NE(typo_out.find("no view named 'dosc' (views: a, docs, totals; did you mean docs?)"),
            std::string::npos)
      << typo_out;
}

// A store still says a view is live while the request of its backfill waits in the WAL
// (a stream that lags): verify, started then, catches up past the request, which begins
// the view's rebuild, and must compare it once it is live again, not halfway (its read
// raced the last chunks and reported rows of a live, complete view as missing).
TEST_F(BackfillTest, VerifyComparesAViewBeingBackfilledOnceItIsLiveAgain) {
  const std::string config = WriteConfig({"a"});
  auto state_of_a = [&]() -> std::string {
    const json state = RedisState("a");
    return state.is_object() ? state.value("state", "") : "";
  };
  StartRun(config, "run.err");
  ASSERT_TRUE(WaitLog("run.err", "streaming from slot")) << Read("run.err");
  ASSERT_TRUE(WaitFor([&] { return state_of_a() == "live"; })) << RedisState("a").dump();
  // An open transaction that wrote the table: every chunk waits for it to end.
  PgConnection holder = MustConnect(endpoints_.pg_dsn);
  MustExecute(holder, "begin; update " + table_ + " set n = n where id = 1");
  {
    auto [code, out] =
        Command({PgderiveBinary(), "backfill", "-c", config, "--view", "a", "--no-wait"});
    ASSERT_EQ(code, 0) << out;
  }
  ASSERT_TRUE(WaitFor([&] { return state_of_a() == "backfilling"; }))
      << RedisState("a").dump() << Read("run.err");
  std::atomic<bool> verified{false};
  std::pair<int, std::string> result;
  std::thread verify([&] {
    result = testing::RunVerify(config, 120);
    verified = true;
  });
  // The view is being rebuilt while the transaction is open: verify waits for it.
  const bool early = WaitFor([&] { return verified.load(); }, std::chrono::seconds(5));
  // No chunk is placed while a writer that held the table at its low watermark is open.
  EXPECT_EQ(state_of_a(), "backfilling") << Read("run.err");
  MustExecute(holder, "commit");
  verify.join();
  EXPECT_FALSE(early) << result.second << Read("run.err");
  EXPECT_EQ(result.first, 0) << result.second << Read("run.err");
  EXPECT_NE(
      result.second.find("view a (store cache): " + std::to_string(kRows) + " rows, consistent"),
      std::string::npos)
      << result.second;
  EXPECT_EQ(state_of_a(), "live");
}

TEST_F(BackfillTest, SchemaChangesReachEveryRowOfViewsThatFollowTheTable) {
  const std::string config = WriteConfig({"a", "b", "docs"});
  StartRun(config, "run.err");
  ASSERT_TRUE(WaitLog("run.err", "streaming from slot")) << Read("run.err");
  Writer writer(endpoints_.pg_dsn, table_, kRows);
  // A column with a default: every existing row has it, and no change says so.
  MustExecute(*sql_, "alter table " + table_ + " add column flag int not null default 7");
  ASSERT_TRUE(WaitLog("run.err", "\"msg\":\"backfill done\"", 2)) << Read("run.err");
  // A dropped column leaves every row; a type change maps every value anew.
  MustExecute(*sql_, "alter table " + table_ + " drop column flag");
  MustExecute(*sql_, "alter table " + table_ + " alter column n type bigint");
  const int before = writer.committed();
  ASSERT_TRUE(WaitFor([&] { return writer.committed() >= before + 100; }));
  writer.Stop();
  MustExecute(*sql_, "update " + table_ + " set n = n where id = 1");  // a change under the type
  // Both following views record the table's final columns, and no backfill is left.
  const std::vector<std::string> final_columns = {"id 23", "name 25", "n 20", "big 25"};
  ASSERT_TRUE(WaitFor([&] {
    const json a = RedisState("a");
    const json docs = OpenSearchState("docs");
    return a.is_object() && a["state"] == "live" && a["columns"] == json(final_columns) &&
           docs.is_object() && docs["state"] == "live" && docs["columns"] == json(final_columns) &&
           Count("run.err", "\"msg\":\"backfill started\"") ==
               Count("run.err", "\"msg\":\"backfill done\"") +
                   Count("run.err", "\"msg\":\"backfill replaced");
  })) << RedisState("a")
      << OpenSearchState("docs") << Read("run.err");
  EXPECT_GE(Count("run.err", "\"msg\":\"backfill done\""), 4);
  // View b lists its columns: it was never backfilled.
  EXPECT_EQ(Read("run.err").find("\"views\":\"b\""), std::string::npos) << Read("run.err");
  auto [code, out] = testing::RunVerify(config, 120);
  EXPECT_EQ(code, 0) << out << Read("run.err");
}

// A view that follows its table, after RENAME COLUMN on a table never analyzed (the
// planner estimates 0 rows): /status never shows more rows done than estimated nor a
// percentage above what was done, and once the store records the view live, /status
// says live at its next publication (not only after the job has waited for its chunks
// to be durable).
TEST_F(BackfillTest, AFinishedBackfillIsLiveInStatusWithFiguresThatAgree) {
  const std::string config = WriteConfig({"a"});
  const std::string text = Read("pgderive.yml");
  const size_t at = text.find("listen: 127.0.0.1:");
  ASSERT_NE(at, std::string::npos);
  const int port = std::stoi(text.substr(at + 18));
  auto status_of_a = [&]() -> json {
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(1);
    auto res = client.Get("/status");
    if (!res || res->status != 200) return nullptr;
    const json status = json::parse(res->body, nullptr, false);
    if (!status.is_object() || !status.contains("views")) return nullptr;
    for (const json& v : status["views"]) {
      if (v.value("name", "") == "a") return v;
    }
    return nullptr;
  };
  StartRun(config, "run.err");
  ASSERT_TRUE(WaitLog("run.err", "streaming from slot")) << Read("run.err");
  MustExecute(*sql_, "alter table " + table_ + " rename column name to title");
  MustExecute(*sql_, "update " + table_ + " set title = 'renamed' where id = 1");
  std::vector<json> wrong;
  std::optional<std::chrono::steady_clock::time_point> recorded_live;
  bool saw_backfilling = false;
  ASSERT_TRUE(WaitFor([&] {
    const json state = RedisState("a");
    const bool live = state.is_object() && state["state"] == "live" &&
                      state["columns"].dump().find("title 25") != std::string::npos;
    if (live && !recorded_live) recorded_live = std::chrono::steady_clock::now();
    const json v = status_of_a();
    if (!v.is_object()) return false;
    if (v.contains("backfill_rows")) {
      saw_backfilling = true;
      const uint64_t done = v["backfill_rows"].get<uint64_t>();
      const uint64_t estimated = v["backfill_estimated_rows"].get<uint64_t>();
      const double percent = v["progress_percent"].get<double>();
      if (done > estimated || (done > 0 && percent <= 0.0) || percent >= 100.0) {
        wrong.push_back(v);
      }
    }
    if (recorded_live && v["state"] != "live" &&
        std::chrono::steady_clock::now() - *recorded_live > std::chrono::milliseconds(1500)) {
      wrong.push_back(v);
    }
    return recorded_live && v["state"] == "live";
  })) << status_of_a()
      << Read("run.err");
  EXPECT_TRUE(wrong.empty()) << json(wrong).dump();
  EXPECT_TRUE(WaitLog("run.err", "\"msg\":\"backfill done\"")) << Read("run.err");
  (void)saw_backfilling;  // the job may end between two publications of /status
  auto [code, out] = testing::RunVerify(config, 120);
  EXPECT_EQ(code, 0) << out << Read("run.err");
}

TEST_F(BackfillTest, KillDuringABackfillResumesAfterTheLastChunk) {
  MustExecute(*sql_, "insert into " + table_ +
                         " select g, 'row ' || g, g % 10, null from "
                         "generate_series(" +
                         std::to_string(kRows + 1) + ", 200000) g");
  const std::string first = WriteConfig({"a"});
  StartRun(first, "run1.err");
  ASSERT_TRUE(WaitLog("run1.err", "streaming from slot")) << Read("run1.err");
  StopRun();
  Writer writer(endpoints_.pg_dsn, table_, 200000);
  const std::string second = WriteConfig({"a", "b"});
  StartRun(second, "run2.err");
  // Killed once some chunks are applied and before the last.
  ASSERT_TRUE(WaitFor([&] {
    const json state = RedisState("b");
    return state.is_object() && state.contains("after");
  })) << Read("run2.err");
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  run_.reset();
  const json interrupted = RedisState("b");
  ASSERT_EQ(interrupted["state"], "backfilling") << interrupted;
  // `pgderive status` says so while nothing runs.
  {
    auto [code, out] = Command({PgderiveBinary(), "status", "-c", second});
    EXPECT_EQ(code, 0) << out;
    EXPECT_NE(out.find("view b (cache): stopped (recorded backfilling, up to key"),
              std::string::npos)
        << out;
  }
  StartRun(second, "run3.err");
  ASSERT_TRUE(WaitLog("run3.err", "\"msg\":\"backfill done\"", 1)) << Read("run3.err");
  writer.Stop();
  // The log line is JSON: the position appears escaped.
  const std::string resumed =
      json("resuming after " + interrupted["after"].get<std::string>()).dump();
  EXPECT_NE(Read("run3.err").find(resumed.substr(1, resumed.size() - 2)), std::string::npos)
      << resumed << Read("run3.err");
  EXPECT_EQ(Read("run3.err").find("rebuilding"), std::string::npos) << Read("run3.err");
  EXPECT_EQ(RedisState("b")["state"], "live");
  auto [code, out] = testing::RunVerify(second, 120);
  EXPECT_EQ(code, 0) << out << Read("run3.err");
}

// The lines of the run's log `log` whose msg is `msg`, parsed.
std::vector<json> LogLines(const std::string& text, const std::string& msg) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const json parsed = json::parse(line, nullptr, false);
    if (parsed.is_object() && parsed.value("msg", "") == msg) out.push_back(parsed);
  }
  return out;
}

// A first start fills the Redis views by the watermark backfill (no exported snapshot),
// recorded backfilling from the start; kill -9 at several points of it: each restart
// resumes after the key the store recorded (and logs it), never from the start again,
// and everything verifies at the end. A writer runs throughout.
TEST_F(BackfillTest, AFirstFillKilledAtSeveralPointsResumesAfterTheLastDurableChunk) {
  constexpr int kTotal = 150000;
  deadline_ = std::chrono::seconds(300);
  MustExecute(*sql_, "insert into " + table_ +
                         " select g, 'row ' || g, g % 10, null from generate_series(" +
                         std::to_string(kRows + 1) + ", " + std::to_string(kTotal) + ") g");
  MustExecute(*sql_, "analyze " + table_);
  Writer writer(endpoints_.pg_dsn, table_, kTotal);
  const std::string config = WriteConfig({"a", "b"});
  std::vector<std::string> kills;  // the key recorded at each kill
  int run = 0;
  bool live = false;
  auto log_of = [](int n) { return "run" + std::to_string(n) + ".err"; };
  for (; run < 3 && !live; ++run) {
    StartRun(config, log_of(run));
    ASSERT_TRUE(WaitLog(log_of(run), "streaming from slot")) << Read(log_of(run));
    if (run == 0) {
      // Recorded backfilling from the start before anything is filled.
      const json state = RedisState("a");
      ASSERT_TRUE(state.is_object()) << Read(log_of(run));
      EXPECT_EQ(state["state"], "backfilling") << state;
    }
    // Killed once a chunk more than at the last kill is recorded.
    const std::string previous = kills.empty() ? "" : kills.back();
    ASSERT_TRUE(WaitFor([&] {
      const json state = RedisState("b");
      if (state.is_object() && state["state"] == "live") return live = true;
      return state.is_object() && state.contains("after") && state["after"].is_string() &&
             state["after"].get<std::string>() != previous;
    })) << Read(log_of(run));
    if (live) break;
    run_->Signal(SIGKILL);
    run_->Wait(std::chrono::seconds(10));
    run_.reset();
    const json a = RedisState("a");
    const json b = RedisState("b");
    ASSERT_EQ(b["state"], "backfilling") << b;
    ASSERT_EQ(a["state"], "backfilling") << a;
    kills.push_back(b["after"].get<std::string>());
    EXPECT_EQ(a["after"], b["after"]) << "one job fills both views";
  }
  if (!live) StartRun(config, log_of(run));
  ASSERT_TRUE(WaitLog(log_of(run), "\"msg\":\"backfill done\"")) << Read(log_of(run));
  ASSERT_GE(kills.size(), 2u) << "the fill ended before it was killed twice";
  writer.Stop();
  // No exported snapshot: a first start of Redis views is the backfill.
  EXPECT_EQ(Read(log_of(0)).find("snapshot started"), std::string::npos) << Read(log_of(0));
  for (size_t i = 0; i < kills.size(); ++i) {
    const std::string log = Read(log_of(static_cast<int>(i) + 1));
    // The restart logs the key it resumes after, and reads from there: never from the
    // start again.
    const std::string resumed = json("resuming after " + kills[i]).dump();
    EXPECT_NE(log.find(resumed.substr(1, resumed.size() - 2)), std::string::npos) << resumed << log;
    const std::vector<json> started = LogLines(log, "backfill started");
    ASSERT_EQ(started.size(), 1u) << log;
    EXPECT_EQ(started[0].value("after", ""), kills[i]) << log;
    EXPECT_EQ(log.find("rebuilding"), std::string::npos) << log;
  }
  // What the last run read: the rows after the last key recorded at a kill.
  const std::vector<json> done_lines = LogLines(Read(log_of(run)), "backfill done");
  ASSERT_EQ(done_lines.size(), 1u);
  const long long read_last = std::stoll(done_lines[0].value("rows", "0"));
  const std::string last_key = json::parse(kills.back())[0].get<std::string>();
  const long long after_key =
      std::stoll(Scalar(*sql_, "select count(*) from " + table_ + " where id > " + last_key));
  std::cout << "[ fill     ] " << kills.size() << " kills; the last restart resumed after id "
            << last_key << " and read " << read_last << " rows (" << after_key
            << " rows of the table follow that key now)\n";
  EXPECT_LE(read_last, after_key + 20000) << "at most the writer's inserts more";
  EXPECT_EQ(RedisState("a")["state"], "live");
  EXPECT_EQ(RedisState("b")["state"], "live");
  auto [code, out] = testing::RunVerify(config, 180);
  EXPECT_EQ(code, 0) << out << Read(log_of(run));
}

// Redis back empty (its database flushed, its connections cut, as a restart does) while a writer
// runs: the pipeline records its views backfilling, with the reason in the log, and
// fills them again while the OpenSearch store goes on streaming; then everything
// verifies.
TEST_F(BackfillTest, ARedisBackEmptyIsRefilledWhileTheOtherStoresStream) {
  constexpr int kOwnDb = 11;  // emptied by the test: no other test's data
  endpoints_.redis_url = endpoints_.redis_url.substr(0, endpoints_.redis_url.rfind('/')) + "/" +
                         std::to_string(kOwnDb);
  MustExecute(*sql_, "insert into " + table_ +
                         " select g, 'row ' || g, g % 10, null from generate_series(" +
                         std::to_string(kRows + 1) + ", 200000) g");
  const std::string config = WriteConfig({"a", "docs"});
  StartRun(config, "run.err");
  ASSERT_TRUE(WaitLog("run.err", "\"msg\":\"backfill done\"", 2)) << Read("run.err");
  Writer writer(endpoints_.pg_dsn, table_, 200000);
  ASSERT_TRUE(WaitFor([&] { return writer.committed() >= 100; }));
  {
    // As a restart does: the database empty and the pipeline's connections cut, at once
    // (FLUSHDB of a database of this test's own, and only the connections to it).
    auto client = RedisClient::Connect(endpoints_.redis_url);
    ASSERT_TRUE(client.ok()) << client.error().message();
    auto own = client.value().Command({"CLIENT", "ID"});
    ASSERT_TRUE(own.ok()) << own.error().message();
    auto list = client.value().Command({"CLIENT", "LIST"});
    ASSERT_TRUE(list.ok()) << list.error().message();
    std::vector<std::vector<std::string>> commands = {{"MULTI"}, {"FLUSHDB"}};
    std::istringstream lines(list.value().str);
    for (std::string line; std::getline(lines, line);) {
      const std::string id = line.substr(3, line.find(' ') - 3);
      if (line.find(" db=" + std::to_string(kOwnDb) + " ") != std::string::npos &&
          id != std::to_string(own.value().integer)) {
        commands.push_back({"CLIENT", "KILL", "ID", id});
      }
    }
    ASSERT_GT(commands.size(), 2u) << list.value().str;
    commands.push_back({"EXEC"});
    for (const std::vector<std::string>& command : commands) {
      auto reply = client.value().Command(command);
      ASSERT_TRUE(reply.ok()) << reply.error().message();
    }
  }
  ASSERT_TRUE(WaitLog("run.err", "is filled from the start (store cache lost its data)"))
      << Read("run.err");
  // While view a is filled again, an update reaches the OpenSearch view (a realtime GET).
  const std::string marker = UniqueName("while_refilled");
  MustExecute(*sql_, "update " + table_ + " set name = '" + marker + "' where id = 7");
  bool refilling_then = false;
  ASSERT_TRUE(WaitFor([&] {
    auto client = HttpClient::Create(
        {.url = endpoints_.opensearch_url, .ca_file = "", .timeout = std::chrono::seconds(5)});
    if (!client.ok()) return false;
    auto response = client.value().Send("GET", "/" + index_ + "/_doc/7");
    if (!response.ok() || response.value().status != 200) return false;
    const json doc = json::parse(response.value().body, nullptr, false);
    if (!doc.is_object() || doc["_source"].value("name", "") != marker) return false;
    const json a = RedisState("a");
    refilling_then = a.is_object() && a["state"] == "backfilling";
    return true;
  })) << Read("run.err");
  EXPECT_TRUE(refilling_then) << "the OpenSearch view streamed while view a was refilled";
  ASSERT_TRUE(WaitFor([&] {
    const json a = RedisState("a");
    return a.is_object() && a["state"] == "live";
  })) << Read("run.err");
  writer.Stop();
  const std::string log = Read("run.err");
  EXPECT_NE(log.find("store cache goes on from"), std::string::npos) << log;
  // Only the Redis store was filled again, and no store from an exported snapshot (the
  // first start's fill included).
  EXPECT_EQ(log.find("rebuilt at"), std::string::npos) << log;
  EXPECT_EQ(log.find("snapshot started"), std::string::npos) << log;
  EXPECT_EQ(log.find("store search has"), std::string::npos) << log;
  auto [code, out] = testing::RunVerify(config, 180);
  EXPECT_EQ(code, 0) << out << log;
}

// A rebuild of a Redis view rewrites its keys in place and sweeps, at its end, the keys
// it did not write: a reader that GETs the keys of rows that exist never misses one,
// while a writer updates every row and deletes and inserts others. Afterwards the keys
// are exactly the source's rows: a key planted under the pattern and the keys of rows
// deleted during the rebuild are gone, and the rebuild's mark with them.
TEST_F(BackfillTest, ARedisRebuildNeverMissesTheKeyOfARowThatExists) {
  const std::string config = WriteConfig({"a"});
  StartRun(config, "run.err");
  ASSERT_TRUE(WaitLog("run.err", "streaming from slot")) << Read("run.err");
  ASSERT_TRUE(WaitFor([&] { return RedisState("a").value("state", "") == "live"; }));
  RedisCommand({"SET", pipeline_ + ":a:999999", "{\"id\":999999}"});
  // Rows 1..kRows/2 always exist (updated only); the others are deleted and inserted.
  constexpr int kKept = kRows / 2;
  std::atomic<bool> running{true};
  std::atomic<int> committed{0};
  std::thread writer([&] {
    PgConnection c = MustConnect(endpoints_.pg_dsn);
    std::mt19937 random(11);
    while (running.load()) {
      const int id = 1 + static_cast<int>(random() % kRows);
      const std::string where = " where id = " + std::to_string(id);
      if (id <= kKept || random() % 3 == 0) {
        MustExecute(c, "update " + table_ + " set n = n + 1, name = name || 'x'" + where);
      } else if (random() % 2 == 0) {
        MustExecute(c, "delete from " + table_ + where);
      } else {
        MustExecute(c, "insert into " + table_ + " (id, name, n) values (" + std::to_string(id) +
                           ", 'again', 1) on conflict (id) do update set n = 0");
      }
      ++committed;
    }
  });
  std::atomic<int> misses{0};
  std::atomic<int> rounds{0};
  std::string missed;
  std::thread reader([&] {
    auto client = RedisClient::Connect(endpoints_.redis_url);
    ASSERT_TRUE(client.ok()) << client.error().message();
    while (running.load()) {
      for (int first = 1; first <= kKept; first += 1000) {
        pgderive::RedisCommand mget{"MGET"};
        for (int id = first; id < first + 1000 && id <= kKept; ++id) {
          mget.push_back(pipeline_ + ":a:" + std::to_string(id));
        }
        auto reply = client.value().Command(mget);
        ASSERT_TRUE(reply.ok()) << reply.error().message();
        for (size_t i = 0; i < reply.value().elements.size(); ++i) {
          if (reply.value().elements[i].type == RedisReply::Type::kString) continue;
          if (misses++ == 0) missed = mget[i + 1];
        }
      }
      ++rounds;
    }
  });
  const int before = rounds.load();
  auto [code, out] =
      Command({PgderiveBinary(), "backfill", "-c", config, "--view", "a", "--timeout", "150"});
  const int during = rounds.load() - before;
  running.store(false);
  writer.join();
  reader.join();
  ASSERT_EQ(code, 0) << out << Read("run.err");
  EXPECT_NE(out.find("live again"), std::string::npos) << out;
  EXPECT_EQ(misses.load(), 0) << "first miss: " << missed;
  EXPECT_GE(during, 1);
  EXPECT_GE(committed.load(), 1);
  // The stream catches up: the keys are exactly the source's rows.
  std::vector<std::string> keys, rows;
  EXPECT_TRUE(WaitFor([&] {
    keys = RedisKeys(pipeline_ + ":a:*");
    rows = SourceKeysOfA();
    return keys == rows;
  })) << keys.size()
      << " keys, " << rows.size() << " rows";
  EXPECT_EQ(RedisAsk({"EXISTS", pipeline_ + ":a:999999"}).integer, 0);
  EXPECT_TRUE(RedisKeys("pgderive:" + pipeline_ + ":mark:*").empty());
  const json state = RedisState("a");
  EXPECT_EQ(state.value("state", ""), "live") << state;
  EXPECT_EQ(state.value("generation", 0), 1) << state;
  EXPECT_FALSE(state.contains("sweep")) << state;
  auto [verified, verify_out] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << verify_out << Read("run.err");
}

// kill -9 in the middle of a rebuild: the keys are all still there, the state records
// the sweep to come and the mark holds what the rebuild wrote; the restart resumes the
// rebuild, and its sweep removes exactly the keys of rows that no longer exist.
TEST_F(BackfillTest, KillDuringARedisRebuildStillSweepsExactlyTheStaleKeys) {
  MustExecute(*sql_, "insert into " + table_ +
                         " select g, 'row ' || g, g % 10, null from generate_series(" +
                         std::to_string(kRows + 1) + ", 200000) g");
  const std::string config = WriteConfig({"a"});
  StartRun(config, "run1.err");
  ASSERT_TRUE(WaitLog("run1.err", "streaming from slot")) << Read("run1.err");
  ASSERT_TRUE(WaitFor([&] { return RedisState("a").value("state", "") == "live"; }));
  const std::vector<std::string> planted = {pipeline_ + ":a:900001", pipeline_ + ":a:900002"};
  for (const std::string& key : planted) RedisCommand({"SET", key, "{\"id\":0}"});
  Writer writer(endpoints_.pg_dsn, table_, 200000);
  {
    auto [code, out] =
        Command({PgderiveBinary(), "backfill", "-c", config, "--view", "a", "--no-wait"});
    ASSERT_EQ(code, 0) << out;
  }
  ASSERT_TRUE(WaitFor([&] {
    const json state = RedisState("a");
    return state.is_object() && state.value("state", "") == "backfilling" &&
           state.contains("after");
  })) << RedisState("a")
      << Read("run1.err");
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  run_.reset();
  const json interrupted = RedisState("a");
  EXPECT_EQ(interrupted.value("sweep", false), true) << interrupted;
  EXPECT_EQ(interrupted.value("generation", 0), 1) << interrupted;
  const std::string mark = "pgderive:" + pipeline_ + ":mark:a:1";
  EXPECT_GT(RedisAsk({"SCARD", mark}).integer, 0);
  // Nothing was removed for the rebuild: the planted keys are still served.
  for (const std::string& key : planted) EXPECT_EQ(RedisAsk({"EXISTS", key}).integer, 1) << key;
  // Rows deleted while nothing runs, behind and ahead of the rebuild's position.
  MustExecute(*sql_, "delete from " + table_ + " where id between 3 and 9 or id > 199990");

  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitFor([&] {
    const json state = RedisState("a");
    return state.is_object() && state.value("state", "") == "live";
  })) << RedisState("a")
      << Read("run2.err");
  writer.Stop();
  std::vector<std::string> keys, rows;
  EXPECT_TRUE(WaitFor([&] {
    keys = RedisKeys(pipeline_ + ":a:*");
    rows = SourceKeysOfA();
    return keys == rows;
  })) << keys.size()
      << " keys, " << rows.size() << " rows";
  for (const std::string& key : planted) EXPECT_EQ(RedisAsk({"EXISTS", key}).integer, 0) << key;
  EXPECT_EQ(RedisAsk({"EXISTS", pipeline_ + ":a:5"}).integer, 0);
  EXPECT_EQ(RedisAsk({"EXISTS", mark}).integer, 0);
  const json state = RedisState("a");
  EXPECT_EQ(state.value("generation", 0), 1) << state;
  EXPECT_FALSE(state.contains("sweep")) << state;
  auto [code, out] = testing::RunVerify(config, 120);
  EXPECT_EQ(code, 0) << out << Read("run2.err");
}

// A view added to a Redis store that records other views' states has no keys: its fill
// neither marks its writes nor sweeps (its state says no sweep while it fills, no mark
// key), and it ends with exactly the source's rows.
TEST_F(BackfillTest, AViewAddedToARedisStoreIsFilledWithoutAMark) {
  MustExecute(*sql_, "insert into " + table_ +
                         " select g, 'row ' || g, g % 10, null from generate_series(" +
                         std::to_string(kRows + 1) + ", 100000) g");
  StartRun(WriteConfig({"a"}), "run1.err");
  ASSERT_TRUE(WaitFor([&] {
    const json state = RedisState("a");
    return state.is_object() && state.value("state", "") == "live";
  })) << Read("run1.err");
  StopRun();
  const std::string config = WriteConfig({"a", "b"});
  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitFor([&] {
    const json state = RedisState("b");
    return state.is_object() && (state.value("state", "") == "live" || state.contains("after"));
  })) << RedisState("b")
      << Read("run2.err");
  const json filling = RedisState("b");
  EXPECT_FALSE(filling.value("sweep", false)) << filling;
  EXPECT_TRUE(RedisKeys("pgderive:" + pipeline_ + ":mark:b:*").empty());
  ASSERT_TRUE(WaitFor([&] {
    const json state = RedisState("b");
    return state.is_object() && state.value("state", "") == "live";
  })) << RedisState("b")
      << Read("run2.err");
  std::vector<std::string> rows;
  for (std::string key : SourceKeysOfA()) rows.push_back(key.replace(pipeline_.size() + 1, 1, "b"));
  std::sort(rows.begin(), rows.end());
  std::vector<std::string> keys = RedisKeys(pipeline_ + ":b:*");
  EXPECT_EQ(keys, rows) << keys.size() << " keys, " << rows.size() << " rows";
  EXPECT_TRUE(RedisKeys("pgderive:" + pipeline_ + ":mark:b:*").empty());
  auto [code, out] = testing::RunVerify(config, 120);
  EXPECT_EQ(code, 0) << out << Read("run2.err");
}

// Keys under a view's pattern that the pipeline did not write (the store records no
// state for the view) are refused by validate --connect and run, and teardown --views
// leaves them; a view whose state the pipeline recorded owns its keys.
TEST_F(BackfillTest, KeysOfSomeoneElseUnderARedisViewsPatternAreRefused) {
  // A database of its own: the check looks at the first 1,000,000 keys of a database,
  // and the shared one may hold millions.
  const size_t db = endpoints_.redis_url.rfind('/');
  ASSERT_NE(db, std::string::npos);
  endpoints_.redis_url = endpoints_.redis_url.substr(0, db) + "/2";
  const std::string foreign = pipeline_ + ":a:1";
  RedisCommand({"SET", foreign, "someone else's"});
  const std::string config = WriteConfig({"a"});
  const std::string refusal = "view a: store cache (" + endpoints_.redis_url +
                              ") already holds keys matching " + pipeline_ + ":a:* that pipeline " +
                              pipeline_ + " did not write or no longer records (e.g. " + foreign +
                              "); refused, nothing was written";
  {
    auto [code, out] = Command({PgderiveBinary(), "validate", "-c", config, "--connect"});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find(refusal), std::string::npos) << out;
  }
  {
    auto [code, out] = Command({PgderiveBinary(), "run", "-c", config});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find(refusal), std::string::npos) << out;
  }
  EXPECT_EQ(RedisAsk({"GET", foreign}).str, "someone else's");
  EXPECT_EQ(RedisAsk({"EXISTS", "pgderive:" + pipeline_ + ":checkpoint"}).integer, 0);
  EXPECT_EQ(RedisAsk({"EXISTS", "pgderive:" + pipeline_ + ":views"}).integer, 0);
  {
    auto [code, out] = Command({PgderiveBinary(), "teardown", "-c", config, "--views"});
    EXPECT_EQ(code, 0) << out;
  }
  EXPECT_EQ(RedisAsk({"GET", foreign}).str, "someone else's");

  // Once gone, the pipeline runs and owns the view's keys; a view new to the store whose
  // pattern holds someone's keys is refused, the other is not.
  RedisCommand({"DEL", foreign});
  StartRun(config, "run.err");
  ASSERT_TRUE(WaitLog("run.err", "streaming from slot")) << Read("run.err");
  ASSERT_TRUE(WaitFor([&] { return RedisState("a").value("state", "") == "live"; }));
  StopRun();
  const std::string other = pipeline_ + ":b:1";
  RedisCommand({"SET", other, "someone else's"});
  const std::string both = WriteConfig({"a", "b"});
  {
    auto [code, out] = Command({PgderiveBinary(), "validate", "-c", both, "--connect"});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("view b: store cache"), std::string::npos) << out;
    EXPECT_NE(out.find("(e.g. " + other + ")"), std::string::npos) << out;
    EXPECT_EQ(out.find("view a: store cache"), std::string::npos) << out;
  }
  {
    auto [code, out] = Command({PgderiveBinary(), "run", "-c", both});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("view b: store cache"), std::string::npos) << out;
  }
  EXPECT_FALSE(RedisState("b").is_object());
  {
    auto [code, out] = Command({PgderiveBinary(), "teardown", "-c", both, "--views"});
    EXPECT_EQ(code, 0) << out;
    EXPECT_NE(out.find(std::to_string(kRows) + " key(s) of view a"), std::string::npos) << out;
  }
  EXPECT_EQ(RedisAsk({"GET", other}).str, "someone else's");
  EXPECT_TRUE(RedisKeys(pipeline_ + ":a:*").empty());
  RedisCommand({"DEL", other});
}

}  // namespace
}  // namespace pgderive
