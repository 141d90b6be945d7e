// The digest path of view comparison (sinks/common/view_audit.h) against PostgreSQL 15
// from compose/local: two relations of entries, one the source's, one the store's;
// equal ones are compared by their buckets' digests alone, and a changed, a missing and
// an extra entry are found exactly, by reading only the buckets they fall in; a
// difference that a catch-up mends before the second read is not reported.
#include "sinks/common/view_audit.h"

#include <gtest/gtest.h>

#include <set>

#include "snapshot/key_range.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using testing::UniqueName;

class ViewAuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGDERIVE_REQUIRE_STACK();
    auto session = SqlSession::Connect(stack.pg_dsn(), "pgderive-audit-test");
    ASSERT_TRUE(session.ok()) << session.error().ToString();
    sql_.emplace(std::move(session).value());
    source_ = UniqueName("audit_source");
    store_ = UniqueName("audit_store");
    for (const std::string& table : {source_, store_}) {
      Run("create table " + table + " (k int primary key, v text)");
      Run("insert into " + table + " select g, 'value ' || g from generate_series(1, 5000) g");
    }
  }
  void TearDown() override {
    if (!sql_) return;
    for (const std::string& table : {source_, store_}) {
      (void)sql_->Execute("drop table if exists " + table);  // test cleanup
    }
  }
  void Run(const std::string& statement) {
    Status done = sql_->Execute(statement);
    ASSERT_TRUE(done.ok()) << statement << ": " << done.error().ToString();
  }
  // The entries of `table` as EntriesSql gives them: k, e, d.
  static std::string Entries(const std::string& table) {
    return "select json_build_array(k)::text k, json_build_object('v', v)::text e, "
           "json_build_object('v', v)::text d from " +
           table;
  }
  Result<ViewAudit> Audit(const AuditOptions& options) {
    return AuditDigestView(*sql_, Entries(source_), *sql_, Entries(store_), "v", options);
  }

  std::optional<SqlSession> sql_;
  std::string source_, store_;
};

TEST_F(ViewAuditTest, EqualEntriesAreComparedByDigestsAlone) {
  auto audit = Audit({.bucket_entries = 1000});
  ASSERT_TRUE(audit.ok()) << audit.error().ToString();
  EXPECT_TRUE(audit.value().digest);
  EXPECT_EQ(audit.value().entries, 5000u);
  EXPECT_EQ(audit.value().buckets, 5u);
  EXPECT_EQ(audit.value().buckets_read, 0u);
  EXPECT_EQ(audit.value().differences, 0u);
  EXPECT_TRUE(audit.value().lines.empty());
}

TEST_F(ViewAuditTest, AChangedAMissingAndAnExtraEntryAreFoundInTheirBucketsOnly) {
  Run("update " + store_ + " set v = 'tampered' where k = 10");
  Run("delete from " + store_ + " where k = 20");
  Run("insert into " + store_ + " values (9999, 'stray')");
  auto audit = Audit({.bucket_entries = 100, .rounds = 1});
  ASSERT_TRUE(audit.ok()) << audit.error().ToString();
  EXPECT_EQ(audit.value().buckets, 50u);
  EXPECT_GE(audit.value().buckets_read, 1u);
  EXPECT_LE(audit.value().buckets_read, 3u);
  EXPECT_EQ(audit.value().entries, 5000u);
  ASSERT_EQ(audit.value().differences, 3u);
  std::set<std::string> lines(audit.value().lines.begin(), audit.value().lines.end());
  EXPECT_TRUE(lines.contains(
      R"(view v: different [10] column v: store has "tampered", source has "value 10")"))
      << ::testing::PrintToString(lines);
  EXPECT_TRUE(lines.contains("view v: missing [20]")) << ::testing::PrintToString(lines);
  EXPECT_TRUE(lines.contains("view v: extra [9999] (no such row in the source)"))
      << ::testing::PrintToString(lines);
}

TEST_F(ViewAuditTest, ADifferenceMendedBeforeTheSecondReadIsNotReported) {
  Run("update " + store_ + " set v = 'late' where k = 10");
  Run("delete from " + store_ + " where k = 20");
  int catch_ups = 0;
  // The store catches up with k = 10 (a write the first read raced with); k = 20 stays.
  auto audit =
      Audit({.rounds = 3, .catch_up = [&]() -> Status {
               ++catch_ups;
               return sql_->Execute("update " + store_ + " set v = 'value 10' where k = 10");
             }});
  ASSERT_TRUE(audit.ok()) << audit.error().ToString();
  EXPECT_EQ(catch_ups, 2);
  ASSERT_EQ(audit.value().differences, 1u);
  ASSERT_EQ(audit.value().found.size(), 1u);
  EXPECT_EQ(audit.value().found[0].key, "[20]");
  EXPECT_EQ(audit.value().found[0].kind, EntryDifference::Kind::kMissing);
}

TEST_F(ViewAuditTest, FloatsAddedInAnotherOrderAreTheSameAndAFloatChangedIsNot) {
  // The source's float is a sum in one order, the store's in another: the digests differ,
  // the bucket is read, and the entries are the same.
  auto floats = [](const std::string& table, const std::string& value) {
    return "select json_build_array(k)::text k, json_build_object('x', " + value +
           ")::text e, json_build_object('x', " + value + ")::text d from " + table;
  };
  const std::string source = floats(source_, "(0.1::float8 + 0.2::float8) * k");
  const std::string store = floats(store_, "0.3::float8 * k");
  auto same = AuditDigestView(*sql_, source, *sql_, store, "v", {.rounds = 1});
  ASSERT_TRUE(same.ok()) << same.error().ToString();
  EXPECT_EQ(same.value().differences, 0u) << ::testing::PrintToString(same.value().lines);
  EXPECT_GT(same.value().buckets_read, 0u);
  const std::string changed =
      floats(store_, "case when k = 7 then 0.31 * k else 0.3::float8 * k end");
  auto differs = AuditDigestView(*sql_, source, *sql_, changed, "v", {.rounds = 1});
  ASSERT_TRUE(differs.ok()) << differs.error().ToString();
  ASSERT_EQ(differs.value().differences, 1u);
  EXPECT_EQ(differs.value().found[0].key, "[7]");
}

// A store key that reads back to a row key is looked up in the source; one whose value
// is not in its type's own text form is not a key a row makes, though a row has that
// value: absent too.
TEST_F(ViewAuditTest, AbsentKeysAreThoseWithoutARowOrNotInTheirTypesOwnText) {
  Run("create table " + source_ + "_c (k int, c char(3), primary key (k, c))");
  Run("insert into " + source_ + "_c values (1, 'a')");
  const KeyColumnList key = {{"k", "integer"}, {"c", "character(3)"}};
  auto absent = AbsentKeys(
      *sql_, source_ + "_c", key,
      {{"1", "a  "}, {"01", "a  "}, {" 1", "a  "}, {"2", "a  "}, {"1", "a"}, {"x", "a  "}});
  Run("drop table " + source_ + "_c");
  ASSERT_TRUE(absent.ok()) << absent.error().ToString();
  // "1" with its padding is the row's; "x" is no integer at all (read row by row).
  EXPECT_EQ(absent.value(), (std::vector<size_t>{1, 2, 3, 4, 5}));
}

// A backfill's "of ~N rows" for a table never analyzed: pg_class.reltuples says -1 (the
// backfill showed "N of ~N rows (99.9%)" while a fifth was done); its size and its rows'
// width give the count within a tenth.
TEST_F(ViewAuditTest, EstimateTableCountsATableNeverAnalyzedByItsSize) {
  const std::string table = source_ + "_na";
  Run("create table " + table + " (k int primary key, v text) with (autovacuum_enabled = off)");
  Run("insert into " + table + " select g, repeat('v', 200) from generate_series(1, 100000) g");
  auto reltuples =
      sql_->Query("select reltuples::bigint from pg_class where oid = '" + table + "'::regclass");
  auto planned = EstimateTable(*sql_, table);
  Run("drop table " + table);
  ASSERT_TRUE(reltuples.ok()) << reltuples.error().ToString();
  EXPECT_EQ(reltuples.value().rows.at(0).at(0), "-1");
  ASSERT_TRUE(planned.ok()) << planned.error().ToString();
  EXPECT_GE(planned.value().rows, 90000u);
  EXPECT_LE(planned.value().rows, 110000u);
  EXPECT_GT(planned.value().row_bytes, 200u);
}

}  // namespace
}  // namespace pgderive
