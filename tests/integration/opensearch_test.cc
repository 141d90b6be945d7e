// OpenSearch 2.19 from compose/local: an index is created with a mapping, documents go
// in through `_bulk` and are read back; external versioning refuses an older version.
#include <gtest/gtest.h>

#include "sinks/opensearch/opensearch_client.h"
#include "tests/support/stack_env.h"

namespace pgderive {
namespace {

using nlohmann::json;
using testing::UniqueName;

OpenSearchClient MustCreate(const std::string& url) {
  HttpClient::Options options;
  options.url = url;
  auto client = OpenSearchClient::Create(options);
  if (!client.ok()) throw std::runtime_error(client.error().ToString());
  return std::move(client).value();
}

TEST(OpenSearchIntegrationTest, ServerIs219) {
  PGDERIVE_REQUIRE_STACK();
  OpenSearchClient os = MustCreate(stack.opensearch_url());
  auto version = os.ServerVersion();
  ASSERT_TRUE(version.ok()) << version.error().ToString();
  EXPECT_EQ(version.value().rfind("2.19.", 0), 0u) << version.value();
}

TEST(OpenSearchIntegrationTest, BulkIndexesAndReadsBack) {
  PGDERIVE_REQUIRE_STACK();
  OpenSearchClient os = MustCreate(stack.opensearch_url());
  const std::string index = UniqueName("products");
  const json mapping = {{"settings", {{"number_of_shards", 1}, {"number_of_replicas", 0}}},
                        {"mappings",
                         {{"properties",
                           {{"sku", {{"type", "keyword"}}},
                            {"title", {{"type", "text"}}},
                            {"price", {{"type", "scaled_float"}, {"scaling_factor", 100}}}}}}}};
  ASSERT_TRUE(os.CreateIndex(index, mapping, /*if_missing=*/false).ok());
  // Creating it again is fine only when asked to tolerate it.
  EXPECT_TRUE(os.CreateIndex(index, mapping, /*if_missing=*/true).ok());
  Status again = os.CreateIndex(index, mapping, /*if_missing=*/false);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kPermanent);

  const std::vector<json> docs = {
      {{"sku", "A-1"}, {"title", "Kaffeebecher"}, {"price", "12.50"}},
      {{"sku", "B-2"}, {"title", "caf\xC3\xA9 \xE2\x98\x95"}, {"price", "3.00"}},
      {{"sku", "C/3"}, {"title", nullptr}, {"price", "0.99"}}};
  std::string ndjson;
  for (size_t i = 0; i < docs.size(); ++i) {
    ndjson += json{{"index", {{"_index", index}, {"_id", docs[i]["sku"]}}}}.dump() + "\n";
    ndjson += docs[i].dump() + "\n";
  }
  auto bulk = os.Bulk(ndjson, "wait_for");
  ASSERT_TRUE(bulk.ok()) << bulk.error().ToString();
  EXPECT_EQ(bulk.value().items, docs.size());
  EXPECT_TRUE(bulk.value().failures.empty());

  for (const json& doc : docs) {
    auto got = os.Get(index, doc["sku"].get<std::string>());
    ASSERT_TRUE(got.ok()) << got.error().ToString();
    ASSERT_TRUE(got.value().has_value()) << doc["sku"];
    EXPECT_EQ(got.value()->source, doc);
  }
  auto count = os.Count(index);
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count.value(), 3);
  auto missing = os.Get(index, "no-such-id");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing.value().has_value());

  ASSERT_TRUE(os.DeleteIndex(index, /*if_exists=*/false).ok());
  EXPECT_TRUE(os.DeleteIndex(index, /*if_exists=*/true).ok());
}

TEST(OpenSearchIntegrationTest, ExternalVersionRefusesOlderWrite) {
  PGDERIVE_REQUIRE_STACK();
  OpenSearchClient os = MustCreate(stack.opensearch_url());
  const std::string index = UniqueName("versioned");
  ASSERT_TRUE(os.CreateIndex(index, {{"settings", {{"number_of_replicas", 0}}}}, false).ok());
  auto action = [&](long long version) {
    return json{{"index",
                 {{"_index", index},
                  {"_id", "42"},
                  {"version", version},
                  {"version_type", "external"}}}}
               .dump() +
           "\n";
  };
  std::string ndjson = action(1000) + json{{"state", "newer"}}.dump() + "\n" + action(999) +
                       json{{"state", "older"}}.dump() + "\n";
  auto bulk = os.Bulk(ndjson, "wait_for");
  ASSERT_TRUE(bulk.ok()) << bulk.error().ToString();
  ASSERT_EQ(bulk.value().failures.size(), 1u);
  const BulkItemError& failure = bulk.value().failures[0];
  EXPECT_EQ(failure.position, 1u);
  EXPECT_EQ(failure.id, "42");
  EXPECT_EQ(failure.status, 409);
  EXPECT_EQ(failure.type, "version_conflict_engine_exception");
  auto got = os.Get(index, "42");
  ASSERT_TRUE(got.ok() && got.value().has_value());
  EXPECT_EQ(got.value()->source["state"], "newer");
  EXPECT_EQ(got.value()->version, 1000);
  EXPECT_TRUE(os.DeleteIndex(index, true).ok());
}

TEST(OpenSearchIntegrationTest, UnreachableServerIsTransientAndRedacted) {
  OpenSearchClient os = MustCreate("http://admin:Adm1nPw@127.0.0.1:1");
  auto version = os.ServerVersion();
  ASSERT_FALSE(version.ok());
  EXPECT_EQ(version.error().kind(), ErrorKind::kTransient);
  EXPECT_EQ(version.error().message().find("Adm1nPw"), std::string::npos);
  EXPECT_NE(version.error().message().find("127.0.0.1:1"), std::string::npos)
      << version.error().message();
}

// _mget reads documents by id in real time (indexed, not yet refreshed), those found
// only, in the order asked, 1000 ids a request; a missing index holds none.
TEST(OpenSearchIntegrationTest, MultiGetReadsDocumentsByIdBeforeARefresh) {
  PGDERIVE_REQUIRE_STACK();
  OpenSearchClient os = MustCreate(stack.opensearch_url());
  const std::string index = UniqueName("mget");
  ASSERT_TRUE(os.CreateIndex(index,
                             {{"settings", {{"number_of_shards", 1}, {"number_of_replicas", 0}}}},
                             /*if_missing=*/false)
                  .ok());
  std::string ndjson;
  std::vector<std::string> ids;
  for (int i = 1; i <= 1500; ++i) {
    ids.push_back("d/" + std::to_string(i));
    if (i % 3 == 0) continue;
    ndjson += json{{"index", {{"_index", index}, {"_id", ids.back()}}}}.dump() + "\n";
    ndjson += json{{"n", i}}.dump() + "\n";
  }
  auto bulk = os.Bulk(ndjson, "false");  // not refreshed
  ASSERT_TRUE(bulk.ok()) << bulk.error().ToString();
  ASSERT_TRUE(bulk.value().failures.empty());

  auto got = os.MultiGet(index, ids);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  ASSERT_EQ(got.value().size(), 1000u);
  EXPECT_EQ(got.value().front(), (std::pair<std::string, std::string>{"d/1", R"({"n":1})"}));
  EXPECT_EQ(got.value().back().first, "d/1499");
  auto none = os.MultiGet(index + "-missing", ids);
  ASSERT_TRUE(none.ok()) << none.error().ToString();
  EXPECT_TRUE(none.value().empty());
  ASSERT_TRUE(os.DeleteIndex(index, /*if_exists=*/false).ok());
}

}  // namespace
}  // namespace pgderive
