// `pgderive run` with materialized-view tables in PostgreSQL: a join + group-by view
// and a left-join view equal their queries after 10,000 random operations, unaffected
// rows are never rewritten, and queries that cannot be maintained are refused.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
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
                                   // Tests tamper with a view's table to see `verify`
                                   // report it: the background verifier would mend it.
                                   "verify:\n  continuous: off\n"
                                   "http:\n  listen: 127.0.0.1:" +
                                   std::to_string(port_) + "\n");
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

  // A numeric differing past its 15th digit is a difference (compared as its digits, not
  // as a double), named with its key and both values.
  const std::string damaged = Scalar(*sql_, "select min(customer_id) from " + ns_ + "_out.totals");
  MustExecute(*sql_, "update " + ns_ + "_out.totals set total = total + 0.00000000000001 " +
                         "where customer_id = " + damaged);
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 1) << out << RunErr();
  EXPECT_NE(out.find("different [" + damaged + "] column total"), std::string::npos) << out;
  EXPECT_NE(out.find("00000000000001"), std::string::npos) << out;
  MustExecute(*sql_, "update " + ns_ + "_out.totals set total = total - 0.00000000000001 " +
                         "where customer_id = " + damaged);

  // Truncate empties what depends on the table.
  MustExecute(*sql_, "truncate " + o);
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  EXPECT_EQ(Scalar(*sql_, "select count(*) from " + ns_ + "_out.totals"), "0");
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0) << RunErr();
}

// A mirror damaged behind pgderive's back (the store's copy of a source table) makes the
// view wrong once a change recomputes it from there; `pgderive backfill --view` derives
// the view again from the source: the mirrors it reads are filled again, then its table
// is built from them.
TEST_F(RunPostgresTest, ABackfillOfAViewFillsItsMirrorsAgainFromTheSource) {
  const std::string o = ns_ + ".orders";
  const std::string t = ns_ + "_out.totals";
  const std::string query = "select customer_id, count(*) as orders, sum(amount) as total from " +
                            o + " group by customer_id";
  const std::string config = WriteConfig(View("totals", "customer_id", query));
  StartRun(config);
  auto [status, out] = Verify(config);
  ASSERT_EQ(status, 0) << out << RunErr();
  const std::string right =
      Scalar(*sql_, "select sum(amount) from " + o + " where customer_id = 6");
  // Order 5 (customer 6) is worth 1000 more in the mirror than in the source; a change of
  // another order of customer 6 (225) recomputes its total from the mirror.
  MustExecute(*sql_, "update pgderive." + pipeline_ + "__" + ns_ +
                         "__orders set amount = amount + 1000 where id = 5");
  MustExecute(*sql_, "update " + o + " set note = 'touched' where id = 225");
  ASSERT_TRUE(WaitFor([&] {
    return Scalar(*sql_, "select total - 1000 from " + t + " where customer_id = 6") == right;
  })) << RunErr();
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("different [6] column total"), std::string::npos) << out;
  auto [code, text] = testing::RunToEnd(
      {PgderiveBinary(), "backfill", "-c", config, "--view", "totals", "--timeout", "120"},
      (dir_ / "backfill.err").string(), std::chrono::seconds(150));
  EXPECT_EQ(code, 0) << text << RunErr();
  EXPECT_EQ(Scalar(*sql_, "select total from " + t + " where customer_id = 6"), right) << RunErr();
  EXPECT_EQ(Scalar(*sql_, "select amount from pgderive." + pipeline_ + "__" + ns_ +
                              "__orders where id = 5"),
            Scalar(*sql_, "select amount from " + o + " where id = 5"));
  std::tie(status, out) = Verify(config);
  EXPECT_EQ(status, 0) << out << RunErr();
  run_->Signal(SIGTERM);
  EXPECT_EQ(run_->Wait(std::chrono::seconds(10)), 0) << RunErr();
}

// A reader polls the view's table while it is rebuilt (`pgderive backfill --view`, then a
// changed definition at a restart) and a writer runs: the table is never empty, never
// partial (the group count and the orders counted stay those of the source, which the
// writer does not change), it keeps its extra index and grants, and no shadow table is
// left. The built rows count under source="backfill", the first fill's too (the view's
// rows, not the orders read).
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
  EXPECT_TRUE(WaitFor([&] { return Applied("totals", "backfill") == std::stod(groups); }))
      << Applied("totals", "backfill");
  EXPECT_EQ(Applied("totals", "snapshot"), 0);
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
  EXPECT_TRUE(WaitFor([&] { return Applied("totals", "backfill") == 4 * std::stod(groups); }))
      << Applied("totals", "backfill");
  EXPECT_EQ(Scalar(*sql_, "select count(*) from pg_indexes where schemaname = '" + ns_ +
                              "_out' and tablename = 'totals' and indexname = 'totals_by_total'"),
            "1");
  EXPECT_EQ(Scalar(*sql_, "select indisunique from pg_index where indexrelid = '" + ns_ +
                              "_out.totals_customer_id_idx'::regclass"),
            "t");
  EXPECT_EQ(Shadows(), "0");
  // A changed definition (a new column) at a restart: a new version, built beside the
  // old table and switched in whole, in one transaction too.
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
  // The previous version (the old definition) is retained beside it for a rollback, its
  // indexes renamed out of the way.
  EXPECT_EQ(Scalar(*sql_,
                   "select string_agg(relname, ',' order by relname) from pg_class c join "
                   "pg_namespace n on n.oid = c.relnamespace where n.nspname = '" +
                       ns_ + "_out' and c.relname like 'pgd\\_g%'"),
            "pgd_g4_0_totals_by_total,pgd_g4_1_totals_customer_id_idx,pgd_g4_totals");
  // The first fill, 3 rebuilds on demand, the restart's new version. The record names
  // the table serving now (the last one switched in).
  EXPECT_EQ(
      Scalar(*sql_,
             "select substring(definition from '\\ngeneration [^\\n]*') from pgderive.views "
             "where pipeline = '" +
                 pipeline_ + "' and view = 'totals'"),
      "\ngeneration 5 made_schema oid " + Scalar(*sql_, "select '" + t + "'::regclass::oid::text"));
  // This run's new version counted the view's rows.
  EXPECT_TRUE(WaitFor([&] { return Applied("totals", "backfill") == std::stod(groups); }))
      << Applied("totals", "backfill");
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

// The first fill of a postgres store is the backfill of its mirrors: kill -9 in the middle
// of it, and the restart resumes each mirror after the last chunk it recorded (the log
// names the key) rather than from the start; the view is built from the mirrors once
// they are filled, so a reader polling it meanwhile sees no table, then the whole one -
// never a partial one - while a writer runs; it ends exact.
TEST_F(RunPostgresTest, AKilledFirstFillResumesAfterItsLastChunkAndNoReaderSeesAPartialTable) {
  const std::string o = ns_ + ".orders", c = ns_ + ".customers", t = ns_ + "_out.totals";
  MustExecute(*sql_, "insert into " + c +
                         " select g, 'c' || g, 'north' from generate_series(201, 20000) g");
  MustExecute(*sql_, "insert into " + o +
                         " select g, 1 + g % 20000, g, null from generate_series(3001, 400000) g");
  MustExecute(*sql_, "analyze " + o);
  const std::string query =
      "select o.customer_id, c.name, count(*) as orders, sum(o.amount) as "
      "total from " +
      o + " o join " + c + " c on c.id = o.customer_id group by o.customer_id, c.name";
  const std::string config = WriteConfig(View("totals", "customer_id", query));
  const std::string groups = Scalar(*sql_, "select count(*) from (" + query + ") q");
  const std::string orders = Scalar(*sql_, "select sum(orders) from (" + query + ") q");
  std::atomic<bool> stop{false};
  std::atomic<int> polls{0}, absent{0};
  std::vector<std::string> bad;
  std::thread reader([&] {
    auto r = MustConnect(endpoints_.pg_dsn);
    while (!stop.load()) {
      auto rows = r.Query("select case when to_regclass('" + t + "') is null then 'none' end");
      std::string seen = rows.ok() ? rows.value().rows[0][0].value_or("") : "";
      if (seen != "none") {
        auto counted =
            r.Query("select count(*)::text || ' ' || coalesce(sum(orders), 0)::text from " + t);
        // Dropped between the two statements (a swap) is no partial table either.
        seen = counted.ok() ? counted.value().rows[0][0].value_or("") : groups + " " + orders;
      } else {
        ++absent;
        seen = groups + " " + orders;
      }
      if (seen != groups + " " + orders && bad.size() < 5) bad.push_back(seen);
      ++polls;
    }
  });
  // The writer is paced (40 rows a statement, at most 100 statements a second): unpaced,
  // it wrote faster than a sanitizer build applies, and the fill never ended.
  std::thread writer([&] {
    auto w = MustConnect(endpoints_.pg_dsn);
    for (int i = 0; !stop.load(); ++i) {
      MustExecute(w, "update " + o + " set amount = amount + 1 where id % 10000 = " +
                         std::to_string(i % 10000));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // pace, not a wait
    }
  });
  const std::string fill = "mirror " + o;
  auto recorded_after = [&] {
    return Scalar(*sql_,
                  "select coalesce((select definition::json->>'after' from pgderive.views where "
                  "pipeline = '" +
                      pipeline_ + "' and view = '" + fill + "'), '')");
  };
  std::string resumed_after;
  for (int round = 0; round < 2; ++round) {
    StartRun(config, "run" + std::to_string(round) + ".err");
    // Its first fill (the second round: resumed after a crash): not ready, naming the view.
    std::string body;
    EXPECT_TRUE(WaitFor([&] {
      auto [code, text] = Http("/readyz");
      body = text;
      return code == 503 &&
             text.find("view totals (store warehouse) is in its first fill") != std::string::npos;
    })) << body;
    // Killed once the orders' mirror has recorded a chunk (after the one it had).
    const std::string was = recorded_after();
    ASSERT_TRUE(WaitFor(
        [&] {
          const std::string now = recorded_after();
          return !now.empty() && now != was;
        },
        std::chrono::seconds(120)))
        << RunLog();
    run_->Signal(SIGKILL);
    run_->Wait(std::chrono::seconds(20));
    resumed_after = recorded_after();
    EXPECT_EQ(Scalar(*sql_, "select to_regclass('" + t + "') is null"), "t");
  }
  StartRun(config, "run2.err");
  // The rest of 400,000 rows under the writer: minutes on a loaded two-core machine.
  deadline_ = std::chrono::seconds(300);
  // (The log is JSON lines: the key's quotes are escaped in it.)
  const std::string resuming = nlohmann::json("the mirror of " + o +
                                              " in store warehouse was being backfilled: "
                                              "resuming after " +
                                              resumed_after)
                                   .dump();
  EXPECT_TRUE(WaitLog("run2.err", resuming)) << resuming << RunLog();
  EXPECT_TRUE(WaitLog("run2.err",
                      "\"msg\":\"backfill done\",\"store\":\"warehouse\","
                      "\"views\":\"" +
                          fill + "\""))
      << RunLog();
  EXPECT_TRUE(WaitFor([&] {
    return Scalar(*sql_, "select to_regclass('" + t + "') is null") == "f";
  })) << RunLog();
  WaitReady(std::chrono::seconds(120));  // the first fill over
  const int seen = polls.load();
  EXPECT_TRUE(WaitFor([&] { return polls.load() > seen + 20; }));
  stop.store(true);
  writer.join();
  reader.join();
  EXPECT_TRUE(bad.empty()) << "the reader saw: " << bad.front() << " (expected " << groups << " "
                           << orders << ")";
  EXPECT_GT(absent.load(), 0);
  auto [status, out] = Verify(config);
  EXPECT_EQ(status, 0) << out << RunLog();
  // Read after the restart: what follows the key it resumed after (the writer changes
  // no key), never the rows before it again.
  std::istringstream lines(RunLog());
  std::optional<nlohmann::json> done;
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("msg", "") == "backfill done" && j.value("views", "") == fill) {
      done = j;
    }
  }
  ASSERT_TRUE(done) << RunLog();
  const std::string first_key =
      nlohmann::json::parse(resumed_after).at(0).get<std::string>();  // ["49152"]
  const uint64_t following =
      std::stoull(Scalar(*sql_, "select count(*) from " + o + " where id > " + first_key));
  const uint64_t read = std::stoull(done->value("rows", "0"));
  // At most the chunks in flight (4 of at most 16,384 rows) read again.
  EXPECT_GE(read, following) << done->dump();
  EXPECT_LE(read, following + 4 * 16384) << done->dump();
  EXPECT_EQ(Shadows(), "0");
  StopRun();
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

// A rebuild never drops what depends on the live table beyond SQL views (here a foreign
// key referencing it and a publication holding it), nor a table of the view's name that
// pgderive did not make (replaced by hand while pgderive was stopped): it refuses, naming
// the table and what depends on it; the store stops (the view failed, /readyz 503, the
// log), and the table and its dependents are left as they were.
TEST_F(RunPostgresTest, ARebuildRefusesToDropATableWithDependentsOrNotItsOwn) {
  const std::string t = ns_ + "_out.big_orders";
  CleanupSql("drop publication if exists " + ns_ + "_pub");
  const std::string config = WriteConfig(View("big_orders", "id",
                                              "select id, amount from " + ns_ +
                                                  ".orders where "
                                                  "amount > 100"));
  StartRun(config);
  WaitReady(std::chrono::seconds(120));
  ASSERT_FALSE(HasFatalFailure());
  const std::string rows = Scalar(*sql_, "select count(*) from " + t);
  MustExecute(*sql_, "create table " + ns_ + "_out.refs (id int references " + t + " (id))");
  MustExecute(*sql_, "insert into " + ns_ + "_out.refs values (200)");
  MustExecute(*sql_, "create publication " + ns_ + "_pub for table " + t);
  auto [code, out] = Command(
      {PgderiveBinary(), "backfill", "-c", config, "--view", "big_orders", "--timeout", "20"});
  EXPECT_NE(code, 0) << out;
  ASSERT_TRUE(WaitFor([&] { return ViewStatus("big_orders").value("state", "") == "failed"; }))
      << RunErr();
  const std::string why = "view big_orders: the rebuild would drop table " + t;
  EXPECT_NE(RunErr().find(why), std::string::npos) << RunErr();
  EXPECT_NE(RunErr().find("constraint refs_id_fkey on table " + ns_ + "_out.refs"),
            std::string::npos)
      << RunErr();
  EXPECT_NE(RunErr().find("publication of table " + t + " in publication " + ns_ + "_pub"),
            std::string::npos)
      << RunErr();
  auto [ready, body] = Http("/readyz");
  EXPECT_EQ(ready, 503);
  EXPECT_NE(body.find("warehouse"), std::string::npos) << body;
  EXPECT_EQ(Scalar(*sql_, "select count(*) from " + t), rows);
  EXPECT_EQ(Scalar(*sql_, "select count(*) from " + ns_ + "_out.refs"), "1");
  EXPECT_EQ(Scalar(*sql_,
                   "select count(*) from pg_publication_rel where prrelid = '" + t + "'::regclass"),
            "1");
  StopRun(std::chrono::seconds(30));

  // The dependents gone, and the table replaced by hand while stopped: not pgderive's.
  MustExecute(*sql_, "drop table " + ns_ + "_out.refs");
  MustExecute(*sql_, "drop publication " + ns_ + "_pub");
  MustExecute(*sql_, "drop table " + t);
  MustExecute(*sql_, "create table " + t + " (id int primary key, amount numeric)");
  MustExecute(*sql_, "insert into " + t + " values (1, 42)");
  StartRun(config, "run2.err");
  ASSERT_TRUE(WaitLog("run2.err", "streaming from slot")) << Read("run2.err");
  auto [again, again_out] = Command(
      {PgderiveBinary(), "backfill", "-c", config, "--view", "big_orders", "--timeout", "20"});
  EXPECT_NE(again, 0) << again_out;
  ASSERT_TRUE(WaitFor([&] { return ViewStatus("big_orders").value("state", "") == "failed"; }))
      << Read("run2.err");
  EXPECT_NE(Read("run2.err").find("view big_orders: table " + t), std::string::npos)
      << Read("run2.err");
  EXPECT_NE(Read("run2.err").find("is not the table pgderive made for the view"), std::string::npos)
      << Read("run2.err");
  EXPECT_EQ(Scalar(*sql_, "select amount from " + t + " where id = 1"), "42");
  StopRun(std::chrono::seconds(30));
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

// A view whose query fails only on the filled rows (division by zero for one row;
// validate's checks pass): its store stops with an error naming the view, never serving
// a table for it, while the other stores fill and stream; teardown --views then removes
// what the run made, and only that.
TEST_F(RunPostgresTest, AQueryThatFailsOnTheFilledRowsStopsItsStoreAloneNamingTheView) {
  PGDERIVE_REQUIRE_STACK();
  const std::string o = ns_ + ".orders";
  MustExecute(*sql_, "create schema " + ns_ + "_out");
  MustExecute(*sql_, "create table " + ns_ + "_out.keep (id int)");  // not this run's
  const std::string index = ns_ + "_orders";
  CleanupIndex(index);
  const std::string path = (dir_ / "mv.yml").string();
  std::ofstream(path) << "pipeline: " << pipeline_ << "\nsource:\n  dsn: " << endpoints_.pg_dsn
                      << "\nstores:\n  warehouse:\n    type: postgres\n    dsn: "
                      << endpoints_.pg_dsn
                      << "\n  cache:\n    type: redis\n    url: " << stack.redis_url()
                      << "\n  search:\n    type: opensearch\n    url: " << stack.opensearch_url()
                      << "\nhttp:\n  listen: 127.0.0.1:" << port_ << "\nviews:\n"
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
  StartRun(path);
  EXPECT_TRUE(WaitLog("run.err", "its query failed on the filled mirrors")) << RunErr();
  const std::string err = RunErr();
  EXPECT_NE(err.find("view inv"), std::string::npos) << err;
  EXPECT_NE(err.find("division by zero"), std::string::npos) << err;
  EXPECT_TRUE(WaitFor([&] { return ViewStatus("inv").value("state", "") == "failed"; }))
      << Status().dump();
  EXPECT_EQ(Scalar(*sql_, "select to_regclass('" + ns_ + "_out.inv') is null"), "t");
  for (const std::string view : {"orders_cache", "orders_search"}) {
    auto [code, out] =
        testing::RunToEnd({PgderiveBinary(), "verify", "-c", path, "--view", view, "--wait", "60"},
                          (dir_ / "verify.err").string(), std::chrono::seconds(120));
    EXPECT_EQ(code, 0) << view << ": " << out << RunErr();
  }
  run_->Signal(SIGTERM);
  run_->Wait(std::chrono::seconds(20));
  run_.reset();
  auto [code, text] = testing::RunToEnd({PgderiveBinary(), "teardown", "-c", path, "--views"},
                                        (dir_ / "teardown.err").string(), std::chrono::seconds(60));
  EXPECT_EQ(code, 0) << text;
  EXPECT_EQ(Scalar(*sql_,
                   "select count(*) from pg_replication_slots where slot_name = "
                   "'pgderive_" +
                       pipeline_ + "'"),
            "0");
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
}

}  // namespace
}  // namespace pgderive
