#include "cdc/type_catalog.h"

#include <map>
#include <set>
#include <string>

#include "base/number.h"

namespace pgderive {
namespace {

// Type chains are short (a domain over a domain over an array...); the bound only guards
// against a catalog that loops.
constexpr int kMaxDepth = 16;

}  // namespace

Status ResolveTypes(SqlRunner& connection, const std::vector<uint32_t>& oids, TypeRegistry& types) {
  auto unknown = [&](uint32_t oid) {
    return oid != 0 && types.Lookup(oid).kind == JsonKind::kString;
  };

  // 1. Fetch the pg_type rows of the unknown types and, transitively, of the domain bases
  //    and array elements they name, until nothing is missing.
  std::map<uint32_t, CatalogType> catalog;
  std::set<uint32_t> wanted;
  for (uint32_t oid : oids) {
    if (unknown(oid)) wanted.insert(oid);
  }
  for (int depth = 0; depth < kMaxDepth && !wanted.empty(); ++depth) {
    std::string list;
    for (uint32_t oid : wanted) list += (list.empty() ? "" : ",") + std::to_string(oid);
    auto rows = connection.Query(
        "select oid, typtype, typbasetype, typelem, typcategory, typdelim from pg_type "
        "where oid = any($1::oid[])",
        {"{" + list + "}"});
    if (!rows.ok()) return rows.error();
    std::set<uint32_t> next;
    for (const auto& row : rows.value().rows) {
      auto oid = ParseServerNumber<uint32_t>(row[0]);
      auto base = ParseServerNumber<uint32_t>(row[2]);
      auto element = ParseServerNumber<uint32_t>(row[3]);
      for (const Status& parsed : {oid.status(), base.status(), element.status()}) {
        if (!parsed.ok()) return Error::Corrupt("pg_type: " + parsed.error().message());
      }
      CatalogType type;
      type.domain = row[1].value_or("") == "d";
      type.base = base.value();
      type.array = row[4].value_or("") == "A";
      type.element = element.value();
      type.delimiter = row[5].value_or(",").empty() ? ',' : row[5]->front();
      for (uint32_t referenced : {type.domain ? type.base : 0u, type.array ? type.element : 0u}) {
        if (unknown(referenced) && !catalog.contains(referenced)) next.insert(referenced);
      }
      catalog[oid.value()] = type;
    }
    for (const auto& [oid, type] : catalog) next.erase(oid);
    wanted = std::move(next);
  }

  AddCatalogTypes(catalog, types);
  return Status::Ok();
}

void AddCatalogTypes(const std::map<uint32_t, CatalogType>& catalog, TypeRegistry& types) {
  auto unknown = [&](uint32_t oid) {
    return oid != 0 && types.Lookup(oid).kind == JsonKind::kString;
  };
  // Resolve each fetched type by following its chain: a domain maps like its base, an
  // array element-wise (its element resolved the same way); anything else stays a
  // string.
  auto resolve = [&](auto& self, uint32_t oid, int depth) -> TypeInfo {
    if (!unknown(oid) || depth > kMaxDepth) return types.Lookup(oid);
    auto it = catalog.find(oid);
    if (it == catalog.end()) return types.Lookup(oid);  // keeps a known domain's base
    if (it->second.domain && it->second.base != 0) {
      TypeInfo info = self(self, it->second.base, depth + 1);
      info.base_oid = BaseTypeOid(it->second.base, info);  // through domains over domains
      return info;
    }
    if (it->second.array && it->second.element != 0) {
      return TypeInfo{JsonKind::kArray, it->second.element, it->second.delimiter};
    }
    return TypeInfo{};
  };
  for (const auto& [oid, type] : catalog) {
    const TypeInfo info = resolve(resolve, oid, 0);
    // A domain is recorded even when it maps as a string: decisions made on its base
    // type (an OpenSearch keyword for a domain over uuid) need the base.
    if (info.kind != JsonKind::kString || info.base_oid != 0) types.Add(oid, info);
  }
}

Status TypeLearner::Learn(const std::vector<ColumnSchema>& columns) {
  std::vector<uint32_t> oids;
  for (const ColumnSchema& c : columns) {
    if (attempted_.insert(c.type_oid).second) oids.push_back(c.type_oid);
  }
  if (oids.empty()) return Status::Ok();
  auto copy = std::make_shared<TypeRegistry>(*types_);
  Status status = ResolveTypes(sql_, oids, *copy);
  if (status.ok()) types_ = std::move(copy);
  return status;
}

}  // namespace pgderive
