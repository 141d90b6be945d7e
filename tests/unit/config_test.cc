#include "config/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace pgderive {
namespace {

// SPEC.md §3, verbatim.
constexpr const char* kSpecExample =
    R"(pipeline: shop                      # names the slot, publication and checkpoints
source:
  dsn: postgresql://postgres@127.0.0.1:5432/shop
  # slot: pgderive_shop             # defaults derived from `pipeline`
  # publication: pgderive_shop
stores:
  cache:
    type: redis
    url: redis://127.0.0.1:6379/0
  search:
    type: opensearch
    url: http://127.0.0.1:9200
  warehouse:
    type: postgres
    dsn: postgresql://postgres@127.0.0.1:5432/shop
views:
  - name: product_cache             # one Redis key per row
    store: cache
    from: public.products
    key: "product:{id}"             # template over the row's columns
    columns: [id, sku, title, price, tags, attrs, updated_at]   # default: all
  - name: product_search            # one document per row, _id = primary key
    store: search
    from: public.products
    index: products
    columns: [id, sku, title, description, price, tags]
  - name: customer_totals           # a table kept equal to a query
    store: warehouse
    table: analytics.customer_totals
    key: [customer_id]
    query: |
      select o.customer_id, c.name, count(*) as orders, sum(o.amount) as total
      from public.orders o join public.customers c on c.id = o.customer_id
      group by o.customer_id, c.name
http:
  listen: 127.0.0.1:9187            # /healthz, /readyz, /metrics (Prometheus text)
)";

TEST(ConfigTest, SpecExampleLoadsAsWritten) {
  ConfigResult result = ParseConfig(kSpecExample, "shop.yml");
  ASSERT_TRUE(result.config.has_value()) << result.Describe("shop.yml");
  const Config& c = *result.config;
  EXPECT_EQ(c.pipeline, "shop");
  EXPECT_EQ(c.source.slot, "pgderive_shop");
  EXPECT_EQ(c.source.publication, "pgderive_shop");
  ASSERT_EQ(c.stores.size(), 3u);
  EXPECT_EQ(c.stores.at("search").type, StoreType::kOpenSearch);
  EXPECT_EQ(c.stores.at("warehouse").dsn, "postgresql://postgres@127.0.0.1:5432/shop");
  ASSERT_EQ(c.views.size(), 3u);
  EXPECT_EQ(c.views[0].key_template, "product:{id}");
  ASSERT_TRUE(c.views[0].columns.has_value());
  EXPECT_EQ(c.views[0].columns->size(), 7u);
  EXPECT_EQ(c.views[0].line, 17);
  EXPECT_EQ(c.views[1].index, "products");
  EXPECT_EQ(c.views[2].key_columns, std::vector<std::string>{"customer_id"});
  EXPECT_NE(c.views[2].query.find("group by o.customer_id"), std::string::npos);
  EXPECT_EQ(c.SourceTables(), std::vector<std::string>{"public.products"});
  EXPECT_EQ(c.http.listen, "127.0.0.1:9187");
  EXPECT_EQ(c.snapshot.workers, 4);
}

TEST(ConfigTest, SnapshotWorkers) {
  const std::string base = "pipeline: p\nsource:\n  dsn: postgresql://db/shop\n";
  ConfigResult two = ParseConfig(base + "snapshot:\n  workers: 2\n", "w.yml");
  ASSERT_TRUE(two.config.has_value()) << two.Describe("w.yml");
  EXPECT_EQ(two.config->snapshot.workers, 2);
  for (const char* bad : {"0", "65", "two", "2.5", "[2]"}) {
    ConfigResult result = ParseConfig(base + "snapshot:\n  workers: " + bad + "\n", "w.yml");
    EXPECT_EQ(result.Describe("w.yml"),
              "w.yml:5:12: snapshot.workers: must be a whole number from 1 to 64\n")
        << bad;
  }
}

TEST(ConfigTest, ExpandsEnvironmentVariables) {
  setenv("PGDERIVE_TEST_PW", "s3cret", 1);
  ConfigResult result = ParseConfig(
      "pipeline: p\nsource:\n  dsn: postgresql://app:${PGDERIVE_TEST_PW}@db/shop\n", "p.yml");
  ASSERT_TRUE(result.config.has_value()) << result.Describe("p.yml");
  EXPECT_EQ(result.config->source.dsn, "postgresql://app:s3cret@db/shop");
  EXPECT_TRUE(result.config->views.empty());
}

TEST(ConfigTest, ReportsEveryProblemWithItsLine) {
  unsetenv("PGDERIVE_TEST_UNSET");
  const char* broken = R"(pipeline: Shop-1
source:
  dsn: postgresql://app:${PGDERIVE_TEST_UNSET}@db/shop
  slots: x
stores:
  cache:
    type: memcached
views:
  - name: a
    store: nowhere
    from: t
  - name: a
    store: cache
    columns: id
extra: 1
)";
  ConfigResult result = ParseConfig(broken, "bad.yml");
  EXPECT_FALSE(result.config.has_value());
  const std::string text = result.Describe("bad.yml");
  for (const char* expected :
       {"bad.yml:1:11: pipeline: must be lower-case",
        "bad.yml:3:8: source.dsn: environment variable PGDERIVE_TEST_UNSET is not set",
        "bad.yml:4:3: source.slots: unknown key",
        "bad.yml:7:11: stores.cache.type: unknown store type 'memcached'",
        "bad.yml:10:12: views[0].store: no store named 'nowhere'",
        "bad.yml:12:11: views[1].name: another view has the name 'a'",
        "bad.yml:15:1: extra: unknown key"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << "missing: " << expected << "\nin:\n"
                                                      << text;
  }
  EXPECT_GE(result.problems.size(), 7u);
}

TEST(ConfigTest, MissingPiecesAndBadYaml) {
  ConfigResult empty = ParseConfig("pipeline: p\n", "e.yml");
  EXPECT_NE(empty.Describe("e.yml").find("source: required mapping is missing"), std::string::npos);
  ConfigResult yaml = ParseConfig("pipeline: [unclosed\n", "y.yml");
  ASSERT_EQ(yaml.problems.size(), 1u);
  EXPECT_NE(yaml.Describe("y.yml").find("not valid YAML"), std::string::npos);
  ConfigResult missing = LoadConfigFile("/nonexistent/pgderive.yml");
  EXPECT_EQ(missing.Describe("/nonexistent/pgderive.yml"),
            "/nonexistent/pgderive.yml: cannot read the file\n");
}

TEST(ConfigTest, ProblemsNeverQuoteASecret) {
  ConfigResult result =
      ParseConfig("pipeline: p\nsource:\n  dsn: [postgresql://app:Hunter2@db/shop]\n", "s.yml");
  ASSERT_FALSE(result.config.has_value());
  EXPECT_EQ(result.Describe("s.yml").find("Hunter2"), std::string::npos);
}

}  // namespace
}  // namespace pgderive
