#include "config/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "config/grammar.h"
#include "config/url.h"
#include "tests/support/subprocess.h"

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
  ASSERT_TRUE(c.views[0].key);  // parsed here, once
  EXPECT_EQ(c.views[0].key->text(), "product:{id}");
  EXPECT_EQ(c.views[0].key->columns(), std::vector<std::string>{"id"});
  EXPECT_FALSE(c.views[1].key);  // not a Redis view
  ASSERT_TRUE(c.views[0].columns.has_value());
  EXPECT_EQ(c.views[0].columns->size(), 7u);
  EXPECT_EQ(c.views[0].line, 17);
  EXPECT_EQ(c.views[1].index, "products");
  EXPECT_EQ(c.views[2].key_columns, std::vector<std::string>{"customer_id"});
  EXPECT_NE(c.views[2].query.find("group by o.customer_id"), std::string::npos);
  EXPECT_EQ(c.SourceTables(), std::vector<std::string>{"public.products"});
  EXPECT_EQ(c.http.listen, "127.0.0.1:9187");
  EXPECT_EQ(c.snapshot.workers, 4);
  EXPECT_EQ(c.source.heartbeat_seconds, 10);
  EXPECT_EQ(c.source.max_retained_wal_bytes, uint64_t{1} << 30);
  EXPECT_EQ(c.log.format, LogFormat::kJson);
  EXPECT_EQ(c.log.level, LogLevel::kInfo);
}

// A valid file's stores and views, for tests that vary something else.
constexpr const char* kOneView =
    "stores:\n  c: {type: redis, url: \"redis://127.0.0.1:6379/0\"}\n"
    "views:\n  - {name: v, store: c, from: t, key: \"t:{id}\"}\n";
// The smallest valid file (8 lines): a pipeline, its source and kOneView.
const std::string kMinimal =
    "pipeline: p\nsource:\n  dsn: postgresql://db/shop\n" + std::string(kOneView);

// The deployment examples parse, each with the change log on a writable volume (the
// configuration itself is mounted read-only there); the demo keeps the default beside
// its file.
TEST(ConfigTest, TheDeploymentExamplesPutTheChangeLogOnAVolume) {
  const std::filesystem::path source(testing::SourceDir());
  setenv("POSTGRES_PASSWORD", "example-pw", 1);
  {
    const ConfigResult compose = LoadConfigFile((source / "compose/pgderive.yml").string());
    ASSERT_TRUE(compose.config.has_value()) << compose.Describe("compose/pgderive.yml");
    EXPECT_TRUE(compose.config->spool.enabled);
    EXPECT_EQ(compose.config->spool.dir, "/var/lib/pgderive/shop");
  }
  {
    // The ConfigMap's pgderive.yml: the block after `pgderive.yml: |`, 4 spaces in.
    std::ifstream in(source / "compose/kubernetes/pgderive.yaml");
    std::string line, text;
    bool inside = false;
    while (std::getline(in, line)) {
      if (line == "  pgderive.yml: |") {
        inside = true;
      } else if (inside && line == "---") {
        break;
      } else if (inside) {
        text += (line.size() > 4 ? line.substr(4) : "") + "\n";
      }
    }
    ASSERT_FALSE(text.empty());
    const ConfigResult k8s = ParseConfig(text, "/etc/pgderive/pgderive.yml");
    ASSERT_TRUE(k8s.config.has_value()) << k8s.Describe("pgderive.yml");
    EXPECT_TRUE(k8s.config->spool.enabled);
    EXPECT_EQ(k8s.config->spool.dir, "/var/lib/pgderive/shop");
  }
  unsetenv("POSTGRES_PASSWORD");
  const std::map<std::string, std::string> demo_env = {
      {"PGDERIVE_SHOP_DSN", "postgresql://u@127.0.0.1/shop"},
      {"PGDERIVE_REDIS_URL", "redis://127.0.0.1:6379/0"},
      {"PGDERIVE_OPENSEARCH_URL", "http://127.0.0.1:9200"},
      {"PGDERIVE_HTTP_LISTEN", "127.0.0.1:9187"}};
  for (const auto& [name, value] : demo_env) setenv(name.c_str(), value.c_str(), 1);
  const ConfigResult demo = LoadConfigFile((source / "compose/local/demo.yml").string());
  ASSERT_TRUE(demo.config.has_value()) << demo.Describe("compose/local/demo.yml");
  EXPECT_TRUE(demo.config->spool.enabled);
  EXPECT_EQ(demo.config->spool.dir,
            (source / "compose/local/pgderive-spool/shop").lexically_normal().string());
  for (const auto& [name, value] : demo_env) unsetenv(name.c_str());
}

TEST(ConfigTest, SnapshotWorkers) {
  const std::string& base = kMinimal;
  ConfigResult two = ParseConfig(base + "snapshot:\n  workers: 2\n", "w.yml");
  ASSERT_TRUE(two.config.has_value()) << two.Describe("w.yml");
  EXPECT_EQ(two.config->snapshot.workers, 2);
  for (const char* bad : {"0", "65", "two", "2.5", "[2]"}) {
    ConfigResult result = ParseConfig(base + "snapshot:\n  workers: " + bad + "\n", "w.yml");
    EXPECT_EQ(result.Describe("w.yml"),
              "w.yml:9:12: snapshot.workers: must be a whole number from 1 to 64\n")
        << bad;
  }
}

TEST(ConfigTest, Verify) {
  ConfigResult defaults = ParseConfig(kMinimal, "w.yml");
  ASSERT_TRUE(defaults.config.has_value()) << defaults.Describe("w.yml");
  EXPECT_TRUE(defaults.config->verify.continuous);  // on by default
  EXPECT_EQ(defaults.config->verify.rows_per_second, 1000);
  EXPECT_TRUE(defaults.config->verify.repair);
  ConfigResult set = ParseConfig(
      kMinimal + "verify:\n  continuous: off\n  rows_per_second: 50\n  repair: report\n", "w.yml");
  ASSERT_TRUE(set.config.has_value()) << set.Describe("w.yml");
  EXPECT_FALSE(set.config->verify.continuous);
  EXPECT_EQ(set.config->verify.rows_per_second, 50);
  EXPECT_FALSE(set.config->verify.repair);
  EXPECT_EQ(ParseConfig(kMinimal + "verify:\n  repair: fix\n", "w.yml").Describe("w.yml"),
            "w.yml:9:11: verify.repair: must be one of: auto, report\n");
  EXPECT_EQ(ParseConfig(kMinimal + "verify:\n  rows_per_second: 0\n", "w.yml").Describe("w.yml"),
            "w.yml:9:20: verify.rows_per_second: must be a whole number from 1 to 10000000\n");
  EXPECT_EQ(ParseConfig(kMinimal + "verify:\n  continuous: yes\n", "w.yml").Describe("w.yml"),
            "w.yml:9:15: verify.continuous: must be one of: on, off\n");
  EXPECT_EQ(ParseConfig(kMinimal + "verify:\n  speed: 3\n", "w.yml").Describe("w.yml").empty(),
            false);
  // `verify: off` as `spool: off`; another word is refused where it stands.
  ConfigResult off = ParseConfig(kMinimal + "verify: off\n", "w.yml");
  ASSERT_TRUE(off.config.has_value()) << off.Describe("w.yml");
  EXPECT_FALSE(off.config->verify.continuous);
  EXPECT_EQ(ParseConfig(kMinimal + "verify: no\n", "w.yml").Describe("w.yml"),
            "w.yml:8:9: verify: must be `on`, `off` or a mapping of continuous, rows_per_second, "
            "repair\n");
  ConfigResult on = ParseConfig(kMinimal + "verify: on\n", "w.yml");
  ASSERT_TRUE(on.config.has_value()) << on.Describe("w.yml");
  EXPECT_TRUE(on.config->verify.continuous);
}

TEST(ConfigTest, Spool) {
  // On by default: no section is every default.
  ConfigResult absent = ParseConfig(kMinimal, "/etc/pgderive/w.yml");
  ASSERT_TRUE(absent.config.has_value()) << absent.Describe("w.yml");
  EXPECT_TRUE(absent.config->spool.enabled);
  EXPECT_EQ(absent.config->spool.dir, "/etc/pgderive/pgderive-spool/p");
  EXPECT_EQ(absent.config->spool.max_bytes, uint64_t{10} << 30);
  ConfigResult said_off = ParseConfig(kMinimal + "spool: off\n", "/etc/pgderive/w.yml");
  ASSERT_TRUE(said_off.config.has_value()) << said_off.Describe("w.yml");
  EXPECT_FALSE(said_off.config->spool.enabled);
  ConfigResult defaults = ParseConfig(kMinimal + "spool: {}\n", "/etc/pgderive/w.yml");
  ASSERT_TRUE(defaults.config.has_value()) << defaults.Describe("w.yml");
  EXPECT_TRUE(defaults.config->spool.enabled);
  EXPECT_EQ(defaults.config->spool.dir, "/etc/pgderive/pgderive-spool/p");
  EXPECT_EQ(defaults.config->spool.max_bytes, uint64_t{10} << 30);
  EXPECT_EQ(defaults.config->spool.segment_bytes, uint64_t{64} << 20);
  EXPECT_EQ(defaults.config->spool.when_full, SpoolConfig::WhenFull::kDetach);
  ConfigResult paused = ParseConfig(kMinimal + "spool:\n  when_full: pause\n", "w.yml");
  ASSERT_TRUE(paused.config.has_value()) << paused.Describe("w.yml");
  EXPECT_EQ(paused.config->spool.when_full, SpoolConfig::WhenFull::kPause);
  EXPECT_EQ(ParseConfig(kMinimal + "spool:\n  when_full: wait\n", "w.yml").Describe("w.yml"),
            "w.yml:9:14: spool.when_full: must be one of: detach, pause\n");
  ConfigResult set =
      ParseConfig(kMinimal + "spool:\n  dir: ../spool\n  max_bytes: 1GB\n  segment_bytes: 16MB\n",
                  "/etc/pgderive/w.yml");
  ASSERT_TRUE(set.config.has_value()) << set.Describe("w.yml");
  EXPECT_EQ(set.config->spool.dir, "/etc/spool");
  EXPECT_EQ(set.config->spool.max_bytes, uint64_t{1} << 30);
  EXPECT_EQ(set.config->spool.segment_bytes, uint64_t{16} << 20);
  ConfigResult absolute = ParseConfig(kMinimal + "spool:\n  dir: /var/lib/pgderive\n", "w.yml");
  ASSERT_TRUE(absolute.config.has_value()) << absolute.Describe("w.yml");
  EXPECT_EQ(absolute.config->spool.dir, "/var/lib/pgderive");
  EXPECT_EQ(
      ParseConfig(kMinimal + "spool: on\n", "w.yml").Describe("w.yml"),
      "w.yml:8:8: spool: must be `off` or a mapping of dir, max_bytes, segment_bytes, when_full\n");
  EXPECT_EQ(ParseConfig(kMinimal + "spool:\n  max_bytes: 64MB\n  segment_bytes: 64MB\n", "w.yml")
                .Describe("w.yml"),
            "w.yml:10:18: spool.segment_bytes: must be at most half of spool.max_bytes\n");
  // segment_bytes left at its default: the problem is at max_bytes, with its line.
  EXPECT_EQ(ParseConfig(kMinimal + "spool:\n  max_bytes: 1KB\n", "w.yml").Describe("w.yml"),
            "w.yml:9:14: spool.max_bytes: must be at least twice spool.segment_bytes (64MB)\n");
  EXPECT_EQ(ParseConfig(kMinimal + "spool:\n  dir: ''\n", "/etc/pgderive/w.yml").Describe("w.yml"),
            "w.yml:9:8: spool.dir: must name a directory of its own, not the configuration "
            "file's directory\n");
  EXPECT_EQ(ParseConfig(kMinimal + "spool:\n  dir: .\n", "/etc/pgderive/w.yml").Describe("w.yml"),
            "w.yml:9:8: spool.dir: must name a directory of its own, not the configuration "
            "file's directory\n");
  EXPECT_EQ(ParseConfig(kMinimal + "spool:\n  dir: /etc/passwd\n", "w.yml").Describe("w.yml"),
            "w.yml:9:8: spool.dir: /etc/passwd exists and is not a directory\n");
}

TEST(ConfigTest, ExpandsEnvironmentVariables) {
  setenv("PGDERIVE_TEST_PW", "s3cret", 1);
  ConfigResult result = ParseConfig(
      std::string("pipeline: p\nsource:\n  dsn: postgresql://app:${PGDERIVE_TEST_PW}@db/shop\n") +
          kOneView,
      "p.yml");
  ASSERT_TRUE(result.config.has_value()) << result.Describe("p.yml");
  EXPECT_EQ(result.config->source.dsn, "postgresql://app:s3cret@db/shop");
  EXPECT_EQ(result.config->views.size(), 1u);
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
            "/nonexistent/pgderive.yml: cannot read the file: No such file or directory\n");
  ConfigResult directory = LoadConfigFile("/tmp");
  EXPECT_EQ(directory.Describe("/tmp"), "/tmp: cannot read the file: Is a directory\n");
}

// An unset ${VARIABLE} is said once: not also "must not be empty" for the value it left.
TEST(ConfigTest, AnUnsetVariableIsOneProblem) {
  unsetenv("PGDERIVE_TEST_UNSET");
  ConfigResult result = ParseConfig(
      std::string("pipeline: p\nsource:\n  dsn: ${PGDERIVE_TEST_UNSET}\n") + kOneView, "u.yml");
  ASSERT_EQ(result.problems.size(), 1u) << result.Describe("u.yml");
  EXPECT_EQ(result.Describe("u.yml"),
            "u.yml:3:8: source.dsn: environment variable PGDERIVE_TEST_UNSET is not set\n");
}

// An unknown store is told the stores there are, and the one meant when it is close.
TEST(ConfigTest, AnUnknownStoreListsTheStores) {
  ConfigResult result = ParseConfig(R"(pipeline: p
source:
  dsn: postgresql://app@db/shop
stores:
  cache:
    type: redis
    url: redis://127.0.0.1:6379/0
  search:
    type: opensearch
    url: http://127.0.0.1:9200
views:
  - name: a
    store: cahce
    from: t
    key: "a:{id}"
)",
                                    "s.yml");
  EXPECT_EQ(result.Describe("s.yml"),
            "s.yml:13:12: views[0].store: no store named 'cahce' under stores (stores: cache, "
            "search; did you mean cache?)\n");
}

// Where each value is written, for the checks made against the servers: a column at
// its own entry, a key column at its own in `key:`, a {column} in the template, the
// lines of a literal block query.
TEST(ConfigTest, MarksPointAtEachValue) {
  ConfigResult result = ParseConfig(R"(pipeline: p
source:
  dsn: postgresql://app@db/shop
stores:
  cache:
    type: redis
    url: redis://127.0.0.1:6379/0
  wh:
    type: postgres
    dsn: postgresql://app@db/wh
views:
  - name: a
    store: cache
    from: t
    key: "t:{id}:{sku}"
    columns:
      - id
      - sku
  - name: b
    store: wh
    table: totals
    key:
      - grp
      - day
    query: |
      select grp, day,
             count(*) as n
      from t group by grp, day
)",
                                    "m.yml");
  ASSERT_TRUE(result.config.has_value()) << result.Describe("m.yml");
  const Config& c = *result.config;
  auto pair = [](ConfigMark m) { return std::pair(m.line, m.column); };
  EXPECT_EQ(pair(c.source.MarkOf("dsn")), std::pair(3, 8));
  EXPECT_EQ(pair(c.source.MarkOf("slot")), std::pair(2, 1));  // not written: the section
  EXPECT_EQ(pair(c.stores.at("cache").MarkOf("url")), std::pair(7, 10));
  const ViewConfig& a = c.views[0];
  EXPECT_EQ(pair(a.MarkOf("from")), std::pair(14, 11));
  ASSERT_EQ(a.column_marks.size(), 2u);
  EXPECT_EQ(pair(a.column_marks[0]), std::pair(17, 9));
  EXPECT_EQ(pair(a.column_marks[1]), std::pair(18, 9));
  EXPECT_EQ(pair(a.placeholder_marks.at("id")), std::pair(15, 13));
  EXPECT_EQ(pair(a.placeholder_marks.at("sku")), std::pair(15, 18));
  const ViewConfig& b = c.views[1];
  ASSERT_EQ(b.key_column_marks.size(), 2u);
  EXPECT_EQ(pair(b.key_column_marks[0]), std::pair(23, 9));
  EXPECT_EQ(pair(b.key_column_marks[1]), std::pair(24, 9));
  EXPECT_EQ(pair(b.MarkOf("query")), std::pair(25, 12));
  EXPECT_EQ(pair(b.QueryLineMark(1)), std::pair(26, 7));
  EXPECT_EQ(pair(b.QueryLineMark(2)), std::pair(27, 14));  // its own first character
  EXPECT_EQ(pair(b.QueryLineMark(3)), std::pair(28, 7));
  EXPECT_EQ(pair(b.QueryLineMark(4)), pair(b.MarkOf("query")));  // past the end
  EXPECT_EQ(pair(a.QueryLineMark(2)), pair(a.MarkOf("query")));  // no query: the view
}

TEST(ConfigTest, ProblemsNeverQuoteASecret) {
  ConfigResult result =
      ParseConfig("pipeline: p\nsource:\n  dsn: [postgresql://app:Hunter2@db/shop]\n", "s.yml");
  ASSERT_FALSE(result.config.has_value());
  EXPECT_EQ(result.Describe("s.yml").find("Hunter2"), std::string::npos);
}

// Every way a DSN, a URL or a password field can be wrong, with the password in it: no
// message repeats it (nor a piece of it).
TEST(ConfigTest, APasswordInADsnOrUrlNeverAppears) {
  setenv("PGDERIVE_TEST_SECRET", "Hunter2", 1);
  const std::vector<std::string> dsns = {
      "postgresql://app:Hunter2@/shop",                  // no host
      "postgresql://app:Hunter2%zz@db/shop",             // bad percent-encoding
      "postgresql://app:Hunter2@db:99999/shop",          // bad port
      "postgresql://app:Hunter2@[::1/shop",              // unclosed IPv6 literal
      "postgresql://app:${PGDERIVE_TEST_SECRET}@/shop",  // from the environment
      "host=db password=Hunter2 Hunter3 dbname=shop",    // an unquoted space in the value
      "host=db password='Hunter2",                       // unterminated quote
      "password=Hunter2 dbname=shop",                    // no host
      "postgresql://app:Hunter2@db/shop?Hunter2",        // a query without '='
      "[postgresql://app:Hunter2@db/shop]",              // a list, not a string
  };
  for (const std::string& dsn : dsns) {
    const std::string yaml = "pipeline: p\nsource:\n  dsn: \"" + dsn + "\"\n" + kOneView;
    ConfigResult result = ParseConfig(yaml, "s.yml");
    const std::string text = result.Describe("s.yml");
    EXPECT_FALSE(result.config.has_value()) << dsn;
    EXPECT_EQ(text.find("Hunter"), std::string::npos) << text;
    EXPECT_NE(text.find("source.dsn"), std::string::npos) << text;
  }
  const std::vector<std::string> stores = {
      "{type: redis, url: \"redis://:Hunter2@cache:0/0\"}",
      "{type: redis, url: \"rediss://:Hunter2@cache/0\"}",
      "{type: redis, url: \"redis://app:Hunter2@cache/x\", password: Hunter3}",
      "{type: opensearch, url: \"http://admin:Hunter2@\"}",
      "{type: opensearch, url: \"http://search:9200\", password: Hunter2}",
      "{type: opensearch, url: \"https://search:9200\", password: [Hunter2]}",
      "{type: postgres, dsn: \"user=app password=Hunter2\"}",
  };
  for (const std::string& store : stores) {
    const std::string yaml =
        "pipeline: p\nsource:\n  dsn: postgresql://db/shop\nstores:\n  s: " + store +
        "\nviews:\n  - {name: v, store: s, from: t, key: \"t:{id}\"}\n";
    ConfigResult result = ParseConfig(yaml, "s.yml");
    const std::string text = result.Describe("s.yml");
    EXPECT_FALSE(result.config.has_value()) << store;
    EXPECT_EQ(text.find("Hunter"), std::string::npos) << text;
    EXPECT_NE(text.find("stores.s"), std::string::npos) << text;
  }
}

TEST(ConfigTest, DuplicateKeysAnywhere) {
  ConfigResult result =
      ParseConfig(kMinimal + "http: {listen: \"127.0.0.1:1\", listen: \"127.0.0.1:2\"}\n", "d.yml");
  EXPECT_EQ(result.Describe("d.yml"),
            "d.yml:8:31: http.listen: duplicate key: the first `listen` is at line 8, column 8 "
            "(YAML would silently keep only one of them)\n");
}

TEST(ConfigTest, ListenAddresses) {
  const std::string& base = kMinimal;
  for (const char* good : {"127.0.0.1:9187", "0.0.0.0:1", "localhost:65535", "\"[::1]:9187\""}) {
    ConfigResult result = ParseConfig(base + "http:\n  listen: " + good + "\n", "l.yml");
    EXPECT_TRUE(result.config.has_value()) << good << ": " << result.Describe("l.yml");
  }
  for (const char* bad : {"9187", ":9187", "\"localhost:\"", "localhost:0", "localhost:65536",
                          "localhost:http", "\"[::1]\"", "::1:9187", "\"[]:80\""}) {
    ConfigResult result = ParseConfig(base + "http:\n  listen: " + bad + "\n", "l.yml");
    EXPECT_NE(result.Describe("l.yml").find("http.listen: must be HOST:PORT"), std::string::npos)
        << bad << ": " << result.Describe("l.yml");
  }
}

TEST(ConfigTest, ByteSizes) {
  EXPECT_EQ(ParseByteSize("1GB"), uint64_t{1} << 30);
  EXPECT_EQ(FormatByteSize(uint64_t{4} << 20), "4MB");
  EXPECT_EQ(FormatByteSize(uint64_t{3} << 29), "1.5GB");
  EXPECT_EQ(FormatByteSize(900), "900B");
  EXPECT_EQ(FormatByteSize(1025), "1kB");  // 1.0009: one decimal, rounded down
  EXPECT_EQ(FormatByteSize(uint64_t{10} << 30), "10GB");
  EXPECT_EQ(ParseByteSize(FormatByteSize(uint64_t{64} << 10)), uint64_t{64} << 10);
  EXPECT_EQ(ParseByteSize("512MB"), uint64_t{512} << 20);
  EXPECT_EQ(ParseByteSize("64kB"), uint64_t{64} << 10);
  EXPECT_EQ(ParseByteSize("64 kb"), uint64_t{64} << 10);
  EXPECT_EQ(ParseByteSize("2TB"), uint64_t{2} << 40);
  EXPECT_EQ(ParseByteSize("100"), 100u);
  EXPECT_EQ(ParseByteSize("100B"), 100u);
  for (const char* bad :
       {"", "GB", "1.5GB", "-1", "1 GiB", "1PB", "99999999999TB", "99999999999999999999"}) {
    EXPECT_FALSE(ParseByteSize(bad).has_value()) << bad;
  }
}

TEST(ConfigTest, CredentialsGoIntoTheConnectUrl) {
  StoreConfig store;
  store.url = "redis://cache:6379/0";
  EXPECT_EQ(store.ConnectUrl(), "redis://cache:6379/0");
  store.username = "app";
  store.password = "p@ss word:/";
  EXPECT_EQ(store.ConnectUrl(), "redis://app:p%40ss%20word%3A%2F@cache:6379/0");
  auto url = Url::Parse(store.ConnectUrl());
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->user, "app");
  EXPECT_EQ(url->password, "p@ss word:/");
  store.username.clear();
  EXPECT_EQ(store.ConnectUrl(), "redis://:p%40ss%20word%3A%2F@cache:6379/0");
}

// The defaults of the key table are the defaults of the structs (one truth each way).
TEST(ConfigTest, TableDefaultsAreTheStructDefaults) {
  ConfigResult result = ParseConfig(kMinimal, "m.yml");
  ASSERT_TRUE(result.config.has_value()) << result.Describe("m.yml");
  const Config& parsed = *result.config;
  const Config defaults;
  EXPECT_EQ(parsed.source.heartbeat_seconds, defaults.source.heartbeat_seconds);
  EXPECT_EQ(parsed.source.max_retained_wal_bytes, defaults.source.max_retained_wal_bytes);
  EXPECT_EQ(parsed.snapshot.workers, defaults.snapshot.workers);
  EXPECT_EQ(parsed.http.listen, defaults.http.listen);
  EXPECT_EQ(parsed.log.format, defaults.log.format);
  EXPECT_EQ(parsed.log.level, defaults.log.level);
  EXPECT_EQ(parsed.source.slot, "pgderive_p");
}

// ---------------------------------------------------------------- the fixture corpus

std::filesystem::path ConfigFixtures() {
  return std::filesystem::path(testing::SourceDir()) / "tests" / "fixtures" / "configs";
}

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Expectation {
  int line = 0;
  std::string key;
  std::string text;
};

// The "# expect: LINE: KEY: TEXT" lines at the top of a broken configuration.
std::vector<Expectation> ExpectationsOf(const std::string& content) {
  std::vector<Expectation> out;
  std::istringstream in(content);
  const std::string marker = "# expect: ";
  for (std::string line; std::getline(in, line) && line.starts_with(marker);) {
    const std::string rest = line.substr(marker.size());
    const size_t first = rest.find(": ");
    const size_t second = first == std::string::npos ? first : rest.find(": ", first + 1);
    if (second == std::string::npos) {
      ADD_FAILURE() << "malformed expectation: " << line;
      continue;
    }
    out.push_back({std::atoi(rest.substr(0, first).c_str()),
                   rest.substr(first + 2, second - first - 2), rest.substr(second + 2)});
  }
  return out;
}

// Every file in broken/ names its problems on its first lines; the loader must report
// exactly those, each at its line and key, and nothing else. Adding a case is adding a
// file.
TEST(ConfigCorpusTest, EveryBrokenFileReportsItsProblems) {
  unsetenv("PGDERIVE_FIXTURE_UNSET");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(ConfigFixtures() / "broken")) {
    if (entry.path().extension() == ".yml") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  EXPECT_GE(files.size(), 30u);
  size_t several = 0;
  for (const auto& file : files) {
    SCOPED_TRACE(file.filename().string());
    const std::vector<Expectation> expected = ExpectationsOf(ReadAll(file));
    ASSERT_FALSE(expected.empty()) << "no '# expect: LINE: KEY: TEXT' line";
    several += expected.size() > 1 ? 1 : 0;
    const ConfigResult result = LoadConfigFile(file.string());
    const std::string text = result.Describe(file.string());
    EXPECT_FALSE(result.config.has_value());
    EXPECT_EQ(result.problems.size(), expected.size()) << text;
    for (const Expectation& e : expected) {
      const bool found =
          std::any_of(result.problems.begin(), result.problems.end(), [&](const ConfigProblem& p) {
            return p.line == e.line && p.key == e.key &&
                   p.message.find(e.text) != std::string::npos;
          });
      EXPECT_TRUE(found) << "expected line " << e.line << ", key " << e.key << ": " << e.text
                         << "\ngot:\n"
                         << text;
    }
    // The fixtures' passwords never reach a message.
    for (const char* secret : {"Hunter2", "Secret123"}) {
      EXPECT_EQ(text.find(secret), std::string::npos) << text;
    }
  }
  EXPECT_GE(several, 2u) << "a couple of files show that every problem is listed";
}

TEST(ConfigCorpusTest, TheFullValidFileLoads) {
  setenv("PGDERIVE_FIXTURE_PASSWORD", "s3cr3t-pw", 1);
  const std::filesystem::path path = ConfigFixtures() / "valid" / "full.yml";
  const ConfigResult result = LoadConfigFile(path.string());
  ASSERT_TRUE(result.config.has_value()) << result.Describe(path.string());
  const Config& c = *result.config;
  EXPECT_EQ(c.pipeline, "shop");
  EXPECT_EQ(c.source.dsn,
            "postgresql://replicator:s3cr3t-pw@db.internal:5432/shop?sslmode=verify-full");
  EXPECT_EQ(c.source.slot, "shop_slot");
  EXPECT_EQ(c.source.publication, "shop_pub");
  EXPECT_EQ(c.source.heartbeat_seconds, 30);
  EXPECT_EQ(c.source.max_retained_wal_bytes, uint64_t{512} << 20);
  EXPECT_EQ(c.source.snapshot_parallelism, 3);
  EXPECT_TRUE(c.spool.enabled);
  EXPECT_EQ(c.spool.when_full, SpoolConfig::WhenFull::kPause);
  EXPECT_EQ(c.spool.dir, "/var/lib/pgderive/spool");
  EXPECT_EQ(c.spool.max_bytes, uint64_t{2} << 30);
  EXPECT_EQ(c.spool.segment_bytes, uint64_t{32} << 20);
  EXPECT_EQ(c.source.line, 4);
  ASSERT_EQ(c.stores.size(), 3u);
  const StoreConfig& cache = c.stores.at("cache");
  EXPECT_EQ(cache.type, StoreType::kRedis);
  EXPECT_EQ(cache.url, "redis://cache.internal:6379/2");
  EXPECT_EQ(cache.username, "pgderive");
  EXPECT_EQ(cache.password, "s3cr3t-pw");
  EXPECT_EQ(cache.ConnectUrl(), "redis://pgderive:s3cr3t-pw@cache.internal:6379/2");
  EXPECT_EQ(cache.line, 12);
  const StoreConfig& search = c.stores.at("search");
  EXPECT_EQ(search.type, StoreType::kOpenSearch);
  EXPECT_EQ(search.username, "admin");
  EXPECT_EQ(search.ca_file, (path.parent_path() / "ca.pem").string());
  EXPECT_EQ(c.stores.at("warehouse").dsn,
            "host=warehouse.internal port=5433 dbname=analytics user=pgderive sslmode=require");
  ASSERT_EQ(c.views.size(), 4u);
  EXPECT_EQ(c.views[0].from, "public.products");
  ASSERT_TRUE(c.views[0].key);
  EXPECT_EQ(c.views[0].key->text(), "product:{id}");
  EXPECT_EQ(c.views[0].columns, (std::vector<std::string>{"id", "sku", "title", "price"}));
  EXPECT_EQ(c.views[0].line, 27);
  EXPECT_FALSE(c.views[1].columns.has_value());
  EXPECT_EQ(c.views[2].index, "products");
  EXPECT_TRUE(c.views[2].promote_manual);
  EXPECT_EQ(c.views[2].retain_previous, std::chrono::hours(2));
  EXPECT_FALSE(c.views[0].promote_manual);
  // A Redis view's versions (a changed key template) take them too.
  EXPECT_TRUE(c.views[1].promote_manual);
  EXPECT_EQ(c.views[1].retain_previous, std::chrono::minutes(30));
  EXPECT_EQ(c.views[0].retain_previous, std::chrono::hours(1));
  EXPECT_EQ(c.views[3].table, "analytics.customer_totals");
  EXPECT_EQ(c.views[3].key_columns, std::vector<std::string>{"customer_id"});
  EXPECT_NE(c.views[3].query.find("group by o.customer_id"), std::string::npos);
  EXPECT_EQ(c.snapshot.workers, 8);
  EXPECT_TRUE(c.verify.continuous);
  EXPECT_EQ(c.verify.rows_per_second, 500);
  EXPECT_FALSE(c.verify.repair);
  EXPECT_EQ(c.http.listen, "[::1]:9188");
  EXPECT_EQ(c.log.format, LogFormat::kLogfmt);
  EXPECT_EQ(c.log.level, LogLevel::kDebug);

  // It uses every declared key.
  const std::string text = ReadAll(path);
  for (const ConfigKey& key : ConfigKeys()) {
    EXPECT_NE(text.find(key.name + ":"), std::string::npos) << key.section << "." << key.name;
  }
}

// The grammars alone (config/grammar.h), each the one parser of its kind of text.
TEST(ConfigGrammarTest, TableNames) {
  EXPECT_EQ(TableNameProblem("products"), std::nullopt);
  EXPECT_EQ(TableNameProblem("sales.orders"), std::nullopt);
  for (const char* bad : {"", ".orders", "sales.", "a.b.c", "my table", "\"Quoted\""}) {
    EXPECT_NE(TableNameProblem(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(Qualify("products"), "public.products");
  EXPECT_EQ(Qualify("sales.orders"), "sales.orders");
}

TEST(ConfigGrammarTest, IndexNamesListenAddressesIntegers) {
  EXPECT_EQ(IndexNameProblem("products_v2"), std::nullopt);
  for (const char* bad : {"Products", "_x", "-x", "a b", "a,b", "pgderive-checkpoints"}) {
    EXPECT_NE(IndexNameProblem(bad), std::nullopt) << bad;
  }
  EXPECT_TRUE(IsListenAddress("127.0.0.1:9187"));
  EXPECT_TRUE(IsListenAddress("[::1]:80"));
  for (const char* bad : {"9187", ":80", "host:0", "host:65536", "host:8x", "[::1]80"}) {
    EXPECT_FALSE(IsListenAddress(bad)) << bad;
  }
  EXPECT_EQ(ParseInteger("42", 1, 100), 42);
  EXPECT_EQ(ParseInteger("0", 1, 100), std::nullopt);
  EXPECT_EQ(ParseInteger("4x", 1, 100), std::nullopt);
  EXPECT_EQ(ParseInteger("99999999999999999999", 1, 100), std::nullopt);
}

}  // namespace
}  // namespace pgderive
