// The slot is confirmed only up to what every store has made durable.
#include "pipeline/slot_confirmation.h"

#include <gtest/gtest.h>

#include "tests/support/fake_sink.h"
#include "tests/support/wait.h"

namespace pgderive {
namespace {

using testing::EndOf;
using testing::FakeSink;
using testing::TestBatch;
using testing::WaitFor;

constexpr auto kNoWait = std::chrono::milliseconds(0);

class SlotConfirmationTest : public ::testing::Test {
 protected:
  PipelineWorker& Add(FakeSink& sink, Lsn start = Lsn{}) {
    workers_.push_back(std::make_unique<PipelineWorker>(
        sink, [](Sink&) -> Result<Lsn> { return Error::Permanent("no rebuild in this test"); },
        [](const std::string&) {}, size_t{1} << 20));
    workers_.back()->Start(start);
    return *workers_.back();
  }
  void TearDown() override {
    for (auto& worker : workers_) worker->Stop(std::chrono::steady_clock::now());
  }
  std::vector<std::unique_ptr<PipelineWorker>> workers_;
};

TEST_F(SlotConfirmationTest, NoStoresNoPosition) {
  EXPECT_EQ(SlowestDurable(workers_), std::nullopt);
}

TEST_F(SlotConfirmationTest, TheSlowestStoreHoldsTheSlot) {
  FakeSink fast("fast"), slow("slow");
  PipelineWorker& a = Add(fast);
  PipelineWorker& b = Add(slow);
  slow.Hold(true);
  ASSERT_TRUE(a.Offer(TestBatch(1, 3), kNoWait));
  ASSERT_TRUE(b.Offer(TestBatch(1, 3), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return a.Durable() == EndOf(3); }));
  EXPECT_EQ(SlowestDurable(workers_), Lsn{}) << "the slow store has applied nothing";
  slow.Hold(false);
  ASSERT_TRUE(WaitFor([&] { return SlowestDurable(workers_) == EndOf(3); }));
}

// Applied is not durable: a store with a durability delay (Redis appendfsync everysec)
// holds the slot at its previous checkpoint until the delay has passed.
TEST_F(SlotConfirmationTest, AStoreWithADurabilityDelayHoldsTheSlotUntilDurable) {
  FakeSink instant("instant"), delayed("delayed", std::chrono::milliseconds(300));
  PipelineWorker& a = Add(instant, EndOf(1));
  PipelineWorker& b = Add(delayed, EndOf(1));
  ASSERT_TRUE(a.Offer(TestBatch(2, 2), kNoWait));
  ASSERT_TRUE(b.Offer(TestBatch(2, 2), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return b.checkpoint() == EndOf(2) && a.Durable() == EndOf(2); }));
  const auto applied = std::chrono::steady_clock::now();
  const std::optional<Lsn> now = SlowestDurable(workers_);
  if (std::chrono::steady_clock::now() - applied < std::chrono::milliseconds(250)) {
    EXPECT_EQ(now, EndOf(1)) << "applied, not yet durable";
  }
  ASSERT_TRUE(WaitFor([&] { return SlowestDurable(workers_) == EndOf(2); }));
}

// A detached store (here: failed for good) holds the slot at what it made durable,
// while the others move on: it rejoins, or is rebuilt, from there.
TEST_F(SlotConfirmationTest, ADetachedStoreHoldsTheSlot) {
  FakeSink ok("ok"), broken("broken");
  PipelineWorker& a = Add(ok);
  PipelineWorker& b = Add(broken);
  ASSERT_TRUE(a.Offer(TestBatch(1, 1), kNoWait));
  ASSERT_TRUE(b.Offer(TestBatch(1, 1), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return SlowestDurable(workers_) == EndOf(1); }));
  broken.FailNext(1, ErrorKind::kPermanent);
  ASSERT_TRUE(b.Offer(TestBatch(2, 2), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return b.detached(); }));
  for (int i = 3; i <= 5; ++i) {
    ASSERT_TRUE(a.Offer(TestBatch(i, i), kNoWait));
    EXPECT_FALSE(b.Offer(TestBatch(i, i), kNoWait));
  }
  ASSERT_TRUE(WaitFor([&] { return a.Durable() == EndOf(5); }));
  EXPECT_EQ(SlowestDurable(workers_), EndOf(1));
}

// The one exception: a postgres store on the source's own server that cannot reach it
// (the server is stopping) does not hold the slot while the stream is idle; it is told
// that the slot passed it. Not when the stream is busy, nor for another store.
TEST_F(SlotConfirmationTest, AStoreOnTheStoppingSourceDoesNotHoldAnIdleSlot) {
  FakeSink ok("ok"), local("local");
  PipelineWorker& a = Add(ok, EndOf(1));
  PipelineWorker& b = Add(local, EndOf(1));
  ASSERT_TRUE(a.Offer(TestBatch(2, 2), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return a.Durable() == EndOf(2); }));
  local.FailNext(1000);  // cannot reach its server; retries
  ASSERT_TRUE(b.Offer(TestBatch(2, 2), kNoWait));
  ASSERT_TRUE(WaitFor([&] { return !b.healthy(); }));
  ASSERT_FALSE(b.detached());

  SourceServerStores on_source{{"local"}, /*idle=*/false, EndOf(2)};
  EXPECT_EQ(SlowestDurable(workers_, &on_source), EndOf(1)) << "busy: the slot waits";
  SourceServerStores elsewhere{{"other"}, /*idle=*/true, EndOf(2)};
  EXPECT_EQ(SlowestDurable(workers_, &elsewhere), EndOf(1)) << "not on the source";
  on_source.idle = true;
  EXPECT_EQ(SlowestDurable(workers_, &on_source), EndOf(2));
  EXPECT_EQ(SlowestDurable(workers_), EndOf(1)) << "at stop there is no exception";
}

}  // namespace
}  // namespace pgderive
