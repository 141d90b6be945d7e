// HolderIsGoneHere: the lock session of a `run` of this host whose process is gone is told
// from a live one and from another host's.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <string>

#include "pipeline/run_lock.h"

namespace pgderive {
namespace {

std::string Host() {
  char host[HOST_NAME_MAX + 1] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

TEST(RunLockHolderTest, AGoneProcessOfThisHostIsToldFromALiveOneAndAnotherHosts) {
  // A pid that existed and is gone: a child that exited and was reaped.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  ASSERT_EQ(waitpid(child, nullptr, 0), child);
  const std::string gone = std::to_string(child);
  const std::string live = std::to_string(getpid());
  auto holder = [](const std::string& name) {
    LockHolder h;
    h.application_name = name;
    return h;
  };
  EXPECT_TRUE(HolderIsGoneHere(holder("pgderive run pid " + gone + " on " + Host())));
  EXPECT_TRUE(HolderIsGoneHere(
      holder("pgderive run pid " + gone + " on " + Host() + ", http 127.0.0.1:9187")));
  EXPECT_FALSE(HolderIsGoneHere(holder("pgderive run pid " + live + " on " + Host())));
  EXPECT_FALSE(HolderIsGoneHere(holder("pgderive run pid " + gone + " on " + Host() + "x")));
  EXPECT_FALSE(HolderIsGoneHere(holder("pgderive run pid " + gone + " on another-host")));
  EXPECT_FALSE(HolderIsGoneHere(holder("pgderive teardown pid " + gone + " on " + Host())));
  EXPECT_FALSE(HolderIsGoneHere(holder("")));
}

}  // namespace
}  // namespace pgderive
