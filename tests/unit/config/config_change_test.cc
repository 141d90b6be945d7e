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

// What the change log does at its bound is applied by a reload (as every spool key).
TEST(ConfigChangeTest, ASpoolWhenFullChangeIsASettingsChange) {
  const ConfigChange change =
      CompareConfigs(Parse(kBase), Parse(kBase + "spool:\n  when_full: pause\n"));
  EXPECT_EQ(change.settings_changed, std::vector<std::string>{"spool"});
}

// A view's promote or retain_previous changed (its definition not): applied by the
// reload without a rebuild.
TEST(ConfigChangeTest, AViewsPromoteOrRetainPreviousIsASettingsChangeNotARebuild) {
  for (const char* added : {"    promote: manual\n", "    retain_previous: 10m\n"}) {
    const ConfigChange change = CompareConfigs(Parse(kBase), Parse(kBase + added));
    EXPECT_TRUE(change.views_redefined.empty()) << added;
    EXPECT_EQ(change.settings_changed,
              std::vector<std::string>{"view products promote/retain_previous"})
        << added;
  }
}

// The fingerprint a row store records with a view's state: what decides an entry's
// content and key changes it; what does not (workers, store url, comments) does not.
TEST(ConfigChangeTest, TheDefinitionFingerprintFollowsWhatDecidesAnEntry) {
  auto fingerprint = [](const std::string& text) {
    const Config config = Parse(text);
    EXPECT_EQ(config.views.size(), 1u);
    return config.views.empty() ? std::string() : ViewDefinitionFingerprint(config.views[0]);
  };
  auto replaced = [](std::string text, const std::string& from, const std::string& to) {
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
    return text;
  };
  const std::string base = fingerprint(kBase);
  EXPECT_EQ(base.size(), 19u);
  EXPECT_EQ(base.substr(0, 3), "v1:");
  // Stable: the same definition, written otherwise around it.
  EXPECT_EQ(fingerprint(kBase + "# a comment\nsnapshot:\n  workers: 9\n"), base);
  EXPECT_EQ(fingerprint(replaced(kBase, "redis://localhost:6379", "redis://cache:6380")), base);
  EXPECT_EQ(fingerprint(replaced(kBase, "pipeline: shop", "pipeline: shop2")), base);

  const std::string columns = fingerprint(kBase + "    columns: [id, name]\n");
  EXPECT_NE(columns, base);  // a fixed list is not following the table
  EXPECT_EQ(fingerprint(kBase + "    columns: [id, name]\n"), columns);
  EXPECT_NE(fingerprint(kBase + "    columns: [id, name, price]\n"), columns);
  EXPECT_NE(fingerprint(kBase + "    columns: [name, id]\n"), columns);
  EXPECT_NE(fingerprint(kBase + "    columns: [id]\n"), columns);
  EXPECT_NE(fingerprint(replaced(kBase, "product:{id}", "item:{id}")), base);
  EXPECT_NE(fingerprint(replaced(kBase, "from: public.products", "from: public.items")), base);
  const std::string two_stores = replaced(
      kBase, "views:", "  other:\n    type: redis\n    url: redis://localhost:6379\nviews:");
  EXPECT_EQ(fingerprint(two_stores), base);
  EXPECT_NE(fingerprint(replaced(two_stores, "store: cache", "store: other")), base);

  // Reload's comparison is the fingerprint's.
  const Config a = Parse(kBase);
  const Config b = Parse(kBase + "    columns: [id, name]\n");
  EXPECT_TRUE(SameViewDefinition(a.views[0], Parse(kBase + "# x\n").views[0]));
  EXPECT_FALSE(SameViewDefinition(a.views[0], b.views[0]));
}

TEST(ConfigChangeTest, TheDefinitionFingerprintOfAnOpenSearchViewFollowsItsIndex) {
  const std::string text = R"(pipeline: shop
source:
  dsn: "host=db dbname=shop"
stores:
  search:
    type: opensearch
    url: http://localhost:9200
views:
  - name: products
    store: search
    from: public.products
    index: products
)";
  const Config config = Parse(text);
  ASSERT_EQ(config.views.size(), 1u);
  ViewConfig other = config.views[0];
  EXPECT_EQ(ViewDefinitionFingerprint(other), ViewDefinitionFingerprint(config.views[0]));
  other.index = "products_v2";
  EXPECT_NE(ViewDefinitionFingerprint(other), ViewDefinitionFingerprint(config.views[0]));
}

}  // namespace
}  // namespace pgderive
