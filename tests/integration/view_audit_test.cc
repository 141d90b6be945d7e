// The digest path of view comparison (sinks/common/view_audit.h) against PostgreSQL 15
// from compose/local: two relations of entries, one the source's, one the store's;
// equal ones are compared by their buckets' digests alone, and a changed, a missing and
// an extra entry are found exactly, by reading only the buckets they fall in; a
// difference that a catch-up mends before the second read is not reported.
#include "sinks/common/view_audit.h"

#include <gtest/gtest.h>

#include <set>

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

}  // namespace
}  // namespace pgderive
