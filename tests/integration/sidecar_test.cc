// pgderive as a sidecar (issue 5), against the real servers of compose/local: the HTTP
// endpoint (/healthz, /readyz, /metrics parsed as Prometheus text, /status),
// `pgderive status --json`, JSON log lines without the DSN's password, SIGTERM under
// load (exit 0 within 10 s, then a restart resumes and every view verifies), the
// heartbeat moving an idle slot, Redis AUTH with a user and password, and the whole
// pipeline run by a least-privilege role.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "config/url.h"
#include "sinks/opensearch/http_client.h"
#include "sinks/redis/redis_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::FreePort;
using testing::MustConnect;
using testing::MustExecute;
using testing::PgderiveBinary;
using testing::Scalar;
using testing::Subprocess;
using testing::UniqueName;

// One sample of Prometheus text: name, labels, value.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text exposition format strictly enough to catch a malformed line: every
// sample line is `name{label="value",...} number`, and every family has HELP and TYPE
// before its samples.
std::vector<Sample> ParsePrometheus(const std::string& text) {
  static const std::regex kSample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$)");
  static const std::regex kLabel(R"(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)\"(,|$))");
  std::vector<Sample> samples;
  std::map<std::string, std::string> types;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream words(line.substr(7));
      std::string name, type;
      words >> name >> type;
      EXPECT_TRUE(type == "counter" || type == "gauge" || type == "histogram") << line;
      types[name] = type;
      continue;
    }
    std::smatch match;
    if (!std::regex_match(line, match, kSample)) {
      ADD_FAILURE() << "not a Prometheus sample line: " << line;
      continue;
    }
    Sample sample;
    sample.name = match[1];
    std::string family = sample.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s = suffix;
      if (!types.contains(family) && family.size() > s.size() &&
          family.compare(family.size() - s.size(), s.size(), s) == 0) {
        family = family.substr(0, family.size() - s.size());
      }
    }
    EXPECT_TRUE(types.contains(family)) << "no # TYPE before " << line;
    const std::string labels = match[3];
    for (auto it = std::sregex_iterator(labels.begin(), labels.end(), kLabel);
         it != std::sregex_iterator(); ++it) {
      sample.labels[(*it)[1]] = (*it)[2];
    }
    const std::string value = match[4];
    sample.value = value == "+Inf" ? INFINITY : std::stod(value);
    samples.push_back(sample);
  }
  return samples;
}

std::optional<double> Find(const std::vector<Sample>& samples, const std::string& name,
                           const std::map<std::string, std::string>& labels = {}) {
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      match = match && it != s.labels.end() && it->second == v;
    }
    if (match) return s.value;
  }
  return std::nullopt;
}

// pgderive_changes_applied_total of one view from one source.
std::optional<double> Applied(const std::vector<Sample>& samples, const std::string& view,
                              const std::string& source) {
  return Find(samples, "pgderive_changes_applied_total", {{"view", view}, {"source", source}});
}

class SidecarTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("side");
    if (HasFatalFailure()) return;
    table_ = UniqueName("side_src");
    target_ = "side_out." + UniqueName("totals");
    CleanupSql("drop table if exists " + table_ + ", " + target_);
    MustExecute(*sql_, "create schema if not exists side_out");
    MustExecute(*sql_, "create table " + table_ +
                           " (id int primary key, grp int not null, amount numeric not null)");
    MustExecute(*sql_,
                "insert into " + table_ + " select g, g % 10, g from generate_series(1, 2000) g");
  }

  std::string WriteConfig(const std::string& source_dsn, const std::string& redis_url,
                          const std::string& extra_source = "",
                          const std::string& redis_auth = "") {
    std::ostringstream out;
    out << "pipeline: " << pipeline_ << "\nsource:\n  dsn: \"" << source_dsn
        << "\"\n  heartbeat_interval: 1\n"
        << extra_source << "stores:\n  cache:\n    type: redis\n    url: \"" << redis_url << "\"\n"
        << redis_auth << "  warehouse:\n    type: postgres\n    dsn: \"" << source_dsn
        << "\"\nviews:\n  - name: rows\n    store: cache\n    from: " << table_ << "\n    key: \""
        << table_ << ":{id}\"\n  - name: totals\n    store: warehouse\n    table: " << target_
        << "\n    key: [grp]\n    query: select grp, count(*) as n, sum(amount) as "
           "total from public."
        << table_ << " group by grp\nhttp:\n  listen: 127.0.0.1:" << port_
        << "\nlog:\n  format: json\n";
    return WriteFile("pgderive.yml", out.str());
  }
  // GET on the pipeline's HTTP endpoint: (status, body); status 0 when nothing answers.
  std::pair<long, std::string> Get(const std::string& path) { return Http(path); }

  std::string table_, target_;
};

TEST_F(SidecarTest, HealthReadinessMetricsStatusLogsAndCleanStopUnderLoad) {
  const std::string config = WriteConfig(endpoints_.pg_dsn, endpoints_.redis_url);
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return Get("/healthz").first == 200; })) << Read("run.err");
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").first == 200; }))
      << Get("/readyz").second << Read("run.err");

  MustExecute(*sql_, "update " + table_ + " set amount = amount + 1 where id <= 500");
  MustExecute(*sql_, "delete from " + table_ + " where id > 1900");
  // 600 changes reach both views, as the metrics count them.
  ASSERT_TRUE(WaitFor([&] {
    auto samples = ParsePrometheus(Get("/metrics").second);
    return Find(samples, "pgderive_changes_applied_total", {{"view", "rows"}, {"source", "stream"}})
                   .value_or(0) >= 600 &&
           Find(samples, "pgderive_changes_applied_total",
                {{"view", "totals"}, {"source", "stream"}})
                   .value_or(0) >= 600;
  })) << Get("/metrics").second;
  const auto samples = ParsePrometheus(Get("/metrics").second);
  EXPECT_EQ(
      Find(samples, "pgderive_changes_applied_total", {{"view", "rows"}, {"source", "stream"}}),
      600);
  EXPECT_EQ(Find(samples, "pgderive_stream_connected"), 1);
  EXPECT_GE(Find(samples, "pgderive_batches_total", {{"store", "cache"}}).value_or(0), 1);
  EXPECT_GE(
      Find(samples, "pgderive_batch_duration_seconds_count", {{"store", "warehouse"}}).value_or(0),
      1);
  EXPECT_EQ(Find(samples, "pgderive_batch_duration_seconds_bucket",
                 {{"store", "warehouse"}, {"le", "+Inf"}}),
            Find(samples, "pgderive_batch_duration_seconds_count", {{"store", "warehouse"}}));
  EXPECT_EQ(Find(samples, "pgderive_errors_total", {{"store", "cache"}, {"kind", "transient"}}), 0);
  // Exported from the start, 0 until the change log's bound detaches the store.
  EXPECT_EQ(Find(samples, "pgderive_spool_evictions_total", {{"store", "cache"}}), 0);
  EXPECT_TRUE(Find(samples, "pgderive_store_lag_bytes", {{"store", "cache"}}).has_value());
  EXPECT_TRUE(Find(samples, "pgderive_store_lag_seconds", {{"store", "warehouse"}}).has_value());
  EXPECT_TRUE(WaitFor([&] {
    return Find(ParsePrometheus(Get("/metrics").second), "pgderive_slot_retained_wal_bytes")
        .has_value();
  }));

  // The process's own state, and `pgderive status --json` built from it and the stores
  // (once the first fills are done).
  ASSERT_TRUE(WaitFor([&] {
    const json now = json::parse(Get("/status").second, nullptr, false);
    if (!now.is_object() || !now.contains("views")) return false;
    for (const auto& v : now["views"]) {
      if (v.value("state", "") != "live") return false;
    }
    return true;
  })) << Get("/status").second;
  const json live = json::parse(Get("/status").second);
  EXPECT_EQ(live["ready"], true);
  ASSERT_EQ(live["views"].size(), 2u);
  for (const auto& v : live["views"]) EXPECT_EQ(v["state"], "live") << v;
  auto [code, out] = Command({PgderiveBinary(), "status", "-c", config, "--json"});
  ASSERT_EQ(code, 0) << out;
  const json status = json::parse(out.substr(0, out.rfind('}') + 1));
  EXPECT_EQ(status["running"], true);
  EXPECT_EQ(status["slot"]["exists"], true);
  EXPECT_EQ(status["slot"]["active"], true);
  EXPECT_EQ(status["slot"]["wal_status"], "reserved");
  ASSERT_EQ(status["stores"].size(), 2u);
  for (const auto& s : status["stores"]) {
    EXPECT_TRUE(s["checkpoint"].is_string()) << s;
    EXPECT_TRUE(s.contains("lag_bytes") && s.contains("lag_seconds")) << s;
  }
  // The human form names the same things.
  auto [text_code, text] = Command({PgderiveBinary(), "status", "-c", config});
  EXPECT_EQ(text_code, 0);
  EXPECT_NE(text.find("view rows (cache): live"), std::string::npos) << text;
  EXPECT_NE(text.find("slot pgderive_" + pipeline_ + ": active"), std::string::npos) << text;

  // SIGTERM while a writer keeps changing rows: exit 0 within 10 s.
  std::atomic<bool> writing{true};
  std::atomic<int> written{0};
  std::thread writer([&] {
    PgConnection c = MustConnect(endpoints_.pg_dsn);
    for (int i = 0; writing.load(); ++i) {
      MustExecute(c, "update " + table_ +
                         " set amount = amount + 1 where id = " + std::to_string(1 + i % 1900));
      ++written;
    }
  });
  // The signal lands while the pipeline is applying the writer's changes.
  const bool loaded = WaitFor([&] {
    return written.load() >= 200 &&
           Find(ParsePrometheus(Get("/metrics").second), "pgderive_changes_applied_total",
                {{"view", "rows"}, {"source", "stream"}})
                   .value_or(0) > 600;
  });
  if (!loaded) {
    writing.store(false);
    writer.join();
    FAIL() << "the pipeline did not apply the writer's changes\n" << Read("run.err");
  }
  run_->Signal(SIGTERM);
  const auto stopped = run_->Wait(std::chrono::seconds(10));
  writing.store(false);
  writer.join();
  ASSERT_TRUE(stopped.has_value()) << "still running 10 s after SIGTERM\n" << Read("run.err");
  EXPECT_EQ(*stopped, 0) << Read("run.err");

  // A restart resumes (no rebuild) and every view verifies.
  StartRun(config, "run2.err");
  auto [verify_code, verify_out] = testing::RunVerify(config, 60);
  EXPECT_EQ(verify_code, 0) << verify_out << Read("run2.err");
  EXPECT_EQ(Read("run2.err").find("rebuilding"), std::string::npos) << Read("run2.err");
  EXPECT_NE(Read("run2.err").find("resumes from"), std::string::npos) << Read("run2.err");
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0);

  // Every log line is a JSON object with ts, level and msg, and none holds the
  // password of the DSN (which every config here carries).
  const std::string password = Url::Parse(endpoints_.pg_dsn).value().password.value_or("");
  ASSERT_FALSE(password.empty());
  for (const std::string log : {"run.err", "run2.err", "command.err"}) {
    std::istringstream in(Read(log));
    std::string line;
    int lines = 0;
    while (std::getline(in, line)) {
      EXPECT_EQ(line.find(password), std::string::npos) << log << ": " << line;
      if (log == "command.err") continue;
      const json parsed = json::parse(line, nullptr, false);
      ASSERT_FALSE(parsed.is_discarded()) << log << ": " << line;
      EXPECT_TRUE(parsed.contains("ts") && parsed.contains("level") && parsed.contains("msg"))
          << line;
      ++lines;
    }
    if (log != "command.err") {
      EXPECT_GT(lines, 3) << log;
    }
  }
}

// Rows applied are counted by where they came from: the first start's snapshot, the
// stream, a backfill; commit-to-visible latency is measured on streamed transactions
// that change a view's table, once the store has caught up, and on nothing else.
TEST_F(SidecarTest, AppliedRowsBySourceAndLatencyOfStreamedTransactionsOnly) {
  const std::string config = WriteConfig(endpoints_.pg_dsn, endpoints_.redis_url);
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").first == 200; }))
      << Get("/readyz").second << Read("run.err");
  ASSERT_TRUE(WaitFor([&] {
    auto samples = ParsePrometheus(Get("/metrics").second);
    return Find(samples, "pgderive_store_caught_up", {{"store", "cache"}}) == 1 &&
           Find(samples, "pgderive_store_caught_up", {{"store", "warehouse"}}) == 1;
  })) << Get("/metrics").second;
  // Five transactions of two updates each.
  for (int i = 0; i < 5; ++i) {
    MustExecute(*sql_, "update " + table_ + " set amount = amount + 1 where id in (" +
                           std::to_string(2 * i + 1) + ", " + std::to_string(2 * i + 2) + ")");
  }
  ASSERT_TRUE(WaitFor([&] {
    auto samples = ParsePrometheus(Get("/metrics").second);
    return Applied(samples, "rows", "stream") == 10 && Applied(samples, "totals", "stream") == 10;
  })) << Get("/metrics").second;
  auto [code, out] =
      Command({PgderiveBinary(), "backfill", "-c", config, "--view", "rows", "--timeout", "120"});
  ASSERT_EQ(code, 0) << out << Read("run.err");
  // The Redis view's first fill is a backfill too: 2,000 rows, then 2,000 again.
  ASSERT_TRUE(WaitFor([&] {
    return Applied(ParsePrometheus(Get("/metrics").second), "rows", "backfill") == 4000;
  })) << Get("/metrics").second;

  const auto samples = ParsePrometheus(Get("/metrics").second);
  EXPECT_EQ(Applied(samples, "rows", "snapshot"), 0);
  EXPECT_EQ(Applied(samples, "rows", "stream"), 10);
  EXPECT_EQ(Applied(samples, "rows", "backfill"), 4000);
  // The postgres view's first fill counts the view's rows (its groups).
  EXPECT_EQ(Applied(samples, "totals", "backfill"),
            std::stoll(Scalar(*sql_, "select count(*) from " + target_)));
  EXPECT_EQ(Applied(samples, "totals", "stream"), 10);
  EXPECT_EQ(Applied(samples, "totals", "snapshot"), 0);
  for (const std::string store : {"cache", "warehouse"}) {
    // The five transactions; not the heartbeats, the backfill's watermarks or its rows.
    EXPECT_EQ(Find(samples, "pgderive_commit_to_visible_seconds_count", {{"store", store}}), 5)
        << store;
    EXPECT_EQ(Find(samples, "pgderive_catchup_transactions_total", {{"store", store}}), 0) << store;
  }
  run_->Signal(SIGTERM);
  ASSERT_EQ(run_->Wait(std::chrono::seconds(10)), 0) << Read("run.err");
  EXPECT_NE(Read("run.err").find("store cache commit-to-visible latency: p50 "), std::string::npos)
      << Read("run.err");
  EXPECT_NE(Read("run.err").find("(5 transactions)"), std::string::npos) << Read("run.err");
}

TEST_F(SidecarTest, HeartbeatMovesAnIdleSlot) {
  const std::string config = WriteConfig(endpoints_.pg_dsn, endpoints_.redis_url);
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").first == 200; })) << Read("run.err");
  // Our tables stay idle; WAL is written elsewhere (a table outside the publication).
  const std::string other = UniqueName("side_other");
  MustExecute(*sql_, "create table " + other + " (v int)");
  MustExecute(*sql_, "insert into " + other + " select generate_series(1, 10000)");
  const std::string written = Scalar(*sql_, "select pg_current_wal_lsn()");
  const std::string slot = "pgderive_" + pipeline_;
  const bool moved = WaitFor([&] {
    return Scalar(*sql_, "select confirmed_flush_lsn >= '" + written +
                             "'::pg_lsn from pg_replication_slots where slot_name = '" + slot +
                             "'") == "t";
  });
  MustExecute(*sql_, "drop table " + other);
  EXPECT_TRUE(moved) << Read("run.err");
  const auto samples = ParsePrometheus(Get("/metrics").second);
  EXPECT_GE(Find(samples, "pgderive_heartbeats_total").value_or(0), 1);
}

TEST_F(SidecarTest, RedisAuthWithUserAndPassword) {
  // A Redis ACL user for this test only; the default user stays as it was.
  const std::string user = UniqueName("pgd_user");
  const std::string password = "Rd-" + UniqueName("secret");
  auto admin = RedisClient::Connect(endpoints_.redis_url);
  ASSERT_TRUE(admin.ok());
  auto made =
      admin.value().Command({"ACL", "SETUSER", user, "on", ">" + password, "~*", "&*", "+@all"});
  ASSERT_TRUE(made.ok());
  const std::string config =
      WriteConfig(endpoints_.pg_dsn, endpoints_.redis_url, "",
                  "    username: " + user + "\n    password: \"" + password + "\"\n");
  StartRun(config);
  const std::string key = table_ + ":7";
  EXPECT_TRUE(WaitFor([&] {
    auto reply = admin.value().Command({"GET", key});
    return reply.ok() && reply.value().type == RedisReply::Type::kString;
  })) << Read("run.err");
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0);
  EXPECT_EQ(Read("run.err").find(password), std::string::npos);
  // A wrong password is refused at start, named, and not printed.
  const std::string bad = WriteConfig(endpoints_.pg_dsn, endpoints_.redis_url, "",
                                      "    username: " + user + "\n    password: wrong-pw\n");
  auto [code, out] = Command({PgderiveBinary(), "run", "-c", bad});
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("cache"), std::string::npos) << out;
  EXPECT_EQ(out.find("wrong-pw"), std::string::npos) << out;
  auto deleted = admin.value().Command({"ACL", "DELUSER", user});
  EXPECT_TRUE(deleted.ok());
}

TEST_F(SidecarTest, WholePipelineAsLeastPrivilegeRole) {
  // The documented role: LOGIN REPLICATION, SELECT on the source tables, CREATE on the
  // database (pgderive makes its `pgderive` schema and the target's schema). The
  // publication is made by the tables' owner: PostgreSQL lets only an owner publish a
  // table. A database of its own, so that nothing another test made is in the way.
  const std::string role = UniqueName("pgd_role");
  const std::string password = "Pw-" + UniqueName("x");
  const std::string database = UniqueName("pgd_db");
  MustExecute(*sql_, "create role " + role + " login replication password '" + password + "'");
  MustExecute(*sql_, "create database " + database);
  auto url = Url::Parse(endpoints_.pg_dsn).value();
  const std::string host = url.host + ":" + std::to_string(url.port.value_or(5432));
  const std::string owner_dsn =
      "postgresql://" + url.user + ":" + url.password.value_or("") + "@" + host + "/" + database;
  {
    PgConnection owner = MustConnect(owner_dsn);
    MustExecute(owner, "create table " + table_ +
                           " (id int primary key, grp int not null, amount numeric not null)");
    MustExecute(owner,
                "insert into " + table_ + " select g, g % 10, g from generate_series(1, 2000) g");
    MustExecute(owner, "grant select on " + table_ + " to " + role);
    MustExecute(owner, "grant create on database " + database + " to " + role);
    MustExecute(owner, "create publication pgderive_" + pipeline_ + " for table " + table_);
  }
  EXPECT_EQ(Scalar(*sql_, "select rolsuper from pg_roles where rolname = '" + role + "'"), "f");
  const std::string role_dsn =
      "postgresql://" + role + ":" + password + "@" + host + "/" + database;
  const std::string config = WriteConfig(role_dsn, endpoints_.redis_url);
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").first == 200; })) << Read("run.err");
  {
    PgConnection owner = MustConnect(owner_dsn);
    MustExecute(owner, "update " + table_ + " set amount = amount * 2 where id % 3 = 0");
    MustExecute(owner, "delete from " + table_ + " where id % 7 = 0");
  }
  auto [code, out] = testing::RunVerify(config, 60);
  EXPECT_EQ(code, 0) << out << Read("run.err");
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0);
  EXPECT_EQ(Read("run.err").find(password), std::string::npos);
  run_.reset();
  IgnoreError(sql_->Execute("select pg_drop_replication_slot('pgderive_" + pipeline_ + "')"),
              "cleanup");
  IgnoreError(sql_->Execute("drop database " + database), "cleanup");
  IgnoreError(sql_->Execute("drop role " + role), "cleanup");
}

TEST_F(SidecarTest, MigrationsOnceChangedDefinitionRebuildsNewerDatabaseRefused) {
  // A database of its own, so that its pgderive schema starts empty.
  const std::string database = UniqueName("pgd_mig");
  MustExecute(*sql_, "create database " + database);
  auto url = Url::Parse(endpoints_.pg_dsn).value();
  const std::string db_dsn = "postgresql://" + url.user + ":" + url.password.value_or("") + "@" +
                             url.host + ":" + std::to_string(url.port.value_or(5432)) + "/" +
                             database;
  PgConnection db = MustConnect(db_dsn);
  MustExecute(db, "create table " + table_ +
                      " (id int primary key, grp int not null, amount numeric not null)");
  MustExecute(db, "insert into " + table_ + " select g, g % 10, g from generate_series(1, 500) g");
  std::string config = WriteConfig(db_dsn, endpoints_.redis_url);
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").first == 200; })) << Read("run.err");
  run_->Signal(SIGTERM);
  ASSERT_EQ(run_->Wait(std::chrono::seconds(10)), 0) << Read("run.err");
  // Every migration once, in order.
  EXPECT_EQ(Scalar(db,
                   "select string_agg(version::text, ',' order by version) from "
                   "pgderive.migrations"),
            "1,2");

  // A changed query: the table is rebuilt with the new columns, not left as it was.
  {
    std::ifstream in(config);
    std::string text(std::istreambuf_iterator<char>(in), {});
    const std::string from = "count(*) as n, sum(amount) as total";
    text.replace(text.find(from), from.size(), "max(amount) as top");
    std::ofstream(config) << text;
  }
  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").first == 200; })) << Read("run2.err");
  EXPECT_EQ(Scalar(db,
                   "select string_agg(attname, ',' order by attnum) from pg_attribute where "
                   "attrelid = '" +
                       target_ + "'::regclass and attnum > 0 and not attisdropped"),
            "grp,top");
  auto [code, out] = testing::RunVerify(config, 60);
  EXPECT_EQ(code, 0) << out;
  run_->Signal(SIGTERM);
  ASSERT_EQ(run_->Wait(std::chrono::seconds(10)), 0) << Read("run2.err");
  EXPECT_EQ(Scalar(db, "select count(*) from pgderive.migrations"), "2");

  // Metadata from a newer pgderive: refused with both versions named, nothing changed.
  MustExecute(db, "insert into pgderive.migrations (version, name) values (99, 'future.sql')");
  auto [refused, message] = Command({PgderiveBinary(), "run", "-c", config});
  EXPECT_EQ(refused, 1);
  EXPECT_NE(message.find("migration 99, newer than this pgderive knows (2)"), std::string::npos)
      << message;
  EXPECT_EQ(Scalar(db, "select count(*) from pgderive.migrations"), "3");
  IgnoreError(db.Execute("select pg_drop_replication_slot('pgderive_" + pipeline_ + "')"),
              "cleanup");
  db = MustConnect(endpoints_.pg_dsn);
  IgnoreError(sql_->Execute("drop database " + database + " with (force)"), "cleanup");
}

// SPEC §4: a view that names a dropped column reports the problem clearly and stops
// only that view; the store's other view and the pipeline go on.
TEST_F(SidecarTest, DroppedColumnStopsOnlyTheViewNamingIt) {
  MustExecute(*sql_, "alter table " + table_ + " add column note text default 'n'");
  const std::string path = (dir_ / "drop.yml").string();
  std::ofstream(path) << "pipeline: " << pipeline_ << "\nsource:\n  dsn: \"" << endpoints_.pg_dsn
                      << "\"\nstores:\n  cache:\n    type: redis\n    url: \""
                      << endpoints_.redis_url
                      << "\"\nviews:\n  - name: narrow\n    store: cache\n    from: " << table_
                      << "\n    key: \"" << table_ << ":n:{id}\"\n    columns: [id, note]\n"
                      << "  - name: wide\n    store: cache\n    from: " << table_ << "\n    key: \""
                      << table_ << ":w:{id}\"\nhttp:\n  listen: 127.0.0.1:" << port_ << "\n";
  StartRun(path);
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").first == 200; })) << Read("run.err");
  auto redis = RedisClient::Connect(endpoints_.redis_url);
  ASSERT_TRUE(redis.ok());
  auto value = [&](const std::string& key) {
    auto reply = redis.value().Command({"GET", key});
    return reply.ok() && reply.value().type == RedisReply::Type::kString
               ? std::optional<json>(json::parse(reply.value().str))
               : std::nullopt;
  };
  ASSERT_TRUE(value(table_ + ":n:5").has_value());

  MustExecute(*sql_, "alter table " + table_ + " drop column note");
  MustExecute(*sql_, "update " + table_ + " set amount = -5 where id = 5");
  // The wide view follows the table (no `note` any more); the narrow one stopped.
  ASSERT_TRUE(WaitFor([&] {
    auto wide = value(table_ + ":w:5");
    return wide && (*wide)["amount"] == "-5";
  })) << Read("run.err");
  EXPECT_FALSE(value(table_ + ":w:5")->contains("note"));
  EXPECT_TRUE(WaitFor([&] {
    const json status = json::parse(Get("/status").second);
    for (const auto& v : status["views"]) {
      if (v["name"] == "narrow" && v["state"] == "failed" &&
          v.value("reason", "").find("note") != std::string::npos) {
        return true;
      }
    }
    return false;
  })) << Get("/status").second;
  auto [code, body] = Get("/readyz");
  EXPECT_EQ(code, 503);
  EXPECT_NE(body.find("view narrow stopped"), std::string::npos) << body;
  EXPECT_NE(Read("run.err").find("view narrow stopped"), std::string::npos) << Read("run.err");
  EXPECT_EQ((*value(table_ + ":n:5"))["note"], "n");  // no longer written
  // Still running, still streaming for the other view.
  MustExecute(*sql_, "update " + table_ + " set amount = -6 where id = 6");
  EXPECT_TRUE(WaitFor([&] {
    auto wide = value(table_ + ":w:6");
    return wide && (*wide)["amount"] == "-6";
  }));
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0);
}

// OpenSearch over HTTPS with basic auth and a CA file. The local OpenSearch runs
// without its security plugin, so the test puts a TLS endpoint that demands basic auth
// (cpp-httplib's SSLServer, with a certificate made here) in front of it and forwards
// every request to the real OpenSearch: pgderive's client must verify the certificate
// against `ca_file` and send the credentials.
TEST_F(SidecarTest, OpenSearchOverHttpsWithBasicAuthAndCaFile) {
  auto make_cert = [&](const std::string& name) {
    const std::string command =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
        "-addext subjectAltName=IP:127.0.0.1 -keyout " +
        (dir_ / (name + ".key")).string() + " -out " + (dir_ / (name + ".crt")).string() +
        " 2>/dev/null";
    return std::system(command.c_str()) == 0;
  };
  ASSERT_TRUE(make_cert("tls"));
  ASSERT_TRUE(make_cert("other"));
  const std::string user = "pgd_search";
  const std::string password = "Os-" + UniqueName("pw");
  const auto expected = httplib::make_basic_authentication_header(user, password);
  auto upstream = Url::Parse(endpoints_.opensearch_url).value();
  httplib::SSLServer proxy((dir_ / "tls.crt").c_str(), (dir_ / "tls.key").c_str());
  std::atomic<int> refused{0};
  auto forward = [&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") != expected.second) {
      ++refused;
      res.status = 401;
      res.set_content(R"({"error":"unauthorized"})", "application/json");
      return;
    }
    httplib::Client os(upstream.host, upstream.port.value_or(9200));
    httplib::Request out;
    out.method = req.method;
    out.path = req.target;
    out.body = req.body;
    if (req.has_header("Content-Type")) {
      out.set_header("Content-Type", req.get_header_value("Content-Type"));
    }
    httplib::Response answer;
    httplib::Error error = httplib::Error::Success;
    if (!os.send(out, answer, error)) {
      res.status = 502;
      return;
    }
    res.status = answer.status;
    res.set_content(answer.body, answer.get_header_value("Content-Type").c_str());
  };
  for (const char* pattern : {".*"}) {
    proxy.Get(pattern, forward);
    proxy.Post(pattern, forward);
    proxy.Put(pattern, forward);
    proxy.Delete(pattern, forward);
  }
  const int port = proxy.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread serving([&] { proxy.listen_after_bind(); });
  const std::string index = UniqueName("side_idx");
  auto write = [&](const std::string& name, const std::string& pw, const std::string& ca) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path)
        << "pipeline: " << pipeline_ << "\nsource:\n  dsn: \"" << endpoints_.pg_dsn
        << "\"\nstores:\n  search:\n    type: opensearch\n    url: https://127.0.0.1:" << port
        << "\n    username: " << user << "\n    password: \"" << pw
        << "\"\n    ca_file: " << (dir_ / ca).string()
        << "\nviews:\n  - name: docs\n    store: search\n    from: " << table_
        << "\n    index: " << index << "\nhttp:\n  listen: 127.0.0.1:" << port_ << "\n";
    return path;
  };
  // A wrong password and an untrusted certificate are refused at start, named, and no
  // secret is printed.
  auto [bad_pw, bad_pw_out] =
      Command({PgderiveBinary(), "run", "-c", write("badpw.yml", "wrong-pw", "tls.crt")});
  EXPECT_EQ(bad_pw, 2) << bad_pw_out;
  EXPECT_NE(bad_pw_out.find("search"), std::string::npos) << bad_pw_out;
  EXPECT_NE(bad_pw_out.find("401"), std::string::npos) << bad_pw_out;
  EXPECT_EQ(bad_pw_out.find("wrong-pw"), std::string::npos) << bad_pw_out;
  EXPECT_GE(refused.load(), 1);
  auto [bad_ca, bad_ca_out] =
      Command({PgderiveBinary(), "run", "-c", write("badca.yml", password, "other.crt")});
  EXPECT_EQ(bad_ca, 2) << bad_ca_out;
  EXPECT_NE(bad_ca_out.find("certificate"), std::string::npos) << bad_ca_out;
  EXPECT_EQ(bad_ca_out.find(password), std::string::npos) << bad_ca_out;

  const std::string config = write("https.yml", password, "tls.crt");
  StartRun(config);
  ASSERT_TRUE(WaitFor([&] { return Get("/readyz").first == 200; })) << Read("run.err");
  MustExecute(*sql_, "update " + table_ + " set amount = amount + 7 where id % 5 = 0");
  auto [code, out] = testing::RunVerify(config, 60);
  EXPECT_EQ(code, 0) << out << Read("run.err");
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0);
  EXPECT_EQ(Read("run.err").find(password), std::string::npos);
  proxy.stop();
  serving.join();
  httplib::Client os(upstream.host, upstream.port.value_or(9200));
  os.Delete("/" + index);
}

// A long initial snapshot shows its progress in /status (what `pgderive status` prints):
// rows read, the estimate, a rate, and the views backfilling with a percentage.
TEST_F(SidecarTest, SnapshotProgressInStatus) {
  const std::string big = UniqueName("side_big");
  MustExecute(*sql_, "create table " + big + " (id int primary key, v text)");
  MustExecute(*sql_, "insert into " + big +
                         " select g, repeat(md5(g::text), 4) from generate_series(1, 1000000) g");
  MustExecute(*sql_, "analyze " + big);
  const std::string path = (dir_ / "big.yml").string();
  std::ofstream(path) << "pipeline: " << pipeline_ << "\nsource:\n  dsn: \"" << endpoints_.pg_dsn
                      << "\"\nstores:\n  cache:\n    type: redis\n    url: \""
                      << endpoints_.redis_url
                      << "\"\nviews:\n  - name: big\n    store: cache\n    from: " << big
                      << "\n    key: \"" << big << ":{id}\"\nsnapshot:\n  workers: 1\nhttp:\n"
                      << "  listen: 127.0.0.1:" << port_ << "\n";
  StartRun(path);
  // A Redis view's first fill is a backfill: its progress is the view's.
  json seen;
  const bool progressed = WaitFor([&] {
    auto [code, body] = Get("/status");
    if (code != 200) return false;
    const json status = json::parse(body, nullptr, false);
    if (status.is_discarded() || !status.contains("views") || status["views"].empty()) {
      return false;
    }
    const json& view = status["views"][0];
    if (view.value("state", "") != "backfilling" || view.value("backfill_rows", 0) == 0) {
      return false;
    }
    seen = status;
    return true;
  });
  ASSERT_TRUE(progressed) << Read("run.err");
  EXPECT_GE(seen["views"][0]["backfill_estimated_rows"].get<uint64_t>(), 900000u) << seen;
  EXPECT_LT(seen["views"][0]["backfill_rows"].get<uint64_t>(), 1000001u) << seen;
  EXPECT_TRUE(seen["views"][0].contains("progress_percent")) << seen;
  // Done: the view is live.
  EXPECT_TRUE(WaitFor(
      [&] {
        const json status = json::parse(Get("/status").second, nullptr, false);
        return !status.is_discarded() && status["views"][0]["state"] == "live";
      },
      std::chrono::seconds(180)))
      << Read("run.err");
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0);
  auto redis = RedisClient::Connect(endpoints_.redis_url);
  ASSERT_TRUE(redis.ok());
  std::string cursor = "0";
  std::vector<std::string> keys;
  do {  // drop the million keys again
    auto reply = redis.value().Command({"SCAN", cursor, "MATCH", big + ":*", "COUNT", "10000"});
    ASSERT_TRUE(reply.ok());
    cursor = reply.value().elements[0].str;
    RedisCommand del{"UNLINK"};
    for (const auto& k : reply.value().elements[1].elements) del.push_back(k.str);
    if (del.size() > 1) {
      ASSERT_TRUE(redis.value().Command(del).ok());
    }
  } while (cursor != "0");
  MustExecute(*sql_, "drop table " + big);
}

}  // namespace
}  // namespace pgderive
