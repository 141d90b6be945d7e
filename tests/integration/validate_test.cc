// `pgderive validate -c FILE [--connect]` as a user runs it, against the real
// PostgreSQL, Redis and OpenSearch of compose/local: a good configuration passes, each
// kind of mistake exits 2 naming what is wrong and where, every problem is listed, and
// validate never creates anything (no slot, no publication, no target table).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "tests/support/pg.h"
#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"

namespace pgderive {
namespace {

using testing::MustConnect;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Scalar;
using testing::Subprocess;
using testing::UniqueName;

// Runs pgderive with `args`; its exit status (-1 if it hangs) and stdout + stderr (stderr
// through the file `err`).
std::pair<int, std::string> RunPgderive(const std::vector<std::string>& args,
                                        const std::string& err) {
  std::vector<std::string> argv = {PgderiveBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  int status = -1;
  {
    Subprocess command(argv, err);
    while (auto line = command.ReadLine(std::chrono::seconds(60))) out += *line + "\n";
    status = command.Wait(std::chrono::seconds(30)).value_or(-1);
  }
  std::ifstream in(err);
  out += std::string(std::istreambuf_iterator<char>(in), {});
  return {status, out};
}

class ValidateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGDERIVE_REQUIRE_STACK();
    dsn_ = stack.pg_dsn();
    redis_url_ = stack.redis_url();
    opensearch_url_ = stack.opensearch_url();
    pg_port_ = stack.Value("PGDERIVE_PG_PORT");
    pg_password_ = stack.Value("PGDERIVE_PG_PASSWORD");
    dir_ = std::filesystem::temp_directory_path() / UniqueName("pgderive_validate_test");
    std::filesystem::create_directories(dir_);
    pipeline_ = UniqueName("val");
    table_ = UniqueName("val_src");
    target_ = "public." + UniqueName("val_target");
    sql_ = std::make_unique<PgConnection>(MustConnect(dsn_));
    MustExecute(*sql_, "create table " + table_ +
                           " (id int primary key, sku text not null, price numeric)");
    MustExecute(*sql_, "insert into " + table_ + " values (1, 'a', 1.5), (2, 'b', 2.5)");
  }

  void TearDown() override {
    if (sql_) {
      // validate must have left nothing; drop it anyway so that a failure does not leak.
      IgnoreError(sql_->Execute("select pg_drop_replication_slot(slot_name) from "
                                "pg_replication_slots where slot_name = 'pgderive_" +
                                pipeline_ + "'"),
                  "test cleanup");
      IgnoreError(sql_->Execute("drop publication if exists pgderive_" + pipeline_),
                  "test cleanup");
      for (const std::string& table : dropped_tables_) {
        IgnoreError(sql_->Execute("drop table if exists " + table), "test cleanup");
      }
      IgnoreError(sql_->Execute("drop table if exists " + table_), "test cleanup");
      IgnoreError(sql_->Execute("drop table if exists " + target_), "test cleanup");
      if (!role_.empty()) {
        IgnoreError(sql_->Execute("drop owned by " + role_), "test cleanup");
        IgnoreError(sql_->Execute("drop role if exists " + role_), "test cleanup");
      }
    }
    std::filesystem::remove_all(dir_);
  }

  // A configuration with a Redis, an OpenSearch and a PostgreSQL view of `table_`;
  // `views_extra` is appended to the views, `source_dsn` replaces the source's DSN.
  std::string WriteConfig(const std::string& views_extra = "", const std::string& redis_url = "",
                          const std::string& source_dsn = "",
                          const std::string& cache_columns = "id, sku") {
    const std::string path = (dir_ / "pgderive.yml").string();
    std::ofstream(path) << "pipeline: " << pipeline_
                        << "\nsource:\n  dsn: " << (source_dsn.empty() ? dsn_ : source_dsn)
                        << "\nstores:\n  cache:\n    type: redis\n    url: "
                        << (redis_url.empty() ? redis_url_ : redis_url)
                        << "\n  search:\n    type: opensearch\n    url: " << opensearch_url_
                        << "\n  warehouse:\n    type: postgres\n    dsn: " << dsn_ << "\nviews:\n"
                        << "  - name: cache_view\n    store: cache\n    from: " << table_
                        << "\n    key: \"" << table_ << ":{id}\"\n    columns: [" << cache_columns
                        << "]\n"
                        << "  - name: search_view\n    store: search\n    from: " << table_
                        << "\n    index: " << table_ << "\n"
                        << "  - name: table_view\n    store: warehouse\n    table: " << target_
                        << "\n    key: [id]\n    query: select id, sku, price from public."
                        << table_ << "\n"
                        << views_extra << "http:\n  listen: 127.0.0.1:" << testing::FreePort()
                        << "\n";
    return path;
  }

  // Runs `pgderive validate`; its exit status (-1 if it hangs) and stdout + stderr.
  std::pair<int, std::string> Validate(const std::string& config, bool connect = true) {
    std::vector<std::string> args = {"validate", "-c", config};
    if (connect) args.push_back("--connect");
    return RunPgderive(args, (dir_ / "validate.err").string());
  }

  // validate never creates: no slot, no publication, no target table.
  void ExpectNothingCreated() {
    EXPECT_EQ(Scalar(*sql_,
                     "select count(*) from pg_replication_slots where slot_name = "
                     "'pgderive_" +
                         pipeline_ + "'"),
              "0");
    EXPECT_EQ(Scalar(*sql_, "select count(*) from pg_publication where pubname = 'pgderive_" +
                                pipeline_ + "'"),
              "0");
    EXPECT_EQ(Scalar(*sql_, "select to_regclass('" + target_ + "') is null"), "t");
  }

  static bool Has(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  }

  std::string dsn_, redis_url_, opensearch_url_, pg_port_, pg_password_;
  std::string pipeline_, table_, target_, role_;
  std::vector<std::string> dropped_tables_;
  std::filesystem::path dir_;
  std::unique_ptr<PgConnection> sql_;
};

TEST_F(ValidateTest, AGoodConfigurationPasses) {
  const std::string config = WriteConfig();
  auto [offline, offline_out] = Validate(config, /*connect=*/false);
  EXPECT_EQ(offline, 0) << offline_out;
  EXPECT_TRUE(Has(offline_out, config + ": OK: pipeline " + pipeline_ + ", 3 stores, 3 views"))
      << offline_out;

  auto [status, out] = Validate(config);
  EXPECT_EQ(status, 0) << out;
  EXPECT_TRUE(Has(out, "source: PostgreSQL 15")) << out;
  EXPECT_TRUE(Has(out, "wal_level logical")) << out;
  EXPECT_TRUE(Has(out, "slot pgderive_" + pipeline_ + " to be created")) << out;
  EXPECT_TRUE(Has(out, "store cache (redis): Redis ")) << out;
  EXPECT_TRUE(Has(out, "store search (opensearch): OpenSearch 2.")) << out;
  EXPECT_TRUE(Has(out, "store warehouse (postgres): PostgreSQL 15")) << out;
  EXPECT_TRUE(Has(out, config + ": OK: pipeline " + pipeline_ + ", 3 stores, 3 views, 1 table"))
      << out;
  EXPECT_FALSE(Has(out, pg_password_)) << "the password of the DSN is printed:\n" << out;
  ExpectNothingCreated();
}

TEST_F(ValidateTest, AMissingTable) {
  const std::string missing = UniqueName("no_such_table");
  const std::string config = WriteConfig("  - name: ghost\n    store: cache\n    from: " + missing +
                                         "\n    key: \"ghost:{id}\"\n");
  auto [status, out] = Validate(config);
  EXPECT_EQ(status, 2) << out;
  // views[3] starts on line 29 of the file WriteConfig writes; its `from` is on line 31.
  EXPECT_TRUE(Has(out, config + ":31:11: views[3].from: table public." + missing +
                           " does not exist in the source database (read by view ghost)"))
      << out;
  EXPECT_TRUE(Has(out, "1 problem; nothing was created or changed")) << out;
  ExpectNothingCreated();
}

// A table name one letter off a table that exists: told the one meant.
TEST_F(ValidateTest, AMisspelledTableNamesTheOneMeant) {
  const std::string typo = table_.substr(0, 3) + table_.substr(4);
  const std::string config = WriteConfig("  - name: typo\n    store: cache\n    from: " + typo +
                                         "\n    key: \"typo:{id}\"\n");
  auto [status, out] = Validate(config);
  EXPECT_EQ(status, 2) << out;
  EXPECT_TRUE(Has(out, config + ":31:11: views[3].from: table public." + typo +
                           " does not exist in the source database (read by view typo); did you "
                           "mean public." +
                           table_ + "?\n"))
      << out;
  ExpectNothingCreated();
}

TEST_F(ValidateTest, AMissingColumnInTheListAndInTheKeyTemplate) {
  const std::string config =
      WriteConfig("  - name: by_nope\n    store: cache\n    from: " + table_ + "\n    key: \"" +
                      table_ + "_x:{nope}\"\n",
                  "", "", "id, colour");
  auto [status, out] = Validate(config);
  EXPECT_EQ(status, 2) << out;
  // `    columns: [id, colour]` on line 19: colour is at column 19.
  EXPECT_TRUE(Has(out, config +
                           ":19:19: views[0].columns[1]: view cache_view: column colour is "
                           "not in table public." +
                           table_ + " (its columns: id, sku, price)"))
      << out;
  // `    key: "<table>_x:{nope}"` on line 32: the {nope} where it is written.
  const std::string key_column = std::to_string(10 + 1 + table_.size() + 3);
  EXPECT_TRUE(Has(out, config + ":32:" + key_column +
                           ": views[3].key: view by_nope: key column nope is not in table public." +
                           table_ + " (its columns: id, sku, price)"))
      << out;
  EXPECT_TRUE(Has(out, "2 problems")) << out;
  ExpectNothingCreated();
}

// Each problem found on the servers points at the value at fault: a column at its own
// entry of a `columns:` list, a key column at its own in `key:`, a PostgreSQL error in a
// query at the query's line it names.
TEST_F(ValidateTest, EachConnectedProblemPointsAtItsOwnLine) {
  const std::string keyed = UniqueName("val_keyed");
  const std::string broken = UniqueName("val_broken");
  dropped_tables_ = {keyed, broken};
  const std::string config = WriteConfig(  // from line 29
      "  - name: spelt\n    store: cache\n    from: " + table_ + "\n    key: \"spelt:{id}\"\n" +
      "    columns:\n      - id\n      - skux\n" +                           // line 35
      "  - name: keyed\n    store: warehouse\n    table: " + keyed + "\n" +  // line 36
      "    key:\n      - id\n      - grp\n" +                                // line 41
      "    query: select id, sku from public." + table_ + "\n" +
      "  - name: broken\n    store: warehouse\n    table: " + broken + "\n" +  // line 43
      "    key: [id]\n    query: |\n      select id,\n             nope\n" +   // line 49
      "      from public." + table_ + "\n");
  auto [status, out] = Validate(config);
  EXPECT_EQ(status, 2) << out;
  EXPECT_TRUE(Has(out, config +
                           ":35:9: views[3].columns[1]: view spelt: column skux is not in "
                           "table public." +
                           table_ + " (its columns: id, sku, price; did you mean sku?)\n"))
      << out;
  EXPECT_TRUE(Has(out, config + ":41:9: views[4].key[1]: view keyed: key column grp is not a "
                                "column of the query (its columns: id, sku)\n"))
      << out;
  EXPECT_TRUE(Has(out, config + ":49:14: views[5].query: view broken: ")) << out;
  EXPECT_TRUE(Has(out, "column \"nope\" does not exist")) << out;
  EXPECT_TRUE(Has(out, "3 problems; nothing was created or changed")) << out;
  ExpectNothingCreated();
}

TEST_F(ValidateTest, TablesWithoutAUsableReplicaIdentity) {
  const std::string keyless = UniqueName("val_keyless");
  const std::string nothing = UniqueName("val_nothing");
  dropped_tables_ = {keyless, nothing};
  MustExecute(*sql_, "create table " + keyless + " (id int, v text)");
  MustExecute(*sql_, "create table " + nothing + " (id int primary key, v text)");
  MustExecute(*sql_, "alter table " + nothing + " replica identity nothing");
  const std::string config = WriteConfig(
      "  - name: keyless_view\n    store: cache\n    from: " + keyless +
      "\n    key: \"k:{id}\"\n  - name: nothing_view\n    store: cache\n    from: " + nothing +
      "\n    key: \"n:{id}\"\n");
  auto [status, out] = Validate(config);
  EXPECT_EQ(status, 2) << out;
  EXPECT_TRUE(Has(out, "views[3].from: table public." + keyless + " has no primary key")) << out;
  EXPECT_TRUE(Has(out, "views[4].from: table public." + nothing + " has REPLICA IDENTITY NOTHING"))
      << out;
  ExpectNothingCreated();
}

TEST_F(ValidateTest, StoresThatAreDown) {
  // Port 1 on loopback: nothing listens there.
  const std::string config = WriteConfig("", "redis://127.0.0.1:1/0");
  auto [status, out] = Validate(config);
  EXPECT_EQ(status, 2) << out;
  // stores.cache's url is on line 7.
  EXPECT_TRUE(Has(out, config + ":7:10: stores.cache.url: store cache (redis): ")) << out;
  EXPECT_TRUE(Has(out, "redis://127.0.0.1:1/0")) << out;
  EXPECT_TRUE(Has(out, "store search (opensearch): OpenSearch")) << "the others are still checked";
  ExpectNothingCreated();
}

TEST_F(ValidateTest, EveryProblemIsListedInOneRun) {
  const std::string missing = UniqueName("no_such_table");
  const std::string config = WriteConfig(
      "  - name: ghost\n    store: cache\n    from: " + missing + "\n    key: \"ghost:{id}\"\n",
      "redis://127.0.0.1:1/0", "", "id, colour");
  auto [status, out] = Validate(config);
  EXPECT_EQ(status, 2) << out;
  EXPECT_TRUE(Has(out, "stores.cache.url: store cache (redis)")) << out;
  EXPECT_TRUE(Has(out, "views[0].columns[1]: view cache_view: column colour")) << out;
  EXPECT_TRUE(Has(out, "views[3].from: table public." + missing + " does not exist")) << out;
  EXPECT_TRUE(Has(out, "3 problems")) << out;
  ExpectNothingCreated();
}

TEST_F(ValidateTest, ARoleWithoutReplication) {
  role_ = UniqueName("val_role");
  const std::string password = "Val1dPw_" + std::to_string(getpid());
  MustExecute(*sql_, "create role " + role_ + " login password '" + password + "'");
  MustExecute(*sql_, "grant select on " + table_ + " to " + role_);
  const std::string role_dsn =
      "postgresql://" + role_ + ":" + password + "@127.0.0.1:" + pg_port_ + "/postgres";
  const std::string config = WriteConfig("", "", role_dsn);
  auto [status, out] = Validate(config);
  EXPECT_EQ(status, 2) << out;
  // source is on line 2.
  EXPECT_TRUE(Has(out, config + ":2:1: source: role " + role_ +
                           " has neither the REPLICATION attribute nor SUPERUSER"))
      << out;
  EXPECT_TRUE(Has(out, "ALTER ROLE")) << out;
  EXPECT_FALSE(Has(out, password)) << "the role's password is printed:\n" << out;
  ExpectNothingCreated();
}

TEST_F(ValidateTest, ABrokenFileIsReportedWithoutConnecting) {
  const std::string path = (dir_ / "broken.yml").string();
  std::ofstream(path) << "pipeline: " << pipeline_ << "\nsource:\n  dsn: " << dsn_
                      << "\n  dsn: postgresql://other@127.0.0.1/db\nstores: {}\nviews: []\n";
  auto [status, out] = Validate(path);
  EXPECT_EQ(status, 2) << out;
  EXPECT_TRUE(Has(out, path + ":4:3: source.dsn: duplicate key: the first `dsn` is at line 3"))
      << out;
  EXPECT_TRUE(Has(out, path + ":6:8: views: lists no view")) << out;
  EXPECT_TRUE(Has(out, path + ": 2 problems")) << out;
  EXPECT_FALSE(Has(out, pg_password_)) << out;
  ExpectNothingCreated();
}

// The change log's directory (spool.dir, by default pgderive-spool/<pipeline> beside the
// file) where this process cannot create it - the file in a read-only directory, as
// mounted in a container or under systemd's ProtectSystem: validate --connect and run
// name spool.dir and the path, exit 2, and create nothing (no slot, no publication, no
// directory). As root the permission bits would not stop it: the commands then run
// without CAP_DAC_OVERRIDE.
TEST_F(ValidateTest, ASpoolDirThatCannotBeWrittenIsRefusedBeforeAnythingIsCreated) {
  std::vector<std::string> prefix;
  if (geteuid() == 0) {
    if (!std::filesystem::exists("/usr/bin/setpriv")) GTEST_SKIP() << "root without setpriv";
    prefix = {"/usr/bin/setpriv", "--bounding-set=-dac_override,-dac_read_search"};
  }
  const std::filesystem::path etc = dir_ / "etc";
  std::filesystem::create_directories(etc);
  const std::string config = (etc / "pgderive.yml").string();
  std::filesystem::rename(WriteConfig(), config);
  std::filesystem::permissions(
      etc, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec |
               std::filesystem::perms::group_read | std::filesystem::perms::group_exec |
               std::filesystem::perms::others_read | std::filesystem::perms::others_exec);
  const std::string spool = (etc / "pgderive-spool" / pipeline_).string();
  const std::string problem = config + ": spool.dir: the change log cannot be created in " + spool +
                              ": " + etc.string() +
                              " is not writable by this process: Permission denied; set "
                              "spool.dir to a directory this process can write";
  const auto run = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv = prefix;
    argv.push_back(PgderiveBinary());
    argv.insert(argv.end(), args.begin(), args.end());
    std::string out;
    int status = -1;
    const std::string err = (dir_ / "spool.err").string();
    {
      Subprocess command(argv, err);
      while (auto line = command.ReadLine(std::chrono::seconds(60))) out += *line + "\n";
      status = command.Wait(std::chrono::seconds(30)).value_or(-1);
    }
    std::ifstream in(err);
    out += std::string(std::istreambuf_iterator<char>(in), {});
    return std::pair(status, out);
  };

  auto [validated, validate_out] = run({"validate", "-c", config, "--connect"});
  EXPECT_EQ(validated, 2) << validate_out;
  EXPECT_TRUE(Has(validate_out, problem)) << validate_out;
  EXPECT_TRUE(Has(validate_out, config + ": 1 problem; nothing was created")) << validate_out;

  auto [ran, run_out] = run({"run", "-c", config});
  EXPECT_EQ(ran, 2) << run_out;
  EXPECT_TRUE(Has(run_out, problem)) << run_out;
  EXPECT_TRUE(Has(run_out, "nothing was created")) << run_out;
  ExpectNothingCreated();
  EXPECT_FALSE(std::filesystem::exists(etc / "pgderive-spool"));

  // Made writable, the same file passes.
  std::filesystem::permissions(etc, std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::add);
  auto [fixed, fixed_out] = run({"validate", "-c", config, "--connect"});
  EXPECT_EQ(fixed, 0) << fixed_out;
  EXPECT_FALSE(std::filesystem::exists(etc / "pgderive-spool")) << "validate creates nothing";
}

// A spool.dir that holds files other than a change log (a parent directory, $HOME, another
// program's) or another pipeline's log is refused by validate and run before anything is
// created, and nothing in it is removed: pgderive removes the log's own files only.
TEST_F(ValidateTest, ASpoolDirWithOtherFilesOrAnotherPipelinesLogIsRefusedAndKept) {
  const std::filesystem::path shared = dir_ / "shared";
  std::filesystem::create_directories(shared);
  std::ofstream(shared / "precious.txt") << "keep me";
  const std::string config = WriteConfig();
  std::ofstream(config, std::ios::app) << "spool:\n  dir: " << shared.string() << "\n";
  auto [validated, validate_out] = Validate(config);
  EXPECT_EQ(validated, 2) << validate_out;
  EXPECT_TRUE(Has(validate_out, "spool.dir: " + shared.string() +
                                    " holds files that are not pgderive's change log (e.g. "
                                    "precious.txt)"))
      << validate_out;
  auto [ran, run_out] = RunPgderive({"run", "-c", config}, (dir_ / "run.err").string());
  EXPECT_EQ(ran, 2) << run_out;
  EXPECT_TRUE(Has(run_out, "holds files that are not pgderive's change log")) << run_out;
  ExpectNothingCreated();
  EXPECT_TRUE(std::filesystem::exists(shared / "precious.txt"));

  // Another pipeline's log.
  std::filesystem::remove(shared / "precious.txt");
  std::ofstream(shared / "pgderive-change-log") << "pipeline other, slot pgderive_other\n";
  auto [other, other_out] = Validate(config);
  EXPECT_EQ(other, 2) << other_out;
  EXPECT_TRUE(Has(other_out, " is the change log of pipeline other, slot pgderive_other"))
      << other_out;
  EXPECT_TRUE(std::filesystem::exists(shared / "pgderive-change-log"));
}

// Bad command-line input is bad input: exit 2 and CLI11's message naming the problem,
// for every command (CLI11's own exit codes were 106 and 109); --help still exits 0.
TEST(CommandLineTest, BadOptionsExitTwoWithTheProblemNamed) {
  const auto run = [](const std::vector<std::string>& args) {
    return RunPgderive(args, ::testing::TempDir() + "/cli.err");
  };
  auto [missing, missing_out] = run({"validate"});
  EXPECT_EQ(missing, 2) << missing_out;
  EXPECT_NE(missing_out.find("--config is required"), std::string::npos) << missing_out;
  auto [unknown, unknown_out] = run({"status", "-c", "x.yml", "--bogus"});
  EXPECT_EQ(unknown, 2) << unknown_out;
  EXPECT_NE(unknown_out.find("--bogus"), std::string::npos) << unknown_out;
  auto [help, help_out] = run({"teardown", "--help"});
  EXPECT_EQ(help, 0) << help_out;
  EXPECT_NE(help_out.find("--views"), std::string::npos) << help_out;
}

// A command's number of seconds below its least value is refused by the command line
// itself, naming the option, before anything is read or asked of the run.
TEST_F(ValidateTest, ANegativeOrZeroNumberOfSecondsIsRefusedNamingTheOption) {
  const std::string config = WriteConfig();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"promote", "-c", config, "--view", "cache_view", "--timeout", "-5"},
       "--timeout: must be a whole number of seconds, 0 or more (not -5)"},
      {{"promote", "-c", config, "--view", "cache_view", "--interval", "0"},
       "--interval: must be a whole number of seconds, 1 or more (not 0)"},
      {{"backfill", "-c", config, "--view", "cache_view", "--timeout", "soon"},
       "--timeout: must be a whole number of seconds, 0 or more (not soon)"},
      {{"verify", "-c", config, "--wait", "-1"},
       "--wait: must be a whole number of seconds, 0 or more (not -1)"},
      {{"reload", "-c", config, "--timeout", "0"},
       "--timeout: must be a whole number of seconds, 1 or more (not 0)"},
  };
  for (const auto& [args, said] : cases) {
    auto [status, out] = RunPgderive(args, (dir_ / "args.err").string());
    EXPECT_EQ(status, 2) << args[0] << ": " << out;
    EXPECT_TRUE(Has(out, said)) << args[0] << ": " << out;
  }
  ExpectNothingCreated();
}

}  // namespace
}  // namespace pgderive
