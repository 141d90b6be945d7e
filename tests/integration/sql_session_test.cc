// The SQL session adapter (cdc/sql_session.h) against PostgreSQL 15 from compose/local:
// the pinned session settings, parameters, transactions committed and rolled back, COPY,
// the kind of each error, and that a refused password is never quoted back.
#include "cdc/sql_session.h"

#include <gtest/gtest.h>

#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using testing::UniqueName;

SqlSession MustSession(const std::string& dsn) {
  auto session = SqlSession::Connect(dsn, "pgderive-session-test");
  if (!session.ok()) throw std::runtime_error(session.error().ToString());
  return std::move(session).value();
}

std::string Scalar(SqlRunner& sql, const std::string& query, const SqlParams& params = {}) {
  auto rows = sql.Query(query, params);
  if (!rows.ok()) throw std::runtime_error(query + ": " + rows.error().ToString());
  return rows.value().rows.at(0).at(0).value_or("<null>");
}

TEST(SqlSessionIntegrationTest, SessionIsPinned) {
  PGDERIVE_REQUIRE_STACK();
  SqlSession sql = MustSession(stack.pg_dsn());
  EXPECT_TRUE(sql.is_open());
  EXPECT_GE(sql.server_version(), 150000);
  EXPECT_EQ(Scalar(sql, "show TimeZone"), "UTC");
  EXPECT_EQ(Scalar(sql, "show DateStyle"), "ISO, MDY");
  EXPECT_EQ(Scalar(sql, "show extra_float_digits"), "3");
  EXPECT_EQ(Scalar(sql, "show IntervalStyle"), "postgres");
  EXPECT_EQ(Scalar(sql, "show bytea_output"), "hex");
  EXPECT_EQ(Scalar(sql, "show application_name"), "pgderive-session-test");
  EXPECT_EQ(Scalar(sql, "select '2024-02-29 13:45:00+01'::timestamptz::text"),
            "2024-02-29 12:45:00+00");
}

TEST(SqlSessionIntegrationTest, ParametersAndNulls) {
  PGDERIVE_REQUIRE_STACK();
  SqlSession sql = MustSession(stack.pg_dsn());
  auto rows = sql.Query("select $1::text, $2::int + 1, $3::text is null, length($4)",
                        {"it's a \"quote\" \\ ; drop table x", "41", std::nullopt, "é"});
  ASSERT_TRUE(rows.ok()) << rows.error().ToString();
  ASSERT_EQ(rows.value().rows.size(), 1u);
  const auto& row = rows.value().rows[0];
  EXPECT_EQ(row[0], "it's a \"quote\" \\ ; drop table x");
  EXPECT_EQ(row[1], "42");
  EXPECT_EQ(row[2], "t");
  EXPECT_EQ(row[3], "1");
  EXPECT_EQ(rows.value().columns.size(), 4u);

  auto nulls = sql.Query("select null::text as a, ''::text as b");
  ASSERT_TRUE(nulls.ok());
  EXPECT_EQ(nulls.value().columns, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(nulls.value().rows[0][0], std::nullopt);
  EXPECT_EQ(nulls.value().rows[0][1], std::optional<std::string>(""));

  // Without parameters, several statements run as one command (simple protocol).
  ASSERT_TRUE(sql.Execute("select 1; select 2").ok());
  EXPECT_EQ(Scalar(sql, "select 1; select 2"), "2");
  EXPECT_EQ(Scalar(sql,
                   "select string_agg(v, '|' order by n) from unnest($1::text[]) with "
                   "ordinality t(v, n)",
                   {SqlTextArray({"\"s\".\"t,u\"", "back\\slash", "{}", ""})}),
            "\"s\".\"t,u\"|back\\slash|{}|");
  EXPECT_EQ(sql.QuoteIdentifier("a\"b"), "\"a\"\"b\"");
  EXPECT_EQ(Scalar(sql, "select " + sql.QuoteLiteral("it's \\ x")), "it's \\ x");
}

TEST(SqlSessionIntegrationTest, TransactionsCommitOrRollBack) {
  PGDERIVE_REQUIRE_STACK();
  SqlSession sql = MustSession(stack.pg_dsn());
  const std::string table = UniqueName("session_tx");
  ASSERT_TRUE(sql.Execute("create table " + table + " (id int primary key, v text)").ok());
  {
    auto tx = sql.Begin();
    ASSERT_TRUE(tx.ok()) << tx.error().ToString();
    ASSERT_TRUE(
        tx.value().Execute("insert into " + table + " values ($1, $2)", {"1", "dropped"}).ok());
    EXPECT_EQ(Scalar(tx.value(), "select count(*) from " + table), "1");
  }  // not committed: rolled back
  EXPECT_EQ(Scalar(sql, "select count(*) from " + table), "0");
  {
    auto tx = sql.Begin(SqlSession::Isolation::kRepeatableRead);
    ASSERT_TRUE(tx.ok()) << tx.error().ToString();
    EXPECT_EQ(Scalar(tx.value(), "show transaction_isolation"), "repeatable read");
    ASSERT_TRUE(tx.value().Execute("insert into " + table + " values (2, 'kept')").ok());
    ASSERT_TRUE(tx.value().Commit().ok());
    EXPECT_FALSE(tx.value().Commit().ok());  // once only
  }
  EXPECT_EQ(Scalar(sql, "select v from " + table + " where id = 2"), "kept");
  {
    auto tx = sql.Begin(SqlSession::Isolation::kReadCommitted, SqlSession::Access::kReadOnly);
    ASSERT_TRUE(tx.ok());
    Status write = tx.value().Execute("insert into " + table + " values (3, 'no')");
    ASSERT_FALSE(write.ok());
    EXPECT_EQ(write.error().kind(), ErrorKind::kPermanent);
    EXPECT_NE(write.error().message().find("SQLSTATE 25006"), std::string::npos)
        << write.error().message();
  }
  // An error inside a transaction leaves the session usable once it is gone.
  {
    auto tx = sql.Begin();
    ASSERT_TRUE(tx.ok());
    EXPECT_FALSE(tx.value().Execute("insert into " + table + " values (2, 'duplicate')").ok());
  }
  EXPECT_EQ(Scalar(sql, "select count(*) from " + table), "1");
  ASSERT_TRUE(sql.Execute("drop table " + table).ok());
}

TEST(SqlSessionIntegrationTest, CopyInTextRows) {
  PGDERIVE_REQUIRE_STACK();
  SqlSession sql = MustSession(stack.pg_dsn());
  const std::string table = UniqueName("session_copy");
  ASSERT_TRUE(
      sql.Execute("create table " + table + " (id int primary key, v text, extra text)").ok());
  // A tab, a newline and a backslash escaped as COPY text does; \N is NULL.
  ASSERT_TRUE(
      sql.CopyIn(table + " (id, v)", "1\ta\\tb\n2\tline\\nbreak\n3\t\\N\n4\tback\\\\slash\n").ok());
  EXPECT_EQ(Scalar(sql, "select string_agg(coalesce(v, '<null>'), '|' order by id) from " + table),
            "a\tb|line\nbreak|<null>|back\\slash");
  {
    auto tx = sql.Begin();
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE(tx.value().CopyIn(table, "5\tfive\tx\n").ok());
    // Not committed: gone.
  }
  EXPECT_EQ(Scalar(sql, "select count(*) from " + table), "4");
  Status bad = sql.CopyIn(table + " (id, v)", "1\tduplicate\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kPermanent);
  EXPECT_NE(bad.error().message().find("SQLSTATE 23505"), std::string::npos)
      << bad.error().message();
  EXPECT_EQ(Scalar(sql, "select count(*) from " + table), "4");
  ASSERT_TRUE(sql.Execute("drop table " + table).ok());
}

TEST(SqlSessionIntegrationTest, ErrorKinds) {
  PGDERIVE_REQUIRE_STACK();
  SqlSession sql = MustSession(stack.pg_dsn());
  auto syntax = sql.Query("selec 'Sekr1tLiteral'");
  ASSERT_FALSE(syntax.ok());
  EXPECT_EQ(syntax.error().kind(), ErrorKind::kPermanent);
  EXPECT_NE(syntax.error().message().find("SQLSTATE 42601"), std::string::npos)
      << syntax.error().message();
  auto missing = sql.Query("select * from no_such_table_here where v = $1", {"Sekr1tParam"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kPermanent);
  EXPECT_NE(missing.error().message().find("no_such_table_here"), std::string::npos);
  EXPECT_EQ(missing.error().message().find("Sekr1tParam"), std::string::npos);
  EXPECT_EQ(missing.error().message().rfind("select failed", 0), 0u) << missing.error().message();
  // Several statements in one text: the first one's verb would name the wrong statement.
  auto several = sql.Query("set local work_mem = '4MB'; delete from no_such_table_here");
  ASSERT_FALSE(several.ok());
  EXPECT_EQ(several.error().message().rfind("statement failed", 0), 0u)
      << several.error().message();
  EXPECT_TRUE(sql.is_open());

  // The server ends the session: transient, and the session stays broken (never
  // silently reconnected).
  const std::string pid = Scalar(sql, "select pg_backend_pid()");
  SqlSession other = MustSession(stack.pg_dsn());
  ASSERT_EQ(Scalar(other, "select pg_terminate_backend($1::int)", {pid}), "t");
  auto lost = sql.Query("select 1");
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.error().kind(), ErrorKind::kTransient) << lost.error().ToString();
  EXPECT_FALSE(sql.is_open());
  auto again = sql.Query("select 1");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kTransient);
  EXPECT_FALSE(sql.Begin().ok());
}

TEST(SqlSessionIntegrationTest, ConnectionErrorsNeverQuoteThePassword) {
  PGDERIVE_REQUIRE_STACK();
  const std::string port = stack.Value("PGDERIVE_PG_PORT");
  auto wrong =
      SqlSession::Connect("postgresql://postgres:Wr0ngPassw0rd@127.0.0.1:" + port + "/postgres");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().kind(), ErrorKind::kTransient);
  EXPECT_NE(wrong.error().message().find("password authentication failed"), std::string::npos)
      << wrong.error().message();
  EXPECT_EQ(wrong.error().message().find("Wr0ngPassw0rd"), std::string::npos);

  auto kv = SqlSession::Connect("host=127.0.0.1 port=" + port +
                                " user=postgres password='Wr0ng Passw0rd' dbname=postgres");
  ASSERT_FALSE(kv.ok());
  EXPECT_EQ(kv.error().message().find("Wr0ng"), std::string::npos) << kv.error().message();

  auto refused = SqlSession::Connect("postgresql://postgres:Sekr1t@127.0.0.1:1/postgres");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind(), ErrorKind::kTransient);
  EXPECT_EQ(refused.error().message().find("Sekr1t"), std::string::npos);

  auto bad = SqlSession::Connect("host=127.0.0.1 bogus_option=1 password=Sekr1t");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kPermanent);
  EXPECT_NE(bad.error().message().find("bogus_option"), std::string::npos);
  EXPECT_EQ(bad.error().message().find("Sekr1t"), std::string::npos);
}

}  // namespace
}  // namespace pgderive
