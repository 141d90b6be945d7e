// A store's worker with a fake store: batches applied in order, a store that fails for a
// while catches up from its checkpoint, a store that falls behind is detached and
// rejoins, a store that fails for good is detached and says so.
#include "pipeline/pipeline_worker.h"

#include <gtest/gtest.h>

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
            sink, [](Sink&) -> Result<Lsn> { return Error::Permanent("no rebuild in this test"); },
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

}  // namespace
}  // namespace pgderive
