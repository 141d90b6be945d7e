#include "spool/memory_log.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include "spool/internal/schema_messages.h"

namespace pgderive {

namespace {

using spool_internal::SchemaState;

struct Transaction {
  Lsn position;
  std::vector<LogMessage> messages;
  uint64_t bytes = 0;
};

// What the log and its readers share; a reader keeps it alive.
struct MemoryShared {
  mutable std::mutex mutex;
  std::condition_variable written_changed;
  std::deque<Transaction> transactions;  // sequence numbers first_seq.. in order
  uint64_t first_seq = 0;
  uint64_t written_seq = 0;      // transactions with seq < written_seq are readable
  uint64_t durable_seq = 0;      // transactions with seq < durable_seq are durable
  SchemaState truncated_schema;  // Relation/Type messages of the removed transactions
  Lsn oldest;
  Lsn durable;
  Lsn last_appended;
  bool started = false;  // false: never appended to nor truncated (holds nothing)
  uint64_t bytes = 0;
};

class MemoryReader final : public ChangeLogReader {
 public:
  MemoryReader(std::shared_ptr<MemoryShared> shared, Lsn after, uint64_t next_seq)
      : shared_(std::move(shared)), after_(after), next_seq_(next_seq) {
    for (const auto& [key, message] : shared_->truncated_schema.messages())
      pending_.push_back(message);
  }

  Result<std::optional<LogMessage>> Next(std::chrono::milliseconds wait) override {
    if (!pending_.empty()) return PopPending();
    std::unique_lock lock(shared_->mutex);
    for (;;) {
      if (next_seq_ < shared_->first_seq) {
        // Transactions not yet read were removed. Those at or before `after` are not
        // needed but for their Relation/Type messages, now folded into the removed state.
        if (next_message_ != 0 || after_ < shared_->oldest) {
          return Error::Corrupt("change log (memory): the transactions after " + after_.ToString() +
                                " were removed while being read");
        }
        next_seq_ = shared_->first_seq;
        for (const auto& [key, message] : shared_->truncated_schema.messages()) {
          pending_.push_back(message);
        }
        if (!pending_.empty()) {
          lock.unlock();
          return PopPending();
        }
      }
      while (next_seq_ < shared_->written_seq) {
        const Transaction& txn = shared_->transactions[next_seq_ - shared_->first_seq];
        if (txn.position > after_) {
          LogMessage message = txn.messages[next_message_];
          if (++next_message_ == txn.messages.size()) {
            next_message_ = 0;
            ++next_seq_;
          }
          return std::optional<LogMessage>(std::move(message));
        }
        // At or before `after`: only its Relation/Type messages, in plain form.
        bool in_stream = false;
        for (const LogMessage& message : txn.messages) {
          if (!message.bytes.empty() && message.bytes[0] == 'S') in_stream = true;
          if (!message.bytes.empty() && message.bytes[0] == 'E') in_stream = false;
          if (spool_internal::IsSchemaMessage(message.bytes)) {
            pending_.push_back(
                {message.lsn, spool_internal::PlainSchemaMessage(message.bytes, in_stream)});
          }
        }
        ++next_seq_;
        if (!pending_.empty()) {
          lock.unlock();
          return PopPending();
        }
      }
      if (wait.count() <= 0) return std::optional<LogMessage>();
      const uint64_t seen = shared_->written_seq;
      if (!shared_->written_changed.wait_for(lock, wait,
                                             [&] { return shared_->written_seq != seen; })) {
        return std::optional<LogMessage>();
      }
      wait = std::chrono::milliseconds(0);  // one wake is enough: return what it brought
    }
  }

 private:
  Result<std::optional<LogMessage>> PopPending() {
    LogMessage message = std::move(pending_.front());
    pending_.pop_front();
    return std::optional<LogMessage>(std::move(message));
  }

  std::shared_ptr<MemoryShared> shared_;
  Lsn after_;
  uint64_t next_seq_;
  size_t next_message_ = 0;
  std::deque<LogMessage> pending_;
};

class MemoryLog final : public ChangeLog {
 public:
  MemoryLog() : shared_(std::make_shared<MemoryShared>()) {}

  Status Append(std::span<const LogMessage> transaction) override {
    auto position = spool_internal::TransactionPosition(transaction);
    if (!position.ok()) return position.error();
    std::lock_guard lock(shared_->mutex);
    if (shared_->started && position.value() <= shared_->last_appended) {
      return Error::Permanent("change log: transaction at " + position.value().ToString() +
                              " is not after the log's last position " +
                              shared_->last_appended.ToString());
    }
    if (position.value() <= shared_->oldest) {
      return Error::Permanent("change log: transaction at " + position.value().ToString() +
                              " is not after the log's start " + shared_->oldest.ToString());
    }
    Transaction txn{position.value(), {transaction.begin(), transaction.end()}, 0};
    for (const LogMessage& message : transaction) txn.bytes += message.bytes.size() + 17;
    shared_->bytes += txn.bytes;
    shared_->transactions.push_back(std::move(txn));
    shared_->last_appended = position.value();
    shared_->started = true;
    return Status::Ok();
  }

  // Written: readers see it; durable only at Sync (the model of a log whose fsync has not
  // come yet).
  Result<Lsn> Write() override {
    Lsn written;
    {
      std::lock_guard lock(shared_->mutex);
      shared_->written_seq = shared_->first_seq + shared_->transactions.size();
      written = shared_->last_appended;
    }
    shared_->written_changed.notify_all();
    return written;
  }

  Result<Lsn> Sync() override {
    if (auto written = Write(); !written.ok()) return written.error();
    {
      std::lock_guard lock(shared_->mutex);
      shared_->durable_seq = shared_->written_seq;
      if (!shared_->transactions.empty()) shared_->durable = shared_->transactions.back().position;
    }
    return Durable();
  }

  Lsn Durable() const override {
    std::lock_guard lock(shared_->mutex);
    return shared_->durable;
  }

  Result<std::unique_ptr<ChangeLogReader>> ReadAfter(Lsn after) override {
    std::lock_guard lock(shared_->mutex);
    if (!shared_->started && after.IsValid()) {
      return Error::Permanent("change log (memory) holds nothing: the transactions after " +
                              after.ToString() + " are not in it");
    }
    if (after < shared_->oldest) {
      return Error::Permanent("change log (memory): " + after.ToString() +
                              " is before the oldest position kept, " + shared_->oldest.ToString());
    }
    return std::unique_ptr<ChangeLogReader>(
        std::make_unique<MemoryReader>(shared_, after, shared_->first_seq));
  }

  Status TruncateThrough(Lsn lsn) override {
    std::lock_guard lock(shared_->mutex);
    if (!shared_->started) {
      shared_->started = true;
      shared_->oldest = lsn;
      shared_->durable = lsn;
      shared_->last_appended = lsn;
      return Status::Ok();
    }
    while (shared_->first_seq < shared_->durable_seq &&
           shared_->transactions.front().position <= lsn) {
      Transaction& txn = shared_->transactions.front();
      if (Status status = shared_->truncated_schema.Observe(txn.messages); !status.ok())
        return status;
      shared_->oldest = txn.position;
      shared_->bytes -= txn.bytes;
      shared_->transactions.pop_front();
      ++shared_->first_seq;
    }
    return Status::Ok();
  }

  ChangeLogStats Stats() const override {
    std::lock_guard lock(shared_->mutex);
    ChangeLogStats stats;
    stats.bytes = shared_->bytes;
    stats.segments = shared_->started ? std::max<uint64_t>(1, shared_->transactions.size()) : 0;
    stats.oldest = shared_->oldest;
    stats.durable = shared_->durable;
    if (shared_->first_seq < shared_->durable_seq) {
      stats.oldest_segment_end = shared_->transactions.front().position;
      stats.oldest_segment_bytes = shared_->transactions.front().bytes;
    } else {
      stats.oldest_segment_end = shared_->durable;
    }
    return stats;
  }

 private:
  std::shared_ptr<MemoryShared> shared_;
};

}  // namespace

std::unique_ptr<ChangeLog> NewMemoryLog() { return std::make_unique<MemoryLog>(); }

}  // namespace pgderive
