// The sidecar's HTTP endpoint refuses a port another pgderive already serves on (two
// pipelines answering on one port would mix their /status and /metrics).
#include "base/http_server.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

HttpServer::Handlers Handlers() {
  return {[] { return std::vector<std::string>{}; },
          [] { return std::string(); },
          [] { return std::string("{}"); },
          {},
          {}};
}

TEST(HttpServer, APortAnotherPgderiveServesOnIsRefused) {
  auto first = HttpServer::Start("127.0.0.1:0", Handlers());
  ASSERT_TRUE(first.ok()) << first.error().ToString();
  const std::string taken = "127.0.0.1:" + std::to_string(first.value()->port());
  auto second = HttpServer::Start(taken, Handlers());
  ASSERT_FALSE(second.ok()) << "a second server bound " << taken;
  EXPECT_NE(second.error().message().find("cannot listen on " + taken), std::string::npos)
      << second.error().message();
}

}  // namespace
}  // namespace pgderive
