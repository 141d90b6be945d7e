// The pure parts of one pipeline, one process and of teardown: how a lock's holder is
// named, and what a teardown reports as removed and as left (fake stores; a source
// nothing answers on).
#include "pipeline/teardown.h"

#include <gtest/gtest.h>

#include "pipeline/run_lock.h"
#include "tests/support/fake_sink.h"

namespace pgderive {
namespace {

TEST(LockHolder, DescribesTheProcessAndItsSourceSession) {
  EXPECT_EQ((LockHolder{"pgderive run pid 42 on web1, http 127.0.0.1:9187", "5151", "10.0.0.7",
                        "2026-11-29 17:40:40+00"})
                .Describe(),
            "pgderive run pid 42 on web1, http 127.0.0.1:9187 (source session: server pid 5151, "
            "from 10.0.0.7, since 2026-11-29 17:40:40+00)");
  // What a role without the right to see another's session reads.
  EXPECT_EQ((LockHolder{"pgderive run pid 42 on web1", "5151", "", ""}).Describe(),
            "pgderive run pid 42 on web1 (source session: server pid 5151)");
  EXPECT_EQ(LockHolder{}.Describe(), "a session without a name");
}

TEST(ProcessName, NamesCommandPidAndHost) {
  const std::string name = ProcessName("run");
  EXPECT_EQ(name.rfind("pgderive run pid " + std::to_string(getpid()), 0), 0u) << name;
}

TEST(TeardownPipeline, ReportsWhatWasRemovedAndWhatIsLeft) {
  Config config;
  config.pipeline = "shop";
  config.source.dsn = "host=127.0.0.1 port=1 dbname=x connect_timeout=2";
  config.source.slot = "pgderive_shop";
  config.source.publication = "pgderive_shop";
  std::vector<std::unique_ptr<Sink>> sinks;
  auto cache = std::make_unique<testing::FakeSink>("cache");
  ASSERT_TRUE(cache->EndRebuild(Lsn{0x10}).ok());
  auto search = std::make_unique<testing::FakeSink>("search");
  search->FailNext(1);
  sinks.push_back(std::move(cache));
  sinks.push_back(std::move(search));

  const TeardownReport report = TeardownPipeline(config, sinks, /*views=*/true);
  EXPECT_EQ(report.removed, std::vector<std::string>{"from store cache: checkpoint"});
  ASSERT_EQ(report.left.size(), 2u);
  EXPECT_EQ(report.left[0],
            "in store search: search is down; what pgderive keeps there for pipeline shop "
            "(checkpoint, views' states, metadata and the data of view(s) v) may be left");
  EXPECT_EQ(report.left[1].rfind("on the source: cannot connect to PostgreSQL: ", 0), 0u)
      << report.left[1];
  EXPECT_NE(report.left[1].find("; slot pgderive_shop and publication pgderive_shop if they exist"),
            std::string::npos)
      << report.left[1];

  // Again, the store back: it has nothing left; the cache neither.
  const TeardownReport again = TeardownPipeline(config, sinks, /*views=*/true);
  EXPECT_TRUE(again.removed.empty());
  EXPECT_EQ(again.left.size(), 1u);  // the source, still unreachable
}

}  // namespace
}  // namespace pgderive
