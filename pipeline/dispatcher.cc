#include "pipeline/dispatcher.h"

namespace pgderive {

Result<std::optional<MappedChange>> MapPartitions(PartitionRoots& roots, const Change& change) {
  std::optional<MappedChange> out;
  const PartitionRoots::Mapping* single = nullptr;
  for (size_t i = 0; i < change.relations.size(); ++i) {
    auto found = roots.Find(change.relations[i]);
    if (!found.ok()) return found.error();
    if (found.value() == nullptr) continue;
    if (!out) {
      out.emplace();
      out->relations.assign(change.relations.begin(), change.relations.end());
    }
    out->relations[i] = found.value()->root;
    single = found.value();
  }
  if (!out) return out;
  out->message = *change.message;
  auto reorder = [&](TupleData& tuple) {
    TupleData mapped;
    for (int from : single->from) {
      mapped.columns.push_back(from >= 0 && static_cast<size_t>(from) < tuple.columns.size()
                                   ? tuple.columns[from]
                                   : TupleValue{});
    }
    tuple = std::move(mapped);
  };
  std::visit(
      [&](auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, InsertMessage>) {
          reorder(m.new_tuple);
        } else if constexpr (std::is_same_v<T, UpdateMessage>) {
          reorder(m.new_tuple);
          if (m.old_kind != '\0') reorder(m.old_tuple);
        } else if constexpr (std::is_same_v<T, DeleteMessage>) {
          reorder(m.old_tuple);
        }
      },
      out->message);
  return out;
}

Dispatcher::Dispatcher(Stages stages, DispatchLimits limits)
    : stages_(std::move(stages)), limits_(limits), batch_(std::make_unique<ChangeBatch>()) {}

Status Dispatcher::OnChange(const Change& decoded) {
  auto mapped = stages_.map_partitions(decoded);
  if (!mapped.ok()) return mapped.error();
  const Change change = mapped.value() ? Change{decoded.commit_lsn, decoded.index,
                                                &mapped.value()->message, mapped.value()->relations}
                                       : decoded;
  Touch();
  Status status = Learn(change.relations);
  if (!status.ok()) return status;
  // What a backfill places here: a chunk's rows at its watermark, views' states.
  stages_.place(change, injected_);
  for (OwnedChange& placed : injected_) {
    // A chunk's rows carry the table's shape as the backfill read it.
    status = Learn(placed.relations);
    if (!status.ok()) return status;
    batch_->bytes += placed.bytes + sizeof(OwnedChange);
    batch_->changes.push_back(std::move(placed));
  }
  injected_.clear();
  auto owned = CopyChange(change);
  if (!owned) return Status::Ok();  // a logical message
  batch_->bytes += owned->bytes + sizeof(OwnedChange);
  batch_->changes.push_back(std::move(*owned));
  if (batch_->bytes >= limits_.max_batch_bytes) Dispatch();
  return Status::Ok();
}

Status Dispatcher::OnCommit(const TransactionInfo& transaction) {
  Touch();
  batch_->commits.push_back(CommitMark{transaction.commit_lsn, transaction.end_lsn,
                                       transaction.commit_time, batch_->changes.size()});
  if (batch_->bytes >= limits_.batch_bytes || batch_->changes.size() >= limits_.batch_changes) {
    Dispatch();
  }
  return Status::Ok();
}

bool Dispatcher::MarkIdle(Lsn received) {
  if (pending() || received <= last_mark_) return false;
  batch_->commits.push_back(CommitMark{received, received, 0, 0});
  Dispatch();
  return true;
}

void Dispatcher::Dispatch() {
  if (!pending()) return;
  last_mark_ =
      std::max(last_mark_, batch_->commits.empty() ? Lsn{} : batch_->commits.back().end_lsn);
  batch_->types = stages_.types();
  std::shared_ptr<const ChangeBatch> batch(std::move(batch_));
  batch_ = std::make_unique<ChangeBatch>();
  stages_.deliver(std::move(batch));
}

void Dispatcher::Drop() {
  batch_ = std::make_unique<ChangeBatch>();
  last_mark_ = Lsn{};
}

Status Dispatcher::Learn(std::span<const std::shared_ptr<const RelationSchema>> relations) {
  for (const auto& relation : relations) {
    if (relation == last_learned_) continue;
    Status status = stages_.learn(*relation);
    if (!status.ok()) return status;
    last_learned_ = relation;
  }
  return Status::Ok();
}

}  // namespace pgderive
