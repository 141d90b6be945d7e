#include "cdc/type_catalog.h"

#include <set>

namespace pgderive {

Status ResolveTypes(PgConnection& connection, const std::vector<uint32_t>& oids,
                    TypeRegistry& types) {
  std::set<uint32_t> pending;
  for (uint32_t oid : oids) {
    if (types.Lookup(oid).kind == JsonKind::kString) pending.insert(oid);
  }
  // Domains over domains and arrays of domains: resolve bases first, a few levels deep.
  for (int depth = 0; depth < 8 && !pending.empty(); ++depth) {
    std::string list;
    for (uint32_t oid : pending) list += (list.empty() ? "" : ",") + std::to_string(oid);
    auto rows = connection.Query(
        "select oid, typtype, typbasetype, typelem, typcategory, typdelim from pg_type where oid "
        "in (" +
        list + ")");
    if (!rows.ok()) return rows.error();
    std::set<uint32_t> next;
    for (const auto& row : rows.value().rows) {
      const uint32_t oid = static_cast<uint32_t>(std::stoul(row[0].value_or("0")));
      const std::string typtype = row[1].value_or("");
      const uint32_t base = static_cast<uint32_t>(std::stoul(row[2].value_or("0")));
      const uint32_t element = static_cast<uint32_t>(std::stoul(row[3].value_or("0")));
      const std::string category = row[4].value_or("");
      const std::string delimiter = row[5].value_or(",");
      if (typtype == "d" && base != 0) {
        types.Add(oid, types.Lookup(base));
        if (types.Lookup(base).kind == JsonKind::kString) next.insert(base);
      } else if (category == "A" && element != 0) {
        types.Add(oid, TypeInfo{JsonKind::kArray, element, delimiter.empty() ? ',' : delimiter[0]});
        if (types.Lookup(element).kind == JsonKind::kString) next.insert(element);
      }
    }
    // A base resolved in this round fixes the domains that copied its (string) info.
    for (const auto& row : rows.value().rows) {
      const uint32_t oid = static_cast<uint32_t>(std::stoul(row[0].value_or("0")));
      const uint32_t base = static_cast<uint32_t>(std::stoul(row[2].value_or("0")));
      if (row[1].value_or("") == "d" && base != 0) next.insert(oid);
    }
    for (uint32_t oid : pending) next.erase(oid);
    pending = std::move(next);
  }
  return Status::Ok();
}

}  // namespace pgderive
