// Versions side by side for Redis views (sinks/redis/redis_sink.h), against the real
// servers of compose/local: a view whose key template changes is built as a new version
// under its own keys while a writer runs; the serving version's keys keep being
// maintained with its recorded definition, so a reader of the old keys never misses a
// row, through the build and the switch. The previous version is retained and maintained
// for a rollback, and its keys deleted after retain_previous; `promote: manual` waits for
// `pgderive promote`; kill -9 during the build resumes it. A change that keeps the key
// template is rebuilt in place and cannot be held by `promote: manual`.
//
// The templates overlap on purpose: the old pattern "<p>:*" matches the new keys
// "<p>:v2:<id>", which the old version's scans must leave alone.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "sinks/redis/redis_client.h"
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

// Polls the old version's keys as a reader of them would: an MGET of 100 random keys of
// rows 1..kRows finds every one.
class Reader {
 public:
  Reader(const std::string& url, const std::string& prefix)
      : thread_([this, url, prefix] {
          auto made = RedisClient::Connect(url);
          if (!made.ok()) {
            problems_.push_back("no client");
            return;
          }
          RedisClient client = std::move(made).value();
          std::mt19937 random(5);
          while (running_.load()) {
            RedisCommand mget{"MGET"};
            for (int i = 0; i < 100; ++i) {
              mget.push_back(prefix + ":" + std::to_string(1 + random() % kRows));
            }
            auto reply = client.Command(mget);
            if (!reply.ok() || reply.value().elements.size() != 100) {
              problems_.push_back("MGET failed");
            } else {
              for (size_t i = 0; i < 100; ++i) {
                if (reply.value().elements[i].type != RedisReply::Type::kString) {
                  problems_.push_back("GET " + mget[i + 1] + ": missing");
                }
              }
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
  int polls() const { return polls_.load(); }

 private:
  std::atomic<bool> running_{true};
  std::atomic<int> polls_{0};
  std::vector<std::string> problems_;  // read after Stop
  std::thread thread_;
};

class RedisVersionsTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("rver");
    if (HasFatalFailure()) return;
    deadline_ = kDeadline;
    table_ = UniqueName("rver_src");
    prefix_ = UniqueName("rv");
    CleanupSql("drop table if exists " + table_);
    MustExecute(*sql_, "create table " + table_ + " (id int primary key, name text, n int)");
    MustExecute(*sql_, "insert into " + table_ + " select g, md5(g::text), g from " +
                           "generate_series(1, " + std::to_string(kRows) + ") g");
    MustExecute(*sql_, "analyze " + table_);
  }
  void TearDown() override {
    PipelineTest::TearDown();
    for (const std::string& pattern : {prefix_ + ":*", "pgderive:" + pipeline_ + ":*"}) {
      for (const std::string& key : Keys(pattern)) Ask({"DEL", key});
    }
  }

  std::string OldTemplate() const { return prefix_ + ":{id}"; }
  std::string NewTemplate() const { return prefix_ + ":v2:{id}"; }
  // The view with its key template, `columns` and `extra` keys (promote, retain_previous).
  std::string Config(const std::string& key, const std::string& columns,
                     const std::string& extra = "") {
    return WriteFile(
        "pgderive.yml",
        "pipeline: " + pipeline_ + "\nsource:\n  dsn: \"" + endpoints_.pg_dsn +
            "\"\nstores:\n  cache:\n    type: redis\n    url: \"" + endpoints_.redis_url +
            "\"\nviews:\n  - name: docs\n    store: cache\n" + "    from: " + table_ +
            "\n    key: \"" + key + "\"\n    columns: " + columns + "\n" + extra +
            "http:\n  listen: 127.0.0.1:" + std::to_string(port_) + "\nlog:\n  format: json\n");
  }
  RedisReply Ask(const std::vector<std::string>& command) {
    auto client = RedisClient::Connect(endpoints_.redis_url);
    if (!client.ok()) return {};
    auto reply = client.value().Command(command);
    return reply.ok() ? reply.value() : RedisReply{};
  }
  std::vector<std::string> Keys(const std::string& pattern) {
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
  json Recorded(const std::string& hash) {
    const RedisReply reply = Ask({"HGET", "pgderive:" + pipeline_ + ":" + hash, "docs"});
    if (reply.type != RedisReply::Type::kString) return nullptr;
    return json::parse(reply.str, nullptr, false);
  }
  json State() { return Recorded("views"); }
  json RecordedVersions() { return Recorded("versions"); }
  std::string StateName() {
    const json state = State();
    return state.is_object() ? state.value("state", "") : "";
  }
  // The table's rows as values of the given columns (id, name[, n]), by key under
  // `prefix` ("<p>" or "<p>:v2").
  std::map<std::string, json> Expected(const std::string& prefix, bool with_n) {
    auto rows = sql_->Query("select id::text, name, n::text from " + table_);
    std::map<std::string, json> out;
    if (!rows.ok()) return out;
    for (const auto& r : rows.value().rows) {
      json value = {{"id", std::stoi(*r[0])}, {"name", *r[1]}};
      if (with_n) value["n"] = std::stoi(*r[2]);
      out[prefix + ":" + *r[0]] = value;
    }
    return out;
  }
  // The keys under `prefix` (the old version's leave out the new version's "<p>:v2:").
  std::map<std::string, json> Actual(const std::string& prefix) {
    std::map<std::string, json> out;
    std::vector<std::string> keys = Keys(prefix + ":*");
    std::erase_if(keys, [&](const std::string& key) {
      return prefix == prefix_ && key.starts_with(prefix_ + ":v2:");
    });
    auto client = RedisClient::Connect(endpoints_.redis_url);
    if (!client.ok()) return out;
    for (size_t i = 0; i < keys.size(); i += 500) {
      RedisCommand mget{"MGET"};
      for (size_t j = i; j < std::min(keys.size(), i + 500); ++j) mget.push_back(keys[j]);
      auto reply = client.value().Command(mget);
      if (!reply.ok()) return {};
      for (size_t j = 0; j + 1 < mget.size(); ++j) {
        const RedisReply& value = reply.value().elements[j];
        if (value.type == RedisReply::Type::kString) out[mget[j + 1]] = json::parse(value.str);
      }
    }
    return out;
  }
  // Until the keys under `prefix` equal the table under the given columns.
  bool Equals(const std::string& prefix, bool with_n) {
    return WaitFor([&] { return Actual(prefix) == Expected(prefix, with_n); });
  }
  std::string New() const { return prefix_ + ":v2"; }
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
  // The generation serving now (-1: none shown).
  int Serving() {
    for (const auto& [n, state] : Versions()) {
      if (state == "serving") return n;
    }
    return -1;
  }
  std::pair<int, std::string> Pgderive(const std::vector<std::string>& args) {
    std::vector<std::string> argv{PgderiveBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    return Command(argv, std::chrono::seconds(180));
  }
  // Starts the view with the old template, until it is live and serving; its generation.
  int StartOld(const std::string& config) {
    StartRun(config);
    EXPECT_TRUE(WaitFor([&] { return StateName() == "live" && Serving() >= 0; }))
        << RunLog() << Status();
    return Serving();
  }

  std::string table_, prefix_;
};

TEST_F(RedisVersionsTest, ChangedKeyTemplateIsANewVersionPromotedWhenReady) {
  const std::string config = Config(OldTemplate(), "[id, name]");
  const int g = StartOld(config);
  ASSERT_GE(g, 0);
  // /status as its next refresh has it.
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g, "serving"}};
  })) << Status();
  const std::string v2 = std::to_string(g + 1);

  testing::RowWriter writer(endpoints_.pg_dsn, table_, kRows, 1000001);
  Reader reader(endpoints_.redis_url, prefix_);
  Config(NewTemplate(), "[id, name, n]");
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out << RunLog();
  ASSERT_TRUE(WaitLog("run.err", "version " + v2 + " (keys " + NewTemplate() + ") serves"))
      << RunLog();
  EXPECT_TRUE(Contains(RunLog(), "its key template changed")) << RunLog();
  ASSERT_TRUE(WaitFor([&] { return reader.polls() > 20; }));
  reader.Stop();
  writer.Stop();
  EXPECT_GT(writer.committed(), 0);
  EXPECT_GT(reader.polls(), 20);
  EXPECT_TRUE(reader.problems().empty())
      << reader.problems().size() << " problems, first: " << reader.problems().front();
  // The new version holds the new definition under its keys; the previous one is
  // retained, maintained with its own definition (no n), until retain_previous (1 h).
  EXPECT_TRUE(Equals(New(), /*with_n=*/true));
  EXPECT_TRUE(Equals(prefix_, /*with_n=*/false));
  const json versions = RecordedVersions();
  EXPECT_EQ(versions["serving"], g + 1) << versions;
  EXPECT_EQ(versions["previous"], g) << versions;
  EXPECT_GT(versions.value("drop_at", int64_t{0}),
            std::chrono::duration_cast<std::chrono::seconds>(
                std::chrono::system_clock::now().time_since_epoch())
                    .count() +
                3000)
      << versions;
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g + 1, "serving"}, {g, "retained"}};
  })) << Status();
  // The new version's keys are its own: no mark, no sweep.
  EXPECT_TRUE(Keys("pgderive:" + pipeline_ + ":mark:*").empty());
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;
  StopRun(std::chrono::seconds(30));
}

TEST_F(RedisVersionsTest, ManualPromoteAndRollback) {
  const std::string config = Config(OldTemplate(), "[id, name]", "    promote: manual\n");
  const int g = StartOld(config);
  ASSERT_GE(g, 0);
  const std::string v2 = std::to_string(g + 1);
  testing::RowWriter writer(endpoints_.pg_dsn, table_, kRows, 1000001);
  // A transaction holding a write on the table keeps the version's backfill at its first
  // chunk: the version is building, whatever the machine's speed.
  auto blocker = MustConnect(endpoints_.pg_dsn);
  MustExecute(blocker, "begin");
  MustExecute(blocker, "update " + table_ + " set n = n where id = 1");
  Config(NewTemplate(), "[id, name, n]", "    promote: manual\n");
  auto [reloaded, reload_out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(reloaded, 0) << reload_out << RunLog();
  ASSERT_TRUE(WaitFor([&] { return Versions()[g + 1] == "building"; })) << Status() << RunLog();
  auto [refused, refusal] = Pgderive({"promote", "-c", config, "--view", "docs", "--no-wait"});
  EXPECT_EQ(refused, 1) << refusal;
  EXPECT_TRUE(Contains(refusal, "version " + v2 + " of view docs is not ready (building"))
      << refusal;
  auto [no_rollback, said] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  EXPECT_EQ(no_rollback, 1) << said;
  EXPECT_TRUE(Contains(said, "no retained previous version")) << said;
  MustExecute(blocker, "commit");

  // Ready, not switched: the old version serves until the promote.
  ASSERT_TRUE(WaitFor([&] { return Versions()[g + 1] == "ready"; })) << Status() << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "is ready; `pgderive promote -c FILE --view docs`")) << RunLog();
  EXPECT_EQ(RecordedVersions()["serving"], g) << RecordedVersions();
  writer.Stop();
  EXPECT_TRUE(Equals(prefix_, /*with_n=*/false));
  EXPECT_TRUE(Equals(New(), /*with_n=*/true));
  // verify checks the file's definition: the ready version.
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;

  auto [promoted, promote_out] = Pgderive({"promote", "-c", config, "--view", "docs"});
  ASSERT_EQ(promoted, 0) << promote_out << RunLog();
  EXPECT_TRUE(Contains(promote_out, "version " + v2 + " (keys " + NewTemplate() + ") serves"))
      << promote_out;
  EXPECT_TRUE(Contains(promote_out, "Redis has no alias")) << promote_out;
  EXPECT_EQ(RecordedVersions()["serving"], g + 1) << RecordedVersions();
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g + 1, "serving"}, {g, "retained"}};
  })) << Status();

  // Rollback: the old version serves again, still maintained with its definition; the
  // new one stays ready and maintained.
  MustExecute(*sql_, "update " + table_ + " set name = 'after promote' where id = 7");
  auto [rolled, rollback_out] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  ASSERT_EQ(rolled, 0) << rollback_out << RunLog();
  EXPECT_TRUE(Contains(rollback_out, "rolled back")) << rollback_out;
  EXPECT_EQ(RecordedVersions()["serving"], g) << RecordedVersions();
  MustExecute(*sql_, "update " + table_ + " set name = 'after rollback' where id = 8");
  MustExecute(*sql_, "delete from " + table_ + " where id = 9");
  EXPECT_TRUE(Equals(prefix_, /*with_n=*/false));
  EXPECT_TRUE(Equals(New(), /*with_n=*/true));
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g, "serving"}, {g + 1, "ready"}};
  })) << Status();

  // Promoted again.
  auto [again, again_out] = Pgderive({"promote", "-c", config, "--view", "docs"});
  ASSERT_EQ(again, 0) << again_out << RunLog();
  EXPECT_EQ(RecordedVersions()["serving"], g + 1) << RecordedVersions();
  auto [verified2, report2] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified2, 0) << report2;
  StopRun(std::chrono::seconds(30));
}

// `pgderive backfill` of a view whose previous version is retained: the rebuild ends
// live with the file's definition under its keys. Its end deleted a retired version's
// keys by SCAN while the MULTI of its state was open: the SCAN was queued in the MULTI
// and read the MULTI's OK, and the store retried "SCAN ...: OK" for ever.
TEST_F(RedisVersionsTest, ABackfillOfAViewWithARetainedVersionEndsLive) {
  const std::string config = Config(OldTemplate(), "[id, name]");
  const int g = StartOld(config);
  ASSERT_GE(g, 0);
  Config(NewTemplate(), "[id, name, n]");
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out << RunLog();
  ASSERT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g + 1, "serving"}, {g, "retained"}};
  })) << Status()
      << RunLog();
  auto [filled, fill_out] =
      Pgderive({"backfill", "-c", config, "--view", "docs", "--timeout", "120"});
  ASSERT_EQ(filled, 0) << fill_out << RunLog();
  MustExecute(*sql_, "update " + table_ + " set name = 'after backfill' where id = 3");
  EXPECT_TRUE(Equals(New(), /*with_n=*/true)) << RunLog();
  // The retained version's keys went with it (the rebuild ends it), the serving ones stay.
  EXPECT_TRUE(WaitFor([&] { return Actual(prefix_).empty(); })) << RunLog();
  EXPECT_FALSE(Contains(RunLog(), "SCAN ")) << RunLog();
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;
  StopRun(std::chrono::seconds(30));
}

// The store loses its data (every key of the pipeline and the view deleted, as a flush
// does) while a new version waits for `pgderive promote`: the refill is of the file's
// definition under its keys, which then serve - the serving version's keys were gone and
// the view stayed live on them.
TEST_F(RedisVersionsTest, AStoreThatLostItsDataWhileAVersionWaitsIsRefilledWithTheFilesDefinition) {
  const std::string config = Config(OldTemplate(), "[id, name]", "    promote: manual\n");
  const int g = StartOld(config);
  ASSERT_GE(g, 0);
  Config(NewTemplate(), "[id, name, n]", "    promote: manual\n");
  auto [reloaded, reload_out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(reloaded, 0) << reload_out << RunLog();
  ASSERT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g, "serving"}, {g + 1, "ready"}};
  })) << Status()
      << RunLog();
  for (const std::string& pattern : {prefix_ + ":*", "pgderive:" + pipeline_ + ":*"}) {
    for (const std::string& key : Keys(pattern)) Ask({"DEL", key});
  }
  EXPECT_TRUE(WaitLog("run.err", ") is gone: ")) << RunLog();
  EXPECT_TRUE(Equals(New(), /*with_n=*/true)) << RunLog();
  EXPECT_TRUE(WaitFor([&] {
    const auto versions = Versions();
    return versions.size() == 1 && versions.begin()->second == "serving";
  })) << Status();
  EXPECT_TRUE(Actual(prefix_).empty());
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;
  StopRun(std::chrono::seconds(30));
}

TEST_F(RedisVersionsTest, ARetainedVersionsKeysAreDeletedAfterRetainPrevious) {
  const std::string config = Config(OldTemplate(), "[id, name]", "    retain_previous: 3s\n");
  const int g = StartOld(config);
  ASSERT_GE(g, 0);
  Config(NewTemplate(), "[id, name, n]", "    retain_previous: 3s\n");
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out;
  ASSERT_TRUE(WaitLog("run.err", "(keys " + NewTemplate() + ") serves")) << RunLog();
  // The old keys go; the new ones (which the old pattern matches too) stay.
  ASSERT_TRUE(WaitFor([&] { return Actual(prefix_).empty(); })) << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "the previous version (")) << RunLog();
  EXPECT_TRUE(Contains(RunLog(), "keys " + OldTemplate() + ") was dropped")) << RunLog();
  EXPECT_TRUE(WaitFor([&] { return RecordedVersions()["previous"].is_null(); }))
      << RecordedVersions();
  EXPECT_TRUE(Equals(New(), /*with_n=*/true));
  // /status as its next refresh has it.
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g + 1, "serving"}};
  })) << Status();
  auto [refused, said] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  EXPECT_EQ(refused, 1) << said;
  StopRun(std::chrono::seconds(30));
}

TEST_F(RedisVersionsTest, KillDuringAVersionBuildKeepsTheOldVersionAndResumes) {
  // Rows enough for a build of many chunks (Redis fills 30,000 in a fraction of a
  // second): the kill lands between two of them.
  MustExecute(*sql_, "insert into " + table_ + " select g, md5(g::text), g from " +
                         "generate_series(" + std::to_string(kRows + 1) + ", 150000) g");
  const std::string config = Config(OldTemplate(), "[id, name]");
  StartRun(config, "run1.err");
  ASSERT_TRUE(WaitFor([&] { return StateName() == "live" && Serving() >= 0; })) << RunLog();
  const int g = Serving();
  testing::RowWriter writer(endpoints_.pg_dsn, table_, kRows, 1000001);
  Reader reader(endpoints_.redis_url, prefix_);
  Config(NewTemplate(), "[id, name, n]");
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out;
  // Killed once the new version holds a chunk and before the last.
  ASSERT_TRUE(WaitFor([&] {
    const json state = State();
    const json versions = RecordedVersions();
    return state.is_object() && state.contains("after") && versions.is_object() &&
           versions["building"] == g + 1;
  })) << RunLog();
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  run_.reset();
  EXPECT_EQ(RecordedVersions()["serving"], g) << RecordedVersions();

  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "(keys " + NewTemplate() + ") serves")) << RunLog();
  EXPECT_TRUE(Contains(RunLog(), "resuming after")) << RunLog();
  reader.Stop();
  writer.Stop();
  EXPECT_TRUE(reader.problems().empty())
      << reader.problems().size() << " problems, first: " << reader.problems().front();
  EXPECT_TRUE(Equals(New(), /*with_n=*/true));
  EXPECT_TRUE(Equals(prefix_, /*with_n=*/false));
  const int64_t drop_at = RecordedVersions().value("drop_at", int64_t{0});
  EXPECT_GT(drop_at, 0) << RecordedVersions();

  // A restart keeps the retained version, maintained, and its drop time.
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  run_.reset();
  StartRun(config, "run3.err");
  WaitReady(std::chrono::seconds(120));
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g + 1, "serving"}, {g, "retained"}};
  })) << Status();
  EXPECT_EQ(RecordedVersions().value("drop_at", int64_t{0}), drop_at);
  MustExecute(*sql_, "update " + table_ + " set name = 'after restart' where id = 9");
  EXPECT_TRUE(Equals(prefix_, /*with_n=*/false));
  EXPECT_TRUE(Equals(New(), /*with_n=*/true));
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;
  StopRun(std::chrono::seconds(30));
}

TEST_F(RedisVersionsTest, AChangeKeepingTheKeyTemplateIsRebuiltInPlaceAndNotHeld) {
  const std::string config = Config(OldTemplate(), "[id, name]", "    promote: manual\n");
  const int g = StartOld(config);
  ASSERT_GE(g, 0);
  auto blocker = MustConnect(endpoints_.pg_dsn);
  MustExecute(blocker, "begin");
  MustExecute(blocker, "update " + table_ + " set n = n where id = 1");
  // A column added, the same keys.
  Config(OldTemplate(), "[id, name, n]", "    promote: manual\n");
  auto [reloaded, reload_out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(reloaded, 0) << reload_out << RunLog();
  ASSERT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g, "serving"}, {g + 1, "building"}};
  })) << Status()
      << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "`promote: manual` cannot hold it")) << RunLog();
  auto [refused, refusal] = Pgderive({"promote", "-c", config, "--view", "docs", "--no-wait"});
  EXPECT_EQ(refused, 1) << refusal;
  EXPECT_TRUE(Contains(refusal, "view docs is rebuilt in place")) << refusal;
  MustExecute(blocker, "commit");
  // Complete: it serves without a promote; nothing is retained (the keys were shared).
  ASSERT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{g + 1, "serving"}};
  })) << Status()
      << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "(rebuilt in place: the keys were shared)")) << RunLog();
  EXPECT_TRUE(Equals(prefix_, /*with_n=*/true));
  EXPECT_TRUE(RecordedVersions()["previous"].is_null()) << RecordedVersions();
  auto [no_rollback, said] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  EXPECT_EQ(no_rollback, 1) << said;
  StopRun(std::chrono::seconds(30));
}

}  // namespace
}  // namespace pgderive
