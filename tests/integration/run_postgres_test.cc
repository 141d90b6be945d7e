// `pgderive run` with materialized-view tables in PostgreSQL: a join + group-by view
// and a left-join view equal their queries after 10,000 random operations, unaffected
// rows are never rewritten, and queries that cannot be maintained are refused.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "sinks/opensearch/opensearch_client.h"
#include "sinks/redis/redis_client.h"
#include "tests/support/pg.h"
#include "tests/support/pipeline_test.h"
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

class RunPostgresTest : public testing::PipelineTest {
 protected:
  void SetUp() override {
    UseSharedStack("mv");
    if (HasFatalFailure()) return;
    ns_ = UniqueName("mvsrc");
    CleanupSql("drop schema if exists " + ns_ + " cascade");
    CleanupSql("drop schema if exists " + ns_ + "_out cascade");
    CleanupSql("drop table if exists pgderive." + pipeline_ + "__" + ns_ + "__orders, pgderive." +
               pipeline_ + "__" + ns_ + "__customers");
    MustExecute(*sql_, "create schema " + ns_);
    MustExecute(*sql_, "create table " + ns_ +
                           ".customers (id int primary key, name text, "
                           "region text)");
    MustExecute(*sql_, "create table " + ns_ +
                           ".orders (id int primary key, customer_id int, "
                           "amount numeric, note text)");
    MustExecute(*sql_,
                "insert into " + ns_ +
                    ".customers select g, 'c' || g, "
                    "(array['north', 'south', null])[1 + g % 3] from generate_series(1, 200) g");
    MustExecute(*sql_, "insert into " + ns_ +
                           ".orders select g, 1 + g % 220, g * 1.25, null "
                           "from generate_series(1, 3000) g");
  }
  std::string WriteConfig(const std::string& views) {
    return WriteFile("mv.yml", "pipeline: " + pipeline_ + "\nsource:\n  dsn: " + endpoints_.pg_dsn +
                                   "\nstores:\n  warehouse:\n    type: postgres\n    dsn: " +
                                   endpoints_.pg_dsn + "\nviews:\n" + views +
                                   "http:\n  listen: 127.0.0.1:" + std::to_string(port_) + "\n");
  }
  // A sample of pgderive_changes_applied_total of `view` from `source`; -1 when absent.
  double Applied(const std::string& view, const std::string& source) {
    std::istringstream lines(Http("/metrics").second);
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with("pgderive_changes_applied_total{") &&
          line.find("view=\"" + view + "\"") != std::string::npos &&
          line.find("source=\"" + source + "\"") != std::string::npos) {
        return std::stod(line.substr(line.rfind(' ') + 1));
      }
    }
    return -1;
  }
  // The relations in the views' schema named as a rebuild's shadows are named.
  std::string Shadows() {
    return Scalar(*sql_,
                  "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                  "where n.nspname = '" +
                      ns_ + "_out' and c.relname like 'pgd\\_g%'");
  }
  std::string View(const std::string& name, const std::string& key, const std::string& query) {
    return "  - name: " + name + "\n    store: warehouse\n    table: " + ns_ + "_out." + name +
           "\n    key: [" + key + "]\n    query: |\n      " + query + "\n";
  }
  std::string RunErr() { return RunLog(); }
  std::pair<int, std::string> Verify(const std::string& config) {
    return testing::RunVerify(config, 60);
  }

  std::string ns_;
};

TEST_F(RunPostgresTest, JoinAndGroupByViewsEqualTheirQueriesAfterRandomOperations) {
  const std::string o = ns_ + ".orders", c = ns_ + ".customers";
  const std::string config = WriteConfig(
      View("totals", "customer_id",
           "select o.customer_id, c.name, count(*) as orders, sum(o.amount) as total from " + o +
               " o join " + c + " c on c.id = o.customer_id group by o.customer_id, c.name") +
      View("regions", "id",
           "select c.id, c.region, count(o.id) as n, min(o.amount) as lo, max(o.amount) as hi, "
           "avg(o.amount) as mean from " +
               c + " c left join " + o +
               " o on o.customer_id = c.id where c.region is not null group by c.id, c.region") +
      View("big_orders", "id",
           "select id, customer_id, amount, note from " + o + " where amount > 100"));
  StartRun(config);
  auto [status, out] = Verify(config);
  ASSERT_EQ(status, 0) << out << RunErr();
  // Rows of customers 1..20 are never touched below: they must never be rewritten.
  const std::string untouched = "select string_agg(xmin::text, ',' order by customer_id) from " +
                                ns_ + "_out.totals where customer_id <= 20";
  const std::string before = Scalar(*sql_, untouched);

  std::mt19937 rng(11);
  for (int op = 0; op < 10000; ++op) {
    const int customer = 21 + static_cast<int>(rng() % 200);  // some without a customer row
    const int order = 1 + static_cast<int>(rng() % 4000);
    const std::string cs = std::to_string(customer), os = std::to_string(order);
    std::string sql;
    switch (rng() % 8) {
      case 0:
      case 1:
        sql = "insert into " + o + " values (" + os + ", " + cs + ", " +
              std::to_string(rng() % 500) +
              ".5, null) on conflict (id) do update set amount = "
              "excluded.amount, customer_id = excluded.customer_id where " +
              o.substr(o.find('.') + 1) + ".customer_id > 20";
        break;
      case 2:
        sql = "update " + o + " set amount = amount + 1 where id = " + os;
        break;
      case 3:
        sql = "delete from " + o + " where id = " + os;
        break;
      case 4:
        sql = "update " + o + " set customer_id = " + cs + " where id = " + os +
              " and customer_id > 20";
        break;
      case 5:
        sql = "insert into " + c + " values (" + cs + ", 'n' || " + cs +
              ", 'south') on conflict (id) do update set name = excluded.name || '!'";
        break;
      case 6:
        sql = "update " + c + " set region = (array['north', 'south', null])[1 + " +
              std::to_string(rng() % 3) + "] where id = " + cs;
        break;
      default:
        sql = "begin; delete from " + c + " where id = " + cs + "; update " + o +
              " set id = id + 10000 where id = " + os +
              " and customer_id > 20 and not exists "
              "(select from " +
              o + " where id = " + os + " + 10000); commit";
    }
    // Orders of customers 1..20 stay out of it.
    if (sql.find("update " + o + " set amount") == 0 || sql.find("delete from " + o) == 0) {
      sql += " and customer_id > 20";
    }
    MustExecute(*sql_, sql);
  }
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  EXPECT_NE(out.find("view totals (store warehouse)"), std::string::npos) << out;
  EXPECT_NE(out.find("view regions (store warehouse)"), std::string::npos) << out;
  EXPECT_NE(out.find("view big_orders (store warehouse)"), std::string::npos) << out;
  EXPECT_EQ(Scalar(*sql_, untouched), before) << "rows of untouched keys were rewritten";

  // A TOASTed value the next update leaves unchanged stays in the mirror and the view.
  MustExecute(*sql_, "insert into " + o +
                         " values (777777, 50, 500, (select string_agg(md5(g::text), '') from "
                         "generate_series(1, 400) g))");
  MustExecute(*sql_, "update " + o + " set amount = 600 where id = 777777");
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  EXPECT_EQ(Scalar(*sql_, "select length(note) || ' ' || amount from " + ns_ +
                              "_out.big_orders where id = 777777"),
            "12800 600");

  // Truncate empties what depends on the table.
  MustExecute(*sql_, "truncate " + o);
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  EXPECT_EQ(Scalar(*sql_, "select count(*) from " + ns_ + "_out.totals"), "0");
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0) << RunErr();
}

// A reader polls the view's table while it is rebuilt (`pgderive backfill --view`, then a
// changed definition at a restart) and a writer runs: the table is never empty, never
// partial (the group count and the orders counted stay those of the source, which the
// writer does not change), it keeps its extra index and grants, and no shadow table is
// left. The rebuilt rows count under source="backfill", the first fill's under
// source="snapshot" (the view's rows, not the orders read).
TEST_F(RunPostgresTest, RebuildSwapsInACompleteTableReadersNeverSeeItEmptyOrPartial) {
  const std::string o = ns_ + ".orders", c = ns_ + ".customers", t = ns_ + "_out.totals";
  MustExecute(*sql_, "insert into " + c +
                         " select g, 'c' || g, 'north' from generate_series(201, 20000) g");
  MustExecute(*sql_, "insert into " + o +
                         " select g, 1 + g % 20000, g, null from generate_series(3001, 300000) g");
  const std::string query =
      "select o.customer_id, c.name, count(*) as orders, sum(o.amount) as "
      "total from " +
      o + " o join " + c + " c on c.id = o.customer_id group by o.customer_id, c.name";
  std::string config = WriteConfig(View("totals", "customer_id", query));
  StartRun(config);
  auto [status, out] = Verify(config);
  ASSERT_EQ(status, 0) << out << RunErr();
  const std::string groups = Scalar(*sql_, "select count(*) from (" + query + ") q");
  const std::string orders = Scalar(*sql_, "select sum(orders) from (" + query + ") q");
  EXPECT_EQ(Applied("totals", "snapshot"), std::stod(groups));
  EXPECT_EQ(Applied("totals", "backfill"), 0);
  MustExecute(*sql_, "create index totals_by_total on " + t + " (total)");
  MustExecute(*sql_, "grant select on " + t + " to public");

  std::atomic<bool> stop{false};
  std::atomic<int> polls{0};
  std::vector<std::string> bad;
  double slowest = 0;
  std::thread reader([&] {
    auto r = MustConnect(endpoints_.pg_dsn);
    while (!stop.load()) {
      const auto started = std::chrono::steady_clock::now();
      auto rows =
          r.Query("select count(*)::text || ' ' || coalesce(sum(orders), 0)::text from " + t);
      slowest = std::max(
          slowest,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      const std::string seen =
          rows.ok() ? rows.value().rows[0][0].value_or("") : rows.error().message();
      if (seen != groups + " " + orders && bad.size() < 5) bad.push_back(seen);
      ++polls;
    }
  });
  std::thread writer([&] {
    auto w = MustConnect(endpoints_.pg_dsn);
    for (int i = 0; !stop.load(); ++i) {
      MustExecute(w, "update " + o +
                         " set amount = amount + 1 where id % 1000 = " + std::to_string(i % 1000));
    }
  });
  for (int round = 0; round < 3; ++round) {
    auto [code, text] = testing::RunToEnd(
        {PgderiveBinary(), "backfill", "-c", config, "--view", "totals", "--timeout", "120"},
        (dir_ / "backfill.err").string(), std::chrono::seconds(150));
    EXPECT_EQ(code, 0) << text << RunErr();
  }
  EXPECT_TRUE(WaitFor([&] { return Applied("totals", "backfill") == 3 * std::stod(groups); }))
      << Applied("totals", "backfill");
  EXPECT_EQ(Scalar(*sql_, "select count(*) from pg_indexes where schemaname = '" + ns_ +
                              "_out' and tablename = 'totals' and indexname = 'totals_by_total'"),
            "1");
  EXPECT_EQ(Scalar(*sql_, "select indisunique from pg_index where indexrelid = '" + ns_ +
                              "_out.totals_customer_id_idx'::regclass"),
            "t");
  EXPECT_EQ(Shadows(), "0");
  // A changed definition (a new column) at a restart: the new table replaces the old
  // one whole, in the same way.
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(20)), 0) << RunErr();
  const std::string query2 =
      "select o.customer_id, c.name, count(*) as orders, sum(o.amount) as "
      "total, max(o.id) as last_order from " +
      o + " o join " + c + " c on c.id = o.customer_id group by o.customer_id, c.name";
  config = WriteConfig(View("totals", "customer_id", query2));
  StartRun(config);
  EXPECT_TRUE(WaitFor(
      [&] {
        return Scalar(*sql_,
                      "select count(*) from information_schema.columns where table_schema "
                      "= '" +
                          ns_ +
                          "_out' and table_name = 'totals' and column_name = "
                          "'last_order'") == "1";
      },
      std::chrono::seconds(120)))
      << RunErr();
  const int seen = polls.load();
  EXPECT_TRUE(WaitFor([&] { return polls.load() > seen + 20; }));
  stop.store(true);
  writer.join();
  reader.join();
  EXPECT_TRUE(bad.empty()) << "the reader saw: " << bad.front() << " (expected " << groups << " "
                           << orders << ")";
  EXPECT_GT(polls.load(), 100);
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  EXPECT_EQ(Shadows(), "0");
  // 3 rebuilds on demand; the restart's rebuild from a snapshot is a snapshot again.
  EXPECT_EQ(Scalar(*sql_,
                   "select substring(definition from '\\ngeneration .*$') from pgderive.views "
                   "where pipeline = '" +
                       pipeline_ + "' and view = 'totals'"),
            "\ngeneration 5 made_schema");
  // The first run's backfills counted the view's rows; this run's snapshot too.
  EXPECT_EQ(Applied("totals", "snapshot"), std::stod(groups));
  std::printf("reader: %d polls, slowest %.3f s\n", polls.load(), slowest);
  // The grant is kept across every rebuild; the extra index while the columns stay.
  EXPECT_EQ(Scalar(*sql_, "select has_table_privilege('public', '" + t + "', 'SELECT')"), "t");
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(20)), 0) << RunErr();
  // teardown --views removes the table and the schema pgderive made for it.
  auto [code, text] = testing::RunToEnd({PgderiveBinary(), "teardown", "-c", config, "--views"},
                                        (dir_ / "teardown.err").string(), std::chrono::seconds(60));
  EXPECT_EQ(code, 0) << text;
  EXPECT_EQ(Scalar(*sql_, "select count(*) from pg_namespace where nspname = '" + ns_ + "_out'"),
            "0")
      << text
      << Scalar(*sql_,
                "select string_agg(classid::regclass || ' ' || objid::text || ' ' || "
                "pg_describe_object(classid, objid, objsubid), ', ') from pg_depend d join "
                "pg_namespace n on n.oid = d.refobjid where d.refclassid = "
                "'pg_namespace'::regclass and n.nspname = '" +
                    ns_ + "_out'");
}

// kill -9 while a rebuild fills its shadow table: the old table serves on, complete, and
// nothing of the rebuild is left; the restart goes on from the checkpoint and a new
// rebuild succeeds.
TEST_F(RunPostgresTest, KillDuringARebuildLeavesTheOldTableServingAndNoShadow) {
  const std::string o = ns_ + ".orders", c = ns_ + ".customers", t = ns_ + "_out.totals";
  MustExecute(*sql_, "insert into " + c +
                         " select g, 'c' || g, 'north' from generate_series(201, 20000) g");
  MustExecute(*sql_, "insert into " + o +
                         " select g, 1 + g % 20000, g, null from generate_series(3001, 400000) g");
  const std::string query =
      "select o.customer_id, c.name, count(*) as orders, sum(o.amount) as "
      "total from " +
      o + " o join " + c + " c on c.id = o.customer_id group by o.customer_id, c.name";
  const std::string config = WriteConfig(View("totals", "customer_id", query));
  StartRun(config);
  auto [status, out] = Verify(config);
  ASSERT_EQ(status, 0) << out << RunErr();
  const std::string before = Scalar(*sql_, "select count(*) || ' ' || sum(total) from " + t);
  for (int round = 0; round < 2; ++round) {
    Subprocess backfill(
        {PgderiveBinary(), "backfill", "-c", config, "--view", "totals", "--no-wait"},
        (dir_ / "backfill.err").string());
    EXPECT_EQ(backfill.Wait(std::chrono::seconds(60)), 0);
    // Killed while the sink's session fills the shadow table.
    ASSERT_TRUE(WaitFor(
        [&] {
          return Scalar(*sql_,
                        "select count(*) from pg_stat_activity where query like '%pgd_g%' "
                        "and state = 'active' and pid <> pg_backend_pid()") != "0";
        },
        std::chrono::seconds(60)))
        << RunErr();
    run_->Signal(SIGKILL);
    run_->Wait(std::chrono::seconds(20));
    EXPECT_EQ(Scalar(*sql_, "select count(*) || ' ' || sum(total) from " + t), before);
    EXPECT_TRUE(WaitFor([&] { return Shadows() == "0"; })) << Shadows();
    StartRun(config);
    std::tie(status, out) = Verify(config);
    EXPECT_EQ(status, 0) << out << RunErr();
  }
  auto [code, text] = testing::RunToEnd(
      {PgderiveBinary(), "backfill", "-c", config, "--view", "totals", "--timeout", "120"},
      (dir_ / "backfill.err").string(), std::chrono::seconds(150));
  EXPECT_EQ(code, 0) << text << RunErr();
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  EXPECT_EQ(Shadows(), "0");
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(20)), 0) << RunErr();
}

// A target table that exists and that this pipeline did not make is refused by validate
// --connect and by run (exit 2, naming view, table and store), and nothing is created;
// teardown --views leaves it.
TEST_F(RunPostgresTest, ATargetTableThePipelineDidNotMakeIsRefused) {
  MustExecute(*sql_, "create schema " + ns_ + "_out");
  MustExecute(*sql_, "create table " + ns_ + "_out.big (id int primary key, note text)");
  MustExecute(*sql_, "insert into " + ns_ + "_out.big values (1, 'mine')");
  const std::string config =
      WriteConfig(View("big", "id", "select id, amount from " + ns_ + ".orders where amount > 10"));
  const std::string expected = "view big: table " + ns_ +
                               "_out.big already exists and was not made by pipeline " + pipeline_;
  {
    auto [code, text] =
        testing::RunToEnd({PgderiveBinary(), "validate", "--connect", "-c", config},
                          (dir_ / "validate.err").string(), std::chrono::seconds(60));
    EXPECT_EQ(code, 2) << text;
    EXPECT_NE(text.find(expected), std::string::npos) << text;
    EXPECT_NE(text.find("store warehouse"), std::string::npos) << text;
  }
  Subprocess run({PgderiveBinary(), "run", "-c", config}, (dir_ / "run.err").string());
  EXPECT_EQ(run.Wait(std::chrono::seconds(30)), 2) << RunErr();
  EXPECT_NE(RunErr().find(expected), std::string::npos) << RunErr();
  EXPECT_EQ(Scalar(*sql_, "select count(*) from pg_replication_slots where slot_name = 'pgderive_" +
                              pipeline_ + "'"),
            "0");
  EXPECT_EQ(Scalar(*sql_,
                   "select count(*) from pg_tables where schemaname = 'pgderive' and "
                   "tablename like '" +
                       pipeline_ + "%'"),
            "0");
  auto [code, text] = testing::RunToEnd({PgderiveBinary(), "teardown", "-c", config, "--views"},
                                        (dir_ / "teardown.err").string(), std::chrono::seconds(60));
  EXPECT_EQ(code, 0) << text;
  EXPECT_EQ(Scalar(*sql_, "select note from " + ns_ + "_out.big"), "mine");
}

// A view's key changes and its columns do not: the rebuilt table has the new key's
// unique index and not the old key's, so rows repeating the old key are rebuilt and
// later changes apply; the table equals its query exactly.
TEST_F(RunPostgresTest, AChangedKeyWithTheSameColumnsRebuildsOnTheNewKeysIndexOnly) {
  const std::string p = ns_ + ".places", t = ns_ + "_out.places";
  MustExecute(*sql_,
              "create table " + p + " (id int, region text, name text, primary key (id, region))");
  MustExecute(*sql_,
              "insert into " + p + " select g, 'north', 'n' || g from generate_series(1, 50) g");
  const std::string query = "select id, region, name from " + p;
  const std::string rows =
      "select coalesce(string_agg(id || ':' || region || ':' || name, ',' "
      "order by id, region), '') from ";
  std::string config = WriteConfig(View("places", "id", query));
  StartRun(config);
  auto [status, out] = Verify(config);
  ASSERT_EQ(status, 0) << out << RunErr();
  StopRun();
  // Rows repeating the old key, then the key changes; the columns stay.
  MustExecute(*sql_,
              "insert into " + p + " select g, 'south', 's' || g from generate_series(1, 20) g");
  config = WriteConfig(View("places", "id, region", query));
  StartRun(config);
  EXPECT_TRUE(WaitFor([&] { return Scalar(*sql_, rows + t) == Scalar(*sql_, rows + p); }))
      << RunErr();
  // Later changes apply, including more rows repeating an id.
  MustExecute(*sql_, "insert into " + p + " values (1, 'east', 'e1'), (30, 'south', 's30')");
  MustExecute(*sql_, "delete from " + p + " where id = 2 and region = 'north'");
  MustExecute(*sql_, "update " + p + " set name = 'x' where id = 3");
  EXPECT_TRUE(WaitFor([&] { return Scalar(*sql_, rows + t) == Scalar(*sql_, rows + p); }))
      << Scalar(*sql_, rows + t) << RunErr();
  EXPECT_EQ(Scalar(*sql_, "select count(*) from " + t), "71");
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  // One unique index, on the new key.
  EXPECT_EQ(Scalar(*sql_,
                   "select string_agg(pg_get_indexdef(indexrelid), '; ') from pg_index where "
                   "indrelid = '" +
                       t + "'::regclass and indisunique"),
            "CREATE UNIQUE INDEX places_id_region_idx ON " + t +
                " USING btree (id, region) NULLS NOT DISTINCT");
  EXPECT_EQ(Shadows(), "0");
  StopRun();
}

// teardown --views removes the table of every view pgderive.views records, a view
// removed from the file since too: its record goes, so its table must go with it.
TEST_F(RunPostgresTest, TeardownViewsRemovesTheTablesOfViewsNoLongerInTheFile) {
  const std::string big = View("big", "id", "select id, amount from " + ns_ + ".orders");
  const std::string small =
      View("small", "id", "select id, amount from " + ns_ + ".orders where amount > 3000");
  std::string config = WriteConfig(big + small);
  StartRun(config);
  auto [status, out] = Verify(config);
  ASSERT_EQ(status, 0) << out << RunErr();
  EXPECT_EQ(Scalar(*sql_, "select count(*) from " + ns_ + "_out.small"), "600");
  StopRun();
  config = WriteConfig(big);
  auto [code, text] = testing::RunToEnd({PgderiveBinary(), "teardown", "-c", config, "--views"},
                                        (dir_ / "teardown.err").string(), std::chrono::seconds(60));
  EXPECT_EQ(code, 0) << text;
  EXPECT_EQ(Scalar(*sql_,
                   "select coalesce(string_agg(relname, ',' order by relname), '') from "
                   "pg_class c join pg_namespace n on n.oid = c.relnamespace where "
                   "n.nspname = '" +
                       ns_ + "_out' and c.relkind = 'r'"),
            "");
  EXPECT_EQ(
      Scalar(*sql_, "select count(*) from pgderive.views where pipeline = '" + pipeline_ + "'"),
      "0");
}

// A long reader holds the live table while a rebuild swaps in: the swap waits for it
// with short lock attempts, so other readers are not queued behind the swap's DROP.
TEST_F(RunPostgresTest, ALongReaderDoesNotQueueOtherReadersBehindTheSwap) {
  const std::string t = ns_ + "_out.big";
  const std::string rows = "select count(*) || ' ' || sum(amount) from ";
  const std::string config =
      WriteConfig(View("big", "id", "select id, amount from " + ns_ + ".orders"));
  StartRun(config);
  auto [status, out] = Verify(config);
  ASSERT_EQ(status, 0) << out << RunErr();
  auto holder = MustConnect(endpoints_.pg_dsn);
  MustExecute(holder, "begin");
  MustExecute(holder, "select count(*) from " + t);
  Subprocess backfill({PgderiveBinary(), "backfill", "-c", config, "--view", "big", "--no-wait"},
                      (dir_ / "backfill.err").string());
  EXPECT_EQ(backfill.Wait(std::chrono::seconds(60)), 0);
  // The swap tries for the lock while the holder keeps it.
  ASSERT_TRUE(WaitFor([&] {
    return Scalar(*sql_,
                  "select count(*) from pg_stat_activity where query like "
                  "'%lock_not_available%' and pid <> pg_backend_pid()") != "0";
  })) << RunErr();
  auto reader = MustConnect(endpoints_.pg_dsn);
  MustExecute(reader, "set statement_timeout = '2s'");
  for (int i = 0; i < 20; ++i) {
    auto read = reader.Query(rows + t);
    ASSERT_TRUE(read.ok()) << read.error().message();
    EXPECT_EQ(read.value().rows[0][0].value_or(""), Scalar(*sql_, rows + ns_ + ".orders"));
  }
  MustExecute(holder, "commit");
  EXPECT_TRUE(WaitFor([&] { return Shadows() == "0"; })) << RunErr();
  EXPECT_EQ(Scalar(*sql_, rows + t), Scalar(*sql_, rows + ns_ + ".orders"));
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  StopRun();
}

TEST_F(RunPostgresTest, QueriesThatCannotBeMaintainedAreRefusedAndCreateNothing) {
  const std::string o = ns_ + ".orders";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {View("w", "id", "select id, sum(amount) over () as s from " + o), "a window function"},
      {View("l", "id", "select id from " + o + " order by id limit 10"), "LIMIT"},
      {View("n", "id", "select id, now() as t from " + o), "calls now"},
      {View("k", "nope", "select id from " + o), "key column nope is not a column"},
      {View("u", "customer_id", "select customer_id, amount from " + o), "is not unique"},
      {View("r", "id",
            "select o.id from " + o + " o right join " + ns_ +
                ".customers c on c.id = o.customer_id"),
       "RIGHT JOIN"},
  };
  for (const auto& [view, message] : cases) {
    const std::string config = WriteConfig(view);
    Subprocess run({PgderiveBinary(), "run", "-c", config}, (dir_ / "run.err").string());
    EXPECT_EQ(run.Wait(std::chrono::seconds(20)), 2) << RunErr();
    EXPECT_NE(RunErr().find(message), std::string::npos) << RunErr();
    EXPECT_EQ(Scalar(*sql_,
                     "select count(*) from pg_replication_slots where slot_name = "
                     "'pgderive_" +
                         pipeline_ + "'"),
              "0");
    EXPECT_EQ(Scalar(*sql_, "select count(*) from pg_publication where pubname = 'pgderive_" +
                                pipeline_ + "'"),
              "0");
  }
}

// A failure after the slot, the publication and the stores' tables and indexes were
// made - here a view whose query fails only on the snapshot's rows (division by zero
// for one row; validate's checks pass) - exits 1 naming the view, and removes what this
// run made, and only that: no slot, publication, target table, mirror, index or key.
TEST_F(RunPostgresTest, FailureInTheInitialSnapshotRemovesWhatTheRunCreated) {
  PGDERIVE_REQUIRE_STACK();
  const std::string o = ns_ + ".orders";
  MustExecute(*sql_, "create schema " + ns_ + "_out");
  MustExecute(*sql_, "create table " + ns_ + "_out.keep (id int)");  // not this run's
  const std::string index = ns_ + "_orders";
  const std::string path = (dir_ / "mv.yml").string();
  std::ofstream(path) << "pipeline: " << pipeline_ << "\nsource:\n  dsn: " << endpoints_.pg_dsn
                      << "\nstores:\n  warehouse:\n    type: postgres\n    dsn: "
                      << endpoints_.pg_dsn
                      << "\n  cache:\n    type: redis\n    url: " << stack.redis_url()
                      << "\n  search:\n    type: opensearch\n    url: " << stack.opensearch_url()
                      << "\nhttp:\n  listen: 127.0.0.1:" << testing::FreePort() << "\nviews:\n"
                      << "  - name: orders_cache\n    store: cache\n    from: " << o
                      << "\n    key: \"" << ns_ << ":{id}\"\n"
                      << "  - name: orders_search\n    store: search\n    from: " << o
                      << "\n    index: " << index << "\n"
                      << View("inv", "id", "select id, 100 / (customer_id - 7) as q from " + o);
  {
    auto [code, out] =
        testing::RunToEnd({PgderiveBinary(), "validate", "--connect", "-c", path},
                          (dir_ / "validate.err").string(), std::chrono::seconds(60));
    ASSERT_EQ(code, 0) << out;  // the query only fails on the rows
  }
  Subprocess run({PgderiveBinary(), "run", "-c", path}, (dir_ / "run.err").string());
  EXPECT_EQ(run.Wait(std::chrono::seconds(60)), 1) << RunErr();
  const std::string err = RunErr();
  EXPECT_NE(err.find("initial snapshot failed: view inv"), std::string::npos) << err;
  EXPECT_NE(err.find("division by zero"), std::string::npos) << err;
  EXPECT_NE(err.find("removed what this run created"), std::string::npos) << err;
  EXPECT_EQ(Scalar(*sql_,
                   "select count(*) from pg_replication_slots where slot_name = "
                   "'pgderive_" +
                       pipeline_ + "'"),
            "0");
  EXPECT_EQ(Scalar(*sql_, "select count(*) from pg_publication where pubname = 'pgderive_" +
                              pipeline_ + "'"),
            "0");
  EXPECT_EQ(Scalar(*sql_, "select to_regclass('" + ns_ + "_out.inv') is null"), "t");
  EXPECT_EQ(Scalar(*sql_, "select to_regclass('" + ns_ + "_out.keep') is null"), "f");
  EXPECT_EQ(Scalar(*sql_,
                   "select count(*) from pg_tables where schemaname = 'pgderive' and "
                   "tablename like '" +
                       pipeline_ + "%'"),
            "0");
  auto redis = RedisClient::Connect(stack.redis_url());
  ASSERT_TRUE(redis.ok());
  auto keys = redis.value().Command({"KEYS", ns_ + ":*"});
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys.value().elements.size(), 0u);
  HttpClient::Options options;
  options.url = stack.opensearch_url();
  auto search = OpenSearchClient::Create(options);
  ASSERT_TRUE(search.ok());
  auto exists = search.value().IndexExists(index);
  ASSERT_TRUE(exists.ok());
  EXPECT_FALSE(exists.value());
}

}  // namespace
}  // namespace pgderive
