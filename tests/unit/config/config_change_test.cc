// What a reload would change: views added, removed and redefined; keys that cannot
// change while running refused at their line.
#include "config/config_change.h"

#include <gtest/gtest.h>

namespace pgderive {
namespace {

const std::string kBase = R"(pipeline: shop
source:
  dsn: "host=db dbname=shop"
stores:
  cache:
    type: redis
    url: redis://localhost:6379
views:
  - name: products
    store: cache
    from: public.products
    key: "product:{id}"
)";

Config Parse(const std::string& text) {
  ConfigResult result = ParseConfig(text, "shop.yml");
  EXPECT_TRUE(result.config) << result.Describe("shop.yml");
  return result.config ? *result.config : Config{};
}

TEST(ConfigChangeTest, TheSameFileChangesNothing) {
  const ConfigChange change = CompareConfigs(Parse(kBase), Parse(kBase + "# a comment\n"));
  EXPECT_TRUE(change.empty());
  EXPECT_EQ(change.Summary(), "no change");
}

TEST(ConfigChangeTest, ViewsAddedRemovedAndRedefined) {
  const std::string next = R"(pipeline: shop
source:
  dsn: "host=db dbname=shop"
stores:
  cache:
    type: redis
    url: redis://localhost:6379
views:
  - name: products
    store: cache
    from: public.products
    key: "product:{id}"
    columns: [id, name]
  - name: users
    store: cache
    from: public.users
    key: "user:{id}"
)";
  ConfigChange change = CompareConfigs(Parse(kBase), Parse(next));
  EXPECT_TRUE(change.refused.empty());
  EXPECT_EQ(change.views_added, std::vector<std::string>{"users"});
  EXPECT_EQ(change.views_redefined, std::vector<std::string>{"products"});
  EXPECT_TRUE(change.views_removed.empty());
  EXPECT_FALSE(change.empty());
  EXPECT_EQ(change.Summary(), "views added: users; views rebuilt: products");

  change = CompareConfigs(Parse(next), Parse(kBase));
  EXPECT_EQ(change.views_removed, std::vector<std::string>{"users"});
  EXPECT_EQ(change.views_redefined, std::vector<std::string>{"products"});
}

TEST(ConfigChangeTest, KeysThatCannotChangeWhileRunningAreRefusedAtTheirLine) {
  std::string next = kBase;
  next.replace(next.find("  dsn:"), 0, "  slot: other_slot\n");
  next += "http:\n  listen: 127.0.0.1:9999\n";
  const ConfigChange change = CompareConfigs(Parse(kBase), Parse(next));
  ASSERT_EQ(change.refused.size(), 2u);
  EXPECT_EQ(change.refused[0].key, "source.slot");
  EXPECT_EQ(change.refused[0].line, 3);
  EXPECT_EQ(change.refused[0].column, 9);
  EXPECT_NE(change.refused[0].message.find("cannot change while pgderive runs (the running "
                                           "pipeline has slot pgderive_shop)"),
            std::string::npos)
      << change.refused[0].message;
  EXPECT_EQ(change.refused[1].key, "http.listen");
  EXPECT_EQ(change.refused[1].line, 15);
  EXPECT_EQ(change.refused[1].column, 11);
}

TEST(ConfigChangeTest, ADsnChangeIsRefusedWithoutQuotingIt) {
  std::string next = kBase;
  next.replace(next.find("host=db"), 7, "host=db password=secret");
  const ConfigChange change = CompareConfigs(Parse(kBase), Parse(next));
  ASSERT_EQ(change.refused.size(), 1u);
  EXPECT_EQ(change.refused[0].key, "source.dsn");
  EXPECT_EQ(change.refused[0].line, 3);
  EXPECT_EQ(change.refused[0].message.find("secret"), std::string::npos);
}

TEST(ConfigChangeTest, LogSettingsWaitForTheNextStart) {
  const ConfigChange change = CompareConfigs(Parse(kBase), Parse(kBase + "log:\n  level: debug\n"));
  EXPECT_TRUE(change.empty());
  EXPECT_EQ(change.kept_until_restart, std::vector<std::string>{"log.level"});
}

}  // namespace
}  // namespace pgderive
