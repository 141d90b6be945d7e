// Versions side by side for postgres views (sinks/common/view_versions.h), against the
// real servers of compose/local: a view whose definition changes is built from the
// mirrors as a new generation table (pgd_g<n>_<table>) next to the serving table, both
// maintained by the stream; a promote renames the two in one transaction, so a reader
// polling the view's table while a writer runs sees one whole version or the other,
// never a mix, an empty or a missing table. The previous version is retained and
// maintained for a rollback, then dropped after retain_previous; kill -9 during a
// version's build leaves the old table serving and the restart builds it again.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

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
using testing::Scalar;
using testing::UniqueName;

constexpr int kRows = 30000;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class PostgresVersionsTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("pgver");
    if (HasFatalFailure()) return;
    deadline_ = std::chrono::seconds(120);
    ns_ = UniqueName("pgver");
    src_ = ns_ + ".src";
    out_ = ns_ + "_out.docs";
    CleanupSql("drop schema if exists " + ns_ + " cascade");
    CleanupSql("drop schema if exists " + ns_ + "_out cascade");
    CleanupSql("drop table if exists pgderive." + pipeline_ + "__" + ns_ + "__src");
    MustExecute(*sql_, "create schema " + ns_);
    MustExecute(*sql_, "create table " + src_ + " (id int primary key, name text, n int)");
    MustExecute(*sql_, "insert into " + src_ + " select g, md5(g::text), g from " +
                           "generate_series(1, " + std::to_string(kRows) + ") g");
  }
  // The view with `query` and `extra` keys (promote, retain_previous).
  std::string Config(const std::string& query, const std::string& extra = "") {
    return WriteFile("pgderive.yml",
                     "pipeline: " + pipeline_ + "\nsource:\n  dsn: \"" + endpoints_.pg_dsn +
                         "\"\nstores:\n  warehouse:\n    type: postgres\n    dsn: \"" +
                         endpoints_.pg_dsn + "\"\nviews:\n  - name: docs\n    store: warehouse\n" +
                         "    table: " + out_ + "\n    key: [id]\n    query: " + query + "\n" +
                         extra + "http:\n  listen: 127.0.0.1:" + std::to_string(port_) + "\n");
  }
  std::string Old() const { return "select id, name from " + src_; }
  std::string Upper() const { return "select id, upper(name) as name from " + src_; }
  std::string WithN() const { return "select id, name, n from " + src_; }
  // Whether `table` equals `query` on the source, row for row (waits for the stream).
  bool Equals(const std::string& table, const std::string& query) {
    const std::string digest =
        "select coalesce(md5(string_agg(t::text, '|' order by id)), '') "
        "from (";
    return WaitFor([&] {
      return Scalar(*sql_, digest + "select * from " + table + ") t") ==
             Scalar(*sql_, digest + query + ") t");
    });
  }
  std::string Generation(int n) const { return ns_ + "_out.pgd_g" + std::to_string(n) + "_docs"; }
  bool Exists(const std::string& table) {
    return Scalar(*sql_, "select to_regclass('" + table + "') is not null") == "t";
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
  json Recorded() {
    const std::string text = Scalar(*sql_,
                                    "select substring(definition from '\\nversions (.*)$') from "
                                    "pgderive.views where pipeline = '" +
                                        pipeline_ + "' and view = 'docs'");
    return json::parse(text, nullptr, false);
  }
  std::pair<int, std::string> Pgderive(const std::vector<std::string>& args) {
    std::vector<std::string> argv{PgderiveBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    return Command(argv, std::chrono::seconds(180));
  }

  std::string ns_, src_, out_;
};

// Polls the view's table as a reader would, on its own connection: every poll must see
// all of rows 1..kRows of one version - `a` (a condition on a row of one version) true
// for all of them, or `b` (the other version's) true for all (a row may satisfy both). Records the
// slowest read.
class Reader {
 public:
  Reader(const std::string& dsn, const std::string& table, const std::string& a,
         const std::string& b)
      : thread_([this, dsn, table, a, b] {
          auto c = MustConnect(dsn);
          const std::string k = std::to_string(kRows);
          const std::string sql = "select count(*) filter (where id <= " + k +
                                  ")::text || ' ' || count(*) filter (where id <= " + k + " and (" +
                                  a +
                                  "))::text || ' ' || count(*) filter (where id "
                                  "<= " +
                                  k + " and (" + b + "))::text from " + table + " t";
          while (running_.load()) {
            const auto started = std::chrono::steady_clock::now();
            auto rows = c.Query(sql);
            const double took =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            std::lock_guard lock(mutex_);
            slowest_ = std::max(slowest_, took);
            const std::string seen =
                rows.ok() ? rows.value().rows[0][0].value_or("") : rows.error().message();
            int total = -1, in_a = -1, in_b = -1;
            std::sscanf(seen.c_str(), "%d %d %d", &total, &in_a, &in_b);
            if (total == kRows && (in_a == kRows || in_b == kRows)) {
              ++polls_;
            } else if (problems_.size() < 5) {
              problems_.push_back(seen);
            }
          }
        }) {}
  ~Reader() { Stop(); }
  void Stop() {
    running_.store(false);
    if (thread_.joinable()) thread_.join();
  }
  int polls() {
    std::lock_guard lock(mutex_);
    return polls_;
  }
  std::vector<std::string> problems() {
    std::lock_guard lock(mutex_);
    return problems_;
  }
  double slowest() {
    std::lock_guard lock(mutex_);
    return slowest_;
  }

 private:
  std::atomic<bool> running_{true};
  std::mutex mutex_;
  int polls_ = 0;
  double slowest_ = 0;
  std::vector<std::string> problems_;
  std::thread thread_;
};

// A new column: the new version is built next to the serving table while a writer runs,
// promoted as soon as it is built (promote: auto); a reader never sees a mix; the
// previous version is retained, maintained with its own definition.
TEST_F(PostgresVersionsTest, ChangedDefinitionIsANewVersionPromotedWhenBuilt) {
  std::string config = Config(Old());
  StartRun(config);
  WaitReady(std::chrono::seconds(120));
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(Equals(out_, Old())) << RunLog();
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{1, "serving"}};
  })) << Status();
  MustExecute(*sql_, "grant select on " + out_ + " to public");

  testing::RowWriter writer(endpoints_.pg_dsn, src_, kRows, kRows + 1);
  Reader reader(endpoints_.pg_dsn, out_, "not (to_jsonb(t) ? 'n')", "to_jsonb(t) ? 'n'");
  ASSERT_TRUE(WaitFor([&] { return reader.polls() > 5; }));
  config = Config(WithN());
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out << RunLog();
  ASSERT_TRUE(WaitLog("run.err", "promoted: version 2 serves")) << RunLog();
  const int seen = reader.polls();
  ASSERT_TRUE(WaitFor([&] { return reader.polls() > seen + 20; }));
  reader.Stop();
  writer.Stop();
  EXPECT_GT(writer.committed(), 0);
  EXPECT_TRUE(reader.problems().empty())
      << reader.problems().size() << " bad reads, first: " << reader.problems().front();
  std::printf("reader: %d whole reads, slowest %.3f s\n", reader.polls(), reader.slowest());
  // The new version serves under the view's name; the previous one is retained beside
  // it, maintained with its own definition, until retain_previous (1 h by default).
  EXPECT_TRUE(Equals(out_, WithN())) << RunLog();
  EXPECT_TRUE(Equals(Generation(1), Old())) << RunLog();
  EXPECT_FALSE(Exists(Generation(2)));
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{2, "serving"}, {1, "retained"}};
  })) << Status();
  const json recorded = Recorded();
  EXPECT_EQ(recorded["serving"], 2) << recorded;
  EXPECT_EQ(recorded["previous"], 1) << recorded;
  EXPECT_GT(recorded.value("drop_at", int64_t{0}),
            std::chrono::duration_cast<std::chrono::seconds>(
                std::chrono::system_clock::now().time_since_epoch())
                    .count() +
                3000)
      << recorded;
  // The grant moved with the view's name; the key's index has its usual name.
  EXPECT_EQ(Scalar(*sql_, "select has_table_privilege('public', '" + out_ + "', 'SELECT')"), "t");
  EXPECT_EQ(
      Scalar(*sql_, "select indisunique from pg_index where indexrelid = '" + ns_ +
                        "_out.docs_id_idx'::regclass and indrelid = '" + out_ + "'::regclass"),
      "t");
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;
  // `status` lists the versions.
  auto [listed, status_out] = Pgderive({"status", "-c", config});
  EXPECT_TRUE(Contains(status_out, "retained")) << status_out;
  StopRun(std::chrono::seconds(30));
}

// promote: manual holds the built version at ready; promote and rollback switch the
// tables (and their indexes' names) in one transaction each while a reader polls.
TEST_F(PostgresVersionsTest, ManualPromoteAndRollback) {
  std::string config = Config(Old(), "    promote: manual\n");
  StartRun(config);
  WaitReady(std::chrono::seconds(120));
  ASSERT_FALSE(HasFatalFailure());
  MustExecute(*sql_, "create index docs_by_name on " + out_ + " (name)");
  std::optional<testing::RowWriter> writer;
  writer.emplace(endpoints_.pg_dsn, src_, kRows, kRows + 1);
  Reader reader(endpoints_.pg_dsn, out_, "name = lower(name)", "name = upper(name)");
  config = Config(Upper(), "    promote: manual\n");
  auto [reloaded, reload_out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(reloaded, 0) << reload_out << RunLog();
  ASSERT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{1, "serving"}, {2, "ready"}};
  })) << Status()
      << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "`pgderive promote -c FILE --view docs` switches")) << RunLog();
  auto [no_rollback, said] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  EXPECT_EQ(no_rollback, 1) << said;
  EXPECT_TRUE(Contains(said, "no retained previous version")) << said;
  // Ready, not switched: both maintained. verify checks the file's definition: the
  // ready version (with the writer stopped: verify compares a quiet source).
  writer.reset();
  EXPECT_TRUE(Equals(Generation(2), Upper())) << RunLog();
  EXPECT_TRUE(Equals(out_, Old())) << RunLog();
  auto [ready_verified, ready_report] = testing::RunVerify(config, 120);
  EXPECT_EQ(ready_verified, 0) << ready_report;
  writer.emplace(endpoints_.pg_dsn, src_, kRows, kRows + 100000);

  const auto started = std::chrono::steady_clock::now();
  auto [promoted, promote_out] = Pgderive({"promote", "-c", config, "--view", "docs"});
  const double promote_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ASSERT_EQ(promoted, 0) << promote_out << RunLog();
  EXPECT_TRUE(Contains(promote_out, "version 2 (table " + out_ + ") serves")) << promote_out;
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{2, "serving"}, {1, "retained"}};
  })) << Status();
  // The same columns: the extra index was built on the new version and has its name.
  EXPECT_EQ(Scalar(*sql_, "select indrelid::regclass::text from pg_index where indexrelid = '" +
                              ns_ + "_out.docs_by_name'::regclass"),
            out_);
  MustExecute(*sql_, "update " + src_ + " set name = 'after promote' where id = 7");
  EXPECT_TRUE(Equals(out_, Upper())) << RunLog();
  EXPECT_TRUE(Equals(Generation(1), Old())) << RunLog();

  // Rollback: version 1 serves again; version 2 stays ready and maintained.
  auto [rolled, rollback_out] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  ASSERT_EQ(rolled, 0) << rollback_out << RunLog();
  EXPECT_TRUE(Contains(rollback_out, "rolled back")) << rollback_out;
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{1, "serving"}, {2, "ready"}};
  })) << Status();
  EXPECT_EQ(Scalar(*sql_, "select indrelid::regclass::text from pg_index where indexrelid = '" +
                              ns_ + "_out.docs_by_name'::regclass"),
            out_);
  MustExecute(*sql_, "update " + src_ + " set name = 'after rollback' where id = 8");
  EXPECT_TRUE(Equals(out_, Old())) << RunLog();
  EXPECT_TRUE(Equals(Generation(2), Upper())) << RunLog();

  // Promoted again.
  auto [again, again_out] = Pgderive({"promote", "-c", config, "--view", "docs"});
  ASSERT_EQ(again, 0) << again_out << RunLog();
  const int seen = reader.polls();
  ASSERT_TRUE(WaitFor([&] { return reader.polls() > seen + 20; }));
  reader.Stop();
  writer.reset();
  EXPECT_TRUE(reader.problems().empty())
      << reader.problems().size() << " bad reads, first: " << reader.problems().front();
  std::printf("promote command: %.3f s; reader: %d whole reads, slowest %.3f s\n", promote_seconds,
              reader.polls(), reader.slowest());
  EXPECT_TRUE(Equals(out_, Upper())) << RunLog();
  EXPECT_TRUE(Equals(Generation(1), Old())) << RunLog();
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;
  StopRun(std::chrono::seconds(30));
}

// The file changed, then put back before the new version was promoted: that version is
// of a definition the file no longer has and no longer kept current, so it is dropped
// (log line, table gone, /status lists only the serving one) and promote refuses - it
// was left "ready" and stale, and promote switched readers to it.
TEST_F(PostgresVersionsTest, AVersionOfADefinitionTheFileNoLongerHasIsDroppedNotPromoted) {
  std::string config = Config(Old(), "    promote: manual\n");
  StartRun(config);
  WaitReady(std::chrono::seconds(120));
  ASSERT_FALSE(HasFatalFailure());
  config = Config(Upper(), "    promote: manual\n");
  auto [reloaded, reload_out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(reloaded, 0) << reload_out << RunLog();
  ASSERT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{1, "serving"}, {2, "ready"}};
  })) << Status()
      << RunLog();
  ASSERT_TRUE(Exists(Generation(2)));
  config = Config(Old(), "    promote: manual\n");
  auto [reverted, revert_out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(reverted, 0) << revert_out << RunLog();
  EXPECT_TRUE(WaitLog("run.err",
                      "view docs: version 2 (table " + Generation(2) +
                          ") was dropped: its definition is no longer the file's, and version 1, "
                          "of the file's definition, serves"))
      << RunLog();
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{1, "serving"}};
  })) << Status();
  EXPECT_FALSE(Exists(Generation(2)));
  auto [promoted, promote_out] = Pgderive({"promote", "-c", config, "--view", "docs", "--no-wait"});
  EXPECT_EQ(promoted, 1) << promote_out;
  EXPECT_TRUE(Contains(promote_out, "no new version to promote")) << promote_out;
  MustExecute(*sql_, "update " + src_ + " set name = 'after revert' where id = 9");
  EXPECT_TRUE(Equals(out_, Old())) << RunLog();
  auto [verified, report] = testing::RunVerify(config, 120);
  EXPECT_EQ(verified, 0) << report;
  StopRun(std::chrono::seconds(30));
}

TEST_F(PostgresVersionsTest, ARetainedVersionIsDroppedAfterRetainPrevious) {
  std::string config = Config(Old(), "    retain_previous: 3s\n");
  StartRun(config);
  WaitReady(std::chrono::seconds(120));
  ASSERT_FALSE(HasFatalFailure());
  config = Config(WithN(), "    retain_previous: 3s\n");
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out;
  ASSERT_TRUE(WaitLog("run.err", "promoted: version 2 serves")) << RunLog();
  ASSERT_TRUE(WaitFor([&] { return !Exists(Generation(1)); })) << RunLog();
  EXPECT_TRUE(WaitLog("run.err", "the previous version (table " + Generation(1) + ") was dropped"))
      << RunLog();
  EXPECT_TRUE(WaitFor([&] { return Recorded()["previous"].is_null(); })) << Recorded();
  auto [refused, said] = Pgderive({"rollback", "-c", config, "--view", "docs"});
  EXPECT_EQ(refused, 1) << said;
  EXPECT_TRUE(Contains(said, "no retained previous version")) << said;
  EXPECT_TRUE(Equals(out_, WithN())) << RunLog();
  StopRun(std::chrono::seconds(30));
}

// kill -9 while the new version's table is filled: the old table serves on, exact, and
// nothing of the build is left; the restart builds and promotes it. kill -9 after the
// promote: the restart keeps version 2 serving and version 1 retained, both maintained.
TEST_F(PostgresVersionsTest, KillDuringAVersionBuildKeepsTheOldVersionServing) {
  // Enough rows that the build's one statement runs long enough to be caught.
  MustExecute(*sql_, "insert into " + src_ + " select g, md5(g::text), g from " +
                         "generate_series(" + std::to_string(kRows + 1) + ", 600000) g");
  const std::string slow = "select id, name, n, md5(md5(md5(name))) as h from " + src_;
  std::string config = Config(Old());
  StartRun(config, "run1.err");
  WaitReady(std::chrono::seconds(300));
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(Equals(out_, Old())) << RunLog();
  config = Config(slow);
  auto [code, out] = Pgderive({"reload", "-c", config});
  ASSERT_EQ(code, 0) << out;
  ASSERT_TRUE(WaitFor(
      [&] {
        return Scalar(*sql_,
                      "select count(*) from pg_stat_activity where query like '%pgd_g2_docs%' "
                      "and state = 'active' and pid <> pg_backend_pid()") != "0";
      },
      std::chrono::seconds(120)))
      << RunLog();
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  run_.reset();
  MustExecute(*sql_, "update " + src_ + " set name = 'while down' where id = 5");
  // The old version serves, whole; no part of the new one is left.
  EXPECT_TRUE(WaitFor([&] { return !Exists(Generation(2)); }));
  EXPECT_EQ(Scalar(*sql_, "select count(*) from " + out_), "600000");
  EXPECT_EQ(Recorded()["serving"], 1) << Recorded();
  EXPECT_TRUE(Recorded()["building"].is_null()) << Recorded();

  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "promoted: version 2 serves")) << RunLog();
  EXPECT_TRUE(Equals(out_, slow)) << RunLog();
  EXPECT_TRUE(Equals(Generation(1), Old())) << RunLog();

  // kill -9 after the promote: the restart keeps the versions as recorded.
  run_->Signal(SIGKILL);
  run_->Wait(std::chrono::seconds(10));
  run_.reset();
  StartRun(config, "run3.err");
  WaitReady(std::chrono::seconds(120));
  EXPECT_TRUE(WaitFor([&] {
    return Versions() == std::map<int, std::string>{{2, "serving"}, {1, "retained"}};
  })) << Status();
  MustExecute(*sql_, "update " + src_ + " set name = 'after restart' where id = 9");
  EXPECT_TRUE(Equals(out_, slow)) << RunLog();
  EXPECT_TRUE(Equals(Generation(1), Old())) << RunLog();
  EXPECT_FALSE(Contains(Read("run3.err"), "changed")) << Read("run3.err");
  StopRun(std::chrono::seconds(30));
}

}  // namespace
}  // namespace pgderive
