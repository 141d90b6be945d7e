#include "base/retry.h"

#include <gtest/gtest.h>

#include <vector>

namespace pgderive {
namespace {

TEST(BackoffTest, DoublesFromTheInitialDelayAndNeverExceedsTheMaximum) {
  Backoff backoff(std::chrono::milliseconds(1000), std::chrono::milliseconds(4000));
  const auto first = backoff.Next();
  EXPECT_GE(first.count(), 800);
  EXPECT_LE(first.count(), 1200);
  const auto second = backoff.Next();
  EXPECT_GE(second.count(), 1600);
  EXPECT_LE(second.count(), 2400);
  // Jitter never takes a delay past the maximum (it once reached 1.2 x the maximum).
  for (int i = 0; i < 200; ++i) EXPECT_LE(backoff.Next().count(), 4000);
  backoff.Reset();
  EXPECT_LE(backoff.Next().count(), 1200);
}

TEST(RetryTransientTest, RetriesTransientErrorsUntilTheAttemptWorks) {
  int calls = 0;
  std::vector<std::string> logged;
  std::vector<std::chrono::milliseconds> waited;
  Status status = RetryTransient(
      [&]() -> Status {
        if (++calls < 3) return Error::Transient("store unreachable");
        return Status::Ok();
      },
      [] { return false; }, [&](const std::string& m) { logged.push_back(m); },
      [&](std::chrono::milliseconds wait) { waited.push_back(wait); });
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(calls, 3);
  ASSERT_EQ(logged.size(), 2u);
  EXPECT_EQ(logged[0].rfind("store unreachable; retrying in ", 0), 0u) << logged[0];
  ASSERT_EQ(waited.size(), 2u);
  EXPECT_GE(waited[0].count(), 160);  // 200 ms +-20%
  EXPECT_LE(waited[0].count(), 240);
  EXPECT_LE(waited[1].count(), 10000);
}

TEST(RetryTransientTest, ReturnsAnErrorThatIsNotTransientAtOnce) {
  int calls = 0;
  Result<int> result = RetryTransient(
      [&]() -> Result<int> {
        ++calls;
        return Error::Permanent("bad view");
      },
      [] { return false; }, [](const std::string&) { FAIL() << "nothing to retry"; },
      [](std::chrono::milliseconds) {});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().message(), "bad view");
  EXPECT_EQ(calls, 1);
}

TEST(RetryTransientTest, StopsRetryingOnceStoppedAndReturnsTheLastError) {
  int calls = 0;
  bool stop = false;
  Status status = RetryTransient(
      [&]() -> Status {
        if (++calls == 2) stop = true;
        return Error::Transient("connection refused");
      },
      [&] { return stop; }, [](const std::string&) {});  // the default wait polls `stopped`
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(), "connection refused");
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace pgderive
