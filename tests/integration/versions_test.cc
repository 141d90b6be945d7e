// Versions side by side (sinks/common/view_versions.h), against the real servers of
// compose/local: an OpenSearch view whose definition changes (a column added: a new
// mapping field) is built as a new generation index next to the serving one while a
// writer runs; the serving one keeps its recorded definition until the alias moves, and
// a reader of the alias never misses a row. Then the previous version is retained and
// maintained for a rollback; `promote: manual` waits for `pgderive promote`; kill -9
// during a version's build leaves the old version serving and the restart resumes.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

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
using testing::UniqueName;

constexpr auto kDeadline = std::chrono::seconds(180);
constexpr int kRows = 30000;  // two chunks

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Polls the alias as a reader would: the count never below kRows, a GET of any row
// 1..kRows finds it. Records the indexes it saw behind the alias.
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

class OpenSearchVersionsTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("ver");
    if (HasFatalFailure()) return;
    deadline_ = kDeadline;
    url_ = endpoints_.opensearch_url;
    table_ = UniqueName("ver_src");
    index_ = UniqueName("ver-docs");
    CleanupSql("drop table if exists " + table_);
    for (int n = 1; n <= 4; ++n) CleanupIndex(index_ + "-" + std::to_string(n));
    MustExecute(*sql_, "create table " + table_ + " (id int primary key, name text, n int)");
    MustExecute(*sql_, "insert into " + table_ + " select g, md5(g::text), g from " +
                           "generate_series(1, " + std::to_string(kRows) + ") g");
    MustExecute(*sql_, "analyze " + table_);
    auto client = OpenSearchClient::Create({.url = url_, .ca_file = ""});
    ASSERT_TRUE(client.ok());
    search_.emplace(std::move(client).value());
  }
  void TearDown() override {
    if (search_) {
      for (const char* id : {"", "/views", "/view/docs", "/reread"}) {
        IgnoreError(
            search_->DeleteDocument("pgderive-checkpoints", pipeline_ + ".search" + id).status(),
            "test cleanup");
      }
    }
    PipelineTest::TearDown();
  }

  // The view with `columns` (its definition) and `extra` keys (promote, retain_previous).
  std::string Config(const std::string& columns, const std::string& extra = "") {
    return WriteFile("pgderive.yml",
                     "pipeline: " + pipeline_ + "\nsource:\n  dsn: \"" + endpoints_.pg_dsn +
                         "\"\nstores:\n  search:\n    type: opensearch\n    url: \"" + url_ +
                         "\"\nviews:\n  - name: docs\n    store: search\n    from: " + table_ +
                         "\n    index: " + index_ + "\n    columns: " + columns + "\n" + extra +
                         "http:\n  listen: 127.0.0.1:" + std::to_string(port_) +
                         "\nlog:\n  format: json\n");
  }
  json StateDocument() {
    auto document = search_->Get("pgderive-checkpoints", pipeline_ + ".search/view/docs");
    if (!document.ok() || !document.value()) return nullptr;
    return document.value()->source;
  }
  json Generations() {
    const json document = StateDocument();
    return document.is_object() ? document.value("generations", json()) : json();
  }
  std::string ViewStateName() {
    const json document = StateDocument();
    if (!document.is_object()) return "";
    const json state = json::parse(document.value("view_state", ""), nullptr, false);
    return state.is_object() ? state.value("state", "") : "";
  }
  std::vector<std::string> Behind() {
    auto indexes = search_->AliasIndexes(index_);
    return indexes.ok() ? indexes.value() : std::vector<std::string>{"(error)"};
  }
  bool Exists(const std::string& index) {
    auto exists = search_->IndexExists(index);
    return exists.ok() && exists.value();
  }
  std::string Gen(int n) const { return index_ + "-" + std::to_string(n); }
  // The table's rows as documents of the given columns (id, name[, n]).
  std::map<std::string, json> Expected(bool with_n) {
    auto rows = sql_->Query("select id::text, name, n::text from " + table_);
    std::map<std::string, json> out;
    if (!rows.ok()) return out;
    for (const auto& r : rows.value().rows) {
      json doc = {{"id", std::stoi(*r[0])}, {"name", *r[1]}};
      if (with_n) doc["n"] = std::stoi(*r[2]);
      out[*r[0]] = doc;
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
  // Until the index equals the table under the given columns (the stream caught up).
  bool Equals(const std::string& index, bool with_n) {
    return WaitFor([&] { return Actual(index) == Expected(with_n); });
  }
  // The view's versions as /status lists them: generation -> state.
  std::map<int, std::string> Versions() {
    std::map<int, std::string> out;
    const json view = ViewStatus("docs");
    if (!view.is_object()) return out;
    for (const json& v : view.value("versions", json::array())) {
      out[v.value("generation", 0)] = v.value("state", "");
    }
    return out;
  }
  bool HasField(const std::string& index, const std::string& field) {
    auto response = HttpRequest(url_, "GET", "/" + index + "/_mapping");
    const json mapping = json::parse(response.second, nullptr, false);
    return mapping.is_object() && mapping.contains(index) &&
           mapping[index]["mappings"]["properties"].contains(field);
  }
  std::pair<int, std::string> Pgderive(const std::vector<std::string>& args) {
    std::vector<std::string> argv{PgderiveBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    return Command(argv, std::chrono::seconds(180));
  }

  std::string url_, table_, index_;
  std::optional<OpenSearchClient> search_;
};

TEST_F(OpenSearchVersionsTest, ChangedDefinitionIsANewVersionPromotedWhenReady) {
  const std::string config = Config("[id, name]");
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return ViewStateName() == "live"; })) << RunLog();
  ASSERT_EQ(Behind(), std::vector<std::string>{Gen(1)});
  ASSERT_TRUE(search_->Refresh(index_).ok());
  // /status as its next refresh has it.
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{1, "serving"}};
  })) << Status();

  testing::RowWriter writer(endpoints_.pg_dsn, table_, kRows, kRows + 1);
  Reader reader(url_, index_);
  // A column added: the index needs a new mapping field, so a new version.
  Config("[id, name, n]");
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out << RunLog();
  // A promote right after the reload (before /status lists the new version) waits for it
  // to be built and switched, instead of refusing.
  auto [promoted, promote_out] = Pgderive({"promote", "-c", config, "--view", "docs"});
  EXPECT_EQ(promoted, 0) << promote_out << RunLog();
  EXPECT_TRUE(Contains(promote_out, "serves")) << promote_out;
  ASSERT_TRUE(WaitLog("run.err", "alias " + index_ + " now on index " + Gen(2))) << RunLog();
  ASSERT_TRUE(WaitFor([&] { return reader.polls() > 20; }));
  reader.Stop();
  writer.Stop();
  EXPECT_GT(writer.committed(), 0);
  EXPECT_TRUE(reader.problems().empty())
      << reader.problems().size() << " problems, first: " << reader.problems().front();
  EXPECT_EQ(reader.seen(), (std::set<std::string>{Gen(1), Gen(2)}));
  EXPECT_EQ(Behind(), std::vector<std::string>{Gen(2)});
  // The new version has the new field; the previous one is retained, maintained with its
  // own definition (no n), and dropped after retain_previous (1 h by default).
  EXPECT_TRUE(HasField(Gen(2), "n"));
  EXPECT_FALSE(HasField(Gen(1), "n"));
  EXPECT_TRUE(Equals(Gen(2), /*with_n=*/true));
  EXPECT_TRUE(Equals(Gen(1), /*with_n=*/false));
  const json generations = Generations();
  EXPECT_EQ(generations["serving"], 2) << generations;
  EXPECT_EQ(generations["previous"], 1) << generations;
  EXPECT_GT(generations.value("drop_at", int64_t{0}),
            std::chrono::duration_cast<std::chrono::seconds>(
                std::chrono::system_clock::now().time_since_epoch())
                    .count() +
                3000)
      << generations;
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{2, "serving"}, {1, "retained"}};
  })) << Status();
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;
  StopRun(std::chrono::seconds(30));
}

TEST_F(OpenSearchVersionsTest, ManualPromoteAndRollback) {
  const std::string config = Config("[id, name]", "    promote: manual\n");
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return ViewStateName() == "live"; })) << RunLog();
  testing::RowWriter writer(endpoints_.pg_dsn, table_, kRows, kRows + 1);
  // A transaction holding a write on the table keeps the version's backfill at its first
  // chunk: the version is building, whatever the machine's speed.
  auto blocker = MustConnect(endpoints_.pg_dsn);
  MustExecute(blocker, "begin");
  MustExecute(blocker, "update " + table_ + " set n = n where id = 1");
  Config("[id, name, n]", "    promote: manual\n");
  auto [reloaded, reload_out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(reloaded, 0) << reload_out << RunLog();
  ASSERT_TRUE(WaitFor([&] { return Versions()[2] == "building"; })) << Status() << RunLog();
  auto [refused, refusal] = Pgderive({"promote", "-c", config, "--view", "docs", "--no-wait"});
  EXPECT_EQ(refused, 1) << refusal;
  EXPECT_TRUE(Contains(refusal, "version 2 of view docs is not ready (building")) << refusal;
  auto [no_rollback, said] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  EXPECT_EQ(no_rollback, 1) << said;
  EXPECT_TRUE(Contains(said, "no retained previous version")) << said;
  MustExecute(blocker, "commit");

  // Ready, not switched: readers stay on version 1 until the promote.
  ASSERT_TRUE(WaitFor([&] { return Versions()[2] == "ready"; })) << Status() << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "is ready; `pgderive promote -c FILE --view docs`")) << RunLog();
  EXPECT_EQ(Behind(), std::vector<std::string>{Gen(1)});
  writer.Stop();
  EXPECT_TRUE(Equals(Gen(1), /*with_n=*/false));
  EXPECT_TRUE(Equals(Gen(2), /*with_n=*/true));
  // verify checks the file's definition: the ready version.
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;

  auto [promoted, promote_out] = Pgderive({"promote", "-c", config, "--view", "docs"});
  ASSERT_EQ(promoted, 0) << promote_out << RunLog();
  EXPECT_TRUE(Contains(promote_out, "version 2 (index " + Gen(2) + ") serves")) << promote_out;
  EXPECT_EQ(Behind(), std::vector<std::string>{Gen(2)});
  // /status as its next refresh has it.
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{2, "serving"}, {1, "retained"}};
  })) << Status();

  // Rollback: version 1 serves again, still maintained with its definition; version 2
  // stays ready and maintained.
  MustExecute(*sql_, "update " + table_ + " set name = 'after promote' where id = 7");
  auto [rolled, rollback_out] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  ASSERT_EQ(rolled, 0) << rollback_out << RunLog();
  EXPECT_TRUE(Contains(rollback_out, "rolled back")) << rollback_out;
  EXPECT_EQ(Behind(), std::vector<std::string>{Gen(1)});
  MustExecute(*sql_, "update " + table_ + " set name = 'after rollback' where id = 8");
  EXPECT_TRUE(Equals(Gen(1), /*with_n=*/false));
  EXPECT_TRUE(Equals(Gen(2), /*with_n=*/true));
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{1, "serving"}, {2, "ready"}};
  })) << Status();

  // Promoted again.
  auto [again, again_out] = Pgderive({"promote", "-c", config, "--view", "docs"});
  ASSERT_EQ(again, 0) << again_out << RunLog();
  EXPECT_EQ(Behind(), std::vector<std::string>{Gen(2)});
  auto [verified2, report2] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified2, 0) << report2;
  StopRun(std::chrono::seconds(30));
}

TEST_F(OpenSearchVersionsTest, ARetainedVersionIsDroppedAfterRetainPrevious) {
  const std::string config = Config("[id, name]", "    retain_previous: 3s\n");
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return ViewStateName() == "live"; })) << RunLog();
  Config("[id, name, n]", "    retain_previous: 3s\n");
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out;
  ASSERT_TRUE(WaitLog("run.err", "alias " + index_ + " now on index " + Gen(2))) << RunLog();
  ASSERT_TRUE(WaitFor([&] { return !Exists(Gen(1)); })) << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "the previous version (index " + Gen(1) + ") was dropped"));
  EXPECT_TRUE(WaitFor([&] { return Generations()["previous"].is_null(); })) << Generations();
  auto [refused, said] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  EXPECT_EQ(refused, 1) << said;
  EXPECT_EQ(Behind(), std::vector<std::string>{Gen(2)});
  StopRun(std::chrono::seconds(30));
}

TEST_F(OpenSearchVersionsTest, KillDuringAVersionBuildKeepsTheOldVersionServing) {
  const std::string config = Config("[id, name]");
  StartRun(config, "run1.err");
  ASSERT_TRUE(WaitFor([&] { return ViewStateName() == "live"; })) << RunLog();
  testing::RowWriter writer(endpoints_.pg_dsn, table_, kRows, kRows + 1);
  Config("[id, name, n]");
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out;
  // Killed once the new version holds a chunk and before the last.
  ASSERT_TRUE(WaitFor([&] {
    const json document = StateDocument();
    if (!document.is_object() || document["generations"]["building"] != 2) return false;
    const json state = json::parse(document.value("view_state", ""), nullptr, false);
    return state.is_object() && state.contains("after");
  })) << RunLog();
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  run_.reset();
  EXPECT_EQ(Behind(), std::vector<std::string>{Gen(1)});
  auto count = search_->Count(index_);
  ASSERT_TRUE(count.ok());
  EXPECT_GE(count.value(), kRows);

  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "alias " + index_ + " now on index " + Gen(2))) << RunLog();
  writer.Stop();
  EXPECT_TRUE(Contains(RunLog(), "resuming after")) << RunLog();
  EXPECT_EQ(Behind(), std::vector<std::string>{Gen(2)});
  EXPECT_TRUE(Equals(Gen(2), /*with_n=*/true));
  EXPECT_TRUE(Equals(Gen(1), /*with_n=*/false));
  const int64_t drop_at = Generations().value("drop_at", int64_t{0});
  EXPECT_GT(drop_at, 0) << Generations();

  // A restart keeps the retained version and its drop time.
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  run_.reset();
  StartRun(config, "run3.err");
  WaitReady(std::chrono::seconds(120));
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{2, "serving"}, {1, "retained"}};
  })) << Status();
  EXPECT_EQ(Generations().value("drop_at", int64_t{0}), drop_at);
  MustExecute(*sql_, "update " + table_ + " set name = 'after restart' where id = 9");
  EXPECT_TRUE(Equals(Gen(1), /*with_n=*/false));
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;
  StopRun(std::chrono::seconds(30));
}

}  // namespace
}  // namespace pgderive
