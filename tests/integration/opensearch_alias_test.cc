// An OpenSearch view behind its alias, against the real servers of compose/local: a
// rebuild (`pgderive backfill --view`) fills a new concrete index while readers of the
// alias keep the old one whole, and the alias moves in one call; kill -9 during it
// leaves the alias on the old index until the new one is complete; an index of the
// view's name made by a pgderive before aliases is migrated once; an index or alias
// pgderive did not make is refused by validate and run, and kept by teardown.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "sinks/opensearch/http_client.h"
#include "sinks/opensearch/opensearch_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"
#include "tests/support/row_writer.h"
#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"
#include "tests/support/wait.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::MustConnect;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Subprocess;
using testing::UniqueName;

constexpr auto kDeadline = std::chrono::seconds(180);
constexpr int kRows = 60000;  // four chunks

class OpenSearchAliasTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("al");
    if (HasFatalFailure()) return;
    deadline_ = kDeadline;
    dsn_ = endpoints_.pg_dsn;
    url_ = endpoints_.opensearch_url;
    table_ = UniqueName("al_src");
    index_ = UniqueName("al-docs");
    CleanupSql("drop table if exists " + table_);
    CleanupIndex(index_);
    MustExecute(*sql_, "create table " + table_ + " (id int primary key, name text, n int)");
    MustExecute(*sql_, "insert into " + table_ + " select g, md5(g::text), g from " +
                           "generate_series(1, " + std::to_string(kRows) + ") g");
    config_ = WriteConfig(index_);
    auto client = OpenSearchClient::Create({.url = url_, .ca_file = ""});
    ASSERT_TRUE(client.ok());
    search_.emplace(std::move(client).value());
  }
  void TearDown() override {
    if (run_) {
      run_->Signal(SIGKILL);
      run_->Wait(std::chrono::seconds(10));
      run_.reset();
    }
    if (search_) {
      for (const std::string& index : cleanup_) {
        IgnoreError(search_->DeleteIndex(index, true), "test cleanup");
      }
      for (const char* id : {"", "/views", "/view/docs", "/reread"}) {
        IgnoreError(
            search_->DeleteDocument("pgderive-checkpoints", pipeline_ + ".search" + id).status(),
            "test cleanup");
      }
    }
    PipelineTest::TearDown();
  }

  std::string WriteConfig(const std::string& index) {
    return WriteFile("pgderive-" + index + ".yml",
                     "pipeline: " + pipeline_ + "\nsource:\n  dsn: \"" + dsn_ +
                         "\"\nstores:\n  search:\n    type: opensearch\n    url: \"" + url_ +
                         "\"\nviews:\n  - name: docs\n    store: search\n    from: " + table_ +
                         "\n    index: " + index + "\nhttp:\n  listen: 127.0.0.1:" +
                         std::to_string(port_) + "\nlog:\n  format: json\n");
  }
  void StartRun(const std::string& log) { PipelineTest::StartRun(config_, log); }
  bool WaitLog(const std::string& log, const std::string& text) {
    return PipelineTest::WaitLog(log, text);
  }
  std::pair<int, std::string> Command(const std::vector<std::string>& args) {
    return PipelineTest::Command(args, std::chrono::seconds(180));
  }
  // The view's state document in pgderive-checkpoints (null when absent).
  json StateDocument() {
    auto document = search_->Get("pgderive-checkpoints", pipeline_ + ".search/view/docs");
    if (!document.ok() || !document.value()) return nullptr;
    return document.value()->source;
  }
  json ViewState() {
    const json document = StateDocument();
    if (!document.is_object()) return nullptr;
    return json::parse(document.value("view_state", ""), nullptr, false);
  }
  std::vector<std::string> Behind(const std::string& alias) {
    auto indexes = search_->AliasIndexes(alias);
    return indexes.ok() ? indexes.value() : std::vector<std::string>{"(error)"};
  }
  bool Exists(const std::string& index) {
    auto exists = search_->IndexExists(index);
    return exists.ok() && exists.value();
  }
  // The table's rows as the view's documents, and the view's documents through the alias.
  std::map<std::string, json> Expected() {
    auto rows = sql_->Query("select id::text, name, n::text from " + table_);
    std::map<std::string, json> out;
    if (!rows.ok()) return out;
    for (const auto& r : rows.value().rows) {
      out[*r[0]] = {{"id", std::stoi(*r[0])}, {"name", *r[1]}, {"n", std::stoi(*r[2])}};
    }
    return out;
  }
  std::map<std::string, json> Actual(const std::string& index) {
    std::map<std::string, json> out;
    if (!search_->Refresh(index).ok()) return out;
    auto documents = search_->ScanAll(index);
    if (!documents.ok()) return out;
    for (const auto& [id, source] : documents.value()) out[id] = json::parse(source);
    return out;
  }

  std::string dsn_, url_, table_, index_, config_;
  std::optional<OpenSearchClient> search_;
  std::vector<std::string> cleanup_;
};

// Polls the alias as a reader would, until stopped: its count must never fall below the
// rows 1..kRows, and a GET of any of them must find it. Records what it saw behind the
// alias.
class Reader {
 public:
  Reader(const std::string& url, const std::string& alias)
      : thread_([this, url, alias] {
          auto made = OpenSearchClient::Create({.url = url, .ca_file = ""});
          if (!made.ok()) {
            problems_.push_back("no client");
            return;
          }
          OpenSearchClient client = std::move(made).value();
          std::mt19937 random(5);
          while (running_.load()) {
            auto count = client.Count(alias);
            if (!count.ok() || count.value() < kRows) {
              problems_.push_back("count " + (count.ok() ? std::to_string(count.value())
                                                         : count.error().message()));
            }
            const std::string id = std::to_string(1 + random() % kRows);
            auto document = client.Get(alias, id);
            if (!document.ok() || !document.value()) {
              problems_.push_back("GET " + id + ": " +
                                  (document.ok() ? "missing" : document.error().message()));
            }
            auto behind = client.AliasIndexes(alias);
            if (behind.ok()) {
              std::lock_guard lock(mutex_);
              for (const std::string& index : behind.value()) seen_.insert(index);
            }
            ++polls_;
          }
        }) {}
  ~Reader() { Stop(); }
  void Stop() {
    running_.store(false);
    if (thread_.joinable()) thread_.join();
  }
  const std::vector<std::string>& problems() const { return problems_; }
  std::set<std::string> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  int polls() const { return polls_.load(); }

 private:
  std::atomic<bool> running_{true};
  std::atomic<int> polls_{0};
  std::vector<std::string> problems_;  // read after Stop
  std::mutex mutex_;
  std::set<std::string> seen_;
  std::thread thread_;
};

TEST_F(OpenSearchAliasTest, RebuildKeepsEveryRowVisibleAndMovesTheAliasOnce) {
  StartRun("run.err");
  ASSERT_TRUE(WaitLog("run.err", "streaming from slot")) << Read("run.err");
  ASSERT_TRUE(testing::WaitFor([&] { return ViewState()["state"] == "live"; }, kDeadline))
      << Read("run.err");
  // The view's name is an alias of its first generation.
  EXPECT_EQ(Behind(index_), std::vector<std::string>{index_ + "-1"});
  EXPECT_EQ(StateDocument()["generations"]["serving"], 1) << StateDocument();
  // The first fill served at once, searchable after its refresh (a fill refreshes every
  // 30 s): from here on no row may go missing.
  ASSERT_TRUE(search_->Refresh(index_).ok());

  testing::RowWriter writer(dsn_, table_, kRows, kRows + 1);
  Reader reader(url_, index_);
  auto [code, out] = Command({PgderiveBinary(), "backfill", "-c", config_, "--view", "docs"});
  ASSERT_EQ(code, 0) << out << Read("run.err");
  ASSERT_TRUE(testing::WaitFor([&] { return reader.polls() > 20; }, kDeadline));
  reader.Stop();
  writer.Stop();
  EXPECT_GT(writer.committed(), 0);
  // Never a row missing through the alias, and the alias went from one index to the other.
  EXPECT_TRUE(reader.problems().empty())
      << reader.problems().size() << " problems, first: " << reader.problems().front();
  EXPECT_EQ(reader.seen(), (std::set<std::string>{index_ + "-1", index_ + "-2"}));
  EXPECT_EQ(Behind(index_), std::vector<std::string>{index_ + "-2"});
  ASSERT_TRUE(testing::WaitFor([&] { return !Exists(index_ + "-1"); }, kDeadline));
  EXPECT_EQ(StateDocument()["generations"]["serving"], 2) << StateDocument();
  EXPECT_TRUE(StateDocument()["generations"]["building"].is_null()) << StateDocument();
  EXPECT_TRUE(WaitLog("run.err", "alias " + index_ + " now on index " + index_ + "-2"))
      << Read("run.err");
  auto [verified, report] = testing::RunVerify(config_, 120);
  EXPECT_EQ(verified, 0) << report;
  EXPECT_TRUE(Actual(index_) == Expected());
}

TEST_F(OpenSearchAliasTest, KillDuringARebuildKeepsTheAliasOnTheOldIndexUntilTheNewIsComplete) {
  StartRun("run1.err");
  ASSERT_TRUE(testing::WaitFor([&] { return ViewState()["state"] == "live"; }, kDeadline))
      << Read("run1.err");
  testing::RowWriter writer(dsn_, table_, kRows, kRows + 1);
  auto [code, out] =
      Command({PgderiveBinary(), "backfill", "-c", config_, "--view", "docs", "--no-wait"});
  // Killed once the new generation holds some chunks and before the last.
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        const json document = StateDocument();
        const json state = ViewState();
        return document.is_object() && document["generations"]["building"] == 2 &&
               state.is_object() && state.contains("after");
      },
      kDeadline))
      << out << Read("run1.err");
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  run_.reset();
  ASSERT_EQ(ViewState()["state"], "backfilling") << StateDocument();
  // Readers still see the old, complete index.
  EXPECT_EQ(Behind(index_), std::vector<std::string>{index_ + "-1"});
  auto count = search_->Count(index_);
  ASSERT_TRUE(count.ok());
  EXPECT_GE(count.value(), kRows);
  EXPECT_TRUE(Exists(index_ + "-2"));

  StartRun("run2.err");
  ASSERT_TRUE(testing::WaitFor([&] { return ViewState()["state"] == "live"; }, kDeadline))
      << Read("run2.err");
  writer.Stop();
  EXPECT_NE(Read("run2.err").find("resuming after"), std::string::npos) << Read("run2.err");
  EXPECT_EQ(Behind(index_), std::vector<std::string>{index_ + "-2"});
  ASSERT_TRUE(testing::WaitFor([&] { return !Exists(index_ + "-1"); }, kDeadline));
  auto [verified, report] = testing::RunVerify(config_, 120);
  EXPECT_EQ(verified, 0) << report << Read("run2.err");
}

// The state a SIGKILL leaves between a fill's last chunk and its end - backfilling,
// the position at the table's last key - resumed: the chunk after it reads no row. It
// once recorded the fill as starting over, so the view began an empty index, moved its
// alias there at the end and deleted the full one (found by the fault suite: 90,644 of
// 94,577 documents gone, the view live). The fill ends on its own index, whole.
TEST_F(OpenSearchAliasTest, AFillResumedAtTheTablesLastKeyEndsOnItsOwnIndexWhole) {
  StartRun("run1.err");
  ASSERT_TRUE(testing::WaitFor([&] { return ViewState()["state"] == "live"; }, kDeadline))
      << Read("run1.err");
  StopRun();
  json document = StateDocument();
  json state = ViewState();
  ASSERT_TRUE(document.is_object() && state.is_object()) << document;
  state["state"] = "backfilling";
  state["after"] = "[\"" + std::to_string(kRows) + "\"]";
  document["view_state"] = state.dump();
  auto written = search_->Bulk(
      json{
          {"index", {{"_index", "pgderive-checkpoints"}, {"_id", pipeline_ + ".search/view/docs"}}}}
              .dump() +
          "\n" + document.dump() + "\n",
      "true");
  ASSERT_TRUE(written.ok()) << written.error().message();
  ASSERT_EQ(ViewState()["state"], "backfilling") << StateDocument();

  StartRun("run2.err");
  ASSERT_TRUE(testing::WaitFor([&] { return ViewState()["state"] == "live"; }, kDeadline))
      << Read("run2.err");
  EXPECT_NE(Read("run2.err").find("resuming after"), std::string::npos) << Read("run2.err");
  EXPECT_EQ(Behind(index_), std::vector<std::string>{index_ + "-1"}) << Read("run2.err");
  EXPECT_FALSE(Exists(index_ + "-2"));
  EXPECT_EQ(StateDocument()["generations"]["serving"], 1) << StateDocument();
  EXPECT_EQ(Actual(index_).size(), static_cast<size_t>(kRows));
  EXPECT_TRUE(Actual(index_) == Expected());
  auto [verified, report] = testing::RunVerify(config_, 120);
  EXPECT_EQ(verified, 0) << report << Read("run2.err");
}

TEST_F(OpenSearchAliasTest, AnIndexMadeBeforeAliasesIsMigratedOnce) {
  StartRun("run1.err");
  ASSERT_TRUE(testing::WaitFor([&] { return ViewState()["state"] == "live"; }, kDeadline))
      << Read("run1.err");
  run_->Signal(SIGTERM);
  ASSERT_EQ(run_->Wait(std::chrono::seconds(30)), 0);
  run_.reset();
  // What a pgderive before aliases left: a concrete index of the view's name, and a
  // state document without generations.
  auto http = HttpClient::Create({.url = url_, .ca_file = "", .timeout = std::chrono::seconds(60)});
  ASSERT_TRUE(http.ok());
  const std::string copy = index_ + "-copy";
  cleanup_.push_back(copy);
  auto reindex = [&](const std::string& from, const std::string& to) {
    auto response = http.value().Send(
        "POST", "/_reindex?refresh=true",
        json{{"source", {{"index", from}}}, {"dest", {{"index", to}, {"version_type", "external"}}}}
            .dump());
    return response.ok() && response.value().status == 200;
  };
  ASSERT_TRUE(search_->Refresh(index_ + "-1").ok());
  ASSERT_TRUE(reindex(index_ + "-1", copy));
  ASSERT_TRUE(search_->DeleteIndex(index_ + "-1", false).ok());  // the alias goes with it
  ASSERT_TRUE(reindex(copy, index_));
  ASSERT_TRUE(search_->DeleteIndex(copy, false).ok());
  json document = StateDocument();
  document.erase("generations");
  {
    auto response =
        http.value().Send("PUT",
                          "/pgderive-checkpoints/_doc/" +
                              EncodePathSegment(pipeline_ + ".search/view/docs") + "?refresh=true",
                          document.dump());
    ASSERT_TRUE(response.ok() && response.value().status == 200);
  }
  ASSERT_TRUE(Behind(index_).empty());
  ASSERT_TRUE(Exists(index_));
  {
    auto legacy = search_->Count(index_);
    ASSERT_TRUE(legacy.ok());
    ASSERT_EQ(legacy.value(), kRows);
  }

  testing::RowWriter writer(dsn_, table_, kRows, kRows + 1);
  Reader reader(url_, index_);
  StartRun("run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "was made by a pgderive without aliases: migrating it once"))
      << Read("run2.err");
  ASSERT_TRUE(testing::WaitFor(
      [&] { return Behind(index_) == std::vector<std::string>{index_ + "-1"}; }, kDeadline))
      << Read("run2.err");
  ASSERT_TRUE(testing::WaitFor([&] { return reader.polls() > 20; }, kDeadline));
  reader.Stop();
  writer.Stop();
  // The old index is deleted in the same call that makes the alias (one may not exist
  // beside the other): a request already sent to it when it goes fails (HTTP 503,
  // index_not_found or all shards failed), to be retried. Nothing else: never a row
  // missing, never a short count.
  for (const std::string& problem : reader.problems()) {
    EXPECT_NE(problem.find("returned HTTP 503"), std::string::npos) << problem;
  }
  ASSERT_TRUE(
      testing::WaitFor([&] { return StateDocument()["generations"]["serving"] == 1; }, kDeadline))
      << StateDocument();
  auto [verified, report] = testing::RunVerify(config_, 120);
  EXPECT_EQ(verified, 0) << report << Read("run2.err");
  // Once: a restart has nothing left to migrate.
  run_->Signal(SIGTERM);
  ASSERT_EQ(run_->Wait(std::chrono::seconds(30)), 0);
  StartRun("run3.err");
  ASSERT_TRUE(WaitLog("run3.err", "streaming from slot")) << Read("run3.err");
  EXPECT_EQ(Read("run3.err").find("migrating"), std::string::npos) << Read("run3.err");
  EXPECT_EQ(Behind(index_), std::vector<std::string>{index_ + "-1"});
}

TEST_F(OpenSearchAliasTest, AnIndexOrAliasPgderiveDidNotMakeIsRefusedAndKept) {
  const std::string foreign = UniqueName("al-foreign");
  const std::string aliased = UniqueName("al-aliased");
  const std::string behind = aliased + "-theirs";
  cleanup_ = {foreign, behind};
  ASSERT_TRUE(search_->CreateIndex(foreign, json::object(), false).ok());
  ASSERT_TRUE(search_->CreateIndex(behind, json::object(), false).ok());
  ASSERT_TRUE(
      search_->UpdateAliases(json::array({{{"add", {{"index", behind}, {"alias", aliased}}}}}))
          .ok());
  std::string theirs = R"({"index":{"_index":")" + foreign +
                       R"(","_id":"x"}})"
                       "\n" +
                       R"({"theirs":true})"
                       "\n";
  ASSERT_TRUE(search_->Bulk(theirs, "true").ok());

  for (const auto& [name, what] :
       {std::pair{foreign, "index " + foreign},
        std::pair{aliased, "alias " + aliased + " (of index " + behind}}) {
    SCOPED_TRACE(name);
    const std::string config = WriteConfig(name);
    const std::string expected = "view docs: " + what;
    auto [validated, validate_out] =
        Command({PgderiveBinary(), "validate", "-c", config, "--connect"});
    EXPECT_NE(validated, 0) << validate_out;
    EXPECT_NE(validate_out.find(expected), std::string::npos) << validate_out;
    EXPECT_NE(validate_out.find("in store search was not made by pipeline " + pipeline_),
              std::string::npos)
        << validate_out;
    auto [ran, run_out] = Command({PgderiveBinary(), "run", "-c", config});
    EXPECT_NE(ran, 0) << run_out;
    EXPECT_NE(run_out.find(expected), std::string::npos) << run_out;
    // Nothing created: no generation, no record, the foreign data as it was.
    EXPECT_FALSE(Exists(name + "-1"));
    EXPECT_TRUE(StateDocument().is_null()) << StateDocument();
    auto checkpoint = search_->Get("pgderive-checkpoints", pipeline_ + ".search");
    ASSERT_TRUE(checkpoint.ok());
    EXPECT_FALSE(checkpoint.value());
    // Teardown of the views removes nothing it did not make.
    auto [torn, teardown_out] = Command({PgderiveBinary(), "teardown", "-c", config, "--views"});
    EXPECT_EQ(teardown_out.find("index " + name), std::string::npos) << teardown_out;
    EXPECT_TRUE(Exists(name));
  }
  auto count = search_->Count(foreign);
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count.value(), 1);
  EXPECT_EQ(Behind(aliased), std::vector<std::string>{behind});
}

}  // namespace
}  // namespace pgderive
