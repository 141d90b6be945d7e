#pragma once

// A store in memory, for unit tests of the pipeline (tests/unit/pipeline/): it keeps
// the changes it applied, in order, and its checkpoint, and can be made to fail, to
// hold an Apply until released, to lose what it applied (a store restarted empty), to
// take time to make its checkpoint durable, and to record per-view states.

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sinks/common/sink.h"

namespace pgderive::testing {

class FakeSink : public Sink {
 public:
  // (commit_lsn, index in its transaction) of an applied change.
  using Applied = std::pair<uint64_t, uint32_t>;
  struct StateWrite {
    std::string view;
    ViewState state;
    bool clear = false;
  };

  explicit FakeSink(std::string name, std::chrono::milliseconds durability_delay = {})
      : name_(std::move(name)), durability_delay_(durability_delay) {}

  // Controls, from the test's thread.
  // The next `n` calls to Apply, Connect or ReadViewStates fail with an error of `kind`.
  void FailNext(int n, ErrorKind kind = ErrorKind::kTransient) {
    std::lock_guard lock(mutex_);
    failures_ = n;
    failure_kind_ = kind;
  }
  // While held, Apply waits (after counting itself in `waiting`).
  void Hold(bool held) {
    std::lock_guard lock(mutex_);
    held_ = held;
    released_.notify_all();
  }
  // The store lost every change that commits at or after `since`; its checkpoint is
  // `since` (the end of the last transaction it kept).
  void Lose(Lsn since) {
    std::lock_guard lock(mutex_);
    std::erase_if(applied_, [&](const Applied& a) { return a.first >= since.value; });
    stored_ = since;
  }
  void SetBackfillsRows(bool rows) { backfills_rows_ = rows; }
  void SetViewStates(std::optional<std::map<std::string, ViewState>> states) {
    states_ = std::move(states);
  }

  std::vector<Applied> applied() {
    std::lock_guard lock(mutex_);
    return applied_;
  }
  std::optional<Lsn> stored() {
    std::lock_guard lock(mutex_);
    return stored_;
  }
  int apply_calls() {
    std::lock_guard lock(mutex_);
    return apply_calls_;
  }
  int waiting() {
    std::lock_guard lock(mutex_);
    return waiting_;
  }
  std::vector<StateWrite> state_writes() {
    std::lock_guard lock(mutex_);
    return state_writes_;
  }

  // Sink.
  const std::string& name() const override { return name_; }
  std::vector<std::pair<std::string, std::vector<std::string>>> view_sources() const override {
    return {{"v", {"public.t"}}};
  }
  Status Check(const std::shared_ptr<const RelationSchema>&) override { return Status::Ok(); }
  Status Connect() override {
    std::lock_guard lock(mutex_);
    if (failures_ > 0) {
      --failures_;
      return Error(failure_kind_, name_ + " is down");
    }
    return Status::Ok();
  }
  Result<std::optional<Lsn>> ReadCheckpoint() override {
    std::lock_guard lock(mutex_);
    return stored_;
  }
  Status BeginRebuild(Lsn) override {
    std::lock_guard lock(mutex_);
    applied_.clear();
    stored_.reset();
    return Status::Ok();
  }
  Status ApplySnapshotRows(const std::shared_ptr<const RelationSchema>&, std::span<const TupleData>,
                           const TypeRegistry&) override {
    return Status::Ok();
  }
  Status EndRebuild(Lsn lsn) override {
    std::lock_guard lock(mutex_);
    stored_ = lsn;
    return Status::Ok();
  }
  Status Apply(const BatchGroup& group, Lsn checkpoint) override {
    std::unique_lock lock(mutex_);
    ++waiting_;
    released_.wait(lock, [&] { return !held_; });
    --waiting_;
    ++apply_calls_;
    if (failures_ > 0) {
      --failures_;
      return Error(failure_kind_, name_ + " failed to apply");
    }
    // The one place that skips what is applied: commit_lsn < checkpoint (change_batch.h).
    for (const auto& batch : group) {
      for (const OwnedChange& change : batch->changes) {
        if (change.commit_lsn < checkpoint) continue;
        applied_.emplace_back(change.commit_lsn.value, change.index);
      }
    }
    if (auto next = CheckpointOf(group); next && (!stored_ || *next > *stored_)) stored_ = next;
    return Status::Ok();
  }
  bool backfills_rows() const override { return backfills_rows_; }
  Result<std::optional<std::map<std::string, ViewState>>> ReadViewStates() override {
    std::lock_guard lock(mutex_);
    if (failures_ > 0) {
      --failures_;
      return Error(failure_kind_, name_ + " cannot read view states");
    }
    return states_;
  }
  Status WriteViewState(const std::string& view, const ViewState& state, bool clear) override {
    std::lock_guard lock(mutex_);
    state_writes_.push_back({view, state, clear});
    return Status::Ok();
  }
  // Returns the views SetRemovedViews named, once; counts its calls.
  Result<std::vector<std::string>> MarkRemovedViews() override {
    std::lock_guard lock(mutex_);
    ++mark_removed_calls_;
    return std::exchange(removed_views_, {});
  }
  void SetRemovedViews(std::vector<std::string> views) {
    std::lock_guard lock(mutex_);
    removed_views_ = std::move(views);
  }
  int mark_removed_calls() {
    std::lock_guard lock(mutex_);
    return mark_removed_calls_;
  }
  // Forgets its checkpoint and states (and, with `views`, what it applied).
  Result<std::vector<std::string>> Teardown(bool views) override {
    std::lock_guard lock(mutex_);
    if (failures_ > 0) {
      --failures_;
      return Error(failure_kind_, name_ + " is down");
    }
    std::vector<std::string> removed;
    if (stored_) removed.push_back("checkpoint");
    if (states_) removed.push_back("view states");
    if (views && !applied_.empty()) removed.push_back("applied changes");
    stored_.reset();
    states_.reset();
    if (views) applied_.clear();
    return removed;
  }
  std::chrono::milliseconds durability_delay() const override { return durability_delay_; }

 private:
  const std::string name_;
  const std::chrono::milliseconds durability_delay_;
  bool backfills_rows_ = false;
  std::optional<std::map<std::string, ViewState>> states_;
  std::mutex mutex_;
  std::condition_variable released_;
  bool held_ = false;
  int waiting_ = 0;
  int failures_ = 0;
  ErrorKind failure_kind_ = ErrorKind::kTransient;
  int apply_calls_ = 0;
  std::vector<Applied> applied_;
  std::optional<Lsn> stored_;
  std::vector<StateWrite> state_writes_;
  std::vector<std::string> removed_views_;
  int mark_removed_calls_ = 0;
};

// Transaction i (from 1) of a test stream: commit_lsn 100*i, end_lsn 100*i + 10.
inline Lsn CommitOf(int i) { return Lsn{static_cast<uint64_t>(100 * i)}; }
inline Lsn EndOf(int i) { return Lsn{static_cast<uint64_t>(100 * i + 10)}; }

// A batch holding transactions `first`..`last`, each of `changes` changes.
inline std::shared_ptr<const ChangeBatch> TestBatch(int first, int last, uint32_t changes = 2) {
  auto batch = std::make_shared<ChangeBatch>();
  for (int i = first; i <= last; ++i) {
    for (uint32_t c = 0; c < changes; ++c) {
      OwnedChange change;
      change.commit_lsn = CommitOf(i);
      change.index = c;
      batch->changes.push_back(std::move(change));
    }
    batch->commits.push_back(CommitMark{CommitOf(i), EndOf(i), 0, batch->changes.size()});
  }
  batch->types = std::make_shared<TypeRegistry>();
  batch->bytes = 100;
  return batch;
}

// Every change of transactions `first`..`last` as the fake store records them.
inline std::vector<FakeSink::Applied> AppliedOf(int first, int last, uint32_t changes = 2) {
  std::vector<FakeSink::Applied> out;
  for (int i = first; i <= last; ++i) {
    for (uint32_t c = 0; c < changes; ++c) out.emplace_back(CommitOf(i).value, c);
  }
  return out;
}

}  // namespace pgderive::testing
