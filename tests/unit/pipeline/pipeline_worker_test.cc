// A store's worker with a fake store: batches applied in order, a store that fails for a
// while catches up from its checkpoint, a store that falls behind is detached and
// rejoins, a store that fails for good is detached and says so.
#include "pipeline/pipeline_worker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "cdc/walsender.h"
#include "tests/support/fake_sink.h"
#include "tests/support/wait.h"

namespace pgderive {
namespace {

using testing::AppliedOf;
using testing::EndOf;
using testing::FakeSink;
using testing::TestBatch;
using testing::WaitFor;

constexpr auto kNoWait = std::chrono::milliseconds(0);

struct Worker {
  explicit Worker(FakeSink& sink, size_t max_queue_bytes = size_t{1} << 20)
      : worker(
            sink,
            [this](Sink&) -> Result<Lsn> {
              ++rebuilds;
              return Error::Permanent("no rebuild in this test");
            },
            [this](const std::string& message) {
              std::lock_guard lock(mutex);
              log.push_back(message);
            },
            max_queue_bytes) {}
  ~Worker() { worker.Stop(std::chrono::steady_clock::now()); }
  bool Logged(const std::string& part) {
    std::lock_guard lock(mutex);
    for (const std::string& line : log) {
      if (line.find(part) != std::string::npos) return true;
    }
    return false;
  }

  std::mutex mutex;
  std::vector<std::string> log;
  std::atomic<int> rebuilds{0};
  PipelineWorker worker;
};

TEST(PipelineWorkerTest, AppliesBatchesInOrder) {
  FakeSink sink("a");
  Worker w(sink);
  w.worker.Start(Lsn{});
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(w.worker.Offer(TestBatch(i, i), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.checkpoint() == EndOf(5); }));
  EXPECT_EQ(sink.applied(), AppliedOf(1, 5));
  EXPECT_EQ(sink.stored(), EndOf(5));
  EXPECT_TRUE(w.worker.healthy());
  EXPECT_FALSE(w.worker.detached());
}

// A transient failure: the worker reconnects, finds the store still at its checkpoint,
// and applies the same batches again - nothing lost, nothing twice, order kept.
TEST(PipelineWorkerTest, ATransientFailureIsRetriedFromTheCheckpoint) {
  FakeSink sink("a");
  Worker w(sink);
  w.worker.Start(Lsn{});
  ASSERT_TRUE(w.worker.Offer(TestBatch(1, 1), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.checkpoint() == EndOf(1); }));
  sink.FailNext(3);  // Apply, then Connect twice on the retries
  for (int i = 2; i <= 4; ++i) ASSERT_TRUE(w.worker.Offer(TestBatch(i, i), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.checkpoint() == EndOf(4); }));
  EXPECT_EQ(sink.applied(), AppliedOf(1, 4));
  EXPECT_TRUE(w.worker.healthy());
  EXPECT_FALSE(w.worker.detached());
  EXPECT_FALSE(w.worker.failed());
  EXPECT_TRUE(w.Logged("retrying in"));
}

// The store comes back having lost recent writes the slot still holds (a restart
// without them): the worker drops its queue, detaches, asks to rejoin, and the stream
// from the slot re-applies from the store's own checkpoint, in order.
TEST(PipelineWorkerTest, AStoreThatLostWritesRejoinsFromItsCheckpoint) {
  FakeSink sink("a");
  Worker w(sink);
  w.worker.Start(Lsn{});
  ASSERT_TRUE(w.worker.Offer(TestBatch(1, 3), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.checkpoint() == EndOf(3); }));
  sink.Lose(EndOf(1));  // transactions 2 and 3 are gone
  sink.FailNext(1);
  ASSERT_TRUE(w.worker.Offer(TestBatch(4, 4), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.WantsRejoin(); }));
  EXPECT_TRUE(w.worker.detached());
  EXPECT_EQ(w.worker.checkpoint(), EndOf(1));
  EXPECT_EQ(w.worker.Durable(), EndOf(1)) << "the slot must not pass what was lost";
  EXPECT_FALSE(w.worker.Offer(TestBatch(5, 5), kNoWait)) << "detached: not fed";
  // The dispatcher restarts the stream from the slot (confirmed at most to 1's end).
  w.worker.Rejoin();
  ASSERT_TRUE(w.worker.Offer(TestBatch(1, 3), kNoWait));
  ASSERT_TRUE(w.worker.Offer(TestBatch(4, 5), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.checkpoint() == EndOf(5); }));
  EXPECT_EQ(sink.applied(), AppliedOf(1, 5));
  EXPECT_TRUE(w.Logged("replaying from the slot"));
}

// A row store (Redis, OpenSearch) that lost its data while running: its views are
// filled again by the backfill (the rebuild callback records them backfilling) and the
// store goes on from the slot's confirmed position - below what it had made durable,
// which the slot must no longer be confirmed past.
TEST(PipelineWorkerTest, ARowStoreThatLostItsDataGoesOnFromTheSlotNeverDurablePastIt) {
  FakeSink sink("cache");
  sink.SetBackfillsRows(true);
  std::atomic<int> refills{0};
  std::mutex mutex;
  std::vector<std::string> log;
  PipelineWorker worker(
      sink,
      [&](Sink&) -> Result<Lsn> {
        ++refills;
        return EndOf(1);  // the slot's confirmed position
      },
      [&](const std::string& message) {
        std::lock_guard lock(mutex);
        log.push_back(message);
      },
      size_t{1} << 20);
  worker.Start(Lsn{});
  ASSERT_TRUE(worker.Offer(TestBatch(1, 3), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return worker.Durable() == EndOf(3); }));
  worker.SetSlotConfirmed(EndOf(1));
  sink.Lose(Lsn{});  // restarted empty
  sink.FailNext(1);
  ASSERT_TRUE(worker.Offer(TestBatch(4, 4), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return worker.WantsRejoin(); }));
  EXPECT_EQ(refills.load(), 1);
  EXPECT_EQ(worker.checkpoint(), EndOf(1));
  EXPECT_EQ(worker.Durable(), EndOf(1)) << "the slot must not pass what the store lost";
  worker.Rejoin();
  ASSERT_TRUE(worker.Offer(TestBatch(2, 4), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return worker.checkpoint() == EndOf(4); }));
  worker.Stop(std::chrono::steady_clock::now());
  std::lock_guard lock(mutex);
  EXPECT_NE(std::find_if(log.begin(), log.end(),
                         [](const std::string& l) {
                           return l.find("store cache goes on from " + EndOf(1).ToString()) !=
                                  std::string::npos;
                         }),
            log.end());
}

// A store that cannot keep up: its queue stays full, the dispatcher stops feeding it
// rather than wait (the others keep flowing); it drains, asks to rejoin, and takes the
// stream from the slot again, skipping what it has.
TEST(PipelineWorkerTest, AStoreFallingBehindIsDetachedAndRejoins) {
  FakeSink sink("slow");
  Worker w(sink, /*max_queue_bytes=*/150);  // one test batch is 100 bytes
  w.worker.Start(Lsn{});
  sink.Hold(true);
  ASSERT_TRUE(w.worker.Offer(TestBatch(1, 1), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return sink.waiting() == 1; }));  // applying 1, held
  ASSERT_TRUE(w.worker.Offer(TestBatch(2, 2), kNoWait));      // queued
  EXPECT_FALSE(w.worker.Offer(TestBatch(3, 3), std::chrono::milliseconds(10)));
  EXPECT_TRUE(w.worker.detached());
  EXPECT_TRUE(w.Logged("falling behind"));
  EXPECT_FALSE(w.worker.WantsRejoin());
  sink.Hold(false);
  ASSERT_TRUE(WaitFor([&] { return w.worker.WantsRejoin(); }));
  EXPECT_EQ(w.worker.checkpoint(), EndOf(2));
  w.worker.Rejoin();
  EXPECT_FALSE(w.worker.detached());
  // From the slot: 2 again (skipped by the store), then 3 and 4.
  ASSERT_TRUE(w.worker.Offer(TestBatch(2, 4), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.checkpoint() == EndOf(4); }));
  EXPECT_EQ(sink.applied(), AppliedOf(1, 4));
}

TEST(PipelineWorkerTest, APermanentFailureStopsTheStoreAlone) {
  FakeSink sink("a");
  Worker w(sink);
  w.worker.Start(Lsn{});
  ASSERT_TRUE(w.worker.Offer(TestBatch(1, 1), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.checkpoint() == EndOf(1); }));
  sink.FailNext(1, ErrorKind::kPermanent);
  ASSERT_TRUE(w.worker.Offer(TestBatch(2, 2), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.failed(); }));
  EXPECT_TRUE(w.worker.detached());
  EXPECT_FALSE(w.worker.WantsRejoin()) << "a failed store does not rejoin";
  EXPECT_EQ(w.worker.checkpoint(), EndOf(1));
  EXPECT_FALSE(w.worker.Offer(TestBatch(3, 3), kNoWait));
  EXPECT_EQ(sink.applied(), AppliedOf(1, 1));
  EXPECT_TRUE(w.Logged("store a stopped"));
}

// Stop(deadline) applies what is queued until the deadline, then the thread ends.
TEST(PipelineWorkerTest, AStopAppliesWhatIsQueuedUntilItsDeadline) {
  FakeSink sink("a");
  Worker w(sink);
  sink.Hold(true);
  w.worker.Start(Lsn{});
  ASSERT_TRUE(w.worker.Offer(TestBatch(1, 1), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return sink.waiting() == 1; }));  // batch 1 in Apply
  for (int i = 2; i <= 3; ++i) ASSERT_TRUE(w.worker.Offer(TestBatch(i, i), kNoWait));
  std::thread stopper(
      [&] { w.worker.Stop(std::chrono::steady_clock::now() + std::chrono::minutes(1)); });
  sink.Hold(false);
  stopper.join();
  EXPECT_EQ(sink.applied(), AppliedOf(1, 3));
  EXPECT_EQ(w.worker.checkpoint(), EndOf(3));
}

// A stop ends the wait between retries: at once when its deadline has passed, at the
// deadline otherwise (never the rest of a long backoff).
TEST(PipelineWorkerTest, AStopEndsTheWaitBetweenRetriesByItsDeadline) {
  for (const auto grace : {std::chrono::milliseconds(0), std::chrono::milliseconds(200)}) {
    FakeSink sink("a");
    Worker w(sink);
    w.worker.Start(Lsn{});
    sink.FailNext(1000);
    ASSERT_TRUE(w.worker.Offer(TestBatch(1, 1), kNoWait));
    // The fourth retry waits 1.6 s (+-20%).
    ASSERT_TRUE(WaitFor([&] {
      std::lock_guard lock(w.mutex);
      return std::count_if(w.log.begin(), w.log.end(), [](const std::string& line) {
               return line.find("retrying in") != std::string::npos;
             }) >= 4;
    }));
    const auto started = std::chrono::steady_clock::now();
    w.worker.Stop(started + grace);
    const auto took = std::chrono::steady_clock::now() - started;
    EXPECT_GE(took, grace);
    EXPECT_LT(took, grace + std::chrono::milliseconds(900));
    EXPECT_TRUE(sink.applied().empty());
  }
}

// A store that lost data while an apply failed: Recover would rebuild it, but a stop
// came during the wait between retries. A stop never starts a rebuild: the queue is
// dropped unapplied and the next start rebuilds.
TEST(PipelineWorkerTest, AStopDuringARecoveryNeverStartsARebuild) {
  FakeSink sink("a");
  Worker w(sink);
  w.worker.Start(Lsn{});
  ASSERT_TRUE(w.worker.Offer(TestBatch(1, 1), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return w.worker.checkpoint() == EndOf(1); }));
  w.worker.SetSlotConfirmed(EndOf(1));
  sink.Lose(Lsn{});  // its checkpoint behind the slot's: Recover would rebuild
  sink.FailNext(1000);
  ASSERT_TRUE(w.worker.Offer(TestBatch(2, 2), kNoWait));
  // The fourth retry waits 1.6 s (+-20%): the stop comes during it; the store answers
  // again when the retry after it comes.
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard lock(w.mutex);
    return std::count_if(w.log.begin(), w.log.end(), [](const std::string& line) {
             return line.find("retrying in") != std::string::npos;
           }) >= 4;
  }));
  sink.FailNext(0);
  w.worker.Stop(std::chrono::steady_clock::now() + std::chrono::minutes(1));
  EXPECT_EQ(w.rebuilds.load(), 0);
  EXPECT_TRUE(w.Logged("stopping, so its views are rebuilt at the next start"));
  EXPECT_FALSE(w.Logged("rebuilding its views"));
  EXPECT_EQ(sink.applied(), std::vector<FakeSink::Applied>{});
}

// Paused (the pipeline lost its lock), the worker applies nothing; resumed, it applies
// what waited; stopped while paused, it drops its queue unapplied.
TEST(PipelineWorkerTest, APausedWorkerWritesNothing) {
  FakeSink sink("a");
  {
    Worker w(sink);
    w.worker.Start(Lsn{});
    w.worker.Pause(true);
    ASSERT_TRUE(w.worker.Offer(TestBatch(1, 2), kNoWait));
    // Several turns of the paused loop (200 ms each) go by without an apply.
    EXPECT_FALSE(WaitFor([&] { return sink.apply_calls() > 0; }, std::chrono::milliseconds(600)));
    w.worker.Pause(false);
    ASSERT_TRUE(WaitFor([&] { return w.worker.checkpoint() == EndOf(2); }));
    EXPECT_EQ(sink.applied(), AppliedOf(1, 2));
    w.worker.Pause(true);
    ASSERT_TRUE(w.worker.Offer(TestBatch(3, 3), kNoWait));
    w.worker.Stop(std::chrono::steady_clock::now() + std::chrono::minutes(1));
  }
  EXPECT_EQ(sink.applied(), AppliedOf(1, 2));
}

}  // namespace
}  // namespace pgderive

namespace pgderive {
namespace {

// One transaction of `ops` ('I' a change of public.t, 'O' of another table, 'B' a
// backfill row for view v), committed at `committed`.
void AddTransaction(ChangeBatch& batch, int i, const std::string& ops,
                    std::chrono::system_clock::time_point committed) {
  static const auto t = std::make_shared<const RelationSchema>(
      RelationSchema{RelationId{1}, "public", "t", 'd', {}, ""});
  static const auto other = std::make_shared<const RelationSchema>(
      RelationSchema{RelationId{2}, "public", "other", 'd', {}, ""});
  static const auto control = [] {
    auto made = std::make_shared<ViewControl>();
    made->store = "a";
    made->views = {"v"};
    return std::shared_ptr<const ViewControl>(made);
  }();
  uint32_t index = 0;
  for (char op : ops) {
    OwnedChange change;
    change.commit_lsn = testing::CommitOf(i);
    change.index = index++;
    change.op = op == 'B' ? ChangeOp::kBackfillRow : ChangeOp::kInsert;
    change.relations = {op == 'O' ? other : t};
    if (op == 'B') change.control = control;
    batch.changes.push_back(std::move(change));
  }
  batch.commits.push_back(CommitMark{testing::CommitOf(i), testing::EndOf(i),
                                     ToPgTimestamp(committed), batch.changes.size()});
}

std::shared_ptr<const ChangeBatch> Finish(std::unique_ptr<ChangeBatch> batch) {
  batch->types = std::make_shared<TypeRegistry>();
  batch->bytes = 100;
  return batch;
}

// Commit-to-visible latency counts streamed transactions that change a table of the
// store's views, once the store has caught up with the WAL that existed at start; the
// backlog before is counted apart, backfill rows and other tables' changes never. The
// applied rows are counted by source.
TEST(PipelineWorkerTest, LatencyIsSteadyStateStreamedTransactionsOnly) {
  FakeSink sink("a");
  Metrics metrics;
  PipelineWorker worker(
      sink, [](Sink&) -> Result<Lsn> { return Error::Permanent("no rebuild"); },
      [](const std::string&) {}, size_t{1} << 20, &metrics);
  const auto now = std::chrono::system_clock::now();
  // Caught up once transaction 2 is applied.
  worker.Start(Lsn{}, testing::EndOf(2));
  EXPECT_FALSE(worker.caught_up());
  auto backlog = std::make_unique<ChangeBatch>();
  AddTransaction(*backlog, 1, "II", now - std::chrono::seconds(30));
  AddTransaction(*backlog, 2, "I", now - std::chrono::seconds(20));
  ASSERT_TRUE(worker.Offer(Finish(std::move(backlog)), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return worker.checkpoint() == testing::EndOf(2); }));
  EXPECT_TRUE(worker.caught_up());
  auto steady = std::make_unique<ChangeBatch>();
  const auto later = std::chrono::system_clock::now() + std::chrono::milliseconds(1);
  AddTransaction(*steady, 3, "I", later);
  AddTransaction(*steady, 4, "BBB", later);  // a backfill chunk at its watermark
  AddTransaction(*steady, 5, "O", later);    // a table no view of the store reads
  ASSERT_TRUE(worker.Offer(Finish(std::move(steady)), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return worker.checkpoint() == testing::EndOf(5); }));

  const MetricLabels store{{"store", "a"}};
  EXPECT_EQ(metrics.histogram("pgderive_commit_to_visible_seconds", "", store).count(), 1u);
  EXPECT_EQ(metrics.counter("pgderive_catchup_transactions_total", "", store).value(), 2);
  EXPECT_EQ(metrics.gauge("pgderive_store_caught_up", "", store).value(), 1);
  EXPECT_EQ(ChangesApplied(metrics, "a", "v", AppliedSource::kStream).value(), 4);
  EXPECT_EQ(ChangesApplied(metrics, "a", "v", AppliedSource::kBackfill).value(), 3);
  EXPECT_EQ(ChangesApplied(metrics, "a", "v", AppliedSource::kSnapshot).value(), 0);
  const std::string summary = worker.LatencySummary();
  EXPECT_NE(summary.find("(1 transactions); catch-up (not counted above): 2 transactions "
                         "committed before the store caught up"),
            std::string::npos)
      << summary;
  worker.Stop(std::chrono::steady_clock::now());
}

}  // namespace
}  // namespace pgderive
