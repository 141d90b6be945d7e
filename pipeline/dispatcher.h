#pragma once

// The dispatcher: decoded transactions -> batches -> every store's queue.
//
//   replication stream -> TransactionAssembler -> Dispatcher --batch--> worker (store A)
//                                                   |   ^          \--> worker (store B)
//                              partitions mapped to |   | rows a backfill places
//                              their root (MapPartitions), at its watermarks
//
// Changes and commits are appended to one open batch in the order they arrive (commit
// order: the assembler hands over whole transactions). The batch is sent when it passes
// a size at a commit (batch_bytes, batch_changes), mid-transaction when it passes
// max_batch_bytes (a transaction too large for one batch goes in consecutive pieces),
// when the stream pauses (the caller's Dispatch after a linger), and as an idle mark: a
// batch without changes whose checkpoint carries every store past WAL that holds none
// of our changes. One batch is shared, read-only, by every store's queue.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "cdc/change_batch.h"
#include "cdc/publication.h"
#include "cdc/transaction_assembler.h"

namespace pgderive {

inline constexpr size_t kBatchBytes = size_t{4} << 20;      // a batch closes at a commit past this
inline constexpr size_t kBatchChanges = 10000;              // ... or past this many changes
inline constexpr size_t kMaxBatchBytes = size_t{16} << 20;  // or mid-transaction past this
// When the stream pauses, a batch waits this long for more before it is dispatched:
// at thousands of small transactions a second this turns one worker wake-up and one
// store round trip per transaction into one per millisecond, which on a busy machine
// costs far less latency than it saves.
inline constexpr auto kLinger = std::chrono::milliseconds(2);

// A partition's change presented as its partitioned table's (PartitionRoots): the
// tuples' columns in the root's order; what the change points into lives here.
struct MappedChange {
  PgOutputMessage message;
  std::vector<std::shared_ptr<const RelationSchema>> relations;
};

// nullopt when no relation of `change` is a partition standing for a table views read.
Result<std::optional<MappedChange>> MapPartitions(PartitionRoots& roots, const Change& change);

// Where a batch is closed (the constants above; a test uses small ones).
struct DispatchLimits {
  size_t batch_bytes = kBatchBytes;
  size_t batch_changes = kBatchChanges;
  size_t max_batch_bytes = kMaxBatchBytes;
};

class Dispatcher : public ChangeConsumer {
 public:
  // What the dispatcher calls out to, as functions so that it runs without PostgreSQL.
  struct Stages {
    // MapPartitions against the source's partitions.
    std::function<Result<std::optional<MappedChange>>(const Change&)> map_partitions;
    // Learns the types of a relation's columns (TypeLearner::Learn) ...
    std::function<Status(const RelationSchema&)> learn;
    // ... and the registry learned so far (TypeLearner::types), given to each batch.
    std::function<std::shared_ptr<const TypeRegistry>()> types;
    // What a backfill places before `change` (Backfills::OnChange): a chunk's rows at
    // its watermark, views' states.
    std::function<void(const Change&, std::vector<OwnedChange>&)> place;
    // Hands a closed batch to every attached store's worker, in order.
    std::function<void(std::shared_ptr<const ChangeBatch>)> deliver;
  };
  explicit Dispatcher(Stages stages, DispatchLimits limits = {});

  Status OnBegin(const TransactionInfo&) override { return Status::Ok(); }
  Status OnChange(const Change& decoded) override;
  Status OnCommit(const TransactionInfo& transaction) override;

  bool pending() const { return !batch_->changes.empty() || !batch_->commits.empty(); }
  // When the pending batch got its first change or commit.
  std::chrono::steady_clock::time_point pending_since() const { return pending_since_; }

  // Nothing is open and everything received up to `received` has been dispatched: a
  // batch without changes whose checkpoint is `received` lets every store (and so the
  // slot) move past WAL that holds none of our changes - other tables' writes, a
  // checkpoint record at shutdown. Safe because a transaction that commits later has
  // its commit LSN at or after `received` (change_batch.h).
  // Whether a mark was sent.
  bool MarkIdle(Lsn received);
  // Sends the open batch, if it holds anything.
  void Dispatch();
  // The stream restarts from the slot: what is not dispatched comes again.
  void Drop();

 private:
  // The types of the relations' columns, for the batch's registry.
  Status Learn(std::span<const std::shared_ptr<const RelationSchema>> relations);
  void Touch() {
    if (!pending()) pending_since_ = std::chrono::steady_clock::now();
  }

  Stages stages_;
  const DispatchLimits limits_;
  std::vector<OwnedChange> injected_;
  std::unique_ptr<ChangeBatch> batch_;
  std::shared_ptr<const RelationSchema> last_learned_;
  Lsn last_mark_;  // the highest checkpoint dispatched
  std::chrono::steady_clock::time_point pending_since_;
};

}  // namespace pgderive
