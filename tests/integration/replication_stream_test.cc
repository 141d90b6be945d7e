// START_REPLICATION on PostgreSQL 15: changes arrive decoded and in order, and the
// slot's confirmed_flush_lsn moves only to what the consumer acknowledged.
#include "cdc/replication_stream.h"

#include <gtest/gtest.h>

#include "cdc/pgoutput.h"
#include "tests/support/pg.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using testing::MustConnect;
using testing::MustExecute;
using testing::Scalar;
using testing::UniqueName;

class ReplicationStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGDERIVE_REQUIRE_STACK();
    dsn_ = stack.pg_dsn();
    sql_ = std::make_unique<PgConnection>(MustConnect(dsn_, PgConnection::Mode::kSql));
    table_ = UniqueName("stream_src");
    publication_ = UniqueName("stream_pub");
    slot_ = UniqueName("stream_slot");
    ASSERT_TRUE(
        sql_->Execute("create table " + table_ + " (id int primary key, v text, n numeric)").ok());
    ASSERT_TRUE(sql_->Execute("create publication " + publication_ + " for table " + table_).ok());
    PgConnection repl = MustConnect(dsn_, PgConnection::Mode::kReplication);
    auto slot = repl.CreateLogicalSlot(slot_, "pgoutput", false, SlotSnapshot::kNoExport);
    ASSERT_TRUE(slot.ok()) << slot.error().ToString();
    start_ = slot.value().consistent_point;
  }

  void TearDown() override {
    if (sql_ == nullptr) return;
    stream_.reset();  // ends the walsender, which releases the slot
    auto repl = PgConnection::Connect(dsn_, PgConnection::Mode::kReplication);
    if (repl.ok()) IgnoreError(repl.value().DropSlot(slot_, /*wait=*/true), "test cleanup");
    IgnoreError(sql_->Execute("drop publication if exists " + publication_), "test cleanup");
    IgnoreError(sql_->Execute("drop table if exists " + table_), "test cleanup");
  }

  ReplicationStream& StartStream() {
    StreamOptions options;
    options.slot = slot_;
    options.publication = publication_;
    options.start = start_;
    options.status_interval = std::chrono::milliseconds(200);
    auto stream =
        ReplicationStream::Start(MustConnect(dsn_, PgConnection::Mode::kReplication), options);
    if (!stream.ok()) throw std::runtime_error(stream.error().ToString());
    stream_ = std::make_unique<ReplicationStream>(std::move(stream).value());
    return *stream_;
  }

  Lsn ConfirmedFlush() {
    return *Lsn::Parse(
        Scalar(*sql_, "select confirmed_flush_lsn from pg_replication_slots where slot_name = " +
                          sql_->QuoteLiteral(slot_)));
  }

  std::string dsn_, table_, publication_, slot_;
  Lsn start_;
  std::unique_ptr<PgConnection> sql_;
  std::unique_ptr<ReplicationStream> stream_;
};

TEST_F(ReplicationStreamTest, DeliversCommittedChangesInOrderAndConfirmsOnlyWhatWasAcked) {
  if (HasFatalFailure()) return;
  ReplicationStream& stream = StartStream();
  EXPECT_EQ(stream.proto_version(), 3);
  ASSERT_TRUE(sql_->Execute("begin").ok());
  ASSERT_TRUE(sql_->Execute("insert into " + table_ +
                            " values (1, 'one', 1.10), (2, 'two', 2.20), (3, NULL, NULL)")
                  .ok());
  ASSERT_TRUE(sql_->Execute("commit").ok());
  ASSERT_TRUE(sql_->Execute("update " + table_ + " set v = 'uno' where id = 1").ok());
  ASSERT_TRUE(sql_->Execute("delete from " + table_ + " where id = 2").ok());

  // Read until three commits arrived, with a deadline.
  std::string sequence;
  std::vector<std::string> values;
  std::vector<Lsn> commit_end_lsns;
  DecodeContext context;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (commit_end_lsns.size() < 3 && std::chrono::steady_clock::now() < deadline) {
    auto next = stream.Next(std::chrono::milliseconds(500));
    ASSERT_TRUE(next.ok()) << next.error().ToString();
    if (!next.value()) continue;
    auto message = DecodePgOutput(next.value()->data, context);
    ASSERT_TRUE(message.ok()) << message.error().ToString();
    std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, BeginMessage>) sequence += 'B';
          if constexpr (std::is_same_v<T, RelationMessage>) sequence += 'R';
          if constexpr (std::is_same_v<T, InsertMessage>) {
            sequence += 'I';
            values.push_back(std::string(m.new_tuple.columns[1].data));
          }
          if constexpr (std::is_same_v<T, UpdateMessage>) {
            sequence += 'U';
            values.push_back(std::string(m.new_tuple.columns[1].data));
          }
          if constexpr (std::is_same_v<T, DeleteMessage>) sequence += 'D';
          if constexpr (std::is_same_v<T, CommitMessage>) {
            sequence += 'C';
            commit_end_lsns.push_back(m.end_lsn);
          }
        },
        message.value());
  }
  // PostgreSQL may send a Relation message again before any change (whenever its
  // relation cache entry was invalidated, e.g. by autovacuum): require one before the
  // first change, and the exact order of everything else.
  ASSERT_FALSE(sequence.empty());
  EXPECT_LT(sequence.find('R'), sequence.find('I')) << sequence;
  std::string without_relations;
  for (char c : sequence) {
    if (c != 'R') without_relations += c;
  }
  EXPECT_EQ(without_relations, "BIIICBUCBDC") << sequence;
  EXPECT_EQ(values, (std::vector<std::string>{"one", "two", "", "uno"}));
  ASSERT_EQ(commit_end_lsns.size(), 3u);
  EXPECT_GE(stream.received(), commit_end_lsns[1]);

  // Nothing acknowledged: a status update the server has answered leaves the slot where
  // it started.
  ASSERT_TRUE(stream.SendStatus(/*reply_requested=*/true).ok());
  ASSERT_TRUE(stream.Next(std::chrono::milliseconds(300)).ok());
  EXPECT_EQ(ConfirmedFlush(), start_);

  // Acknowledge the first transaction only: the slot moves exactly there.
  stream.ConfirmFlushed(commit_end_lsns[0]);
  Lsn confirmed;
  const auto ack_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    ASSERT_TRUE(stream.SendStatus(true).ok());
    ASSERT_TRUE(stream.Next(std::chrono::milliseconds(100)).ok());
    confirmed = ConfirmedFlush();
  } while (confirmed != commit_end_lsns[0] && std::chrono::steady_clock::now() < ack_deadline);
  EXPECT_EQ(confirmed, commit_end_lsns[0]);
  stream.ConfirmFlushed(start_);  // never backwards
  EXPECT_EQ(stream.flushed(), commit_end_lsns[0]);
}

TEST_F(ReplicationStreamTest, UnknownSlotIsPermanent) {
  if (HasFatalFailure()) return;
  StreamOptions options;
  options.slot = "no_such_slot_" + slot_;
  options.publication = publication_;
  auto stream =
      ReplicationStream::Start(MustConnect(dsn_, PgConnection::Mode::kReplication), options);
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.error().kind(), ErrorKind::kPermanent) << stream.error().ToString();
  EXPECT_NE(stream.error().message().find("does not exist"), std::string::npos);
}

}  // namespace
}  // namespace pgderive
