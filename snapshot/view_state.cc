#include "snapshot/view_state.h"

#include <nlohmann/json.hpp>

namespace pgderive {

std::string ViewState::ToJson() const {
  nlohmann::json j = {{"state", removed       ? "removed"
                                : backfilling ? "backfilling"
                                              : "live"},
                      {"columns", columns}};
  if (after) j["after"] = *after;
  if (table_oid != 0) j["table_oid"] = table_oid;
  if (!definition.empty()) j["definition"] = definition;
  if (generation != 0) j["generation"] = generation;
  if (sweep) j["sweep"] = true;
  if (first_fill) j["first_fill"] = true;
  return j.dump();
}

std::optional<ViewState> ViewState::FromJson(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("state") || !j["state"].is_string()) return std::nullopt;
  ViewState state;
  state.backfilling = j["state"] == "backfilling";
  state.removed = j["state"] == "removed";
  if (j.contains("after") && j["after"].is_string()) state.after = j["after"].get<std::string>();
  if (j.contains("table_oid") && j["table_oid"].is_number_unsigned()) {
    state.table_oid = j["table_oid"].get<uint32_t>();
  }
  if (j.contains("definition") && j["definition"].is_string()) {
    state.definition = j["definition"].get<std::string>();
  }
  if (j.contains("generation") && j["generation"].is_number_unsigned()) {
    state.generation = j["generation"].get<uint64_t>();
  }
  state.sweep = j.contains("sweep") && j["sweep"].is_boolean() && j["sweep"].get<bool>();
  state.first_fill =
      j.contains("first_fill") && j["first_fill"].is_boolean() && j["first_fill"].get<bool>();
  if (j.contains("columns") && j["columns"].is_array()) {
    for (const auto& c : j["columns"]) {
      if (c.is_string()) state.columns.push_back(c.get<std::string>());
    }
  }
  return state;
}

std::vector<std::string> ColumnsOf(const RelationSchema& schema) {
  std::vector<std::string> out;
  for (const ColumnSchema& c : schema.columns) {
    out.push_back(c.name + " " + std::to_string(c.type_oid));
  }
  return out;
}

}  // namespace pgderive
