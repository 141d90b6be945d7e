// TOASTed values and keys (issue 11, kind A), against the real servers, in all three
// stores at once (Redis, OpenSearch, postgres views):
//   - an update that changes the key and leaves a TOASTed value out takes the value from
//     the row the store holds under the old key (A1), also when the row moves twice in
//     one transaction;
//   - a key column that arrives as unchanged TOAST is taken from the old key PostgreSQL
//     logs with it (A2);
//   - a store that lacks the previous value of an unchanged column (the entry removed
//     behind pgderive's back, as a replay after a crash meets a row the store no longer
//     holds) reads the row again from the source, logs it and counts it, and goes on
//     (A3); a row gone from the source by then is not written.
// Each checks the exact content of every store, then `pgderive verify`.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sinks/opensearch/http_client.h"
#include "sinks/redis/redis_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Scalar;
using testing::UniqueName;

class ToastTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("tt");
    if (HasFatalFailure()) return;
    // The stores catch up in well under a second; a loaded machine (parallel builds and
    // tests) can take far longer.
    deadline_ = std::chrono::seconds(120);
    ns_ = UniqueName("tts");
    index_ = pipeline_ + "-docs";
    CleanupSql("drop schema if exists " + ns_ + " cascade");
    CleanupSql("drop schema if exists " + ns_ + "_out cascade");
    CleanupSql("drop table if exists " + Mirror("docs") + ", " + Mirror("notes"));
    CleanupIndex(index_);
    // Out of line and uncompressed: an update that leaves them alone sends them as
    // unchanged ('u'), the key of notes included.
    MustExecute(*sql_, "create schema " + ns_ + "; create schema " + ns_ + "_out");
    MustExecute(*sql_, "create table " + ns_ +
                           ".docs (id bigint primary key, title text, body text); alter table " +
                           ns_ + ".docs alter column body set storage external");
    MustExecute(*sql_, "create table " + ns_ + ".notes (k text primary key, v int); alter table " +
                           ns_ + ".notes alter column k set storage external");
    MustExecute(*sql_, "insert into " + ns_ + ".notes values (repeat('k', 2500), 1)");
  }

  std::string Mirror(const std::string& table) const {
    return "pgderive." + pipeline_ + "__" + ns_ + "__" + table;
  }
  static Result<HttpClient> Client(const std::string& url) {
    return HttpClient::Create({.url = url, .ca_file = "", .timeout = std::chrono::seconds(10)});
  }

  void Start() {
    std::ostringstream out;
    out << "pipeline: " << pipeline_ << "\nsource:\n  dsn: \"" << endpoints_.pg_dsn
        << "\"\nstores:\n  cache:\n    type: redis\n    url: \"" << endpoints_.redis_url
        << "\"\n  search:\n    type: opensearch\n    url: \"" << endpoints_.opensearch_url
        << "\"\n  warehouse:\n    type: postgres\n    dsn: \"" << endpoints_.pg_dsn
        << "\"\nviews:\n"
        << "  - name: docs_r\n    store: cache\n    from: " << ns_ << ".docs\n    key: \""
        << pipeline_ << ":docs:{id}\"\n"
        << "  - name: docs_s\n    store: search\n    from: " << ns_
        << ".docs\n    index: " << index_ << "\n"
        << "  - name: docs_v\n    store: warehouse\n    table: " << ns_
        << "_out.docs_v\n    key: [id]\n    query: select id, title, body from " << ns_ << ".docs\n"
        << "  - name: notes_r\n    store: cache\n    from: " << ns_ << ".notes\n    key: \""
        << pipeline_ << ":notes:{k}\"\n"
        << "  - name: notes_v\n    store: warehouse\n    table: " << ns_
        << "_out.notes_v\n    key: [k]\n    query: select k, v from " << ns_
        << ".notes\n"
        // The tests take entries away behind pgderive's back to see how it copes: the
        // background verifier would put them back first.
        << "verify:\n  continuous: off\n"
        << "http:\n  listen: 127.0.0.1:" << port_ << "\nlog:\n  format: json\n";
    config_ = WriteFile("pgderive.yml", out.str());
    StartRun(config_);
    ASSERT_TRUE(WaitFor([&] { return Log().find("streaming from slot") != std::string::npos; },
                        std::chrono::seconds(60)))
        << Log();
    // The first fill is a backfill: the tests damage the stores once it is done (a chunk
    // placed later would bring back what they removed).
    ASSERT_TRUE(WaitFor(
        [&] {
          const json status = Status();
          if (!status.is_object() || !status.contains("views") || status["views"].empty()) {
            return false;
          }
          for (const json& view : status["views"]) {
            if (!view.is_object() || view.value("state", "") != "live") return false;
          }
          return true;
        },
        std::chrono::seconds(60)))
        << Log();
  }
  std::string Log() const { return RunLog(); }
  int Count(const std::string& text) const { return PipelineTest::Count("run.err", text); }

  // Every Redis key of `prefix` with its JSON value.
  std::map<std::string, json> RedisEntries(const std::string& prefix) {
    std::map<std::string, json> out;
    auto client = RedisClient::Connect(endpoints_.redis_url);
    if (!client.ok()) return out;
    auto keys = client.value().Command({"KEYS", prefix + "*"});
    if (!keys.ok()) return out;
    for (const RedisReply& key : keys.value().elements) {
      auto value = client.value().Command({"GET", key.str});
      if (value.ok() && value.value().type == RedisReply::Type::kString) {
        out[key.str] = json::parse(value.value().str, nullptr, false);
      }
    }
    return out;
  }
  void RedisDelete(const std::string& key) {
    auto client = RedisClient::Connect(endpoints_.redis_url);
    ASSERT_TRUE(client.ok()) << client.error().message();
    auto reply = client.value().Command({"DEL", key});
    ASSERT_TRUE(reply.ok() && reply.value().integer == 1) << key;
  }
  // Every document of the index: _id -> _source.
  std::map<std::string, json> Documents() {
    std::map<std::string, json> out;
    auto client = Client(endpoints_.opensearch_url);
    if (!client.ok()) return out;
    auto refreshed = client.value().Send("POST", "/" + index_ + "/_refresh");
    auto response = client.value().Send("GET", "/" + index_ + "/_search?size=100");
    if (!refreshed.ok() || !response.ok() || response.value().status != 200) return out;
    const json body = json::parse(response.value().body, nullptr, false);
    if (!body.is_object()) return out;
    for (const json& hit : body["hits"]["hits"])
      out[hit["_id"].get<std::string>()] = hit["_source"];
    return out;
  }
  void DeleteDocument(const std::string& id) {
    auto client = Client(endpoints_.opensearch_url);
    ASSERT_TRUE(client.ok()) << client.error().message();
    auto response = client.value().Send("DELETE", "/" + index_ + "/_doc/" + id + "?refresh=true");
    ASSERT_TRUE(response.ok() && response.value().status == 200) << id;
  }
  // The rows of a postgres view (or any query) as "a|b|c" lines.
  std::vector<std::string> Rows(const std::string& query) {
    auto rows = sql_->Query(query);
    std::vector<std::string> out;
    if (!rows.ok()) return {"error: " + rows.error().message()};
    for (const auto& row : rows.value().rows) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) line += (i ? "|" : "") + row[i].value_or("<null>");
      out.push_back(line);
    }
    return out;
  }
  std::string Metrics() { return Http("/metrics").second; }
  void ExpectEveryStoreRunsAndVerifies() {
    json status;
    // The monitor reports once it has looked (right after the start it has nothing), and
    // a first fill is a backfill: the views are live once it is done.
    ASSERT_TRUE(WaitFor([&] {
      status = Status();
      if (!status.is_object() || !status.contains("stores") || !status["stores"].is_array() ||
          status["stores"].empty() || !status.contains("views")) {
        return false;
      }
      for (const json& view : status["views"]) {
        if (!view.is_object() || view.value("state", "") != "live") return false;
      }
      return true;
    })) << status;
    for (const json& store : status["stores"]) {
      EXPECT_TRUE(store.is_object() && store.value("failed", true) == false) << status;
    }
    for (const json& view : status["views"]) {
      EXPECT_TRUE(view.is_object() && view.value("state", "") == "live") << status;
    }
    EXPECT_EQ(Log().find("stopped:"), std::string::npos) << Log();
    auto [code, out] = testing::RunVerify(config_, 60);
    EXPECT_EQ(code, 0) << out << Log();
  }
  // The docs row as every row view holds it.
  static json Doc(int id, const std::string& title, const std::string& body) {
    return json{{"id", id}, {"title", title}, {"body", body}};
  }

  std::string ns_, index_, config_;
};

// A1: the key changes, the TOASTed body stays: it comes from the old key's row.
TEST_F(ToastTest, KeyChangeKeepsTheUnchangedToastedValue) {
  Start();
  const std::string b(10000, 'b'), f(9000, 'f'), n(9000, 'n');
  MustExecute(*sql_, "insert into " + ns_ + ".docs values (3, 'v1', repeat('b', 10000))");
  MustExecute(*sql_, "update " + ns_ + ".docs set id = 40 where id = 3");
  // Twice in one transaction, and a new row under the first key meanwhile.
  MustExecute(*sql_, "begin; insert into " + ns_ + ".docs values (5, 'five', repeat('f', 9000)); " +
                         "update " + ns_ + ".docs set id = 6 where id = 5; update " + ns_ +
                         ".docs set id = 7, title = 'seven' where id = 6; insert into " + ns_ +
                         ".docs values (5, 'new', repeat('n', 9000)); commit");
  const std::map<std::string, json> redis = {{pipeline_ + ":docs:40", Doc(40, "v1", b)},
                                             {pipeline_ + ":docs:5", Doc(5, "new", n)},
                                             {pipeline_ + ":docs:7", Doc(7, "seven", f)}};
  const std::map<std::string, json> documents = {
      {"40", Doc(40, "v1", b)}, {"5", Doc(5, "new", n)}, {"7", Doc(7, "seven", f)}};
  const std::string view = "select id, title, md5(body) from " + ns_ + "_out.docs_v order by id";
  const std::vector<std::string> rows = {
      "5|new|" + Scalar(*sql_, "select md5(repeat('n', 9000))"),
      "7|seven|" + Scalar(*sql_, "select md5(repeat('f', 9000))"),
      "40|v1|" + Scalar(*sql_, "select md5(repeat('b', 10000))")};
  ASSERT_TRUE(WaitFor([&] {
    return RedisEntries(pipeline_ + ":docs:") == redis && Documents() == documents &&
           Rows(view) == rows;
  })) << json(RedisEntries(pipeline_ + ":docs:")).dump().substr(0, 300)
      << json(Documents()).dump().substr(0, 300) << json(Rows(view)) << Log();
  EXPECT_EQ(Count("read the row again"), 0) << "the stores held the old rows" << Log();
  ExpectEveryStoreRunsAndVerifies();
}

// A2: the key itself is TOASTed and unchanged; PostgreSQL logs the old key with it.
TEST_F(ToastTest, UnchangedToastedKeyColumnComesFromTheOldKey) {
  Start();
  MustExecute(*sql_, "update " + ns_ + ".notes set v = 2");
  const std::string k(2500, 'k');
  const std::map<std::string, json> redis = {{pipeline_ + ":notes:" + k, json{{"k", k}, {"v", 2}}}};
  const std::string view = "select md5(k), v from " + ns_ + "_out.notes_v";
  const std::vector<std::string> rows = {Scalar(*sql_, "select md5(repeat('k', 2500))") + "|2"};
  ASSERT_TRUE(WaitFor([&] {
    return RedisEntries(pipeline_ + ":notes:") == redis && Rows(view) == rows;
  })) << json(Rows(view))
      << Log();
  EXPECT_EQ(Count("read the row again"), 0) << Log();
  ExpectEveryStoreRunsAndVerifies();
}

// A3: a store lacks the previous value of an unchanged TOASTed column: it reads the row
// again from the source (never stops, never writes null), logs it and counts it.
TEST_F(ToastTest, StoreLackingThePreviousValueReadsTheRowAgain) {
  Start();
  for (int id : {8, 9, 11}) {
    MustExecute(*sql_, "insert into " + ns_ + ".docs values (" + std::to_string(id) + ", 't" +
                           std::to_string(id) + "', repeat('" + std::to_string(id % 10) +
                           "', 9000))");
  }
  const std::string view = "select id, title, md5(body) from " + ns_ + "_out.docs_v order by id";
  ASSERT_TRUE(WaitFor([&] {
    return RedisEntries(pipeline_ + ":docs:").size() == 3 && Documents().size() == 3 &&
           Rows(view).size() == 3;
  })) << Log();
  // Behind pgderive's back, every store loses rows 8, 9 and 11 (as a replay after a
  // crash meets rows the store no longer holds).
  for (const std::string id : {"8", "9", "11"}) {
    RedisDelete(pipeline_ + ":docs:" + id);
    DeleteDocument(id);
  }
  MustExecute(*sql_, "delete from " + Mirror("docs"));
  // An update of another column, a key change, and an update of a row deleted later in
  // the same transaction (the source no longer has it when read); each once the stores
  // hold the one before (so each meets a missing row, after the reads before it).
  const std::string b8(9000, '8'), b9(9000, '9');
  const std::string md5_8 = Scalar(*sql_, "select md5(repeat('8', 9000))");
  const std::string md5_9 = Scalar(*sql_, "select md5(repeat('9', 9000))");
  auto holds = [&](const std::map<std::string, json>& redis,
                   const std::map<std::string, json>& documents,
                   const std::vector<std::string>& rows) {
    return WaitFor([&] {
      return RedisEntries(pipeline_ + ":docs:") == redis && Documents() == documents &&
             Rows(view) == rows;
    });
  };
  MustExecute(*sql_, "update " + ns_ + ".docs set title = 'v2' where id = 8");
  // (The target table of the postgres view keeps rows 9 and 11 until they change: only
  // the mirror lost them.)
  const std::string md5_1 = Scalar(*sql_, "select md5(repeat('1', 9000))");
  ASSERT_TRUE(holds({{pipeline_ + ":docs:8", Doc(8, "v2", b8)}}, {{"8", Doc(8, "v2", b8)}},
                    {"8|v2|" + md5_8, "9|t9|" + md5_9, "11|t11|" + md5_1}))
      << json(RedisEntries(pipeline_ + ":docs:")).dump().substr(0, 300)
      << json(Documents()).dump().substr(0, 300) << json(Rows(view)) << Log();
  MustExecute(*sql_, "update " + ns_ + ".docs set id = 10 where id = 9");
  const std::map<std::string, json> redis = {{pipeline_ + ":docs:8", Doc(8, "v2", b8)},
                                             {pipeline_ + ":docs:10", Doc(10, "t9", b9)}};
  const std::map<std::string, json> documents = {{"8", Doc(8, "v2", b8)},
                                                 {"10", Doc(10, "t9", b9)}};
  const std::vector<std::string> rows = {"8|v2|" + md5_8, "10|t9|" + md5_9};
  ASSERT_TRUE(holds(redis, documents, {"8|v2|" + md5_8, "10|t9|" + md5_9, "11|t11|" + md5_1}))
      << json(RedisEntries(pipeline_ + ":docs:")).dump().substr(0, 300)
      << json(Documents()).dump().substr(0, 300) << json(Rows(view)) << Log();
  MustExecute(*sql_, "begin; update " + ns_ +
                         ".docs set title = 'gone' where id = 11; delete from " + ns_ +
                         ".docs where id = 11; commit");
  ASSERT_TRUE(WaitFor([&] { return Count("the source no longer has the row") == 2; })) << Log();
  ASSERT_TRUE(holds(redis, documents, rows))
      << json(RedisEntries(pipeline_ + ":docs:")).dump().substr(0, 300)
      << json(Documents()).dump().substr(0, 300) << json(Rows(view)) << Log();
  // Logged with table, key and LSN, per store; row 11 was gone from the source.
  const std::string table = "table " + ns_ + ".docs, key ";
  EXPECT_NE(Log().find("store cache, view docs_r: " + table + pipeline_ + ":docs:8 at "),
            std::string::npos)
      << Log();
  EXPECT_NE(Log().find("store search, view docs_s: " + table + "10 at "), std::string::npos)
      << Log();
  EXPECT_NE(Log().find("store warehouse: " + table + "8 at "), std::string::npos) << Log();
  EXPECT_EQ(Count("column(s) body; read the row again from the source"), 6) << Log();
  EXPECT_EQ(Count("the source no longer has the row"), 2) << Log();  // Redis, OpenSearch
  const std::string metrics = Metrics();
  auto reread = [&](const std::string& store, const std::string& reason) {
    return "pgderive_rows_reread_total{store=\"" + store + "\",table=\"" + ns_ +
           ".docs\",reason=\"" + reason + "\"} ";
  };
  EXPECT_NE(metrics.find(reread("cache", "missing") + "3"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find(reread("search", "missing") + "3"), std::string::npos) << metrics;
  // The postgres store met row 11's update and delete in one batch: nothing to read.
  EXPECT_NE(metrics.find(reread("warehouse", "missing") + "2"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("reason=\"horizon\""), std::string::npos) << metrics;
  ExpectEveryStoreRunsAndVerifies();
}

// A3, the read's one trap: read again later than the change, the row's key may hold
// another row by then (the row moved away, another took its key). A later change of the
// moved row that leaves the value out must not carry that other row's value: changes
// before the read (the store's horizon) take unchanged values from the source too.
TEST_F(ToastTest, AValueReadAgainIsNeverCarriedToAnotherRow) {
  Start();
  MustExecute(*sql_, "insert into " + ns_ + ".docs values (20, 'a', repeat('a', 9000))");
  const std::string view = "select id, title, md5(body) from " + ns_ + "_out.docs_v order by id";
  ASSERT_TRUE(WaitFor([&] {
    return RedisEntries(pipeline_ + ":docs:").size() == 1 && Documents().size() == 1 &&
           Rows(view).size() == 1;
  })) << Log();
  run_->Signal(SIGTERM);
  ASSERT_EQ(run_->Wait(std::chrono::seconds(30)), 0) << Log();
  run_.reset();
  // While it is stopped: every store loses row 20; row 20 is updated leaving its body
  // out, moves to 21 leaving it out again, and a new row takes key 20.
  RedisDelete(pipeline_ + ":docs:20");
  DeleteDocument("20");
  MustExecute(*sql_, "delete from " + Mirror("docs"));
  MustExecute(*sql_, "update " + ns_ + ".docs set title = 'a2' where id = 20");
  MustExecute(*sql_, "update " + ns_ + ".docs set id = 21 where id = 20");
  MustExecute(*sql_, "insert into " + ns_ + ".docs values (20, 'b', repeat('z', 9000))");
  std::filesystem::rename(dir_ / "run.err", dir_ / "run1.err");
  Start();
  const std::string a(9000, 'a'), z(9000, 'z');
  const std::map<std::string, json> redis = {{pipeline_ + ":docs:20", Doc(20, "b", z)},
                                             {pipeline_ + ":docs:21", Doc(21, "a2", a)}};
  const std::map<std::string, json> documents = {{"20", Doc(20, "b", z)}, {"21", Doc(21, "a2", a)}};
  const std::vector<std::string> rows = {"20|b|" + Scalar(*sql_, "select md5(repeat('z', 9000))"),
                                         "21|a2|" + Scalar(*sql_, "select md5(repeat('a', 9000))")};
  ASSERT_TRUE(WaitFor([&] {
    return RedisEntries(pipeline_ + ":docs:") == redis && Documents() == documents &&
           Rows(view) == rows;
  })) << json(RedisEntries(pipeline_ + ":docs:")).dump().substr(0, 300)
      << json(Documents()).dump().substr(0, 300) << json(Rows(view)) << Log();
  // Redis and OpenSearch met the move after the first read: from the source, by the
  // horizon (the postgres store may have met all three in one batch).
  const std::string metrics = Metrics();
  for (const std::string store : {"cache", "search"}) {
    EXPECT_NE(metrics.find("pgderive_rows_reread_total{store=\"" + store + "\",table=\"" + ns_ +
                           ".docs\",reason=\"horizon\"} 1"),
              std::string::npos)
        << metrics;
  }
  ExpectEveryStoreRunsAndVerifies();
}

}  // namespace
}  // namespace pgderive
