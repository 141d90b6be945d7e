// The dispatcher cuts the decoded stream into batches in commit order: changes and
// commits come out in the order they went in, split at the limits, with idle marks.
#include "pipeline/dispatcher.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

class DispatcherTest : public ::testing::Test {
 protected:
  DispatcherTest() {
    auto schema = std::make_shared<RelationSchema>();
    schema->id = RelationId{16384};
    schema->nspname = "public";
    schema->relname = "t";
    schema->columns = {{"k", 23, -1, true, ""}, {"v", 25, -1, false, ""}};
    relations_ = {schema};
  }

  std::unique_ptr<Dispatcher> Make(DispatchLimits limits) {
    return std::make_unique<Dispatcher>(
        Dispatcher::Stages{
            .map_partitions = [](const Change&) -> Result<std::optional<MappedChange>> {
              return std::optional<MappedChange>();
            },
            .learn =
                [this](const RelationSchema&) {
                  ++learned_;
                  return Status::Ok();
                },
            .types = [this] { return types_; },
            .place =
                [this](const Change& change, std::vector<OwnedChange>& out) {
                  if (place_before_ != change.commit_lsn) return;
                  OwnedChange row;
                  row.commit_lsn = change.commit_lsn;
                  row.op = ChangeOp::kBackfillRow;
                  row.relations = relations_;
                  out.push_back(std::move(row));
                },
            .deliver =
                [this](std::shared_ptr<const ChangeBatch> batch) {
                  batches_.push_back(std::move(batch));
                }},
        limits);
  }

  // Transaction `commit` (end commit + 10) with `changes` inserts.
  void Transaction(Dispatcher& dispatcher, uint64_t commit, uint32_t changes,
                   std::string value = "v") {
    TransactionInfo info{.xid = {}, .commit_lsn = Lsn{commit}, .end_lsn = Lsn{commit + 10}};
    ASSERT_TRUE(dispatcher.OnBegin(info).ok());
    for (uint32_t i = 0; i < changes; ++i) {
      InsertMessage insert;
      insert.new_tuple.columns = {{TupleValueKind::kText, "1"}, {TupleValueKind::kText, value}};
      PgOutputMessage message = insert;
      ASSERT_TRUE(dispatcher.OnChange(Change{Lsn{commit}, i, &message, relations_}).ok());
    }
    ASSERT_TRUE(dispatcher.OnCommit(info).ok());
  }

  // Every change dispatched, as (commit_lsn, index), in order; and every commit mark.
  std::vector<std::pair<uint64_t, uint32_t>> Changes() const {
    std::vector<std::pair<uint64_t, uint32_t>> out;
    for (const auto& batch : batches_) {
      for (const OwnedChange& c : batch->changes) out.emplace_back(c.commit_lsn.value, c.index);
    }
    return out;
  }
  std::vector<uint64_t> Commits() const {
    std::vector<uint64_t> out;
    for (const auto& batch : batches_) {
      for (const CommitMark& m : batch->commits) out.push_back(m.commit_lsn.value);
    }
    return out;
  }

  std::vector<std::shared_ptr<const RelationSchema>> relations_;
  std::shared_ptr<const TypeRegistry> types_ = std::make_shared<TypeRegistry>();
  std::vector<std::shared_ptr<const ChangeBatch>> batches_;
  int learned_ = 0;
  Lsn place_before_;
};

constexpr size_t kHuge = size_t{1} << 40;

TEST_F(DispatcherTest, BatchesCloseAtACommitPastTheChangeLimitInCommitOrder) {
  auto dispatcher = Make({.batch_bytes = kHuge, .batch_changes = 3, .max_batch_bytes = kHuge});
  Transaction(*dispatcher, 100, 2);
  EXPECT_TRUE(batches_.empty()) << "2 changes: under the limit";
  EXPECT_TRUE(dispatcher->pending());
  Transaction(*dispatcher, 200, 2);
  ASSERT_EQ(batches_.size(), 1u) << "closed at the commit that passed 3 changes";
  Transaction(*dispatcher, 300, 1);
  EXPECT_EQ(batches_.size(), 1u);
  dispatcher->Dispatch();  // the stream paused
  ASSERT_EQ(batches_.size(), 2u);
  EXPECT_FALSE(dispatcher->pending());

  const std::vector<std::pair<uint64_t, uint32_t>> expected = {
      {100, 0}, {100, 1}, {200, 0}, {200, 1}, {300, 0}};
  EXPECT_EQ(Changes(), expected);
  EXPECT_EQ(Commits(), (std::vector<uint64_t>{100, 200, 300}));
  // Each commit mark ends its transaction's changes; the checkpoint is the last end.
  ASSERT_EQ(batches_[0]->commits.size(), 2u);
  EXPECT_EQ(batches_[0]->commits[0].changes_end, 2u);
  EXPECT_EQ(batches_[0]->commits[1].changes_end, 4u);
  EXPECT_EQ(batches_[0]->checkpoint(), Lsn{210});
  EXPECT_EQ(batches_[1]->checkpoint(), Lsn{310});
  EXPECT_EQ(batches_[1]->types, types_);
  EXPECT_EQ(learned_, 1) << "one relation, learned once";
}

TEST_F(DispatcherTest, BatchesCloseAtACommitPastTheByteLimit) {
  auto dispatcher = Make({.batch_bytes = 1000, .batch_changes = 1000, .max_batch_bytes = kHuge});
  Transaction(*dispatcher, 100, 1, std::string(2000, 'x'));
  ASSERT_EQ(batches_.size(), 1u);
  Transaction(*dispatcher, 200, 1, "small");
  EXPECT_EQ(batches_.size(), 1u);
  EXPECT_GE(batches_[0]->bytes, 2000u);
}

// A transaction too large for one batch goes in consecutive pieces; only the last
// carries its commit (a store is complete only at a commit).
TEST_F(DispatcherTest, ALargeTransactionIsSplitInOrder) {
  auto dispatcher = Make({.batch_bytes = kHuge, .batch_changes = kHuge, .max_batch_bytes = 2500});
  Transaction(*dispatcher, 100, 1);
  Transaction(*dispatcher, 200, 8, std::string(1000, 'y'));
  dispatcher->Dispatch();
  ASSERT_GE(batches_.size(), 3u);
  for (size_t i = 0; i + 1 < batches_.size(); ++i) {
    for (const CommitMark& mark : batches_[i]->commits) EXPECT_NE(mark.commit_lsn, Lsn{200});
    if (i > 0) {
      EXPECT_EQ(batches_[i]->checkpoint(), std::nullopt) << "a piece of 200";
    }
  }
  EXPECT_EQ(batches_.front()->checkpoint(), Lsn{110});
  EXPECT_EQ(batches_.back()->checkpoint(), Lsn{210});
  std::vector<std::pair<uint64_t, uint32_t>> expected = {{100, 0}};
  for (uint32_t i = 0; i < 8; ++i) expected.emplace_back(200, i);
  EXPECT_EQ(Changes(), expected);
  EXPECT_EQ(Commits(), (std::vector<uint64_t>{100, 200}));
}

// With nothing pending, an idle mark carries the stores to what the stream received;
// never twice for one position, never while a batch is open, never behind a dispatched
// checkpoint; a stream restart forgets what was dispatched.
TEST_F(DispatcherTest, IdleMarks) {
  auto dispatcher = Make({});
  EXPECT_TRUE(dispatcher->MarkIdle(Lsn{50}));
  ASSERT_EQ(batches_.size(), 1u);
  EXPECT_TRUE(batches_[0]->changes.empty());
  EXPECT_EQ(batches_[0]->checkpoint(), Lsn{50});
  EXPECT_FALSE(dispatcher->MarkIdle(Lsn{50}));
  Transaction(*dispatcher, 100, 1);
  EXPECT_FALSE(dispatcher->MarkIdle(Lsn{500})) << "a batch is open";
  dispatcher->Dispatch();
  EXPECT_FALSE(dispatcher->MarkIdle(Lsn{110})) << "the batch's checkpoint is 110";
  EXPECT_TRUE(dispatcher->MarkIdle(Lsn{120}));
  EXPECT_EQ(batches_.back()->checkpoint(), Lsn{120});
  EXPECT_EQ(batches_.size(), 3u);
  // A restart drops the open batch: it comes again from the slot.
  Transaction(*dispatcher, 200, 2);
  dispatcher->Drop();
  EXPECT_FALSE(dispatcher->pending());
  EXPECT_TRUE(dispatcher->MarkIdle(Lsn{60})) << "after a restart the marks start over";
  EXPECT_EQ(Commits(), (std::vector<uint64_t>{50, 100, 120, 60}));
}

// What a backfill places at a change comes before it, in the same batch.
TEST_F(DispatcherTest, PlacedChangesComeBeforeTheChange) {
  auto dispatcher = Make({});
  place_before_ = Lsn{200};
  Transaction(*dispatcher, 100, 1);
  Transaction(*dispatcher, 200, 1);
  dispatcher->Dispatch();
  ASSERT_EQ(batches_.size(), 1u);
  ASSERT_EQ(batches_[0]->changes.size(), 3u);
  EXPECT_EQ(batches_[0]->changes[0].op, ChangeOp::kInsert);
  EXPECT_EQ(batches_[0]->changes[1].op, ChangeOp::kBackfillRow);
  EXPECT_EQ(batches_[0]->changes[2].op, ChangeOp::kInsert);
  EXPECT_EQ(batches_[0]->changes[2].commit_lsn, Lsn{200});
}

}  // namespace
}  // namespace pgderive
