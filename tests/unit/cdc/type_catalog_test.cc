// Domains through to their base types: the pure part of the type catalog, and the
// decisions made from a column's type (JSON rendering, the OpenSearch mapping).
#include "cdc/type_catalog.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "sinks/opensearch/opensearch_sink.h"

namespace pgderive {
namespace {

constexpr uint32_t kText = 25, kInt4 = 23, kJsonb = 3802, kUuid = 2950, kTextArray = 1009;
constexpr uint32_t kJdoc = 90001;             // create domain jdoc as jsonb
constexpr uint32_t kJdoc2 = 90002;            // create domain jdoc2 as jdoc
constexpr uint32_t kJdocArray = 90003;        // jdoc[]
constexpr uint32_t kTag = 90004;              // create domain tag as text
constexpr uint32_t kTagList = 90005;          // create domain tag_list as text[]
constexpr uint32_t kUuidDomain = 90006;       // create domain d_uuid as uuid
constexpr uint32_t kUuidDomainArray = 90007;  // d_uuid[]
constexpr uint32_t kQty = 90008;              // create domain qty as int
constexpr uint32_t kQtyArray = 90009;         // qty[]

// What ResolveTypes would fetch from pg_type for those (bases and elements included).
TypeRegistry Resolved() {
  auto domain = [](uint32_t base) { return CatalogType{.domain = true, .base = base}; };
  auto array = [](uint32_t element) { return CatalogType{.array = true, .element = element}; };
  std::map<uint32_t, CatalogType> catalog = {{kJdoc, domain(kJsonb)},
                                             {kJdoc2, domain(kJdoc)},
                                             {kJdocArray, array(kJdoc)},
                                             {kTag, domain(kText)},
                                             {kTagList, domain(kTextArray)},
                                             {kUuidDomain, domain(kUuid)},
                                             {kUuidDomainArray, array(kUuidDomain)},
                                             {kQty, domain(kInt4)},
                                             {kQtyArray, array(kQty)},
                                             {kText, {}},
                                             {kUuid, {}}};
  TypeRegistry types;
  AddCatalogTypes(catalog, types);
  return types;
}

TEST(TypeCatalogTest, DomainsMapAsTheirBaseTypes) {
  const TypeRegistry types = Resolved();
  EXPECT_EQ(types.Lookup(kJdoc).kind, JsonKind::kJson);
  EXPECT_EQ(BaseTypeOid(kJdoc, types.Lookup(kJdoc)), kJsonb);
  // A domain over a domain: through both.
  EXPECT_EQ(types.Lookup(kJdoc2).kind, JsonKind::kJson);
  EXPECT_EQ(BaseTypeOid(kJdoc2, types.Lookup(kJdoc2)), kJsonb);
  EXPECT_EQ(types.Lookup(kQty).kind, JsonKind::kInteger);
  // A domain over a string type is recorded too, with its base.
  EXPECT_EQ(types.Lookup(kTag).kind, JsonKind::kString);
  EXPECT_EQ(BaseTypeOid(kUuidDomain, types.Lookup(kUuidDomain)), kUuid);
  // An array of a domain, a domain over an array.
  EXPECT_EQ(types.Lookup(kJdocArray).kind, JsonKind::kArray);
  EXPECT_EQ(types.Lookup(kJdocArray).element_oid, kJdoc);
  EXPECT_EQ(types.Lookup(kTagList).kind, JsonKind::kArray);
  EXPECT_EQ(types.Lookup(kTagList).element_oid, kText);
  EXPECT_EQ(BaseTypeOid(kTagList, types.Lookup(kTagList)), kTextArray);
  // A type that is none of these stays a string without a base.
  EXPECT_EQ(BaseTypeOid(kText, types.Lookup(kText)), kText);
}

TEST(TypeCatalogTest, ValuesOfDomainsRenderAsTheirBaseTypes) {
  const TypeRegistry types = Resolved();
  auto render = [&](std::string_view text, uint32_t oid) {
    std::string out;
    Status status = AppendJsonValue(out, text, oid, types);
    EXPECT_TRUE(status.ok()) << status.error().ToString();
    return out;
  };
  // JSON values pass through as they are (not as strings).
  EXPECT_EQ(render(R"({"a": 1})", kJdoc), R"({"a": 1})");
  EXPECT_EQ(render(R"({"a": 1})", kJdoc2), R"({"a": 1})");
  EXPECT_EQ(render(R"({"{\"x\": 1}","[2]"})", kJdocArray), R"([{"x": 1},[2]])");
  EXPECT_EQ(render("{l1,\"l 2\"}", kTagList), R"(["l1","l 2"])");
  EXPECT_EQ(render("{1,NULL,3}", kQtyArray), "[1,null,3]");
  EXPECT_EQ(render("7", kQty), "7");
}

TEST(TypeCatalogTest, OpenSearchMapsDomainsAsTheirBaseTypes) {
  const TypeRegistry types = Resolved();
  RelationSchema schema;
  const std::vector<std::pair<std::string, uint32_t>> columns = {
      {"meta", kJdoc}, {"strict", kJdoc2},    {"metas", kJdocArray},
      {"tag", kTag},   {"uid", kUuidDomain},  {"uids", kUuidDomainArray},
      {"qty", kQty},   {"tag_list", kTagList}};
  std::vector<size_t> all;
  for (const auto& [name, oid] : columns) {
    schema.columns.push_back(ColumnSchema{name, oid, -1, false, {}});
    all.push_back(all.size());
  }
  const nlohmann::json properties =
      OpenSearchSink::Mapping(schema, all, types)["mappings"]["properties"];
  const nlohmann::json object = {{"type", "object"}, {"enabled", false}};
  EXPECT_EQ(properties["meta"], object);
  EXPECT_EQ(properties["strict"], object);
  EXPECT_EQ(properties["metas"], object);
  EXPECT_EQ(properties["uid"]["type"], "keyword");
  EXPECT_EQ(properties["uids"]["type"], "keyword");
  EXPECT_EQ(properties["qty"]["type"], "long");
  EXPECT_EQ(properties["tag"]["type"], "text");
  EXPECT_EQ(properties["tag_list"]["type"], "text");
}

}  // namespace
}  // namespace pgderive
