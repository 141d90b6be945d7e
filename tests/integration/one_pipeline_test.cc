// One pipeline, one process, one port; and `pgderive teardown` - against the real
// servers: a second `run` of a running pipeline is refused before it does anything,
// naming the running process; another pipeline on the running one's HTTP port fails at
// start naming the address while the first keeps answering; teardown is refused while
// `run` is active, removes exactly pgderive's things (the views' data only with
// --views), says what is left when a store cannot be reached, and a second teardown
// finds nothing left.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sinks/redis/redis_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using testing::FreePort;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Scalar;
using testing::UniqueName;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class OnePipelineTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("one");
    if (HasFatalFailure()) return;
    table_ = UniqueName("one_src");
    index_ = UniqueName("one_idx");
    target_ = "public." + UniqueName("one_out");
    CleanupPipeline(pipeline_ + "_b");
    CleanupSql("drop table if exists " + table_ + ", " + target_);
    CleanupIndex(index_);
    MustExecute(*sql_, "create table " + table_ + " (id int primary key, grp int not null)");
    MustExecute(*sql_, "insert into " + table_ + " select g, g % 3 from generate_series(1, 20) g");
  }

  // A pipeline with one view in each store; `opensearch_url` may be one nothing answers.
  std::string WriteConfig(const std::string& name, const std::string& pipeline,
                          const std::string& opensearch_url) {
    std::ostringstream out;
    out << "pipeline: " << pipeline << "\nsource:\n  dsn: \"" << endpoints_.pg_dsn
        << "\"\nstores:\n  cache:\n    type: redis\n    url: \"" << endpoints_.redis_url
        << "\"\n  search:\n    type: opensearch\n    url: \"" << opensearch_url
        << "\"\n  warehouse:\n    type: postgres\n    dsn: \"" << endpoints_.pg_dsn
        << "\"\nviews:\n  - name: rows\n    store: cache\n    from: " << table_ << "\n    key: \""
        << table_ << ":{id}\"\n  - name: docs\n    store: search\n"
        << "    from: " << table_ << "\n    index: " << index_
        << "\n  - name: totals\n    store: warehouse\n    table: " << target_
        << "\n    key: [grp]\n    query: select grp, count(*) as n from public." << table_
        << " group by grp\nhttp:\n  listen: 127.0.0.1:" << port_ << "\n";
    return WriteFile(name, out.str());
  }
  std::string Config() { return WriteConfig("pgderive.yml", pipeline_, endpoints_.opensearch_url); }

  void StartRun(const std::string& config) {
    PipelineTest::StartRun(config);
    WaitReady();
  }
  // (exit status, stdout) of a command; its stderr into `err`.
  std::pair<int, std::string> Command(const std::vector<std::string>& args, std::string& err) {
    auto [code, out] = PipelineTest::Command(args);
    err = Read("command.err");
    return {code, out.substr(0, out.size() - std::min(out.size(), err.size()))};
  }
  std::pair<long, std::string> Get(const std::string& path) { return Http(path); }
  std::pair<long, std::string> Os(const std::string& method, const std::string& path) {
    return HttpRequest(endpoints_.opensearch_url, method, path);
  }
  long long RedisKeys(const std::string& pattern) {
    auto client = RedisClient::Connect(endpoints_.redis_url);
    EXPECT_TRUE(client.ok());
    if (!client.ok()) return -1;
    auto reply = client.value().Command({"KEYS", pattern});
    EXPECT_TRUE(reply.ok());
    return reply.ok() ? static_cast<long long>(reply.value().elements.size()) : -1;
  }
  std::string Pg(const std::string& query) { return Scalar(*sql_, query); }
  std::string Mirror() { return "pgderive." + pipeline_ + "__public__" + table_; }
  std::string OsCheckpoint() { return "/pgderive-checkpoints/_doc/" + pipeline_ + ".search"; }

  std::string table_, index_, target_;
};

TEST_F(OnePipelineTest, SecondRunRefusedPortTakenAndTeardownRefusedWhileRunning) {
  const std::string config = Config();
  StartRun(config);
  const std::string slot = "pgderive_" + pipeline_;
  const std::string active_pid =
      Pg("select active_pid from pg_replication_slots where slot_name = '" + slot + "'");
  const std::string holder_name =
      Pg("select application_name from pg_stat_activity where application_name like "
         "'pgderive run pid % http 127.0.0.1:" +
         std::to_string(port_) + "'");

  // A second `run` of the pipeline: refused at once, before anything is done.
  std::string err;
  auto [code, out] = Command({PgderiveBinary(), "run", "-c", config}, err);
  EXPECT_EQ(code, 2) << err;
  EXPECT_TRUE(Contains(
      err, "pgderive run: pipeline " + pipeline_ + " is already running: pgderive run pid "))
      << err;
  EXPECT_TRUE(
      Contains(err, " is already running: " + holder_name + " (source session: server pid "))
      << err << "\nholder: " << holder_name;
  EXPECT_TRUE(Contains(err,
                       ". One process runs a pipeline: stop that one first (`pgderive status "
                       "-c " +
                           config + "` asks it over HTTP); nothing was done"))
      << err;
  EXPECT_FALSE(Contains(err, "resumes from")) << err;
  EXPECT_FALSE(Contains(err, "is active for PID")) << err;
  // The first one streams on, from the same walsender.
  EXPECT_EQ(Pg("select active_pid from pg_replication_slots where slot_name = '" + slot + "'"),
            active_pid);
  EXPECT_EQ(Get("/readyz").first, 200);

  // Another pipeline on the running one's port: fails at start, naming the address, and
  // creates nothing; the first keeps answering for itself.
  std::string other_text =
      Read(WriteConfig("other.yml", pipeline_ + "_b", endpoints_.opensearch_url));
  // Targets of its own: the first pipeline's would be refused before the port is tried.
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"\"" + table_ + ":{id}\"", "\"b" + table_ + ":{id}\""},
           {"index: " + index_, "index: " + index_ + "-b"},
           {"table: " + target_, "table: " + target_ + "_b"}}) {
    other_text.replace(other_text.find(from), from.size(), to);
  }
  const std::string other = WriteFile("other.yml", other_text);
  std::tie(code, out) = Command({PgderiveBinary(), "run", "-c", other}, err);
  EXPECT_EQ(code, 1) << err;
  EXPECT_TRUE(Contains(err, "cannot listen on 127.0.0.1:" + std::to_string(port_) +
                                " (http.listen): the address is in use or not local"))
      << err;
  EXPECT_EQ(Pg("select count(*) from pg_replication_slots where slot_name = 'pgderive_" +
               pipeline_ + "_b'"),
            "0");
  for (int i = 0; i < 20; ++i) {
    auto [status, body] = Get("/status");
    ASSERT_EQ(status, 200);
    EXPECT_EQ(nlohmann::json::parse(body)["pipeline"], pipeline_);
  }

  // Teardown while `run` is active: refused, nothing removed.
  std::tie(code, out) = Command({PgderiveBinary(), "teardown", "-c", config, "--views"}, err);
  EXPECT_EQ(code, 2) << out << err;
  EXPECT_EQ(out, "");
  EXPECT_TRUE(Contains(err, "pgderive teardown: pipeline " + pipeline_ +
                                " is running: " + holder_name + " (source session: server pid "))
      << err;
  EXPECT_TRUE(Contains(err, ". Stop it before tearing the pipeline down; nothing was removed"))
      << err;
  EXPECT_EQ(Pg("select count(*) from pg_replication_slots where slot_name = '" + slot + "'"), "1");
  EXPECT_EQ(RedisKeys("pgderive:" + pipeline_ + ":checkpoint"), 1);
  EXPECT_EQ(Get("/readyz").first, 200);

  // backfill and verify run beside it.
  std::tie(code, out) = Command(
      {PgderiveBinary(), "backfill", "-c", config, "--view", "rows", "--timeout", "60"}, err);
  EXPECT_EQ(code, 0) << out << err;
  auto [verified, report] = testing::RunVerify(config, 60);
  EXPECT_EQ(verified, 0) << report;
  StopRun();

  // Stopped: a run starts again (the lock went with the process).
  StartRun(config);
  StopRun();
}

TEST_F(OnePipelineTest, TeardownRemovesPgderivesThingsKeepsViewsIsIdempotent) {
  const std::string config = Config();
  StartRun(config);
  StopRun();
  const std::string p = pipeline_;
  ASSERT_EQ(RedisKeys(table_ + ":*"), 20);
  ASSERT_EQ(Os("GET", OsCheckpoint()).first, 200);
  ASSERT_EQ(Pg("select count(*) from " + Mirror()), "20");

  // pgderive's schema goes with the last pipeline that keeps anything in it.
  const bool last = Pg("select count(*) from (select pipeline from pgderive.checkpoints union all "
                       "select pipeline from pgderive.views) x where pipeline <> '" +
                       p + "'") == "0" &&
                    Pg("select count(*) from pg_class c join pg_namespace n on n.oid = "
                       "c.relnamespace where n.nspname = 'pgderive' and c.relkind in ('r', 'p') "
                       "and c.relname not in ('checkpoints', 'views', 'migrations', '" +
                       Mirror().substr(9) + "')") == "0";
  std::string err;
  auto [code, out] = Command({PgderiveBinary(), "teardown", "-c", config}, err);
  EXPECT_EQ(code, 0) << out << err;
  EXPECT_EQ(err, "");
  EXPECT_EQ(out, "removed from store cache: key pgderive:" + p +
                     ":checkpoint\n"
                     "removed from store cache: key pgderive:" +
                     p +
                     ":views\n"
                     "removed from store cache: key pgderive:" +
                     p +
                     ":versions\n"
                     "removed from store search: document pgderive-checkpoints/" +
                     p +
                     ".search\n"
                     "removed from store search: document pgderive-checkpoints/" +
                     p +
                     ".search/views\n"
                     "removed from store search: document pgderive-checkpoints/" +
                     p +
                     ".search/view/docs\n"
                     "removed from store warehouse: row (" +
                     p +
                     ", warehouse) of pgderive.checkpoints\n"
                     "removed from store warehouse: row (" +
                     p + ", warehouse, mirror public." + table_ +
                     ") of pgderive.views\n"
                     "removed from store warehouse: row (" +
                     p +
                     ", warehouse, totals) of pgderive.views\n"
                     "removed from store warehouse: table " +
                     Mirror() + " (mirror)\n" +
                     (last ? "removed from store warehouse: schema pgderive (no pipeline left in "
                             "this database)\n"
                           : "") +
                     "removed from the source: slot pgderive_" + p +
                     "\n"
                     "removed from the source: publication pgderive_" +
                     p +
                     "\n"
                     "removed the change log " +
                     Path("pgderive-spool/" + p) +
                     "\n"
                     "pipeline " +
                     p + " is torn down (its views' data is kept)\n");
  // pgderive's things are gone ...
  EXPECT_EQ(Pg("select count(*) from pg_replication_slots where slot_name = 'pgderive_" + p + "'"),
            "0");
  EXPECT_EQ(Pg("select count(*) from pg_publication where pubname = 'pgderive_" + p + "'"), "0");
  EXPECT_EQ(RedisKeys("pgderive:" + p + ":*"), 0);
  EXPECT_EQ(Os("GET", OsCheckpoint()).first, 404);
  EXPECT_EQ(Pg("select to_regclass('" + Mirror() + "') is null"), "t");
  if (!last) {
    EXPECT_EQ(Pg("select count(*) from (select from pgderive.checkpoints where pipeline = '" + p +
                 "' union all select from pgderive.views where pipeline = '" + p + "') x"),
              "0");
  }
  // ... and the views' data stays.
  EXPECT_EQ(RedisKeys(table_ + ":*"), 20);
  Os("POST", "/" + index_ + "/_refresh");
  EXPECT_TRUE(Contains(Os("GET", "/" + index_ + "/_count").second, "\"count\":20"));
  EXPECT_EQ(Pg("select sum(n) from " + target_), "20");

  // A second teardown finds nothing left.
  std::tie(code, out) = Command({PgderiveBinary(), "teardown", "-c", config, "--views"}, err);
  EXPECT_EQ(code, 0) << err;
  // (The views' data stays: once a teardown removed the views' recorded states, the keys,
  // the index and the table are no longer recorded as pgderive's.)
  EXPECT_EQ(out, "pipeline " + p + ": nothing left to remove\n");
  EXPECT_EQ(RedisKeys(table_ + ":*"), 20);
  EXPECT_EQ(Os("HEAD", "/" + index_).first, 200);
  Os("DELETE", "/" + index_ + "-1");
  std::tie(code, out) = Command({PgderiveBinary(), "teardown", "-c", config, "--views"}, err);
  EXPECT_EQ(code, 0) << err;
  EXPECT_EQ(out, "pipeline " + p + ": nothing left to remove\n");
  EXPECT_EQ(Pg("select sum(n) from " + target_), "20");
}

// The change log's default directory, pgderive-spool/<pipeline> beside the file, goes
// with the pipeline, and so does pgderive-spool/ once empty.
TEST_F(OnePipelineTest, TeardownRemovesTheChangeLogAndItsDefaultDirectory) {
  const std::string config = WriteConfig("spool.yml", pipeline_, endpoints_.opensearch_url);
  WriteFile("spool.yml", Read("spool.yml") + "spool: {}\n");
  StartRun(config);
  StopRun();
  const std::string log_dir = Path("pgderive-spool/" + pipeline_);
  ASSERT_TRUE(std::filesystem::is_directory(log_dir));
  std::string err;
  auto [code, out] = Command({PgderiveBinary(), "teardown", "-c", config}, err);
  EXPECT_EQ(code, 0) << out << err;
  EXPECT_TRUE(Contains(out, "the change log " + log_dir + "\n")) << out;
  EXPECT_FALSE(std::filesystem::exists(log_dir));
  EXPECT_FALSE(std::filesystem::exists(Path("pgderive-spool")));
}

TEST_F(OnePipelineTest, TeardownWithViewsAndAStoreDown) {
  const std::string config = Config();
  StartRun(config);
  StopRun();
  const std::string p = pipeline_;

  // OpenSearch cannot be reached: the rest goes, what is left is said, exit 1.
  const std::string down =
      WriteConfig("down.yml", p, "http://127.0.0.1:" + std::to_string(FreePort()));
  std::string err;
  auto [code, out] = Command({PgderiveBinary(), "teardown", "-c", down, "--views"}, err);
  EXPECT_EQ(code, 1) << out << err;
  EXPECT_TRUE(Contains(err, "pgderive teardown: left in store search: ")) << err;
  EXPECT_TRUE(Contains(err, "; what pgderive keeps there for pipeline " + p +
                                " (checkpoint, views' states, metadata and the data of view(s) "
                                "docs) may be left\n"))
      << err;
  EXPECT_TRUE(Contains(err, "pgderive teardown: pipeline " + p +
                                " is not torn down completely: run teardown again once that is "
                                "fixed\n"))
      << err;
  EXPECT_FALSE(Contains(out, "store search")) << out;
  EXPECT_TRUE(
      Contains(out, "removed from store cache: 20 key(s) of view rows (" + table_ + ":*)\n"))
      << out;
  EXPECT_TRUE(Contains(out, "removed from store warehouse: table " + target_ + " (view totals)\n"))
      << out;
  EXPECT_TRUE(Contains(out, "removed from the source: slot pgderive_" + p + "\n")) << out;
  EXPECT_EQ(RedisKeys(table_ + ":*"), 0);
  EXPECT_EQ(RedisKeys("pgderive:" + p + ":*"), 0);
  EXPECT_EQ(Pg("select to_regclass('" + target_ + "') is null"), "t");
  EXPECT_EQ(Pg("select to_regclass('" + Mirror() + "') is null"), "t");
  EXPECT_EQ(Os("GET", OsCheckpoint()).first, 200);  // left, as said

  // Once it is back (here: the right URL), the teardown finishes.
  std::tie(code, out) = Command({PgderiveBinary(), "teardown", "-c", config, "--views"}, err);
  EXPECT_EQ(code, 0) << err;
  EXPECT_TRUE(
      Contains(out, "removed from store search: document pgderive-checkpoints/" + p + ".search\n"))
      << out;
  EXPECT_TRUE(Contains(out, "removed from store search: index " + index_ +
                                "-1 (view docs, with "
                                "its alias " +
                                index_ + ")\n"))
      << out;
  EXPECT_FALSE(Contains(out, "store cache")) << out;
  EXPECT_FALSE(Contains(out, "the source")) << out;
  EXPECT_EQ(Os("GET", OsCheckpoint()).first, 404);
  EXPECT_EQ(Os("HEAD", "/" + index_).first, 404);
  std::tie(code, out) = Command({PgderiveBinary(), "teardown", "-c", config, "--views"}, err);
  EXPECT_EQ(code, 0) << err;
  EXPECT_EQ(out, "pipeline " + p + ": nothing left to remove\n");
}

// What may be someone else's is kept: a publication named in source.publication (made
// by hand, perhaps shared), and the mirrors of a pipeline whose name extends this one's
// ("<p>_" has "<p>___public__t", which starts with "<p>__").
TEST_F(OnePipelineTest, TeardownKeepsAHandMadePublicationAndAnotherPipelinesMirrors) {
  const std::string p = pipeline_;
  const std::string publication = p + "_pub";
  ASSERT_TRUE(
      sql_->Execute("create publication " + publication + " for table public." + table_).ok());
  std::string config = Config();
  {
    std::string text = testing::ReadFile(config);
    const std::string stores = "\nstores:";
    text.replace(text.find(stores), stores.size(), "\n  publication: " + publication + stores);
    std::ofstream(config) << text;
  }
  StartRun(config);
  StopRun();
  const std::string other = p + "_";
  const std::string other_mirror = "pgderive." + other + "___public__" + table_;
  ASSERT_TRUE(sql_->Execute("create table " + other_mirror + " (id int)").ok());
  ASSERT_TRUE(sql_->Execute("insert into pgderive.checkpoints (pipeline, store, lsn) values ('" +
                            other + "', 'warehouse', '0/1')")
                  .ok());

  std::string err;
  auto [code, out] = Command({PgderiveBinary(), "teardown", "-c", config}, err);
  EXPECT_EQ(code, 0) << out << err;
  EXPECT_TRUE(Contains(out, "kept on the source: publication " + publication +
                                " (named in source.publication, so possibly made by hand and "
                                "used by others; drop it yourself if it is pgderive's alone)\n"))
      << out;
  EXPECT_FALSE(Contains(out, "removed from the source: publication")) << out;
  EXPECT_TRUE(Contains(out, "removed from store warehouse: table " + Mirror() + " (mirror)\n"))
      << out;
  EXPECT_EQ(Pg("select count(*) from pg_publication where pubname = '" + publication + "'"), "1");
  EXPECT_EQ(Pg("select to_regclass('" + Mirror() + "') is null"), "t");
  EXPECT_EQ(Pg("select to_regclass('" + other_mirror + "') is not null"), "t");
  EXPECT_EQ(Pg("select count(*) from pgderive.checkpoints where pipeline = '" + other + "'"), "1");

  IgnoreError(sql_->Execute("drop table " + other_mirror), "test cleanup");
  IgnoreError(sql_->Execute("delete from pgderive.checkpoints where pipeline = '" + other + "'"),
              "test cleanup");
  IgnoreError(sql_->Execute("drop publication " + publication), "test cleanup");
}

}  // namespace
}  // namespace pgderive
