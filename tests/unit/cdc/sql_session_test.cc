// The pure parts of the SQL session adapter: the connection string every session
// connects with, how an SQLSTATE is classified, table names.
#include "cdc/sql_session.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

TEST(SqlSessionTest, ConnectionStringKeepsTheDsnAndPinsTheSession) {
  auto text = SessionConnectionString("postgresql://u:pw@db.example:5433/app?sslmode=disable",
                                      "pgderive-test");
  ASSERT_TRUE(text.ok()) << text.error().ToString();
  const std::string& s = text.value();
  EXPECT_NE(s.find("host='db.example'"), std::string::npos) << s;
  EXPECT_NE(s.find("port='5433'"), std::string::npos) << s;
  EXPECT_NE(s.find("dbname='app'"), std::string::npos) << s;
  EXPECT_NE(s.find("user='u'"), std::string::npos) << s;
  EXPECT_NE(s.find("sslmode='disable'"), std::string::npos) << s;
  EXPECT_NE(s.find("options='-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3 "
                   "-c IntervalStyle=postgres -c bytea_output=hex'"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("application_name='pgderive-test'"), std::string::npos) << s;
}

TEST(SqlSessionTest, ConnectionStringReplacesTheDsnsOptionsAndName) {
  auto text = SessionConnectionString(
      "host=h dbname=d options='-c TimeZone=Europe/Paris' application_name=other replication=1",
      "mine");
  ASSERT_TRUE(text.ok()) << text.error().ToString();
  const std::string& s = text.value();
  EXPECT_EQ(s.find("Europe/Paris"), std::string::npos) << s;
  EXPECT_EQ(s.find("other"), std::string::npos) << s;
  EXPECT_EQ(s.find("replication"), std::string::npos) << s;
  EXPECT_NE(s.find("application_name='mine'"), std::string::npos) << s;
}

TEST(SqlSessionTest, ConnectionStringQuotesValues) {
  auto text = SessionConnectionString(R"(host=h password='a b\'c\\d')", "it's");
  ASSERT_TRUE(text.ok()) << text.error().ToString();
  EXPECT_NE(text.value().find(R"(password='a b\'c\\d')"), std::string::npos) << text.value();
  EXPECT_NE(text.value().find(R"(application_name='it\'s')"), std::string::npos) << text.value();
}

TEST(SqlSessionTest, UnparsableDsnIsPermanentAndNeverQuotesThePassword) {
  auto bad = SessionConnectionString("host=127.0.0.1 bogus_option=1 password=Sekr1t", "x");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kPermanent);
  EXPECT_NE(bad.error().message().find("bogus_option"), std::string::npos) << bad.error().message();
  EXPECT_EQ(bad.error().message().find("Sekr1t"), std::string::npos);

  auto uri = SessionConnectionString("postgresql://u:Sekr1t@h/db?bogus=1", "x");
  ASSERT_FALSE(uri.ok());
  EXPECT_EQ(uri.error().kind(), ErrorKind::kPermanent);
  EXPECT_EQ(uri.error().message().find("Sekr1t"), std::string::npos) << uri.error().message();
}

TEST(SqlSessionTest, SqlStateKinds) {
  EXPECT_EQ(SqlStateKind("08006"), ErrorKind::kTransient);  // connection failure
  EXPECT_EQ(SqlStateKind("40001"), ErrorKind::kTransient);  // serialization failure
  EXPECT_EQ(SqlStateKind("40P01"), ErrorKind::kTransient);  // deadlock
  EXPECT_EQ(SqlStateKind("53300"), ErrorKind::kTransient);  // too many connections
  EXPECT_EQ(SqlStateKind("57P01"), ErrorKind::kTransient);  // admin shutdown
  EXPECT_EQ(SqlStateKind(""), ErrorKind::kTransient);       // no server answer
  EXPECT_EQ(SqlStateKind("42601"), ErrorKind::kPermanent);  // syntax error
  EXPECT_EQ(SqlStateKind("23505"), ErrorKind::kPermanent);  // unique violation
  EXPECT_EQ(SqlStateKind("42P01"), ErrorKind::kPermanent);  // undefined table
  EXPECT_EQ(SqlStateKind("57014"), ErrorKind::kPermanent);  // query canceled
}

TEST(SqlSessionTest, TextArrayLiterals) {
  EXPECT_EQ(SqlTextArray({}), "{}");
  EXPECT_EQ(SqlTextArray({"a", ""}), R"({"a",""})");
  EXPECT_EQ(SqlTextArray({R"("s"."t,u")", R"(back\slash)"}), R"({"\"s\".\"t,u\"","back\\slash"})");
}

}  // namespace
}  // namespace pgderive
