// The stoppable thread: a stop wakes a wait given the token without the stopping side
// taking the body's mutex or notifying, Stop joins, a stop before Start holds, and a
// second Start while the body runs starts nothing.
#include "base/stoppable_thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "tests/support/wait.h"

namespace pgderive {
namespace {

using testing::WaitFor;

TEST(StoppableThreadTest, StopEndsAWaitGivenTheTokenAndJoins) {
  std::mutex mutex;
  std::condition_variable_any cv;
  std::atomic<bool> waiting{false};
  std::atomic<bool> returned{false};
  StoppableThread thread;
  ASSERT_TRUE(thread.Start([&](std::stop_token stop) {
    std::unique_lock lock(mutex);
    waiting.store(true);
    cv.wait_for(lock, stop, std::chrono::hours(1), [] { return false; });
    returned.store(stop.stop_requested());
  }));
  ASSERT_TRUE(WaitFor([&] { return waiting.load(); }));
  EXPECT_FALSE(thread.stop_requested());
  const auto started = std::chrono::steady_clock::now();
  thread.Stop();  // neither locks `mutex` nor notifies `cv`
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  EXPECT_TRUE(returned.load());  // joined: the body has returned
  EXPECT_TRUE(thread.stop_requested());
  EXPECT_TRUE(thread.token().stop_requested());
  thread.Stop();  // twice is harmless
}

TEST(StoppableThreadTest, ASecondStartWhileTheBodyRunsStartsNothing) {
  std::atomic<int> bodies{0};
  StoppableThread thread;
  auto body = [&](std::stop_token stop) {
    bodies.fetch_add(1);
    std::mutex mutex;
    std::condition_variable_any cv;
    std::unique_lock lock(mutex);
    cv.wait(lock, stop, [] { return false; });
  };
  ASSERT_TRUE(thread.Start(body));
  EXPECT_FALSE(thread.Start(body));
  thread.Stop();
  EXPECT_EQ(bodies.load(), 1);
}

TEST(StoppableThreadTest, AStopAskedBeforeStartHolds) {
  StoppableThread thread;
  thread.Stop();  // nothing to join
  std::atomic<bool> saw_stop{false};
  ASSERT_TRUE(thread.Start([&](std::stop_token stop) { saw_stop.store(stop.stop_requested()); }));
  thread.Stop();
  EXPECT_TRUE(saw_stop.load());
}

TEST(StoppableThreadTest, TheDestructorStopsAndJoins) {
  std::atomic<bool> returned{false};
  {
    StoppableThread thread;
    thread.Start([&](std::stop_token stop) {
      std::mutex mutex;
      std::condition_variable_any cv;
      std::unique_lock lock(mutex);
      cv.wait(lock, stop, [] { return false; });
      returned.store(true);
    });
  }
  EXPECT_TRUE(returned.load());
}

}  // namespace
}  // namespace pgderive
