// `pgderive tail` as a user runs it, against PostgreSQL 15 from compose/local.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "cdc/pg_connection.h"
#include "tests/support/pg.h"
#include "tests/support/stack_env.h"
#include "tests/support/subprocess.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::MustConnect;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Scalar;
using testing::Subprocess;
using testing::UniqueName;

class TailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGDERIVE_REQUIRE_STACK();
    dsn_ = stack.pg_dsn();
    password_ = stack.Value("PGDERIVE_PG_PASSWORD");
    dir_ = std::filesystem::temp_directory_path() / UniqueName("pgderive_tail_test");
    std::filesystem::create_directories(dir_);
    pipeline_ = UniqueName("tail");
    sql_ = std::make_unique<PgConnection>(MustConnect(dsn_));
  }
  void TearDown() override {
    if (sql_) {
      IgnoreError(sql_->Execute("drop publication if exists pgderive_" + pipeline_),
                  "test cleanup");
      for (const std::string& t : tables_)
        IgnoreError(sql_->Execute("drop table if exists " + t + " cascade"), "test cleanup");
    }
    std::filesystem::remove_all(dir_);
  }

  // A config whose views read `tables`.
  std::string WriteConfig(const std::vector<std::string>& tables) {
    std::string yaml =
        "pipeline: " + pipeline_ + "\nsource:\n  dsn: " + dsn_ +
        "\nstores:\n  cache: {type: redis, url: \"redis://127.0.0.1:6379/0\"}\nviews:\n";
    for (const std::string& t : tables) {
      yaml += "  - {name: v_" + t + ", store: cache, from: " + t + ", key: \"" + t + ":{id}\"}\n";
    }
    const std::string path = (dir_ / "pgderive.yml").string();
    std::ofstream(path) << yaml;
    return path;
  }

  std::string Stderr() {
    std::ifstream in(dir_ / "stderr");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::string dsn_, pipeline_, password_;
  std::filesystem::path dir_;
  std::vector<std::string> tables_;
  std::unique_ptr<PgConnection> sql_;
};

// The snapshot-to-stream hand-off under a concurrent random workload: the rows of the
// exported snapshot plus every change after the slot's consistent point, replayed in
// order, equal the table at the end.
TEST_F(TailTest, SnapshotPlusStreamEqualsSourceUnderConcurrentWorkload) {
  if (HasFatalFailure()) return;
  const std::string table = UniqueName("tail_src");
  const std::string marker = table + "_done";
  tables_ = {table, marker};
  MustExecute(*sql_, "create table " + table + " (id int primary key, v text, n int not null)");
  MustExecute(*sql_, "insert into " + table +
                         " select g, 'initial ' || g, 0 from generate_series(1, 2000) g");
  MustExecute(*sql_, "create table " + marker + " (id int primary key)");
  const std::string config = WriteConfig({table, marker});

  std::atomic<int> done_ops{0};
  std::atomic<bool> stop{false};
  std::thread workload([&] {
    PgConnection c = MustConnect(dsn_);
    std::mt19937 rng(42);
    int next_id = 2001;
    while (!stop.load() || done_ops.load() < 3000) {
      MustExecute(c, "begin");
      const int ops = 1 + static_cast<int>(rng() % 5);
      for (int i = 0; i < ops; ++i) {
        const int id = 1 + static_cast<int>(rng() % static_cast<unsigned>(next_id));
        switch (rng() % 4) {
          case 0:
            MustExecute(c, "insert into " + table + " values (" + std::to_string(next_id++) +
                               ", 'new', 0)");
            break;
          case 1:
            MustExecute(c, "update " + table + " set v = 'upd " + std::to_string(rng() % 1000) +
                               "', n = n + 1 where id = " + std::to_string(id));
            break;
          case 2:
            MustExecute(c, "delete from " + table + " where id = " + std::to_string(id));
            break;
          case 3:  // primary-key change
            MustExecute(c, "update " + table + " set id = " + std::to_string(next_id++) +
                               " where id = " + std::to_string(id));
            break;
        }
      }
      MustExecute(c, "commit");
      done_ops += ops;
      if (done_ops.load() > 6000) break;
    }
  });
  // Start tail while the workload is in full swing.
  while (done_ops.load() < 500) std::this_thread::yield();
  Subprocess tail({PgderiveBinary(), "tail", "-c", config, "--snapshot"},
                  (dir_ / "stderr").string());
  stop = true;
  workload.join();
  MustExecute(*sql_, "insert into " + marker + " values (1)");

  std::map<int, json> state;
  size_t reads = 0, changes = 0;
  bool saw_marker = false;
  const std::string qualified = "public." + table;
  while (!saw_marker) {
    auto line = tail.ReadLine(std::chrono::seconds(60));
    ASSERT_TRUE(line.has_value()) << "tail stopped or stalled; stderr: " << Stderr();
    const json change = json::parse(*line);
    const std::string op = change["op"];
    if (op == "truncate") {
      state.clear();
      continue;
    }
    if (change["relation"] != qualified) {
      saw_marker = op == "insert";
      continue;
    }
    if (op == "read")
      ++reads;
    else
      ++changes;
    if (change.contains("old_key")) state.erase(change["old_key"]["id"].get<int>());
    if (op == "read" || op == "insert" || op == "update")
      state[change["new"]["id"].get<int>()] = change["new"];
  }
  tail.Signal(SIGTERM);
  EXPECT_EQ(tail.Wait(std::chrono::seconds(10)), 0) << Stderr();
  EXPECT_GT(reads, 1000u);    // the snapshot part
  EXPECT_GT(changes, 1000u);  // the streamed part

  auto rows = sql_->Query("select id, v, n from " + table + " order by id");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(state.size(), rows.value().rows.size());
  for (const auto& row : rows.value().rows) {
    const int id = std::stoi(*row[0]);
    ASSERT_TRUE(state.contains(id)) << "row " << id << " missing from the stream";
    EXPECT_EQ(state[id]["v"], *row[1]) << id;
    EXPECT_EQ(state[id]["n"], std::stoi(*row[2])) << id;
  }
}

TEST_F(TailTest, LiveValuesMapAsSpecified) {
  if (HasFatalFailure()) return;
  const std::string table = UniqueName("tail_types");
  const std::string price = table + "_price";
  const std::string mood = table + "_mood";
  const std::string positive = table + "_pos";
  const std::string quantity = table + "_qty";
  tables_ = {table};
  MustExecute(*sql_, "create domain " + price + " as numeric(10,2)");
  // A domain over a domain over int4 must still map as a number.
  MustExecute(*sql_, "create domain " + positive + " as int4 check (value > 0)");
  MustExecute(*sql_, "create domain " + quantity + " as " + positive);
  MustExecute(*sql_, "create type " + mood + " as enum ('sad', 'happy')");
  MustExecute(
      *sql_,
      "create table " + table + " (id int primary key, p " + price + ", moods " + mood +
          "[], f float8, tstz timestamptz, ts timestamp, b bytea, j jsonb, a int8[], t text, q " +
          quantity + ", qs " + quantity + "[])");
  const std::string config = WriteConfig({table});
  Subprocess tail({PgderiveBinary(), "tail", "-c", config, "--limit", "1"},
                  (dir_ / "stderr").string());
  // tail creates its slot after start-up: insert until the row arrives, so no sleep.
  std::optional<std::string> line;
  for (int attempt = 0; attempt < 50 && !line; ++attempt) {
    MustExecute(
        *sql_,
        "insert into " + table + " values (" + std::to_string(attempt) +
            ", 12.5, '{happy,sad}', 'NaN', '2024-02-29 13:45:00.5+01', '2024-02-29 13:45:00', "
            "'\\x00ff', '{\"k\": [1, \"two\"]}', '{1,NULL,-3}', E'tab\\there', 5, '{6,7}')");
    line = tail.ReadLine(std::chrono::milliseconds(300));
  }
  ASSERT_TRUE(line.has_value()) << Stderr();
  const json change = json::parse(*line);
  json expected = json::parse(R"({"p": "12.50", "moods": ["happy", "sad"], "f": "NaN",
    "tstz": "2024-02-29T12:45:00.5Z", "ts": "2024-02-29T13:45:00", "b": "AP8=",
    "j": {"k": [1, "two"]}, "a": [1, null, -3], "t": "tab\there", "q": 5, "qs": [6, 7]})");
  expected["id"] = change["new"]["id"];
  EXPECT_EQ(change["new"], expected) << *line;
  EXPECT_EQ(change["op"], "insert");
  EXPECT_EQ(tail.Wait(std::chrono::seconds(10)), 0) << Stderr();
}

// Every type of the SPEC table and an array of each, NULLs, unicode, NaN/Infinity and
// infinite timestamps: the snapshot (COPY text) and the stream (pgoutput) map each row
// to the same JSON, and that JSON is the SPEC's. Then a TOAST-unchanged update and a
// truncate.
TEST_F(TailTest, EveryTypeSnapshotAndStreamAgree) {
  if (HasFatalFailure()) return;
  const std::string table = UniqueName("tail_all");
  const std::string mood = table + "_mood";
  tables_ = {table};
  MustExecute(*sql_, "create extension if not exists citext");
  MustExecute(*sql_, "create type " + mood + " as enum ('sad', 'happy')");
  // name -> type; the table has each type and an array of it.
  const std::vector<std::pair<std::string, std::string>> types = {
      {"i2", "int2"},    {"i4", "int4"},       {"i8", "int8"},        {"o", "oid"},
      {"r", "real"},     {"d", "float8"},      {"n", "numeric"},      {"b", "bool"},
      {"t", "text"},     {"vc", "varchar(8)"}, {"c", "char(3)"},      {"nm", "name"},
      {"ci", "citext"},  {"e", mood},          {"u", "uuid"},         {"ip", "inet"},
      {"cd", "cidr"},    {"mac", "macaddr"},   {"js", "json"},        {"jb", "jsonb"},
      {"dt", "date"},    {"ts", "timestamp"},  {"tz", "timestamptz"}, {"tm", "time"},
      {"ttz", "timetz"}, {"iv", "interval"},   {"by", "bytea"},       {"pt", "point"}};
  std::string ddl = "create table " + table + " (id int primary key, big text";
  for (const auto& [name, type] : types)
    ddl += ", " + name + " " + type + ", " + name + "_a " + type + "[]";
  MustExecute(*sql_, ddl + ")");
  // Row 1: ordinary values; row 2: the edges; row 3: NULL everywhere.
  const std::vector<std::string> row1 = {"-32768",
                                         "2147483647",
                                         "9223372036854775807",
                                         "4294967295",
                                         "1.5",
                                         "0.1",
                                         "12.50",
                                         "true",
                                         "'Grüße \"q\" \\ 東京'",
                                         "'abc'",
                                         "'ab'",
                                         "'nm'",
                                         "'CiTe'",
                                         "'happy'",
                                         "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
                                         "'192.168.0.1/24'",
                                         "'10.0.0.0/8'",
                                         "'08:00:2b:01:02:03'",
                                         "'{\"a\": [1, 2.50, null]}'",
                                         "'{\"b\": {\"c\": \"d\"}}'",
                                         "'2024-02-29'",
                                         "'2024-02-29 13:45:00.123456'",
                                         "'2024-02-29 13:45:00+01'",
                                         "'13:45:01'",
                                         "'13:45:01+02'",
                                         "'1 day 02:00:00'",
                                         "'\\x00ff10'",
                                         "'(1,2)'"};
  const std::vector<std::string> row2 = {"0",
                                         "-1",
                                         "-9223372036854775808",
                                         "0",
                                         "'NaN'",
                                         "'-Infinity'",
                                         "'NaN'",
                                         "false",
                                         "''",
                                         "'🐘'",
                                         "'x'",
                                         "''",
                                         "''",
                                         "'sad'",
                                         "'00000000-0000-0000-0000-000000000000'",
                                         "'::1'",
                                         "'::/0'",
                                         "'ff:ff:ff:ff:ff:ff'",
                                         "'[]'",
                                         "'null'",
                                         "'infinity'",
                                         "'-infinity'",
                                         "'infinity'",
                                         "'24:00:00'",
                                         "'00:00:00-14'",
                                         "'-1 mons'",
                                         "''",
                                         "'(0,0)'"};
  auto insert = [&](int id, const std::vector<std::string>* values) {
    std::string sql = "insert into " + table + " values (" + std::to_string(id) + ", null";
    for (size_t i = 0; i < types.size(); ++i) {
      if (values == nullptr) {
        sql += ", null, null";
      } else {
        const std::string v = "(" + (*values)[i] + ")::" + types[i].second;
        // The array: the value twice around a NULL.
        sql += ", " + v + ", array[" + v + ", null, " + v + "]";
      }
    }
    MustExecute(*sql_, sql + ")");
  };
  insert(1, &row1);
  insert(2, &row2);
  insert(3, nullptr);

  const std::string config = WriteConfig({table});
  Subprocess tail({PgderiveBinary(), "tail", "-c", config, "--snapshot", "--limit", "9"},
                  (dir_ / "stderr").string());
  std::map<int, json> reads;
  for (int i = 0; i < 3; ++i) {
    auto line = tail.ReadLine(std::chrono::seconds(20));
    ASSERT_TRUE(line.has_value()) << Stderr();
    json read = json::parse(*line);
    ASSERT_EQ(read["op"], "read") << *line;
    reads[read["new"]["id"].get<int>()] = read["new"];
  }
  // The same rows again, through the stream.
  insert(101, &row1);
  insert(102, &row2);
  insert(103, nullptr);
  std::map<int, json> inserts;
  for (int i = 0; i < 3; ++i) {
    auto line = tail.ReadLine(std::chrono::seconds(20));
    ASSERT_TRUE(line.has_value()) << Stderr();
    json change = json::parse(*line);
    ASSERT_EQ(change["op"], "insert") << *line;
    inserts[change["new"]["id"].get<int>() - 100] = change["new"];
  }
  for (int id = 1; id <= 3; ++id) {
    json read = reads.at(id), streamed = inserts.at(id);
    read.erase("id");
    streamed.erase("id");
    EXPECT_EQ(read, streamed) << "row " << id;
  }
  auto element = [](const json& row, const std::string& column) {
    EXPECT_EQ(row[column + "_a"], json::array({row[column], nullptr, row[column]})) << column;
    return row[column];
  };
  const json& r1 = reads.at(1);
  const json expected1 = json::parse(R"j({"i2": -32768, "i4": 2147483647,
    "i8": 9223372036854775807, "o": 4294967295, "r": 1.5, "d": 0.1, "n": "12.50", "b": true,
    "t": "Grüße \"q\" \\ 東京", "vc": "abc", "c": "ab ", "nm": "nm", "ci": "CiTe", "e": "happy",
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "ip": "192.168.0.1/24", "cd": "10.0.0.0/8",
    "mac": "08:00:2b:01:02:03", "js": {"a": [1, 2.50, null]}, "jb": {"b": {"c": "d"}},
    "dt": "2024-02-29", "ts": "2024-02-29T13:45:00.123456", "tz": "2024-02-29T12:45:00Z",
    "tm": "13:45:01", "ttz": "13:45:01+02", "iv": "1 day 02:00:00", "by": "AP8Q",
    "pt": "(1,2)"
})j");
  for (const auto& [name, type] : types) EXPECT_EQ(element(r1, name), expected1[name]) << name;
  const json& r2 = reads.at(2);
  const json expected2 = json::parse(R"j({"i2": 0, "i4": -1, "i8": -9223372036854775808, "o": 0,
    "r": "NaN", "d": "-Infinity", "n": "NaN", "b": false, "t": "", "vc": "🐘", "c": "x  ",
    "nm": "", "ci": "", "e": "sad", "u": "00000000-0000-0000-0000-000000000000", "ip": "::1",
    "cd": "::/0", "mac": "ff:ff:ff:ff:ff:ff", "js": [], "jb": null, "dt": "infinity",
    "ts": "-infinity", "tz": "infinity", "tm": "24:00:00", "ttz": "00:00:00-14",
    "iv": "-1 mons", "by": "", "pt": "(0,0)"
  })j");
  for (const auto& [name, type] : types) EXPECT_EQ(element(r2, name), expected2[name]) << name;
  for (const auto& [name, type] : types) {
    EXPECT_TRUE(reads.at(3)[name].is_null()) << name;
    EXPECT_TRUE(reads.at(3)[name + "_a"].is_null()) << name;
  }

  // TOAST: a large incompressible value stays out of line; an update of another column
  // carries it as unchanged, never as null.
  MustExecute(*sql_, "update " + table +
                         " set big = (select string_agg(md5(g::text), '') from "
                         "generate_series(1, 400) g) where id = 1");
  MustExecute(*sql_, "update " + table + " set i4 = 7 where id = 1");
  MustExecute(*sql_, "truncate " + table);
  std::vector<json> rest;
  for (int i = 0; i < 3; ++i) {
    auto line = tail.ReadLine(std::chrono::seconds(20));
    ASSERT_TRUE(line.has_value()) << Stderr();
    rest.push_back(json::parse(*line));
  }
  EXPECT_EQ(rest[0]["op"], "update");
  EXPECT_EQ(rest[0]["new"]["big"].get<std::string>().size(), 12800u);
  EXPECT_EQ(rest[1]["op"], "update");
  EXPECT_EQ(rest[1]["new"]["i4"], 7);
  EXPECT_FALSE(rest[1]["new"].contains("big")) << rest[1].dump();
  EXPECT_EQ(rest[1]["unchanged"], json::array({"big"}));
  EXPECT_EQ(rest[1]["new"]["i8"], json::parse("9223372036854775807"));
  EXPECT_EQ(rest[2]["op"], "truncate");
  EXPECT_EQ(rest[2]["relations"], json::array({"public." + table}));
  EXPECT_EQ(tail.Wait(std::chrono::seconds(10)), 0) << Stderr();
}

TEST_F(TailTest, BadInputSaysWhatAndWhereAndCreatesNothing) {
  if (HasFatalFailure()) return;
  const std::string bad = (dir_ / "bad.yml").string();
  std::ofstream(bad) << "pipeline: x\nsource:\n  dns: oops\n";
  Subprocess invalid({PgderiveBinary(), "tail", "-c", bad}, (dir_ / "stderr").string());
  EXPECT_EQ(invalid.Wait(std::chrono::seconds(10)), 2);
  EXPECT_NE(Stderr().find(bad + ":3:3: source.dns: unknown key"), std::string::npos) << Stderr();

  const std::string keyless = UniqueName("tail_nokey");
  tables_ = {keyless};
  MustExecute(*sql_, "create table " + keyless + " (v text)");
  const std::string config = WriteConfig({keyless, "no_such_table_" + pipeline_});
  Subprocess refused({PgderiveBinary(), "tail", "-c", config}, (dir_ / "stderr").string());
  EXPECT_EQ(refused.Wait(std::chrono::seconds(10)), 1);
  const std::string err = Stderr();
  EXPECT_NE(err.find("table public." + keyless + " has no primary key"), std::string::npos) << err;
  EXPECT_NE(err.find("REPLICA IDENTITY FULL"), std::string::npos) << err;
  EXPECT_NE(err.find("table public.no_such_table_" + pipeline_ + " does not exist"),
            std::string::npos)
      << err;
  EXPECT_EQ(err.find(password_), std::string::npos);
  auto publications = sql_->Query("select count(*) from pg_publication where pubname = 'pgderive_" +
                                  pipeline_ + "'");
  ASSERT_TRUE(publications.ok());
  EXPECT_EQ(publications.value().rows[0][0], "0");
}

// ADD COLUMN, DROP COLUMN and a type change while tail runs: each change carries the
// table's shape at the time it was made, with no restart.
TEST_F(TailTest, SchemaChangesMidStreamNeedNoRestart) {
  if (HasFatalFailure()) return;
  const std::string table = UniqueName("tail_ddl");
  tables_ = {table};
  MustExecute(*sql_, "create table " + table + " (id int primary key, a text)");
  const std::string config = WriteConfig({table});
  Subprocess tail({PgderiveBinary(), "tail", "-c", config}, (dir_ / "stderr").string());
  std::map<int, json> rows;
  auto read_until = [&](int id) {
    while (!rows.contains(id)) {
      auto line = tail.ReadLine(std::chrono::seconds(30));
      ASSERT_TRUE(line.has_value()) << Stderr();
      const json change = json::parse(*line);
      rows[change["new"]["id"].get<int>()] = change["new"];
    }
  };
  // tail creates its slot after start-up: insert until a row arrives, so no sleep.
  int first = 0;
  for (; first < 50; ++first) {
    MustExecute(*sql_, "insert into " + table + " values (" + std::to_string(first) + ", 'one')");
    auto line = tail.ReadLine(std::chrono::milliseconds(300));
    if (line) {
      const json change = json::parse(*line);
      rows[change["new"]["id"].get<int>()] = change["new"];
      break;
    }
  }
  ASSERT_FALSE(rows.empty()) << Stderr();
  MustExecute(*sql_, "alter table " + table + " add column b int default 7");
  MustExecute(*sql_, "insert into " + table + " values (100, 'two', 2)");
  MustExecute(*sql_, "alter table " + table + " drop column a");
  MustExecute(*sql_, "insert into " + table + " values (200, 3)");
  MustExecute(*sql_, "alter table " + table + " alter column b type text");
  MustExecute(*sql_, "insert into " + table + " values (300, 'four')");
  read_until(300);
  EXPECT_EQ(rows[100], json::parse(R"({"id": 100, "a": "two", "b": 2})"));
  EXPECT_EQ(rows[200], json::parse(R"({"id": 200, "b": 3})"));
  EXPECT_EQ(rows[300], json::parse(R"({"id": 300, "b": "four"})"));
  tail.Signal(SIGTERM);
  EXPECT_EQ(tail.Wait(std::chrono::seconds(10)), 0) << Stderr();
}

}  // namespace
}  // namespace pgderive
