// PostgreSQL 15 from compose/local: a logical replication slot with pgoutput is created
// over the replication protocol, its exported snapshot is usable from another session,
// the slot decodes what committed after it, and it is dropped again.
#include <gtest/gtest.h>

#include "cdc/pg_connection.h"
#include "tests/support/pg.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using testing::MustConnect;
using testing::MustExecute;
using testing::Scalar;
using testing::UniqueName;

TEST(PostgresIntegrationTest, ServerIsLogicalAndSessionIsPinned) {
  PGDERIVE_REQUIRE_STACK();
  PgConnection sql = MustConnect(stack.pg_dsn(), PgConnection::Mode::kSql);
  EXPECT_GE(sql.server_version(), 150000);
  EXPECT_EQ(Scalar(sql, "show wal_level"), "logical");
  EXPECT_EQ(Scalar(sql, "show TimeZone"), "UTC");
  EXPECT_EQ(Scalar(sql, "show DateStyle"), "ISO, MDY");
  EXPECT_EQ(Scalar(sql, "show extra_float_digits"), "3");
  EXPECT_EQ(Scalar(sql, "select '2024-02-29 13:45:00+01'::timestamptz::text"),
            "2024-02-29 12:45:00+00");
}

TEST(PostgresIntegrationTest, CreatesUsesAndDropsPgoutputSlot) {
  PGDERIVE_REQUIRE_STACK();
  PgConnection sql = MustConnect(stack.pg_dsn(), PgConnection::Mode::kSql);
  const std::string table = UniqueName("slot_src");
  const std::string publication = UniqueName("pub");
  const std::string slot = UniqueName("pgderive_test");
  ASSERT_TRUE(sql.Execute("create table " + table + " (id int primary key, v text)").ok());
  ASSERT_TRUE(
      sql.Execute("insert into " + table + " select g, 'row ' || g from generate_series(1, 3) g")
          .ok());
  ASSERT_TRUE(sql.Execute("create publication " + publication + " for table " + table).ok());

  PgConnection repl = MustConnect(stack.pg_dsn(), PgConnection::Mode::kReplication);
  auto identity = repl.IdentifySystem();
  ASSERT_TRUE(identity.ok()) << identity.error().ToString();
  EXPECT_FALSE(identity.value().systemid.empty());
  EXPECT_GE(identity.value().timeline, 1u);
  EXPECT_TRUE(identity.value().xlogpos.IsValid());
  EXPECT_EQ(identity.value().dbname, "postgres");

  auto created =
      repl.CreateLogicalSlot(slot, "pgoutput", /*temporary=*/false, SlotSnapshot::kExport);
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  EXPECT_EQ(created.value().slot_name, slot);
  EXPECT_EQ(created.value().output_plugin, "pgoutput");
  ASSERT_TRUE(created.value().snapshot_name.has_value());
  EXPECT_GE(created.value().consistent_point, identity.value().xlogpos);

  // Two rows commit after the slot's consistent point: the exported snapshot must not
  // see them, the slot must decode exactly them.
  ASSERT_TRUE(sql.Execute("insert into " + table + " values (4, 'four'), (5, 'five')").ok());

  PgConnection reader = MustConnect(stack.pg_dsn(), PgConnection::Mode::kSql);
  ASSERT_TRUE(reader.Execute("begin isolation level repeatable read").ok());
  ASSERT_TRUE(reader
                  .Execute("set transaction snapshot " +
                           reader.QuoteLiteral(*created.value().snapshot_name))
                  .ok());
  EXPECT_EQ(Scalar(reader, "select count(*) from " + table), "3");
  ASSERT_TRUE(reader.Execute("commit").ok());

  // Any next command on the walsender ends the snapshot export.
  ASSERT_TRUE(repl.IdentifySystem().ok());
  EXPECT_EQ(
      Scalar(sql, "select plugin || '/' || slot_type from pg_replication_slots where slot_name = " +
                      sql.QuoteLiteral(slot)),
      "pgoutput/logical");
  // 'I' (73) is pgoutput's Insert message.
  EXPECT_EQ(Scalar(sql, "select count(*) from pg_logical_slot_peek_binary_changes(" +
                            sql.QuoteLiteral(slot) +
                            ", NULL, NULL, 'proto_version', '1', 'publication_names', " +
                            sql.QuoteLiteral(publication) + ") where get_byte(data, 0) = 73"),
            "2");

  // A second slot of the same name is refused, permanently, naming the slot.
  auto duplicate = repl.CreateLogicalSlot(slot, "pgoutput", false, SlotSnapshot::kNoExport);
  ASSERT_FALSE(duplicate.ok());
  EXPECT_EQ(duplicate.error().kind(), ErrorKind::kPermanent);
  EXPECT_NE(duplicate.error().message().find("already exists"), std::string::npos)
      << duplicate.error().message();

  ASSERT_TRUE(repl.DropSlot(slot, /*wait=*/true).ok());
  EXPECT_EQ(Scalar(sql, "select count(*) from pg_replication_slots where slot_name = " +
                            sql.QuoteLiteral(slot)),
            "0");
  ASSERT_TRUE(sql.Execute("drop publication " + publication).ok());
  ASSERT_TRUE(sql.Execute("drop table " + table).ok());
}

TEST(PostgresIntegrationTest, TemporarySlotVanishesWithItsSession) {
  PGDERIVE_REQUIRE_STACK();
  PgConnection sql = MustConnect(stack.pg_dsn(), PgConnection::Mode::kSql);
  const std::string slot = UniqueName("pgderive_tmp");
  {
    PgConnection repl = MustConnect(stack.pg_dsn(), PgConnection::Mode::kReplication);
    auto created =
        repl.CreateLogicalSlot(slot, "pgoutput", /*temporary=*/true, SlotSnapshot::kNoExport);
    ASSERT_TRUE(created.ok()) << created.error().ToString();
    EXPECT_FALSE(created.value().snapshot_name.has_value());
    EXPECT_EQ(Scalar(sql, "select temporary::text from pg_replication_slots where slot_name = " +
                              sql.QuoteLiteral(slot)),
              "true");
  }
  // The walsender releases a temporary slot when its connection ends; wait for it with
  // a deadline rather than a sleep.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::string count;
  do {
    count = Scalar(sql, "select count(*) from pg_replication_slots where slot_name = " +
                            sql.QuoteLiteral(slot));
  } while (count != "0" && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(count, "0");
}

TEST(PostgresIntegrationTest, ConnectionErrorsNeverQuoteThePassword) {
  PGDERIVE_REQUIRE_STACK();
  const std::string dsn =
      "postgresql://postgres:Wr0ngPassw0rd@127.0.0.1:" + stack.Value("PGDERIVE_PG_PORT") +
      "/postgres";
  auto conn = PgConnection::Connect(dsn, PgConnection::Mode::kSql);
  ASSERT_FALSE(conn.ok());
  EXPECT_NE(conn.error().message().find("password authentication failed"), std::string::npos)
      << conn.error().message();
  EXPECT_EQ(conn.error().message().find("Wr0ngPassw0rd"), std::string::npos);

  auto bad = PgConnection::Connect("host=127.0.0.1 bogus_option=1 password=Sekr1t",
                                   PgConnection::Mode::kSql);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().kind(), ErrorKind::kPermanent);
  EXPECT_NE(bad.error().message().find("bogus_option"), std::string::npos) << bad.error().message();
  EXPECT_EQ(bad.error().message().find("Sekr1t"), std::string::npos);
}

}  // namespace
}  // namespace pgderive
