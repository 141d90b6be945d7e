// The pgoutput decoder against bytes captured from PostgreSQL 15
// (tests/capture/capture_pgoutput.sh; the workload is in that script).
#include "cdc/pgoutput.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "tests/support/fixtures.h"

namespace pgderive {
namespace {

using testing::CapturedMessage;
using testing::LoadCapture;

// A capture decoded in order. The captured bytes live as long as the test process, so
// the views inside the messages stay valid.
struct Decoded {
  std::vector<CapturedMessage> raw;
  std::vector<PgOutputMessage> messages;
};

const Decoded& DecodeCapture(const std::string& file) {
  static std::map<std::string, Decoded> cache;
  auto [it, inserted] = cache.try_emplace(file);
  Decoded& decoded = it->second;
  if (!inserted) return decoded;
  decoded.raw = LoadCapture("pgoutput/" + file);
  DecodeContext context;
  for (size_t i = 0; i < decoded.raw.size(); ++i) {
    auto message = DecodePgOutput(decoded.raw[i].bytes, context);
    if (!message.ok()) {
      ADD_FAILURE() << file << " message " << i << " at " << decoded.raw[i].lsn << ": "
                    << message.error().ToString();
      continue;
    }
    if (std::holds_alternative<StreamStartMessage>(message.value())) context.in_stream = true;
    if (std::holds_alternative<StreamStopMessage>(message.value())) context.in_stream = false;
    decoded.messages.push_back(std::move(message).value());
  }
  return decoded;
}

template <typename T>
std::vector<const T*> All(const Decoded& decoded) {
  std::vector<const T*> out;
  for (const PgOutputMessage& m : decoded.messages) {
    if (const T* typed = std::get_if<T>(&m)) out.push_back(typed);
  }
  return out;
}

const RelationMessage& RelationNamed(const Decoded& decoded, std::string_view relname) {
  for (const RelationMessage* r : All<RelationMessage>(decoded)) {
    if (r->relname == relname) return *r;
  }
  throw std::runtime_error("no Relation message for " + std::string(relname));
}

std::string Text(const TupleValue& value) {
  EXPECT_EQ(value.kind, TupleValueKind::kText);
  return std::string(value.data);
}

class PgOutputCaptureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PgOutputCaptureTest, EveryMessageDecodes) {
  const Decoded& decoded = DecodeCapture(GetParam());
  EXPECT_GT(decoded.raw.size(), 2000u);
  EXPECT_EQ(decoded.messages.size(), decoded.raw.size());
}

TEST_P(PgOutputCaptureTest, TransactionsAreBracketedAndOrdered) {
  const Decoded& decoded = DecodeCapture(GetParam());
  // Outside streaming, every Begin is closed by a Commit whose commit_lsn is the
  // Begin's final_lsn, and commit LSNs only grow.
  std::optional<Lsn> open_final_lsn;
  Lsn last_commit;
  size_t commits = 0;
  for (const PgOutputMessage& m : decoded.messages) {
    if (const auto* begin = std::get_if<BeginMessage>(&m)) {
      ASSERT_FALSE(open_final_lsn.has_value()) << "nested Begin";
      open_final_lsn = begin->final_lsn;
      EXPECT_NE(begin->xid.value, 0u);
    } else if (const auto* commit = std::get_if<CommitMessage>(&m)) {
      ASSERT_TRUE(open_final_lsn.has_value()) << "Commit without Begin";
      EXPECT_EQ(commit->commit_lsn, *open_final_lsn);
      EXPECT_GT(commit->end_lsn, commit->commit_lsn);
      EXPECT_GT(commit->commit_lsn, last_commit);
      last_commit = commit->commit_lsn;
      open_final_lsn.reset();
      ++commits;
    }
  }
  EXPECT_FALSE(open_final_lsn.has_value());
  EXPECT_GE(commits, 12u);
}

TEST_P(PgOutputCaptureTest, RelationDescribesColumnsAndKey) {
  const Decoded& decoded = DecodeCapture(GetParam());
  const RelationMessage& types = RelationNamed(decoded, "cap_types");
  EXPECT_EQ(types.nspname, "public");
  EXPECT_EQ(types.replica_identity, 'd');
  ASSERT_EQ(types.attributes.size(), 25u);
  EXPECT_EQ(types.attributes[0].name, "id");
  EXPECT_TRUE(types.attributes[0].is_key());
  EXPECT_EQ(types.attributes[0].type_oid, 23u);  // int4
  EXPECT_FALSE(types.attributes[1].is_key());
  EXPECT_EQ(types.attributes[10].name, "c_varchar");
  EXPECT_EQ(types.attributes[10].type_oid, 1043u);
  EXPECT_EQ(types.attributes[10].atttypmod, 20 + 4);  // varchar(20): VARHDRSZ + 20
  EXPECT_EQ(types.attributes[22].type_oid, 1007u);    // int4[]
  EXPECT_EQ(types.attributes[24].name, "c_mood");

  EXPECT_EQ(RelationNamed(decoded, "cap_full").replica_identity, 'f');
  // With REPLICA IDENTITY FULL every column is part of the identity.
  for (const RelationAttribute& a : RelationNamed(decoded, "cap_full").attributes) {
    EXPECT_TRUE(a.is_key()) << a.name;
  }

  // The enum is announced by a Type message before the first row that uses it.
  auto type_messages = All<TypeMessage>(decoded);
  ASSERT_EQ(type_messages.size(), 1u);
  EXPECT_EQ(type_messages[0]->nspname, "public");
  EXPECT_EQ(type_messages[0]->typname, "cap_mood");
  EXPECT_EQ(type_messages[0]->type_oid, types.attributes[24].type_oid);
}

TEST_P(PgOutputCaptureTest, InsertCarriesTextValuesExactly) {
  const Decoded& decoded = DecodeCapture(GetParam());
  const RelationMessage& types = RelationNamed(decoded, "cap_types");
  std::vector<const InsertMessage*> rows;
  for (const InsertMessage* insert : All<InsertMessage>(decoded)) {
    if (insert->relation_id == types.relation_id) rows.push_back(insert);
  }
  ASSERT_EQ(rows.size(), 3u);
  const auto& row1 = rows[0]->new_tuple.columns;
  ASSERT_EQ(row1.size(), 25u);
  EXPECT_EQ(Text(row1[0]), "1");
  EXPECT_EQ(Text(row1[3]), "9223372036854775807");
  EXPECT_EQ(Text(row1[4]), "4294967295");
  EXPECT_EQ(Text(row1[7]), "12.50");
  EXPECT_EQ(Text(row1[8]), "t");
  EXPECT_EQ(Text(row1[9]), "caf\xC3\xA9 \xE2\x98\x95 \"quoted\" \\ back");
  EXPECT_EQ(Text(row1[11]), "ab ");  // char(3) is blank-padded
  EXPECT_EQ(Text(row1[15]), "{\"b\": {\"c\": null}}");
  EXPECT_EQ(Text(row1[21]), "\\x00ff10");
  EXPECT_EQ(Text(row1[22]), "{1,NULL,3}");
  EXPECT_EQ(Text(row1[23]), "{\"a b\",\"c,d\",\"e\\\"f\",NULL,\"NULL\"}");
  EXPECT_EQ(Text(row1[24]), "happy");

  const auto& row2 = rows[1]->new_tuple.columns;
  EXPECT_EQ(row2[1].kind, TupleValueKind::kNull);
  EXPECT_EQ(Text(row2[5]), "NaN");
  EXPECT_EQ(Text(row2[6]), "-Infinity");
  EXPECT_EQ(Text(row2[16]), "infinity");
  EXPECT_EQ(Text(row2[17]), "-infinity");
  EXPECT_EQ(Text(row2[23]), "{{x,y},{z,NULL}}");

  for (size_t c = 1; c < 25; ++c)
    EXPECT_EQ(rows[2]->new_tuple.columns[c].kind, TupleValueKind::kNull);
}

TEST_P(PgOutputCaptureTest, UpdateAndDeleteCarryTheOldKeyOrRow) {
  const Decoded& decoded = DecodeCapture(GetParam());
  const RelationId types = RelationNamed(decoded, "cap_types").relation_id;
  const RelationId full = RelationNamed(decoded, "cap_full").relation_id;
  const RelationId toast = RelationNamed(decoded, "cap_toast").relation_id;
  std::vector<const UpdateMessage*> updates;
  for (const UpdateMessage* u : All<UpdateMessage>(decoded)) updates.push_back(u);
  ASSERT_EQ(updates.size(), 4u);

  // Default identity, key unchanged: no old tuple.
  EXPECT_EQ(updates[0]->relation_id, types);
  EXPECT_EQ(updates[0]->old_kind, '\0');
  EXPECT_EQ(Text(updates[0]->new_tuple.columns[9]), "changed");
  // Key changed: the old key ('K'), other columns null.
  EXPECT_EQ(updates[1]->old_kind, 'K');
  EXPECT_EQ(Text(updates[1]->old_tuple.columns[0]), "2");
  EXPECT_EQ(updates[1]->old_tuple.columns[9].kind, TupleValueKind::kNull);
  EXPECT_EQ(Text(updates[1]->new_tuple.columns[0]), "20");
  // REPLICA IDENTITY FULL: the whole old row ('O').
  EXPECT_EQ(updates[2]->relation_id, full);
  EXPECT_EQ(updates[2]->old_kind, 'O');
  EXPECT_EQ(Text(updates[2]->old_tuple.columns[1]), "a");
  EXPECT_EQ(Text(updates[2]->new_tuple.columns[1]), "b");
  // The TOASTed column was not changed: 'u', never null.
  EXPECT_EQ(updates[3]->relation_id, toast);
  EXPECT_EQ(updates[3]->new_tuple.columns[1].kind, TupleValueKind::kUnchanged);
  EXPECT_EQ(Text(updates[3]->new_tuple.columns[2]), "1");

  auto deletes = All<DeleteMessage>(decoded);
  ASSERT_EQ(deletes.size(), 2u);
  EXPECT_EQ(deletes[0]->old_kind, 'K');
  EXPECT_EQ(Text(deletes[0]->old_tuple.columns[0]), "3");
  EXPECT_EQ(deletes[1]->old_kind, 'O');
  EXPECT_EQ(Text(deletes[1]->old_tuple.columns[1]), "b");
}

TEST_P(PgOutputCaptureTest, TruncateMessageAndOrigin) {
  const Decoded& decoded = DecodeCapture(GetParam());
  auto truncates = All<TruncateMessage>(decoded);
  ASSERT_EQ(truncates.size(), 1u);
  EXPECT_TRUE(truncates[0]->cascade());
  EXPECT_TRUE(truncates[0]->restart_identity());
  ASSERT_EQ(truncates[0]->relation_ids.size(), 1u);
  EXPECT_EQ(truncates[0]->relation_ids[0], RelationNamed(decoded, "cap_full").relation_id);

  auto messages = All<LogicalMessage>(decoded);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_TRUE(messages[0]->transactional());
  EXPECT_EQ(messages[0]->prefix, "pgderive");
  EXPECT_EQ(messages[0]->content, "transactional hello");
  EXPECT_FALSE(messages[1]->transactional());
  EXPECT_EQ(messages[1]->content, "non-transactional");
  EXPECT_TRUE(messages[1]->lsn.IsValid());

  auto origins = All<OriginMessage>(decoded);
  ASSERT_EQ(origins.size(), 1u);
  EXPECT_EQ(origins[0]->name, "cap_origin");
  EXPECT_EQ(origins[0]->origin_lsn, *Lsn::Parse("0/ABCDEF"));
}

INSTANTIATE_TEST_SUITE_P(AllProtocolVersions, PgOutputCaptureTest,
                         ::testing::Values("v1.hex", "v2_stream.hex", "v3_twophase.hex"),
                         [](const auto& info) {
                           std::string name = info.param;
                           return name.substr(0, name.find('.'));
                         });

TEST(PgOutputV1Test, NoStreamingMessages) {
  const Decoded& decoded = DecodeCapture("v1.hex");
  EXPECT_TRUE(All<StreamStartMessage>(decoded).empty());
  EXPECT_TRUE(All<StreamAbortMessage>(decoded).empty());
  // The aborted transaction and the rolled-back savepoint never reach v1.
  size_t big_rows = 0;
  const RelationId big = RelationNamed(decoded, "cap_big").relation_id;
  for (const InsertMessage* insert : All<InsertMessage>(decoded)) {
    if (insert->relation_id == big) ++big_rows;
  }
  EXPECT_EQ(big_rows, 700u + 700u + 1u + 700u);
}

TEST(PgOutputV2Test, StreamedTransactionsCommitAndAbort) {
  const Decoded& decoded = DecodeCapture("v2_stream.hex");
  // Inside Stream Start/Stop every change names its transaction.
  std::optional<Xid> streaming;
  std::map<uint32_t, size_t> rows_by_xid;
  for (const PgOutputMessage& m : decoded.messages) {
    if (const auto* start = std::get_if<StreamStartMessage>(&m)) {
      streaming = start->xid;
    } else if (std::holds_alternative<StreamStopMessage>(m)) {
      streaming.reset();
    } else if (const auto* insert = std::get_if<InsertMessage>(&m)) {
      // The xid of a streamed change is its own (sub)transaction's, not necessarily the
      // top-level xid of Stream Start: a subtransaction abort discards by it.
      EXPECT_EQ(insert->xid.has_value(), streaming.has_value());
      if (insert->xid) ++rows_by_xid[insert->xid->value];
    }
  }
  auto starts = All<StreamStartMessage>(decoded);
  ASSERT_FALSE(starts.empty());
  EXPECT_TRUE(starts.front()->first_segment);

  auto commits = All<StreamCommitMessage>(decoded);
  auto aborts = All<StreamAbortMessage>(decoded);
  // The 700-row insert, the savepoint transaction, and a third, smaller transaction
  // streamed because its memory crossed the limit together with the others.
  ASSERT_EQ(commits.size(), 3u);
  ASSERT_EQ(aborts.size(), 2u);
  // The rolled-back savepoint: a subtransaction abort inside a transaction that commits.
  const StreamAbortMessage* subabort = aborts[0];
  EXPECT_NE(subabort->subxid, subabort->xid);
  // Only what overflowed the walsender's memory before the rollback was streamed: some
  // of the 700 rolled-back rows, never more. The 700 rows before the savepoint belong
  // to the top-level xid; ROLLBACK TO keeps the savepoint, so the row after it has yet
  // another subxid.
  EXPECT_GT(rows_by_xid[subabort->subxid.value], 0u);
  EXPECT_LE(rows_by_xid[subabort->subxid.value], 700u);
  EXPECT_EQ(rows_by_xid[subabort->xid.value], 700u);
  // The whole transaction rolled back: subxid == xid.
  EXPECT_EQ(aborts[1]->subxid, aborts[1]->xid);
  EXPECT_GT(rows_by_xid[aborts[1]->xid.value], 0u);
  EXPECT_LE(rows_by_xid[aborts[1]->xid.value], 700u);
  for (const StreamCommitMessage* commit : commits) {
    EXPECT_TRUE(commit->commit_lsn.IsValid());
    EXPECT_GT(commit->end_lsn, commit->commit_lsn);
  }
}

TEST(PgOutputV3Test, TwoPhaseMessages) {
  const Decoded& decoded = DecodeCapture("v3_twophase.hex");
  auto begin_prepares = All<BeginPrepareMessage>(decoded);
  auto prepares = All<PrepareMessage>(decoded);
  auto commit_prepared = All<CommitPreparedMessage>(decoded);
  auto rollback_prepared = All<RollbackPreparedMessage>(decoded);
  auto stream_prepares = All<StreamPrepareMessage>(decoded);
  ASSERT_EQ(begin_prepares.size(), 2u);
  ASSERT_EQ(prepares.size(), 2u);
  ASSERT_EQ(commit_prepared.size(), 2u);
  ASSERT_EQ(rollback_prepared.size(), 1u);
  ASSERT_EQ(stream_prepares.size(), 1u);

  EXPECT_EQ(begin_prepares[0]->gid, "cap_gid_commit");
  EXPECT_EQ(prepares[0]->gid, "cap_gid_commit");
  EXPECT_EQ(prepares[0]->xid, begin_prepares[0]->xid);
  EXPECT_EQ(prepares[0]->prepare_lsn, begin_prepares[0]->prepare_lsn);
  EXPECT_EQ(commit_prepared[0]->gid, "cap_gid_commit");
  EXPECT_EQ(commit_prepared[0]->xid, begin_prepares[0]->xid);
  EXPECT_GT(commit_prepared[0]->commit_lsn, prepares[0]->prepare_lsn);

  EXPECT_EQ(rollback_prepared[0]->gid, "cap_gid_rollback");
  EXPECT_EQ(rollback_prepared[0]->prepare_end_lsn, prepares[1]->end_lsn);
  EXPECT_GT(rollback_prepared[0]->rollback_end_lsn, rollback_prepared[0]->prepare_end_lsn);

  EXPECT_EQ(stream_prepares[0]->gid, "cap_gid_big");
  EXPECT_EQ(commit_prepared[1]->gid, "cap_gid_big");
  EXPECT_EQ(commit_prepared[1]->xid, stream_prepares[0]->xid);
}

TEST(PgOutputNameTest, NamesEveryType) {
  for (char c : std::string("BCORYIUDTMSEcAbPKrp")) {
    EXPECT_NE(PgOutputMessageName(static_cast<uint8_t>(c)), "unknown") << c;
  }
  EXPECT_EQ(PgOutputMessageName('Z'), "unknown");
}

}  // namespace
}  // namespace pgderive
